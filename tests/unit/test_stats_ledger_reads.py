"""Counters as the DLQ's ledger reads them: written at once (`now`), fsync'd (`sync`), and read file by
file (`snapshot`); and the size a counters file may have. Real files on a temporary volume."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telhawk_ingest import stats
from telhawk_ingest.stats import COUNTERS, Counters
from tests.unit.test_stats import counters_file, wait_for


def file_values(directory: Path) -> dict[str, list[int]]:
    """Each counters file's values as another process reads them (no pending counts)."""
    return {p.name: stats._read(p) for p in sorted(directory.iterdir())}


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The files under the test's tmp_path fsync'd during the test, by name. Counters of earlier
    tests in this process stay open (their clean-shutdown hook holds them) and the flusher thread
    may fsync them meanwhile: those are not the test's."""
    done: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(f"{tmp_path}{os.sep}"):
            done.append(os.path.basename(path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return done


def unattended(directory: Path) -> Counters:
    """Counters the flusher thread leaves alone (it flushes every Counters of the process whenever
    it wakes): each write and fsync of its file is then the test's own."""
    counters = Counters(directory)
    stats._live.discard(counters)
    return counters


def test_now_writes_the_count_before_returning_so_other_processes_see_it(tmp_path, fsyncs):
    counters = unattended(tmp_path)
    counters.add(stored=1)
    counters.flush()  # a plain flush writes, without an fsync
    counters.add(now=True, dlq_files_admitted=2, dlq_bytes_admitted=300)

    [values] = file_values(tmp_path).values()
    assert values[COUNTERS.index("stored")] == 1
    assert values[COUNTERS.index("dlq_files_admitted")] == 2
    assert values[COUNTERS.index("dlq_bytes_admitted")] == 300
    assert fsyncs == []  # written, not fsync'd


def test_sync_writes_and_fsyncs_the_counters_file(tmp_path, fsyncs):
    counters = Counters(tmp_path)
    counters.add(sync=True, dlq_files_written=1)

    [(name, values)] = file_values(tmp_path).items()
    assert values[COUNTERS.index("dlq_files_written")] == 1
    assert fsyncs == [name]


def test_a_flush_with_sync_fsyncs_even_what_was_already_written(tmp_path, fsyncs):
    counters = unattended(tmp_path)
    counters.add(now=True, stored=4)
    assert fsyncs == []

    counters.flush(sync=True)

    assert fsyncs == [f"{next(iter(file_values(tmp_path)))}"]


def test_retiring_fsyncs_the_file_before_handing_it_over(tmp_path, fsyncs):
    counters = unattended(tmp_path)
    counters.add(now=True, stored=4)  # written, not fsync'd
    assert counters._path is not None
    name = counters._path.name

    counters.retire()

    assert fsyncs == [name]
    [(retired, values)] = file_values(tmp_path).items()
    assert (retired, values[COUNTERS.index("stored")]) == (name.removesuffix(".counters") + ".retired", 4)


def test_a_flush_with_sync_after_one_with_nothing_new_fsyncs_nothing(tmp_path, fsyncs):
    counters = unattended(tmp_path)
    counters.add(sync=True, stored=4)

    counters.flush(sync=True)
    counters.flush(sync=True)

    assert len(fsyncs) == 1


def test_the_flusher_round_writes_and_fsyncs_every_counters_file_of_the_process(tmp_path, fsyncs):
    counters = Counters(tmp_path)
    counters.add(now=True, stored=4)  # written, not fsync'd

    stats.flush_all()

    assert counters._path is not None
    assert fsyncs == [counters._path.name]


def test_a_flush_with_sync_before_any_count_creates_no_file(tmp_path, fsyncs):
    Counters(tmp_path).flush(sync=True)

    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []
    assert fsyncs == []


def test_a_snapshot_gives_this_process_under_no_name_and_every_other_file_by_name(tmp_path):
    other = Counters(tmp_path)
    other.add(now=True, stored=5)
    other_name = next(iter(file_values(tmp_path)))
    mine = Counters(tmp_path)
    mine.add(now=True, stored=3, dlq_purged=1)
    (tmp_path / "old.retired").write_bytes(counters_file([2, 1]))  # retired since: not adopted
    (tmp_path / "notes.txt").write_bytes(counters_file([100]))
    os.symlink(tmp_path / "old.retired", tmp_path / "link.counters")
    os.mkfifo(tmp_path / "fifo.counters")
    (tmp_path / "dir.counters").mkdir()
    mine.add(stored=1)  # pending: the snapshot still has it

    snap = mine.snapshot()

    assert sorted(snap) == sorted(["", other_name, "old.retired"])
    own = [0] * len(COUNTERS)
    own[COUNTERS.index("stored")], own[COUNTERS.index("dlq_purged")] = 4, 1
    assert snap[""][1] == own
    assert snap[other_name][1][:2] == [5, 0]
    assert snap["old.retired"][1] == [2, 1] + [0] * (len(COUNTERS) - 2)
    assert snap["old.retired"][0] == pytest.approx(os.stat(tmp_path / "old.retired").st_mtime)
    assert mine.totals()["stored"] == 5 + 2 + 4


def test_a_snapshot_reads_a_counters_file_over_the_size_cap_as_zeros(tmp_path):
    (tmp_path / "big.counters").write_bytes(counters_file([7]) + b"\0" * stats.MAX_FILE_BYTES)

    snap = Counters(tmp_path).snapshot()

    assert snap["big.counters"][1] == [0] * len(COUNTERS)


def test_a_snapshot_before_this_process_has_a_file_lists_its_counts_under_no_name(tmp_path):
    counters = Counters(tmp_path / "not-yet")

    snap = counters.snapshot()

    assert list(snap) == [""]
    assert snap[""][1] == [0] * len(COUNTERS)


def test_a_counters_file_of_up_to_4096_bytes_counts_and_a_larger_one_counts_zero(tmp_path):
    assert stats.MAX_FILE_BYTES == 4096
    (tmp_path / "a.counters").write_bytes(counters_file([7] + [0] * 510))  # 8 + 511 * 8 = 4096 bytes
    (tmp_path / "b.counters").write_bytes(counters_file([9] + [0] * 511))  # 4104 bytes: not ours

    totals = Counters(tmp_path).totals()

    assert totals["stored"] == 7


def test_an_adopted_retired_file_of_4096_bytes_counts_on(tmp_path):
    (tmp_path / "full.retired").write_bytes(counters_file([7] + [0] * 510))  # 4096 bytes
    counters = Counters(tmp_path)
    counters.add(now=True, stored=1)

    assert [p.suffix for p in tmp_path.iterdir()] == [".counters"]
    assert counters.totals()["stored"] == 8


def test_an_adopted_retired_file_over_the_size_limit_counts_from_zero(tmp_path):
    (tmp_path / "big.retired").write_bytes(counters_file([9] + [0] * 511))
    counters = Counters(tmp_path)
    counters.add(now=True, stored=1)

    assert [p.suffix for p in tmp_path.iterdir()] == [".counters"]
    assert counters.totals()["stored"] == 1


def test_the_flush_interval_is_half_a_second():
    assert stats.FLUSH_INTERVAL_S == 0.5


# -- the flusher thread, started afresh here (as in a new process) --------------------------------------


def flushers() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "counters-flusher" and t.is_alive()]


@pytest.fixture
def fresh_flusher(monkeypatch: pytest.MonkeyPatch):
    """A flusher that has not started yet, as in a process that has not counted anything."""
    flusher = stats._Flusher()
    monkeypatch.setattr(stats, "_flusher", flusher)
    return flusher


def stored_on_disk(directory: Path) -> int:
    return sum(values[0] for values in file_values(directory).values())


def test_one_daemon_flusher_thread_writes_every_later_count_within_its_interval(tmp_path, fresh_flusher):
    before = len(flushers())
    counters = Counters(tmp_path)

    counters.add(stored=1)
    assert wait_for(lambda: stored_on_disk(tmp_path) == 1, within_s=4 * stats.FLUSH_INTERVAL_S)
    for _ in range(3):
        counters.add(stored=1)
    assert wait_for(lambda: stored_on_disk(tmp_path) == 4, within_s=4 * stats.FLUSH_INTERVAL_S)

    started = flushers()
    assert len(started) == before + 1  # one thread however many counts
    assert all(t.daemon for t in started)  # never keeps a process from exiting


def test_a_process_with_pid_1_still_starts_its_flusher(tmp_path, monkeypatch, fresh_flusher):
    monkeypatch.setattr(os, "getpid", lambda: 1)  # the service as a container's init process
    counters = Counters(tmp_path)

    counters.add(stored=2)

    assert wait_for(lambda: stored_on_disk(tmp_path) == 2, within_s=4 * stats.FLUSH_INTERVAL_S)


def test_retire_all_writes_pending_counts_and_hands_every_file_over(tmp_path, monkeypatch):
    import weakref

    monkeypatch.setattr(stats, "_live", weakref.WeakSet())  # other tests' counters stay as they are
    first, second = Counters(tmp_path / "a"), Counters(tmp_path / "b")
    first.add(now=True, stored=1)
    second.add(now=True, stored=2)
    first.add(stored=5)  # pending

    stats.retire_all()

    for directory, expected in ((tmp_path / "a", 6), (tmp_path / "b", 2)):
        [(name, values)] = file_values(directory).items()
        assert name.endswith(".retired")
        assert values[0] == expected


def test_a_file_adopted_while_the_directory_is_read_is_skipped_and_the_rest_count(tmp_path, monkeypatch):
    (tmp_path / "a.retired").write_bytes(counters_file([4]))
    (tmp_path / "b.counters").write_bytes(counters_file([3]))
    mine = Counters(tmp_path / "elsewhere")
    mine.directory = tmp_path  # reads the volume without having opened a file of its own there
    real_scandir = os.scandir

    def adopted_meanwhile(path):
        entries = sorted(real_scandir(path), key=lambda e: e.name)
        os.unlink(entries[0].path)  # renamed by a starting process after the listing
        return entries

    monkeypatch.setattr(os, "scandir", adopted_meanwhile)

    snap = mine.snapshot()

    assert sorted(snap) == ["", "b.counters"]
    assert snap["b.counters"][1][0] == 3
