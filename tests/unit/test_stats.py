from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import time
from pathlib import Path

from telhawk_ingest import stats
from telhawk_ingest.stats import COUNTERS, Counters


def test_counters_of_several_instances_on_one_volume_add_up(tmp_path):
    a, b = Counters(tmp_path), Counters(tmp_path)
    a.add(stored=3, dlq_storage_failed=1)
    b.add(stored=2)

    totals = Counters(tmp_path).totals()
    assert totals["stored"] == 5 and totals["dlq_storage_failed"] == 1


def test_counters_survive_a_restart_and_the_next_process_adopts_the_file(tmp_path):
    first = Counters(tmp_path)
    first.add(stored=7)
    first.retire()

    second = Counters(tmp_path)
    second.add(stored=1)

    assert second.totals()["stored"] == 8
    assert len(list(tmp_path.iterdir())) == 1


def test_a_crashed_process_file_still_counts(tmp_path):
    crashed = Counters(tmp_path)
    crashed.add(dlq_validation_failed=4)
    # no retire(): the process died
    assert Counters(tmp_path).totals()["dlq_validation_failed"] == 4


def test_a_file_from_an_older_version_with_fewer_counters_still_reads(tmp_path):
    (tmp_path / "old.counters").write_bytes(struct.pack("<4sI2q", b"THC1", 2, 10, 1))
    totals = Counters(tmp_path).totals()
    assert totals["stored"] == 10 and totals[COUNTERS[1]] == 1 and totals[COUNTERS[-1]] == 0


def test_garbage_in_the_counters_directory_counts_as_zero(tmp_path):
    (tmp_path / "junk.counters").write_bytes(b"xx")
    assert Counters(tmp_path).totals()["stored"] == 0


# -- batched writes ---------------------------------------------------------------------------------

def wait_for(predicate, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def on_disk(directory) -> int:
    """What another process would read: the files alone, without this process's pending counts."""
    return sum(stats._read(p)[0] for p in directory.iterdir())


def test_a_burst_of_counts_is_written_in_at_most_two_writes_and_reaches_the_file(tmp_path, monkeypatch):
    writes = []
    real_pwrite = os.pwrite

    def counting_pwrite(fd, data, offset):
        writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    counters = Counters(tmp_path)
    for _ in range(1000):
        counters.add(stored=1)

    assert wait_for(lambda: on_disk(tmp_path) == 1000, within_s=4 * stats.FLUSH_INTERVAL_S)
    assert 1 <= len(writes) <= 2


def test_a_reader_in_the_same_process_sees_its_counts_at_once(tmp_path):
    counters = Counters(tmp_path)
    counters.add(stored=1)
    counters.flush()  # the flusher is now pausing: the next count waits for it
    counters.add(stored=2)

    assert counters.totals()["stored"] == 3


def _child(directory: str, kill: bool) -> None:
    counters = Counters(Path(directory))
    counters.add(stored=5)
    assert wait_for(lambda: on_disk(Path(directory)) == 5)
    counters.add(stored=7)  # within the flusher's pause: still pending
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    stats.retire_all()
    os._exit(0)


def run_child(directory, kill: bool) -> int:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(str(directory), kill))
    process.start()
    process.join(timeout=10)
    return process.exitcode


def test_sigkill_loses_at_most_the_counts_of_the_last_interval(tmp_path):
    assert run_child(tmp_path, kill=True) == -signal.SIGKILL

    assert Counters(tmp_path).totals()["stored"] == 5


def test_a_clean_shutdown_loses_nothing(tmp_path):
    assert run_child(tmp_path, kill=False) == 0

    assert Counters(tmp_path).totals()["stored"] == 12
    assert [p.suffix for p in tmp_path.iterdir()] == [".retired"]
