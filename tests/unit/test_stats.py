from __future__ import annotations

import multiprocessing
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

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


def test_an_adopted_file_is_written_on_with_what_it_held_and_stays_the_only_file(tmp_path):
    first = Counters(tmp_path)
    first.add(stored=7)
    first.retire()
    second = Counters(tmp_path)

    second.add(sync=True, stored=1)
    assert on_disk(tmp_path) == 8  # what another process reads
    second.add(sync=True, stored=1)

    assert on_disk(tmp_path) == 9
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
        # Only this test's file: counters left by other tests may flush meanwhile.
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            writes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_pwrite)
    counters = Counters(tmp_path)
    for _ in range(1000):
        counters.add(stored=1)

    # The bound is generous for a loaded machine; what is checked is the number of writes.
    assert wait_for(lambda: on_disk(tmp_path) == 1000, within_s=20 * stats.FLUSH_INTERVAL_S)
    assert 1 <= len(writes) <= 2


def test_a_reader_in_the_same_process_sees_its_counts_at_once(tmp_path):
    counters = Counters(tmp_path)
    counters.add(stored=1)
    counters.flush()  # the flusher is now pausing: the next count waits for it
    counters.add(stored=2)

    assert counters.totals()["stored"] == 3


def test_adding_twice_adds_up(tmp_path):
    counters = Counters(tmp_path)
    counters.add(stored=2, storage_retries=1)
    counters.add(stored=3)
    counters.add(storage_retries=4, requests_rejected=1)

    totals = counters.totals()
    assert (totals["stored"], totals["storage_retries"], totals["requests_rejected"]) == (5, 5, 1)
    assert Counters(tmp_path).totals() == totals  # and the file on the volume says the same


def test_a_fresh_volume_counts_zero_for_every_counter(tmp_path):
    assert Counters(tmp_path / "missing").totals() == dict.fromkeys(COUNTERS, 0)
    assert Counters(tmp_path).totals() == dict.fromkeys(COUNTERS, 0)


def test_adding_nothing_writes_nothing(tmp_path):
    Counters(tmp_path / "counters").add(stored=0, dlq_purged=0)
    assert not (tmp_path / "counters").exists()


def test_the_counter_file_is_private_and_holds_every_counter(tmp_path):
    counters = Counters(tmp_path / "counters")
    counters.add(replay_failed=9, **{COUNTERS[-1]: 4}, now=True)  # the tenth and the last counter

    [path] = (tmp_path / "counters").iterdir()
    assert path.name.endswith(".counters")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "counters").stat().st_mode) == 0o700
    data = path.read_bytes()
    assert struct.unpack_from("<4sI", data) == (b"THC1", len(COUNTERS))
    assert len(data) == 8 + 8 * len(COUNTERS)
    values = list(struct.unpack_from(f"<{len(COUNTERS)}q", data, 8))
    assert values == [0] * 9 + [9] + [0] * (len(COUNTERS) - 11) + [4]


def test_counters_cannot_fail_a_request_and_still_count_in_this_process(tmp_path, monkeypatch):
    def read_only(path):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(stats, "private_dir", read_only)
    counters = Counters(tmp_path / "counters")

    counters.add(stored=3)
    counters.add(stored=1)

    assert counters.totals()["stored"] == 4


