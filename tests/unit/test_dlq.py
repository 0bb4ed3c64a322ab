from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import (
    FILE_RE,
    STALE_TEMP_S,
    DeadLetterQueue,
    DlqFilter,
    check_id,
    make_record,
)
from telhawk_ingest.errors import ApiError, DLQUnavailable

SEED_KEYS = ["timestamp", "envelope", "error", "reason", "attempts", "last_attempt"]


def envelope(n: int = 1, source_type: str = "cisco_asa") -> dict:
    return {"id": f"env-{n}", "source": "firewall", "source_type": source_type, "format": "json",
            "payload": '{"msg": "x"}', "attributes": {"host": "fw01"},
            "received_at": "2026-01-01T00:00:00.000Z"}


def record(n=1, reason="normalization_failed", error="boom", source_type="cisco_asa"):
    return make_record(envelope(n, source_type), reason, error, now=1_700_000_000.0 + n)


@pytest.fixture
def dlq(tmp_path: Path) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))


def test_a_record_is_one_file_with_the_seed_fields_first(dlq):
    entry_id = dlq.write(record(), now=1_699_040_123)

    files = os.listdir(dlq.path)
    assert files == [f"{entry_id}.json"]
    assert FILE_RE.match(files[0]) and files[0].startswith("failed_1699040123_")
    content = json.loads((dlq.path / files[0]).read_text())
    assert list(content)[:6] == SEED_KEYS
    assert content["envelope"] == envelope()
    assert content["reason"] == "normalization_failed"
    assert content["attempts"] == 1
    assert content["id"] == entry_id
    assert content["stage"] == "normalize"


def test_files_are_private_and_no_temp_file_is_left(dlq):
    dlq.write_many([record(1), record(2), record(3)])

    assert stat.S_IMODE(dlq.path.stat().st_mode) == 0o700
    for name in os.listdir(dlq.path):
        assert name.endswith(".json") and not name.startswith(".tmp")
        assert stat.S_IMODE((dlq.path / name).stat().st_mode) == 0o600


def test_names_are_unique_and_sorted_by_time_across_threads_and_processes(tmp_path):
    base = tmp_path / "dlq"

    def write_some(_: int) -> None:
        q = DeadLetterQueue(DlqSettings(base_path=base, min_free_bytes=0))
        for n in range(20):
            q.write(record(n), now=1_700_000_000)

    threads = [threading.Thread(target=write_some, args=(i,)) for i in range(4)]
    procs = [multiprocessing.get_context("fork").Process(target=write_some, args=(i,)) for i in range(2)]
    for t in [*threads, *procs]:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join()

    names = os.listdir(base)
    assert len(names) == 120 and all(FILE_RE.match(n) for n in names)


def test_listing_is_oldest_first_and_pages_with_a_cursor(dlq):
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(5)]

    page, total, cursor = dlq.list(limit=2)
    assert [r["id"] for r in page] == ids[:2] and total == 5 and cursor == ids[1]
    page, _, cursor = dlq.list(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ids[2:4]
    page, _, cursor = dlq.list(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ids[4:] and cursor is None


def test_listing_filters_by_reason_source_type_error_and_time(dlq):
    a = dlq.write(record(1, "normalization_failed", "no normalizer registered for x"), now=100)
    b = dlq.write(record(2, "storage_failed", "503 from storage", source_type="linux_secure"), now=200)

    assert [r["id"] for r in dlq.list(DlqFilter(reason="storage_failed"))[0]] == [b]
    assert [r["id"] for r in dlq.list(DlqFilter(source_type="cisco_asa"))[0]] == [a]
    assert [r["id"] for r in dlq.list(DlqFilter(error="normalizer"))[0]] == [a]
    assert [r["id"] for r in dlq.list(DlqFilter(since=150))[0]] == [b]
    assert [r["id"] for r in dlq.list(DlqFilter(until=150))[0]] == [a]


def test_a_corrupt_file_is_skipped_reported_and_kept_while_foreign_files_are_ignored(dlq):
    good = dlq.write(record(1), now=100)
    (dlq.path / "failed_150_" f"{'ab' * 16}.json").write_text('{"timestamp": "trunc')
    (dlq.path / "notes.txt").write_text("operator notes")
    (dlq.path / "failed_oops.json").write_text("{}")

    page, total, _ = dlq.list()
    stats = dlq.stats()

    assert [r["id"] for r in page] == [good] and total == 1
    assert stats["pending_files"] == 2
    assert stats["corrupt_files"] == [f"failed_150_{'ab' * 16}.json"]
    assert (dlq.path / f"failed_150_{'ab' * 16}.json").exists()


def test_purge_removes_every_entry_corrupt_ones_too_but_not_foreign_files(dlq):
    dlq.write_many([record(1), record(2)])
    (dlq.path / f"failed_150_{'cd' * 16}.json").write_text("garbage")
    (dlq.path / "README").write_text("keep me")

    assert dlq.purge() == 3
    assert os.listdir(dlq.path) == ["README"]


def test_purge_with_a_filter_removes_only_matching_entries(dlq):
    dlq.write(record(1, "normalization_failed"))
    keep = dlq.write(record(2, "storage_failed"))

    assert dlq.purge(DlqFilter(reason="normalization_failed")) == 1
    assert [r["id"] for r in dlq.list()[0]] == [keep]


def test_get_and_delete_one_entry(dlq):
    entry_id = dlq.write(record())

    assert dlq.get(entry_id)["envelope"]["id"] == "env-1"
    dlq.delete(entry_id)
    with pytest.raises(ApiError) as err:
        dlq.get(entry_id)
    assert err.value.status == 404


@pytest.mark.parametrize("bad", ["../etc/passwd", "failed_1_x/../../y", "failed_1_zz", "", "a" * 300])
def test_ids_that_are_not_entry_names_are_refused_before_touching_files(bad):
    with pytest.raises(ApiError) as err:
        check_id(bad)
    assert err.value.status == 400


def test_a_disabled_dlq_refuses_to_write(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(enabled=False, base_path=tmp_path / "dlq"))
    with pytest.raises(DLQUnavailable, match="disabled"):
        dlq.write(record())
    assert not (tmp_path / "dlq").exists()


def test_an_unwritable_dlq_refuses_to_write_and_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    dlq = DeadLetterQueue(DlqSettings(base_path=blocker / "dlq", min_free_bytes=0))
    with pytest.raises(DLQUnavailable, match=r"dlq.base_path: .*/file/dlq is not"):
        dlq.write(record())


def test_a_dlq_below_its_free_space_floor_refuses_to_write(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=2**62))
    with pytest.raises(DLQUnavailable, match="min_free_bytes"):
        dlq.write(record())


def test_a_dlq_at_its_file_limit_refuses_to_write(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0, max_pending_files=2))
    dlq.write_many([record(1), record(2)])
    dlq.stats()  # refreshes the pending count
    with pytest.raises(DLQUnavailable, match="max_pending_files=2"):
        dlq.write(record(3))


