"""Counters files stay bounded: files of processes gone quiet are folded into compacted files,
and no count is ever taken twice or lost, whatever runs at once or stops half-way (stats.py, fold.py)."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telhawk_ingest import fold, stats
from telhawk_ingest.stats import ABSORB_AFTER_S, COUNTERS, Counters
from tests.unit.test_stats import counters_file, listings
from tests.unit.test_stats_ledger_reads import unattended

# Old enough to be folded at once, however few such files there are (stats.MIN_BATCH).
OLD = 2 * ABSORB_AFTER_S + 1
# The real one, for the tests of when compactions run (the fixture below turns it off).
COMPACT_IF_DUE = Counters.compact_if_due


@pytest.fixture(autouse=True)
def no_background_flushes_or_compactions(monkeypatch):
    """The flusher thread flushes, and compacts when due, at moments of its own; here each test
    says when flushes and compactions run."""
    monkeypatch.setattr(stats.Counters, "compact_if_due", lambda self: None)
    monkeypatch.setattr(stats, "flush_all", lambda: None)


def kill(counters: Counters) -> None:
    """What SIGKILL or a platform ending a frozen instance leaves: the file, nothing retired."""
    atexit.unregister(counters.retire)
    stats._live.discard(counters)
    if counters._fd is not None:
        os.close(counters._fd)
        counters._fd = None


def age(path: Path, seconds: float, now: float | None = None) -> None:
    then = (time.time() if now is None else now) - seconds
    os.utime(path, (then, then))


def cold_start(directory: Path, stored: int, ago: float = OLD) -> Path:
    """One short-lived process: counts, writes its file, is killed; its file is `ago` seconds old."""
    counters = Counters(directory)
    counters.add(stored=stored, now=True)
    path = counters._path
    assert path is not None
    kill(counters)
    age(path, ago)
    return path


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def reader_totals(directory: Path) -> dict[str, int]:
    reader = Counters(directory)
    try:
        return reader.totals()
    finally:
        kill(reader)


def reader_total(directory: Path, name: str = "stored") -> int:
    return reader_totals(directory)[name]


def test_cold_starts_leave_one_compacted_file_and_the_same_totals(tmp_path):
    for i in range(200):
        cold_start(tmp_path, stored=i + 1)
    assert len(files(tmp_path)) == 200

    live = Counters(tmp_path)
    live.add(stored=1, now=True)
    assert live.compact() == 200

    names = files(tmp_path)
    assert len(names) == 2 and sum(stats._is_compacted(n) for n in names) == 1
    # The compacted file holds the counters that are not zero; the others still read as zero.
    assert reader_totals(tmp_path) == {**dict.fromkeys(COUNTERS, 0), "stored": sum(range(1, 201)) + 1}


def test_recent_files_and_the_compacting_process_own_file_are_left_alone(tmp_path):
    recent = cold_start(tmp_path, stored=3, ago=ABSORB_AFTER_S - 60)
    old = cold_start(tmp_path, stored=4)
    live = Counters(tmp_path)
    live.add(stored=5, now=True)
    assert live._path is not None
    age(live._path, 10 * ABSORB_AFTER_S)  # its own file, however old, is never taken from under it

    assert live.compact() == 1

    assert recent.exists() and live._path.exists() and not old.exists()
    assert reader_total(tmp_path) == 12


def test_successive_compactions_fold_the_compacted_files_too(tmp_path):
    compactor = Counters(tmp_path)
    compactor.add(stored=1, now=True)
    for round_ in range(5):
        for _ in range(10):
            cold_start(tmp_path, stored=round_ + 1)
        compactor.compact()

    assert sum(stats._is_compacted(n) for n in files(tmp_path)) == 1
    assert reader_total(tmp_path) == 1 + 10 * (1 + 2 + 3 + 4 + 5)


def test_two_compactions_at_once_each_take_a_file_once(tmp_path, monkeypatch):
    for i in range(20):
        cold_start(tmp_path, stored=i + 1)
    first, second = Counters(tmp_path), Counters(tmp_path)
    real_claim = fold.claim
    # The first compaction claims every other file, then the second runs to completion in the
    # middle of the first one's claiming.
    calls = {"n": 0}

    def interleaved(directory, name, fid):
        calls["n"] += 1
        if calls["n"] == 10:
            second.compact()
        return real_claim(directory, name, fid)

    monkeypatch.setattr(fold, "claim", interleaved)
    first.compact()

    assert reader_total(tmp_path) == sum(range(1, 21))
    assert not any(fold.is_claim(n) for n in files(tmp_path))


def test_a_compaction_that_stopped_before_its_commit_is_taken_over_later_and_counts_once(tmp_path,
                                                                                          monkeypatch):
    for _ in range(5):
        cold_start(tmp_path, stored=10)
    monkeypatch.setattr(fold, "commit", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        Counters(tmp_path).compact()
    monkeypatch.undo()
    assert all(fold.is_claim(n) for n in files(tmp_path))
    assert reader_total(tmp_path) == 50  # claimed files still count

    later = Counters(tmp_path)
    assert later.compact() == 0  # too early: the claims might belong to a compaction at work
    assert later.compact(now=time.time() + fold.CLAIM_STALE_S + 1) == 5
    assert reader_total(tmp_path) == 50
    assert [stats._is_compacted(n) for n in files(tmp_path)] == [True]


def test_a_compaction_that_stopped_after_its_commit_leaves_claims_that_are_never_counted_again(
        tmp_path, monkeypatch):
    for _ in range(3):
        cold_start(tmp_path, stored=7)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # killed before cleaning up
    Counters(tmp_path).compact()
    monkeypatch.undo()
    leftover = [n for n in files(tmp_path) if fold.is_claim(n)]
    assert len(leftover) == 3

    assert reader_total(tmp_path) == 21  # the compacted file records them: skipped
    Counters(tmp_path).compact(now=time.time() + fold.CLAIM_STALE_S + 1)
    assert not any(fold.is_claim(n) for n in files(tmp_path))
    assert reader_total(tmp_path) == 21


def test_a_compaction_stalled_past_its_budget_gives_its_claims_back(tmp_path, monkeypatch):
    paths = [cold_start(tmp_path, stored=2) for _ in range(3)]
    clock = {"now": time.time()}
    real_write = fold.write_synced

    def slow_write(path, data):
        real_write(path, data)
        clock["now"] += fold.COMMIT_BUDGET_S + 1  # frozen while writing, thawed a minute later

    monkeypatch.setattr(time, "time", lambda: clock["now"])
    monkeypatch.setattr(fold, "write_synced", slow_write)
    assert Counters(tmp_path).compact() == 0
    monkeypatch.undo()

    assert all(p.exists() for p in paths)
    assert not any(stats._is_compacted(n) for n in files(tmp_path))
    assert reader_total(tmp_path) == 6


def test_a_frozen_process_whose_file_was_taken_goes_on_in_a_new_file_counting_nothing_twice(tmp_path):
    frozen = unattended(tmp_path)  # what it writes, not what a reader's flush would write for it
    frozen.add(stored=4, now=True)
    assert frozen._path is not None
    age(frozen._path, OLD)
    assert Counters(tmp_path).compact() == 1

    frozen.add(stored=3, now=True)  # thawed: written at once, in a new file
    assert reader_total(tmp_path) == 7
    frozen.flush(sync=True)

    assert reader_total(tmp_path) == 7
    assert frozen.totals()["stored"] == 7


def test_a_write_that_lands_after_the_compaction_read_the_file_is_counted_late_not_lost(tmp_path,
                                                                                          monkeypatch):
    owner = Counters(tmp_path)
    owner.add(stored=5, now=True)
    assert owner._path is not None
    age(owner._path, OLD)
    compactor = Counters(tmp_path)
    real_pwrite = os.pwrite
    armed = {"on": True}

    def pwrite_after_a_compaction(fd, data, offset):
        # The owner checked its file, then stopped; meanwhile a compaction took it (reading 5).
        if armed.pop("on", False):
            compactor.compact()
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite_after_a_compaction)
    owner.add(stored=2, now=True)  # writes 7 into the file the compaction already read and deleted
    monkeypatch.undo()
    owner.flush(sync=True)  # the check after the write: taken; the record says 5 were taken

    assert reader_total(tmp_path) == 7
    assert owner.totals()["stored"] == 7


def test_readers_during_a_compaction_count_each_file_once(tmp_path, monkeypatch):
    for i in range(6):
        cold_start(tmp_path, stored=i + 1)
    seen: list[int] = []
    real_rename, real_unlink = os.rename, Path.unlink

    def renaming(src, dst):
        real_rename(src, dst)
        seen.append(reader_total(tmp_path))

    def unlinking(self, missing_ok=False):
        real_unlink(self, missing_ok=missing_ok)
        seen.append(reader_total(tmp_path))

    monkeypatch.setattr(os, "rename", renaming)
    monkeypatch.setattr(Path, "unlink", unlinking)
    Counters(tmp_path).compact()
    monkeypatch.undo()

    assert len(seen) >= 6 + 1 + 6  # after every claim, the commit, and every deletion
    assert set(seen) == {21}


@given(st.lists(st.tuples(st.sampled_from(["add", "flush", "age", "compact"]),
                          st.integers(0, 2), st.integers(1, 5)), max_size=40))
def test_any_interleaving_of_counting_aging_and_compacting_never_counts_twice(tmp_path_factory, steps):
    directory = tmp_path_factory.mktemp("counters")
    procs = [Counters(directory) for _ in range(3)]
    true_total = 0
    try:
        for op, i, n in steps:
            proc = procs[i]
            if op == "add":
                proc.add(stored=n)
                true_total += n
            elif op == "flush":
                proc.flush(sync=True)
            elif op == "age" and proc._path is not None and proc._path.exists():
                age(proc._path, OLD)
            elif op == "compact":
                proc.compact()
            # the reader never sees more than was counted, nor less than what was written
            assert reader_total(directory) <= true_total
        for proc in procs:
            proc.flush(sync=True)
        assert reader_total(directory) == true_total
    finally:
        for proc in procs:
            kill(proc)


def test_a_few_files_just_past_the_threshold_wait_for_a_batch(tmp_path):
    few = [cold_start(tmp_path, stored=1, ago=ABSORB_AFTER_S + 1) for _ in range(stats.MIN_BATCH - 1)]
    assert Counters(tmp_path).compact() == 0
    assert all(p.exists() for p in few)

    cold_start(tmp_path, stored=1, ago=ABSORB_AFTER_S + 1)
    assert Counters(tmp_path).compact() == stats.MIN_BATCH
    assert reader_total(tmp_path) == stats.MIN_BATCH


def test_a_batch_of_files_unchanged_for_exactly_the_threshold_is_folded(tmp_path):
    now = float(int(time.time()))
    for _ in range(stats.MIN_BATCH):
        age(cold_start(tmp_path, stored=1), ABSORB_AFTER_S, now)

    assert Counters(tmp_path).compact(now=now) == stats.MIN_BATCH


@pytest.mark.parametrize("later", [stats.RECENT_S, stats.RECORD_KEEP_S])
def test_a_name_leaves_the_first_line_after_recent_s_and_its_record_after_a_day(tmp_path, later):
    then = float(int(time.time()))
    taken_first = cold_start(tmp_path, stored=1)
    age(taken_first, OLD, then)
    assert Counters(tmp_path).compact(now=then) == 1
    [compacted_first] = [n for n in files(tmp_path) if stats._is_compacted(n)]
    taken_later = cold_start(tmp_path, stored=2)
    age(taken_later, OLD, then + later)

    assert Counters(tmp_path).compact(now=then + later) == 1

    [path] = [tmp_path / n for n in files(tmp_path) if stats._is_compacted(n)]
    head, records = (orjson.loads(line) for line in path.read_bytes().split(b"\n"))
    assert head["recent"] == sorted([taken_later.name, compacted_first])
    kept = {taken_first.name} if later < stats.RECORD_KEEP_S else set()
    assert set(records["absorbed"]) == {taken_later.name, compacted_first} | kept


def test_a_compaction_removes_temp_files_of_folds_stopped_claim_stale_s_ago(tmp_path):
    now = float(int(time.time()))
    stale = tmp_path / f"{fold.TEMP_PREFIX}compacted-a.totals"
    fresh = tmp_path / f"{fold.TEMP_PREFIX}compacted-b.totals"
    for path, ago in ((stale, fold.CLAIM_STALE_S), (fresh, fold.CLAIM_STALE_S - 1)):
        path.write_bytes(b"{}")
        age(path, ago, now)

    assert Counters(tmp_path).compact(now=now) == 0

    assert files(tmp_path) == [fresh.name]


def test_one_compacted_file_alone_is_left_as_it_is_and_two_are_folded_into_one(tmp_path):
    compacted(tmp_path, b'{"values":{"stored":5},"recent":[]}\n{"absorbed":{}}')

    assert Counters(tmp_path).compact() == 0
    assert files(tmp_path) == ["compacted-a.totals"]

    compacted(tmp_path, b'{"values":{"stored":2},"recent":[]}\n{"absorbed":{}}', name="compacted-b.totals")
    assert Counters(tmp_path).compact() == 0  # no process file among them
    [name] = files(tmp_path)
    assert stats._is_compacted(name) and name not in ("compacted-a.totals", "compacted-b.totals")
    assert reader_total(tmp_path) == 7


def test_a_file_gone_while_a_compaction_looks_at_it_is_skipped_and_the_rest_are_folded(tmp_path,
                                                                                    monkeypatch):
    now = float(int(time.time()))
    age(cold_start(tmp_path, stored=1), OLD, now)
    (tmp_path / "a.counters").write_bytes(counters_file([4]))
    [gone] = [e for e in os.scandir(tmp_path) if e.name == "a.counters"]
    os.unlink(gone.path)
    listings(monkeypatch, tmp_path, gone=[gone])

    assert Counters(tmp_path).compact(now=now) == 1


def test_a_compacted_file_folded_away_while_a_compaction_reads_the_names_it_records_is_skipped(
        tmp_path, monkeypatch):
    now = float(int(time.time()))
    age(cold_start(tmp_path, stored=1), OLD, now)
    compacted(tmp_path, SUMS)
    real_load = stats._load_compacted

    def folded_meanwhile(path: Path, full: bool = False) -> stats._Compacted | None:
        if path.name == "compacted-a.totals" and not full:
            path.unlink()  # another compaction took it
        return real_load(path, full)

    monkeypatch.setattr(stats, "_load_compacted", folded_meanwhile)

    assert Counters(tmp_path).compact(now=now) == 1
    assert reader_total(tmp_path) == 1


def test_a_leftover_claim_recorded_by_any_compacted_file_is_removed_not_folded_again(tmp_path,
                                                                                   monkeypatch):
    compacted(tmp_path, b'{"values":{"stored":5},"recent":["x.counters"]}\n{"absorbed":{}}')
    compacted(tmp_path, b'{"values":{"stored":2},"recent":[]}\n{"absorbed":{}}', name="compacted-b.totals")
    leftover = tmp_path / f"x.counters{fold.CLAIM_MARK}0123456789ab"
    leftover.write_bytes(counters_file([5]))  # what compacted-a.totals took, its claim left behind
    listings(monkeypatch, tmp_path)  # by name: the file that records it is read first

    Counters(tmp_path).compact(now=time.time() + fold.CLAIM_STALE_S)

    assert not leftover.exists()
    assert reader_total(tmp_path) == 7


def test_a_compaction_claims_every_file_it_takes_under_one_id_of_its_own(tmp_path, monkeypatch):
    for stored in (1, 2):
        cold_start(tmp_path, stored=stored)
    held: list[tuple] = []
    monkeypatch.setattr(fold, "commit", lambda *args: held.append(args) or True)

    assert Counters(tmp_path).compact() == 2

    [(_, _, _, claimed, _)] = held
    [mark] = {p.name.partition(fold.CLAIM_MARK)[2] for p in claimed}
    assert re.fullmatch("[0-9a-f]{12}", mark)


def test_a_claimed_compacted_file_gone_before_it_is_read_is_folded_as_nothing(tmp_path, monkeypatch):
    compacted(tmp_path, SUMS + b'\n{"absorbed":{}}')
    compacted(tmp_path, b'{"values":{"stored":2},"recent":[]}\n{"absorbed":{}}', name="compacted-b.totals")
    real_load = stats._load_compacted

    def taken_over(path: Path, full: bool = False) -> stats._Compacted | None:
        if full and fold.original(path.name) == "compacted-b.totals":
            path.unlink()  # another fold took the claim over meanwhile
        return real_load(path, full)

    monkeypatch.setattr(stats, "_load_compacted", taken_over)

    assert Counters(tmp_path).compact() == 0

    monkeypatch.undo()
    [name] = files(tmp_path)
    assert stats._is_compacted(name)
    assert reader_total(tmp_path) == 5


def test_a_compaction_of_a_folder_that_does_not_exist_folds_nothing(tmp_path):
    assert Counters(tmp_path / "missing").compact() == 0
    assert not (tmp_path / "missing").exists()


def test_only_a_process_with_a_counters_file_of_its_own_compacts_when_due(tmp_path, monkeypatch):
    monkeypatch.setattr(Counters, "compact_if_due", COMPACT_IF_DUE)
    cold_start(tmp_path, stored=1)
    cold_start(tmp_path, stored=2)
    reader = Counters(tmp_path)

    reader.compact_if_due()

    assert not any(stats._is_compacted(name) for name in files(tmp_path))
    owner = unattended(tmp_path)
    owner.add(now=True, stored=3)
    owner.compact_if_due()
    assert sum(stats._is_compacted(name) for name in files(tmp_path)) == 1
    assert reader_total(tmp_path) == 6


def test_a_failed_compaction_is_logged_and_not_tried_again_within_the_interval(tmp_path, monkeypatch,
                                                                               caplog):
    monkeypatch.setattr(Counters, "compact_if_due", COMPACT_IF_DUE)
    owner = unattended(tmp_path)
    owner.add(now=True, stored=1)
    tries: list[float | None] = []

    def failing(self: Counters, now: float | None = None) -> int:
        if self is owner:  # not the other tests' counters the flusher thread may get to meanwhile
            tries.append(now)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Counters, "compact", failing)
    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.compact_if_due()
        owner.compact_if_due()

    assert tries == [None]
    assert [m for r in caplog.records if r.name == "telhawk_ingest.stats" and "compaction" in (
        m := r.getMessage()) and str(tmp_path) in m] == [
        f"counters: compaction in {tmp_path} failed: [Errno 28] No space left on device"]


class SteppedMonotonic:
    """stats' `time` with a monotonic clock the test sets (everything else real)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_a_compaction_is_due_again_exactly_the_interval_after_the_last(tmp_path, monkeypatch):
    monkeypatch.setattr(Counters, "compact_if_due", COMPACT_IF_DUE)
    owner = unattended(tmp_path)
    owner.add(now=True, stored=1)
    tries: list[float] = []
    clock = SteppedMonotonic(1000.0)
    monkeypatch.setattr(stats, "time", clock)

    def compact(self: Counters, now: float | None = None) -> int:
        if self is owner:  # not the other tests' counters the flusher thread may get to meanwhile
            tries.append(clock.now)
        return 0

    monkeypatch.setattr(Counters, "compact", compact)

    for at in (1000.0, 1000.0 + stats.COMPACT_INTERVAL_S - 1, 1000.0 + stats.COMPACT_INTERVAL_S):
        clock.now = at
        owner.compact_if_due()

    assert tries == [1000.0, 1000.0 + stats.COMPACT_INTERVAL_S]


