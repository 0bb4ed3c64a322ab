"""dlq.full_policy: drop_oldest at the DLQ itself: two DLQ objects sharing a folder and a ledger (as
two processes do) keep it within its limit, delete oldest first, and report every deletion."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from freezegun import freeze_time

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue
from telhawk_ingest.errors import DLQUnavailable
from telhawk_ingest.stats import Counters
from tests.unit.test_dlq import record

LIMIT = 5


def dropping(base: Path, ledger: Counters, heard: list[str]) -> DeadLetterQueue:
    settings = DlqSettings(base_path=base, min_free_bytes=0, max_pending_files=LIMIT,
                           full_policy="drop_oldest")
    return DeadLetterQueue(settings, ledger=ledger, on_drop=heard.extend)


def test_two_dlqs_on_one_folder_stay_within_the_limit_and_report_each_entry_they_drop(tmp_path):
    base = tmp_path / "dlq"
    ledger = Counters(tmp_path / "counters")
    heard: list[str] = []
    first, second = dropping(base, ledger, heard), dropping(base, ledger, heard)
    written: list[str] = []
    lock = threading.Lock()

    def writer(dlq: DeadLetterQueue, start: int) -> None:
        for n in range(start, start + 15):
            entry_id = dlq.write(record(n), now=1_700_000_000 + n)
            with lock:
                written.append(entry_id)

    threads = [threading.Thread(target=writer, args=(q, i * 100)) for i, q in enumerate((first, second))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    left = sorted(p.stem for p in base.glob("failed_*.json"))
    assert len(written) == 60  # every write was taken: room was made, never a refusal
    assert len(left) <= LIMIT
    assert sorted(heard) == sorted(set(written) - set(left))  # every missing entry was reported, once
    assert len(heard) == len(set(heard))


def test_the_oldest_go_first(tmp_path):
    heard: list[str] = []
    dlq = dropping(tmp_path / "dlq", Counters(tmp_path / "counters"), heard)
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(LIMIT + 2)]

    assert heard == ids[:2]
    assert sorted(p.stem for p in dlq.path.glob("failed_*.json")) == ids[2:]
    assert dlq.refusal() is None and dlq.accepting()


@pytest.mark.parametrize("limit", ["max_pending_files", "max_pending_bytes"])
def test_room_made_by_a_deletion_elsewhere_drops_nothing_and_reports_nothing(tmp_path, limit):
    """The listing the limits use is reused for a while, so an entry another process purged still
    counts there; making room lists the folder afresh and finds the new entry fits as it is. Each
    limit alone (the other 0: none) asks for nothing on the other count."""
    probe = DeadLetterQueue(DlqSettings(base_path=tmp_path / "probe", min_free_bytes=0))
    size = (probe.path / f"{probe.write(record(1), now=1_700_000_001)}.json").stat().st_size
    calls: list[list[str]] = []
    settings = DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0, full_policy="drop_oldest",
                           **{"max_pending_files": 0, "max_pending_bytes": 0,
                              limit: LIMIT if limit == "max_pending_files" else LIMIT * size})
    dlq = DeadLetterQueue(settings, on_drop=calls.append)
    with freeze_time("2026-01-02T03:04:05Z"):  # the listing stays fresh between the writes
        ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(1, LIMIT + 1)]
        os.remove(dlq.path / f"{ids[0]}.json")
        ids.append(dlq.write(record(LIMIT + 1), now=1_700_000_000 + LIMIT + 1))

    assert sorted(p.stem for p in dlq.path.glob("failed_*.json")) == ids[1:]
    assert calls == []


def test_oldest_chooses_just_enough_entries_oldest_first_passing_over_skipped_and_vanished_ones(
        tmp_path, monkeypatch):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(1, 5)]
    size = (dlq.path / f"{ids[0]}.json").stat().st_size

    assert dlq.oldest(0, 0) == []
    assert dlq.oldest(0, 1) == ids[:1]
    assert dlq.oldest(1, size + 1) == ids[:2]
    assert dlq.oldest(2, 0, skip=frozenset(ids[:1])) == ids[1:3]
    assert dlq.oldest(2, 0, skip=frozenset(ids[1:2])) == [ids[0], ids[2]]

    # An entry purged between the listing and its size being read is passed over.
    real_lstat = os.lstat

    def lstat(path: os.PathLike | str, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).endswith(f"{ids[1]}.json"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    assert dlq.oldest(2, 0) == [ids[0], ids[2]]


def test_a_batch_larger_than_the_limit_itself_is_refused_without_dropping_anything(tmp_path):
    heard: list[str] = []
    dlq = dropping(tmp_path / "dlq", Counters(tmp_path / "counters"), heard)
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(3)]

    with pytest.raises(DLQUnavailable) as refused:
        dlq.write_many([record(n) for n in range(10, 10 + LIMIT + 1)])

    assert str(refused.value) == f"{LIMIT + 1} entries are more than dlq.max_pending_files={LIMIT}"
    assert sorted(p.stem for p in dlq.path.glob("failed_*.json")) == ids
    assert heard == []