def test_private_dir_creates_every_missing_level_0700_and_returns_the_path(tmp_path):
    from telhawk_ingest.files import private_dir

    made = private_dir(tmp_path / "a" / "b" / "c")

    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()
    for level in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700


def age(path: Path, seconds: float = 5.0) -> None:
    """Set a directory's mtime into the past, as if nothing had changed there for a while."""
    old = path.stat().st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(old, old))


def test_an_unchanged_directory_is_not_listed_again(dlq, monkeypatch):
    dlq.write_many([record(1), record(2)])
    age(dlq.path)
    first = dlq.stats()
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real_listdir(p))

    again = dlq.stats()
    page, total, _ = dlq.list()

    assert listed == []
    assert again["pending_files"] == first["pending_files"] == 2 and total == 2 and len(page) == 2


def test_a_file_written_by_another_instance_is_seen_at_once(dlq, tmp_path):
    dlq.write(record(1))
    age(dlq.path)
    dlq.stats()
    other = DeadLetterQueue(DlqSettings(base_path=dlq.path, min_free_bytes=0))

    other.write(record(2))

    assert dlq.stats()["pending_files"] == 2
    assert dlq.list()[1] == 2


def test_a_corrupt_file_appearing_later_is_reported_and_counted_out(dlq):
    dlq.write(record(1))
    age(dlq.path)
    assert dlq.stats()["corrupt_files"] == []
    bad = f"failed_1700000001_{'ef' * 16}.json"
    (dlq.path / bad).write_text("{")

    assert dlq.stats()["corrupt_files"] == [bad]
    assert dlq.list()[1] == 1
    (dlq.path / bad).unlink()
    assert dlq.stats()["corrupt_files"] == []


# -- temp files left by a killed writer --------------------------------------------------------------

def leftover(base: Path, age_s: float, seconds: int = 1_700_000_000) -> Path:
    """A temp file as a writer killed between create and rename leaves it, `age_s` seconds old."""
    base.mkdir(mode=0o700, exist_ok=True)
    path = base / f".tmp-failed_{seconds}_{os.urandom(16).hex()}"
    path.write_bytes(b'{"timestamp": "2026-01-01T00:00:00Z", "envel')  # cut off mid-write
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_start_up_removes_temp_files_old_enough_to_belong_to_no_writer(tmp_path):
    base = tmp_path / "dlq"
    old = [leftover(base, STALE_TEMP_S + 60), leftover(base, 3 * 86400)]
    young = [leftover(base, STALE_TEMP_S - 60), leftover(base, 0.5)]
    foreign = base / ".tmp-something-else"
    foreign.write_text("not ours")
    os.utime(foreign, (1, 1))

    dlq = DeadLetterQueue(DlqSettings(base_path=base, min_free_bytes=0))

    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young) and foreign.exists()
    assert dlq.stats()["temp_files"] == 2


def test_temp_files_are_counted_in_health_until_removed_and_never_listed_or_pending(dlq):
    dlq.write(record(1))
    left = leftover(dlq.path, 5)

    stats = dlq.stats()

    assert (stats["temp_files"], stats["pending_files"]) == (1, 1)
    assert dlq.list()[1] == 1
    left.unlink()
    assert dlq.stats()["temp_files"] == 0


def test_a_disabled_dlq_touches_no_temp_file(tmp_path):
    old = leftover(tmp_path / "dlq", 3 * STALE_TEMP_S)

    DeadLetterQueue(DlqSettings(enabled=False, base_path=tmp_path / "dlq"))

    assert old.exists()