def claimed_during_the_next_write(owner: Counters, monkeypatch: pytest.MonkeyPatch, stored: int) -> tuple:
    """`owner` counts `stored` more, and its write lands just after a compaction claimed and read
    its (old) file; the compaction stops before its commit: returns the commit's arguments."""
    assert owner._path is not None
    age(owner._path, OLD)
    compactor = Counters(owner.directory)
    real_pwrite = os.pwrite
    held: list[tuple] = []

    def commit_later(*args):
        held.append(args)
        return True

    def pwrite_after_a_claim(fd, data, offset):
        if not held:
            compactor.compact()
        return real_pwrite(fd, data, offset)

    with monkeypatch.context() as patched:
        patched.setattr(fold, "commit", commit_later)
        patched.setattr(os, "pwrite", pwrite_after_a_claim)
        owner.add(stored=stored, now=True)
    [commit] = held
    return commit


def written_into_a_claimed_file(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Counters, tuple]:
    """A process whose file held 5 writes 7 into it just after a compaction claimed and read it
    (5); the compaction stops before its commit: returns the process and the commit's arguments."""
    owner = Counters(directory)
    owner.add(stored=5, now=True)
    return owner, claimed_during_the_next_write(owner, monkeypatch, stored=2)


def test_a_write_into_a_file_claimed_by_a_compaction_not_yet_committed_is_corrected_once_it_commits(
        tmp_path, monkeypatch, caplog):
    owner, commit = written_into_a_claimed_file(tmp_path, monkeypatch)
    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.flush(sync=True)  # taken: assumed to hold 7; no record yet, the claim is there: wait
        assert reader_total(tmp_path) == 7  # a claimed file still counts
        assert fold.commit(*commit)  # the compaction goes on: its record says it took 5

        owner.flush(sync=True)  # reads the record: the 2 it did not take are counted again

    assert reader_total(tmp_path) == 7
    assert owner.totals()["stored"] == 7
    assert caplog.records == []


