"""Rewriting a DLQ entry in place, as a replay that fails again does, and every process's catalog
noticing it (SPEC §7, §11)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, DlqFilter
from telhawk_ingest.errors import DLQUnavailable
from tests.unit.test_dlq import record


def queue(path: Path) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=path, min_free_bytes=0))


@pytest.fixture
def two(tmp_path: Path) -> tuple[DeadLetterQueue, DeadLetterQueue]:
    """Two instances on one directory, as two processes (or hosts) sharing the volume."""
    return queue(tmp_path / "dlq"), queue(tmp_path / "dlq")


def ids(dlq: DeadLetterQueue, **flt: str) -> list[str]:
    return [r["id"] for r in dlq.list(DlqFilter(**flt), limit=1000)[0]]


def refail(dlq: DeadLetterQueue, entry_id: str, reason: str, error: str) -> None:
    rec = dlq.get(entry_id)
    rec.update(reason=reason, error=error, attempts=rec["attempts"] + 1)
    dlq.rewrite(entry_id, rec)


def test_a_rewrite_by_another_instance_moves_the_entry_between_reason_filters(two):
    a, b = two
    entry, other = a.write(record(1)), a.write(record(2))
    assert ids(a, reason="normalization_failed") == sorted([entry, other])  # summaries now cached in a
    assert ids(a, reason="validation_failed") == []

    refail(b, entry, "validation_failed", "class_uid: required")

    assert ids(a, reason="validation_failed") == [entry]
    assert ids(a, reason="normalization_failed") == [other]
    assert list(a.iter_matching(DlqFilter(reason="validation_failed"))) == [entry]


def test_a_rewrite_by_another_instance_changes_what_an_error_filter_finds(two):
    a, b = two
    entry = a.write(record(1, error="no normalizer registered for format=json source_type=cisco_asa"))
    assert ids(a, error="cisco_asa") == [entry]

    refail(b, entry, "normalization_failed", "unknown message id 999999")

    assert ids(a, error="cisco_asa") == []
    assert ids(a, error="999999") == [entry]


def test_a_rewrite_keeps_one_file_under_the_same_name_with_the_new_content(two):
    a, b = two
    entry = a.write(record(1))
    refail(b, entry, "validation_failed", "x")

    [name] = [n for n in os.listdir(a.path) if n.endswith(".json")]
    assert name == f"{entry}.json"
    content = json.loads((a.path / name).read_text())
    assert (content["id"], content["reason"], content["attempts"]) == (entry, "validation_failed", 2)
    assert a.get(entry) == content
    assert a.stats()["pending_files"] == 1 and a.stats()["temp_files"] == 0


def test_pending_bytes_follow_a_rewrite_made_elsewhere(two):
    a, b = two
    entry = a.write(record(1))
    before = a.stats()["pending_bytes"]
    rec = b.get(entry)
    rec["error"] = "e" * 5000
    b.rewrite(entry, rec)

    assert a.stats()["pending_bytes"] == before - len("boom") + 5000


def test_a_rewrite_never_brings_back_an_entry_purged_meanwhile(two):
    a, b = two
    entry = a.write(record(1))
    rec = a.get(entry)
    b.purge()

    with pytest.raises(FileNotFoundError) as err:
        a.rewrite(entry, rec)
    assert not list(a.path.glob("*.json"))
    final = a.path / f"{entry}.json"
    assert (err.value.errno, err.value.filename) == (errno.ENOENT, str(final))
    assert str(err.value) == f"[Errno 2] DLQ entry removed before its rewrite: '{final}'"


@pytest.mark.parametrize(("code", "hint"), [(errno.ENOSPC, " (disk full)"), (errno.EIO, "")])
def test_a_rewrite_that_cannot_be_written_leaves_the_old_entry_as_it_was(two, monkeypatch, code, hint):
    a, _ = two
    entry = a.write(record(1))
    before = (a.path / f"{entry}.json").read_bytes()

    def failing(*_args, **_kw):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("telhawk_ingest.dlq.write_synced", failing)
    rec = a.get(entry)
    rec["attempts"] = 9
    with pytest.raises(DLQUnavailable) as err:
        a.rewrite(entry, rec)
    assert str(err.value) == f"dlq.base_path: {a.path} is not writable (errno {code}{hint})"
    assert (a.path / f"{entry}.json").read_bytes() == before
    assert os.listdir(a.path) == [f"{entry}.json"]  # no temp file left behind