def test_an_unreadable_counters_directory_reads_as_this_process_alone(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")
    counters = Counters(blocked)

    counters.add(stored=3)

    assert counters.totals()["stored"] == 3


# -- totals while the folder changes ----------------------------------------------------------------

def listings(monkeypatch: pytest.MonkeyPatch, directory: Path,
             change: Callable[[int], None] = lambda n: None,
             gone: Sequence[os.DirEntry[str]] = ()) -> list[list[str]]:
    """Each listing of `directory` the counters make in this thread, by name; `change(n)` runs
    after listing n (from 1), before anything listed is read; `gone`: entries of files deleted
    since, listed first every time (the folder changes under every read). Other listings (the
    flusher thread's, other folders') pass."""
    made: list[list[str]] = []
    real_scandir = os.scandir
    me = threading.get_ident()

    def listing(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
        if Path(path) != directory or threading.get_ident() != me:
            return list(real_scandir(path))
        entries = [*gone, *sorted(real_scandir(path), key=lambda e: e.name)]
        made.append([e.name for e in entries])
        change(len(made))
        return entries

    monkeypatch.setattr(os, "scandir", listing)
    return made


def counters_file(values: list[int], count: int | None = None) -> bytes:
    n = len(values) if count is None else count
    return struct.pack("<4sI", b"THC1", n) + struct.pack(f"<{len(values)}q", *values)


def test_a_file_adopted_while_the_totals_are_read_is_read_again_under_its_new_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.retired").write_bytes(counters_file([4]))
    (tmp_path / "b.counters").write_bytes(counters_file([3]))

    def adopted(n: int) -> None:
        if n == 1:  # a starting process takes the retired file after the reader listed it
            os.rename(tmp_path / "a.retired", tmp_path / "c.counters")

    made = listings(monkeypatch, tmp_path, adopted)

    assert Counters(tmp_path).totals()["stored"] == 7
    assert made == [["a.retired", "b.counters"], ["b.counters", "c.counters"]]


def test_a_file_that_vanishes_under_every_read_is_left_out_after_four_reads_and_the_rest_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.counters").write_bytes(counters_file([4]))
    [gone] = os.scandir(tmp_path)
    os.unlink(gone.path)
    (tmp_path / "b.counters").write_bytes(counters_file([3]))
    (tmp_path / "c.retired").write_bytes(counters_file([2]))

    made = listings(monkeypatch, tmp_path, gone=[gone])

    assert Counters(tmp_path).totals()["stored"] == 5
    assert made == [["a.counters", "b.counters", "c.retired"]] * 5  # four reads, then a best effort


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


def test_a_file_from_a_newer_version_with_more_counters_reads_the_known_ones(tmp_path):
    values = list(range(1, len(COUNTERS) + 3))
    (tmp_path / "new.counters").write_bytes(struct.pack(f"<4sI{len(values)}q", b"THC1", len(values), *values))

    assert list(Counters(tmp_path).totals().values()) == values[: len(COUNTERS)]


def test_a_file_with_a_foreign_header_counts_as_zero(tmp_path):
    (tmp_path / "other.counters").write_bytes(struct.pack("<4sI2q", b"XXXX", 2, 10, 1))
    (tmp_path / "short.counters").write_bytes(struct.pack("<4sI2q", b"THC1", 5, 10, 1))
    assert Counters(tmp_path).totals()["stored"] == 0


def test_only_counter_files_are_read(tmp_path):
    (tmp_path / "stray.bin").write_bytes(struct.pack("<4sI1q", b"THC1", 1, 10))
    (tmp_path / "old.retired").write_bytes(struct.pack("<4sI1q", b"THC1", 1, 7))
    assert Counters(tmp_path).totals()["stored"] == 7


def test_a_restart_adopts_one_retired_file_and_leaves_the_others_for_the_next_process(tmp_path):
    running = [Counters(tmp_path), Counters(tmp_path)]
    for n, counters in enumerate(running, start=1):
        counters.add(stored=n, now=True)  # both files exist before either retires
    for counters in running:
        counters.retire()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".retired", ".retired"]

    third = Counters(tmp_path)
    third.add(dlq_deleted=1, now=True)

    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".counters", ".retired"]
    assert third.totals()["stored"] == 3
    own = next(tmp_path.glob("*.counters"))
    assert struct.unpack_from("<q", own.read_bytes(), 8)[0] in (1, 2)  # it counts on from one of them


def test_retiring_twice_or_before_any_count_is_harmless(tmp_path):
    Counters(tmp_path).retire()
    counters = Counters(tmp_path)
    counters.add(stored=1)
    counters.retire()
    counters.retire()
    assert [p.suffix for p in tmp_path.iterdir()] == [".retired"]


def test_a_process_that_exits_cleanly_retires_its_file(tmp_path):
    script = "import sys; from pathlib import Path; from telhawk_ingest.stats import Counters; " \
             "c = Counters(Path(sys.argv[1])); c.add(stored=5, now=True); c.add(stored=2)"
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env={**os.environ,
                   "PYTHONPATH": os.pathsep.join(sys.path)})

    [path] = tmp_path.iterdir()
    assert path.suffix == ".retired"
    assert Counters(tmp_path).totals()["stored"] == 7  # the count still pending at exit included