def test_totals_of_a_process_whose_taken_file_waits_for_its_commit_read_the_folder_once(tmp_path,
                                                                                      monkeypatch):
    owner, _ = written_into_a_claimed_file(tmp_path, monkeypatch)
    owner.flush(sync=True)  # taken: assumed to hold 7; no record yet, the claim is there: wait
    made = listings(monkeypatch, tmp_path)

    assert owner.totals()["stored"] == 7
    # The flush looks for a record of the file, then for its claim; the sum lists the folder once,
    # and looks for the record again only when a compacted file it read names the file.
    assert len(made) == 3


def test_a_process_thawed_after_the_record_of_its_taken_file_expired_keeps_its_assumption_and_says_so(
        tmp_path, monkeypatch, caplog):
    owner, commit = written_into_a_claimed_file(tmp_path, monkeypatch)
    assert owner._path is not None
    taken = owner._path.name
    owner.flush(sync=True)
    assert fold.commit(*commit)
    cold_start(tmp_path, stored=10)
    # A day later a compaction folds the compacted file, leaving out records older than a day.
    assert owner.compact(now=time.time() + stats.RECORD_KEEP_S + 1) == 1

    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.flush(sync=True)

    assert [r.getMessage() for r in caplog.records] == [
        f"counters: no compacted file records {taken} any more; its last write may not be counted"
    ]
    assert reader_total(tmp_path) == 5 + 10  # the 2 written after the compaction read the file are lost


def test_a_compacted_file_folded_away_while_its_record_is_looked_for_is_looked_for_again(
        tmp_path, monkeypatch, caplog):
    owner, commit = written_into_a_claimed_file(tmp_path, monkeypatch)
    owner.flush(sync=True)
    assert fold.commit(*commit)  # the record (5 taken) is in this compacted file
    cold_start(tmp_path, stored=10)
    real_load = stats._load_compacted
    armed = [True]

    def folded_meanwhile(path: Path, full: bool = False):
        if full and armed and armed.pop():
            Counters(tmp_path).compact()  # another compaction folds the record's file into a new one
        return real_load(path, full)

    monkeypatch.setattr(stats, "_load_compacted", folded_meanwhile)
    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.flush(sync=True)  # the file it listed is gone: not "no record", but "look again"
        monkeypatch.undo()
        owner.flush(sync=True)

    assert not armed
    assert reader_total(tmp_path) == 7 + 10
    assert caplog.records == []


def test_a_file_taken_later_is_corrected_while_an_earlier_one_still_waits_for_its_commit(tmp_path,
                                                                                         monkeypatch):
    owner, first = written_into_a_claimed_file(tmp_path, monkeypatch)
    owner.flush(sync=True)  # its first file: assumed to hold 7, waiting for the first commit
    second = claimed_during_the_next_write(owner, monkeypatch, stored=3)  # its new file, read as 0, gets 3
    assert fold.commit(*second)  # recorded: 0 taken

    owner.flush(sync=True)

    assert reader_total(tmp_path) == 10  # 7 in the claimed first file, 3 counted again in a third
    assert fold.commit(*first)
    owner.flush(sync=True)
    assert reader_total(tmp_path) == 10