def test_a_counter_file_is_named_after_its_host_and_process(tmp_path):
    Counters(tmp_path).add(stored=1, now=True)

    [path] = tmp_path.iterdir()
    host = re.escape(socket.gethostname())
    assert re.fullmatch(rf"{host}-{os.getpid()}-[0-9a-f]{{8}}\.counters", path.name)


def test_a_retired_file_another_process_adopts_first_is_skipped_for_the_next(tmp_path, monkeypatch):
    running = [Counters(tmp_path), Counters(tmp_path)]
    for n, counters in enumerate(running, start=1):
        counters.add(stored=n * 10, now=True)
    for counters in running:
        counters.retire()
    first = sorted(tmp_path.glob("*.retired"))[0]
    real_rename = os.rename

    def raced(src, dst):
        if src == first:
            raise FileNotFoundError(2, "adopted by another process")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", raced)
    third = Counters(tmp_path)
    third.add(dlq_deleted=1, now=True)

    assert first.exists()
    own = next(tmp_path.glob("*.counters"))
    assert struct.unpack_from("<q", own.read_bytes(), 8)[0] == 30 - struct.unpack_from(
        "<q", first.read_bytes(), 8)[0]


def test_the_counters_keep_their_order_since_files_on_the_volume_are_read_by_position():
    # New counters are appended after these, never inserted among them.
    assert COUNTERS == (
        "stored", "dlq_normalization_failed", "dlq_validation_failed", "dlq_storage_failed",
        "storage_retries", "requests_rejected", "dlq_purged", "dlq_deleted", "replay_stored", "replay_failed",
        "dlq_files_admitted", "dlq_bytes_admitted", "dlq_files_written", "dlq_bytes_written",
        "dlq_files_returned", "dlq_bytes_returned", "dlq_dropped", "dlq_expired", "stored_first_try",
        "stored_via_pubsub", "stored_via_sqs",
        "stored_via_kinesis", "stored_via_schedule",
        "stored_first_try_via_pubsub", "stored_first_try_via_sqs",
        "stored_first_try_via_kinesis", "stored_first_try_via_schedule",
        "dlq_normalization_failed_via_pubsub", "dlq_normalization_failed_via_sqs",
        "dlq_normalization_failed_via_kinesis", "dlq_normalization_failed_via_schedule",
        "dlq_validation_failed_via_pubsub", "dlq_validation_failed_via_sqs",
        "dlq_validation_failed_via_kinesis", "dlq_validation_failed_via_schedule",
        "dlq_storage_failed_via_pubsub", "dlq_storage_failed_via_sqs",
        "dlq_storage_failed_via_kinesis", "dlq_storage_failed_via_schedule",
        "requests_shed", "requests_rate_limited",
        "dlq_decode_failed", "dlq_decode_failed_via_pubsub", "dlq_decode_failed_via_sqs",
        "dlq_decode_failed_via_kinesis", "dlq_decode_failed_via_schedule",
        "trigger_pubsub_failures", "trigger_sqs_failures", "trigger_kinesis_failures",
        "trigger_schedule_runs", "trigger_schedule_failures",
    )


def test_each_event_driven_trigger_has_a_copy_of_a_counter_named_after_it_in_trigger_order():
    assert stats.by_trigger("stored") == (
        "stored_via_pubsub", "stored_via_sqs", "stored_via_kinesis", "stored_via_schedule",
    )
    assert stats.by_trigger("new_counter") == tuple(f"new_counter_via_{t}" for t in stats.TRIGGERS[1:])


def test_a_forked_child_starts_from_zero_in_a_file_of_its_own(tmp_path, monkeypatch):
    parent = Counters(tmp_path)
    parent.add(stored=3, now=True)
    assert parent._path is not None
    parents_file = parent._path
    # What os.register_at_fork runs in a child, here on this test's Counters only.
    monkeypatch.setattr(stats, "_live", weakref.WeakSet([parent]))
    monkeypatch.setattr(stats, "_flusher", stats._Flusher())

    stats._after_fork_in_child()
    parent.add(stored=2, now=True)  # the child's counts

    assert parent.directory == tmp_path
    assert parent._path is not None and parent._path != parents_file
    assert struct.unpack_from("<q", parents_file.read_bytes(), 8)[0] == 3
    assert struct.unpack_from("<q", parent._path.read_bytes(), 8)[0] == 2
    assert Counters(tmp_path).totals()["stored"] == 5