# Reading compacted files (stats._Compacted: the sums on the first line, the records on the second).


def compacted(directory: Path, data: bytes, name: str = "compacted-a.totals") -> Path:
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(data)
    return directory / name


SUMS = b'{"values":{"stored":5,"dlq_purged":2},"recent":[]}'


def test_a_reader_reads_only_the_sums_of_a_compacted_file_whatever_its_record_line_holds(tmp_path):
    compacted(tmp_path, SUMS + b"\n{not the records")

    assert reader_totals(tmp_path) == {**dict.fromkeys(COUNTERS, 0), "stored": 5, "dlq_purged": 2}


def test_a_compacted_file_ending_in_a_line_break_reads_the_same(tmp_path):
    compacted(tmp_path, SUMS + b'\n{"absorbed":{}}\n')

    assert reader_total(tmp_path) == 5


def test_a_compacted_file_of_several_mebibytes_is_read_whole(tmp_path):
    # A day of records of cold starts: far more than one read of 1 MiB.
    records = {f"host-{i}-{i:08x}.counters": [1.0, {"stored": i}] for i in range(60_000)}
    path = compacted(tmp_path, SUMS + b"\n" + orjson.dumps({"absorbed": records}))
    assert path.stat().st_size > 3 << 20

    assert reader_total(tmp_path) == 5
    assert stats._recorded(tmp_path, "host-59999-0000ea5f.counters") == (
        stats._as_values({"stored": 59_999}), True)


def test_a_compacted_file_replaced_while_the_totals_are_read_is_read_again(tmp_path, monkeypatch):
    compacted(tmp_path, SUMS)

    def replaced(n: int) -> None:
        if n == 1:  # the next compaction's file takes its place after the reader listed it
            os.rename(tmp_path / "compacted-a.totals", tmp_path / "compacted-b.totals")

    made = listings(monkeypatch, tmp_path, replaced)

    assert reader_total(tmp_path) == 5
    assert made == [["compacted-a.totals"], ["compacted-b.totals"]]


def test_a_link_planted_under_a_compacted_name_is_left_out_after_four_reads_and_the_rest_count(
        tmp_path, monkeypatch):
    compacted(tmp_path, SUMS, name="compacted-b.totals")
    (tmp_path / "compacted-a.totals").symlink_to(tmp_path / "compacted-b.totals")
    (tmp_path / "d.counters").write_bytes(counters_file([3]))

    made = listings(monkeypatch, tmp_path)

    assert reader_total(tmp_path) == 8
    assert made == [["compacted-a.totals", "compacted-b.totals", "d.counters"]] * 5


def test_only_a_name_with_both_the_prefix_and_the_suffix_is_a_compacted_file(tmp_path):
    # A process on a host named "compacted-a", and a file of another kind ending like a compacted one.
    (tmp_path / "compacted-a-12-0123abcd.counters").write_bytes(counters_file([3]))
    (tmp_path / "notes.totals").write_bytes(SUMS)

    assert reader_total(tmp_path) == 3


def test_a_damaged_compacted_file_counts_nothing_and_is_reported_once(tmp_path, caplog):
    path = compacted(tmp_path, b"not json\n")
    with caplog.at_level("ERROR", logger="telhawk_ingest.stats"):
        assert reader_total(tmp_path) == 0
        assert reader_total(tmp_path) == 0

    assert [r.getMessage() for r in caplog.records] == [
        f"counters: {path} is not a compacted counters file; its counts are not read"
    ]


def test_a_new_compacted_file_on_the_inode_of_a_deleted_one_is_read_afresh(tmp_path):
    # ext4 and others hand a freed inode to the next new file; timestamps are as coarse as a clock
    # tick, so a compaction can replace one compacted file by another with the same inode, size
    # and mtime: only the name tells them apart.
    sums = b'{"values":{"stored":%d},"recent":[]}\n{"absorbed":{}}'
    first = compacted(tmp_path, sums % 5, "compacted-1.totals")
    assert reader_total(tmp_path) == 5
    st = first.stat()
    first.unlink()
    second = compacted(tmp_path, sums % 7, "compacted-2.totals")
    if second.stat().st_ino != st.st_ino:
        pytest.skip("this filesystem gave the new file another inode")
    os.utime(second, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert reader_total(tmp_path) == 7


def test_taken_files_are_all_settled_in_one_flush_even_after_one_whose_record_is_gone(
        tmp_path, monkeypatch, caplog):
    owner, commit = written_into_a_claimed_file(tmp_path, monkeypatch)
    owner.flush(sync=True)  # taken: assumed to hold 7, waiting for the commit
    assert fold.commit(*commit)  # recorded: 5 taken
    # Before it in the list, a file taken earlier whose record has expired since (as above).
    owner._taken = {"gone.counters": [0] * len(COUNTERS), **owner._taken}

    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.flush(sync=True)

    assert [r.getMessage() for r in caplog.records] == [
        "counters: no compacted file records gone.counters any more; its last write may not be counted"
    ]
    assert owner._taken == {}
    assert reader_total(tmp_path) == 7  # the 2 the compaction did not take are counted again


def test_a_counters_folder_removed_by_hand_is_not_a_compaction_and_is_not_made_again(tmp_path):
    directory = tmp_path / "counters"
    owner = Counters(directory)
    owner.add(stored=1, now=True)
    shutil.rmtree(directory)

    owner.add(stored=2, now=True)
    owner.flush(sync=True)

    assert not directory.exists()  # the writes go on into its open file, as they always did
    assert owner._taken == {}


def test_a_file_waiting_for_a_commit_when_its_folder_is_removed_by_hand_is_let_go_without_a_warning(
        tmp_path, monkeypatch, caplog):
    directory = tmp_path / "counters"
    owner, _never_committed = written_into_a_claimed_file(directory, monkeypatch)
    owner.flush(sync=True)  # taken: waiting for the commit, which never comes
    shutil.rmtree(directory)

    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        owner.add(stored=1, now=True)  # nothing left to wait for
        cold_start(directory, stored=10)  # the folder made again by a new process
        owner.add(stored=2, now=True)
        owner.flush(sync=True)

    assert caplog.records == []
    assert reader_total(directory) == 10


def test_at_most_65_parsed_compacted_files_are_kept_then_the_cache_starts_again(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "_compacted_cache", {})
    sums = b'{"values":{"stored":1},"recent":[]}\n'
    paths = [compacted(tmp_path, sums, f"compacted-{n:03d}.totals") for n in range(66)]
    for path in paths[:65]:
        stats._load_compacted(path)
    assert len(stats._compacted_cache) == 65

    stats._load_compacted(paths[65])

    [(only, *_)] = stats._compacted_cache
    assert only == str(paths[65])


# When a compaction starts, and what it takes.


def test_one_file_exactly_twice_the_quiet_time_old_is_folded_alone(tmp_path):
    now = float(int(time.time()))
    path = cold_start(tmp_path, stored=4)
    age(path, 2 * ABSORB_AFTER_S, now=now)

    assert Counters(tmp_path).compact(now=now) == 1
    assert not path.exists()
    assert reader_total(tmp_path) == 4


def test_a_lone_compacted_file_is_not_rewritten_while_few_files_wait_for_a_batch(tmp_path):
    cold_start(tmp_path, stored=1)
    assert Counters(tmp_path).compact() == 1
    for _ in range(stats.MIN_BATCH - 1):
        cold_start(tmp_path, stored=1, ago=ABSORB_AFTER_S + 1)
    before = files(tmp_path)

    assert Counters(tmp_path).compact() == 0

    assert files(tmp_path) == before
    assert reader_total(tmp_path) == stats.MIN_BATCH


def test_a_name_leaves_the_skipped_names_once_recorded_recent_s_ago_and_its_record_stays(tmp_path):
    now = float(int(time.time()))
    records = {"edge.counters": [now - stats.RECENT_S, {"stored": 1}],
               "inside.counters": [now - stats.RECENT_S + 1, {"stored": 2}]}
    compacted(tmp_path, SUMS + b"\n" + orjson.dumps({"absorbed": records}), "compacted-1.totals")
    compacted(tmp_path, SUMS + b'\n{"absorbed":{}}', "compacted-2.totals")

    assert Counters(tmp_path).compact(now=now) == 0

    [name] = files(tmp_path)
    first, second = (orjson.loads(line) for line in (tmp_path / name).read_bytes().splitlines())
    assert first["recent"] == ["compacted-1.totals", "compacted-2.totals", "inside.counters"]
    assert sorted(second["absorbed"]) == [
        "compacted-1.totals", "compacted-2.totals", "edge.counters", "inside.counters"]


def test_leftover_claims_recorded_by_any_of_several_compacted_files_are_removed_not_counted_again(
        tmp_path):
    leftovers = []
    for i, stored in enumerate((5, 7)):
        path = cold_start(tmp_path, stored=stored)
        leftovers.append(path.rename(tmp_path / f"{path.name}{fold.CLAIM_MARK}stopped"))
        sums = {"values": {"stored": stored}, "recent": [path.name]}
        compacted(tmp_path, orjson.dumps(sums) + b'\n{"absorbed":{}}', f"compacted-{i}.totals")
    assert reader_total(tmp_path) == 12

    assert Counters(tmp_path).compact(now=time.time() + fold.CLAIM_STALE_S + 1) == 0

    assert not any(p.exists() for p in leftovers)
    assert [stats._is_compacted(n) for n in files(tmp_path)] == [True]
    assert reader_total(tmp_path) == 12


def test_a_compaction_claims_under_its_own_folder_id_and_takes_stale_claims_over_under_it(
        tmp_path, monkeypatch):
    for _ in range(3):
        cold_start(tmp_path, stored=2)
    ids = iter(["first", "second"])
    monkeypatch.setattr(fold, "folder_id", lambda: next(ids))
    monkeypatch.setattr(fold, "commit", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    suffixes = []
    for now in (time.time(), time.time() + fold.CLAIM_STALE_S + 1):  # the second takes the claims over
        with pytest.raises(OSError):
            Counters(tmp_path).compact(now=now)
        suffixes.append({n.partition(fold.CLAIM_MARK)[2] for n in files(tmp_path)})

    assert suffixes == [{"first"}, {"second"}]


def test_a_file_claimed_by_another_compaction_after_the_listing_does_not_stop_the_others(
        tmp_path, monkeypatch):
    for i in range(3):
        cold_start(tmp_path, stored=i + 1)
    real_scandir = os.scandir
    armed = [True]

    def one_claimed_after_listing(path):
        entries = sorted(real_scandir(path), key=lambda e: e.name)
        if armed and armed.pop():  # another compaction claims the first one listed
            os.rename(entries[0].path, f"{entries[0].path}{fold.CLAIM_MARK}other")
        return iter(entries)

    monkeypatch.setattr(os, "scandir", one_claimed_after_listing)
    assert Counters(tmp_path).compact() == 2
    monkeypatch.undo()

    assert reader_total(tmp_path) == 6  # the other compaction's claim still counts


def test_a_link_under_a_compacted_name_is_folded_as_nothing_and_removed(tmp_path):
    cold_start(tmp_path, stored=3)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.totals"
    elsewhere.write_bytes(b'{"values":{"stored":1000},"recent":[]}\n{"absorbed":{}}')
    (tmp_path / "compacted-link.totals").symlink_to(elsewhere)

    assert Counters(tmp_path).compact() == 1

    assert [stats._is_compacted(n) for n in files(tmp_path)] == [True]
    assert elsewhere.exists()
    assert reader_total(tmp_path) == 3
