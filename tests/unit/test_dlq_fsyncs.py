"""Which fsyncs a dead letter waits for (SPEC §2, §7): its entry file's and one of its directory that
began after its rename, shared with the other threads writing at that moment; its admission in the
ledger only where other hosts read the ledger. Real files, real fsyncs, real processes; the
filesystem type comes from a mountinfo written by the test."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from telhawk_ingest import files
from telhawk_ingest.files import one_kernel
from telhawk_ingest.stats import Counters
from tests.unit.test_dir_sync import first_then_rest
from tests.unit.test_dlq import PROCESSES, hammer, limited, record

WAIT_S = 10.0


def mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str | None) -> None:
    """Make every path look as if on a filesystem of `fstype` (None: no mountinfo to read)."""
    path = tmp_path / "mountinfo"
    if fstype is not None:
        path.write_text(f"27 1 254:0 / / rw,relatime shared:1 - {fstype} /dev/vda rw\n")
    monkeypatch.setattr(files, "MOUNTINFO", path)


class Fsyncs:
    """The calling thread's fsyncs (which file) and the ledger's snapshots, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_snapshot = os.fsync, Counters.snapshot
        me = threading.get_ident()

        def fsync(fd: int) -> None:
            if threading.get_ident() == me:
                self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def snapshot(counters: Counters) -> dict:
            if threading.get_ident() == me:
                self.events.append(("snapshot", ""))
            return real_snapshot(counters)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(Counters, "snapshot", snapshot)

    def of_ledger(self, ledger: Path) -> list[int]:
        """Positions of fsyncs of files in the ledger's folder."""
        return [i for i, (kind, path) in enumerate(self.events)
                if kind == "fsync" and Path(path).parent == ledger]


def refusal_elsewhere(base: Path, ledger: Path, cap: int, files_wanted: int,
                      answers: multiprocessing.Queue) -> None:
    """Another process on this host: what its DLQ says of `files_wanted` more entries."""
    answers.put(limited(base, Counters(ledger), max_pending_files=cap).refusal(files_wanted))


def test_on_one_kernel_an_admission_waits_for_no_fsync_and_another_process_counts_it_at_once(
        tmp_path, monkeypatch):
    mountinfo(tmp_path, monkeypatch, "ext4")
    ledger = tmp_path / "dlq" / ".state" / "counters"
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=4)
    fsyncs = Fsyncs(monkeypatch)
    ctx = multiprocessing.get_context("fork")
    answers = ctx.Queue()

    with here.reserve([record(1), record(2), record(3)]) as held:
        assert fsyncs.of_ledger(ledger) == []
        other = ctx.Process(target=refusal_elsewhere, args=(tmp_path / "dlq", ledger, 4, 2, answers))
        other.start()
        answer = answers.get(timeout=WAIT_S * 3)
        other.join(WAIT_S)
        assert held.files == 3

    assert answer is not None and "(3 pending, 2 more)" in answer
    assert os.listdir(tmp_path / "dlq") == [".state"]  # nothing written: the 3 were given back


@pytest.mark.parametrize("fstype", ["nfs4", "fuse.gcsfuse", "cifs", "something-new", None])
def test_where_other_hosts_may_read_the_ledger_an_admission_is_fsynced_before_the_limits_are_read(
        tmp_path, monkeypatch, fstype):
    mountinfo(tmp_path, monkeypatch, fstype)
    ledger = tmp_path / "dlq" / ".state" / "counters"
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=4)
    fsyncs = Fsyncs(monkeypatch)

    with here.reserve([record(1)]):
        synced = fsyncs.of_ledger(ledger)
        snapshots = [i for i, (kind, _) in enumerate(fsyncs.events) if kind == "snapshot"]
        assert synced and snapshots
        assert synced[0] < snapshots[0]


@pytest.mark.parametrize(("dlq_type", "ledger_type"), [("ext4", "nfs4"), ("nfs4", "ext4")])
def test_a_ledger_or_a_dlq_on_a_shared_filesystem_has_admissions_fsynced(tmp_path, monkeypatch, dlq_type,
                                                                          ledger_type):
    """Either folder being readable from other hosts is enough (each is looked up on its own)."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    info = tmp_path / "mountinfo"
    info.write_text(f"27 1 254:0 / / rw,relatime shared:1 - {dlq_type} /dev/vda rw\n"
                    f"28 27 0:50 / {ledger} rw,relatime shared:2 - {ledger_type} server:/x rw\n")
    monkeypatch.setattr(files, "MOUNTINFO", info)
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=4)
    fsyncs = Fsyncs(monkeypatch)

    with here.reserve([record(1)]):
        assert fsyncs.of_ledger(ledger)


@pytest.mark.parametrize(("fstype", "admissions_synced"), [("ext4", 0), ("nfs4", 2)])
def test_the_ledger_is_fsynced_for_admissions_only_never_for_a_write_or_a_give_back(tmp_path, monkeypatch,
                                                                                  fstype, admissions_synced):
    """Written and given-back counts not yet on other hosts only make them count high (`_unlisted`)."""
    mountinfo(tmp_path, monkeypatch, fstype)
    ledger = tmp_path / "dlq" / ".state" / "counters"
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=4)
    fsyncs = Fsyncs(monkeypatch)

    [written] = here.write_many([record(1)])
    with here.reserve([record(2)]):
        pass  # given back unwritten

    assert len(fsyncs.of_ledger(ledger)) == admissions_synced
    assert ("fsync", str(tmp_path / "dlq" / f".tmp-{written}")) in fsyncs.events


def test_without_limits_no_admission_is_fsynced_anywhere(tmp_path, monkeypatch):
    mountinfo(tmp_path, monkeypatch, "nfs4")
    ledger = tmp_path / "dlq" / ".state" / "counters"
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=0, max_pending_bytes=0)
    fsyncs = Fsyncs(monkeypatch)

    with here.reserve([record(1)]):
        assert fsyncs.of_ledger(ledger) == []


def test_removing_and_purging_entries_fsyncs_the_directory_unless_told_not_to(tmp_path, monkeypatch):
    dlq = limited(tmp_path / "dlq")
    ids = dlq.write_many([record(1), record(2)])
    fsyncs = Fsyncs(monkeypatch)

    assert dlq.remove(ids[:1], sync=False) == ids[:1]
    assert fsyncs.events == []
    assert dlq.remove(ids) == ids[1:]
    assert fsyncs.events == [("fsync", str(dlq.path))]
    assert dlq.remove(ids) == []  # nothing removed: nothing to make durable
    assert fsyncs.events == [("fsync", str(dlq.path))]

    dlq.write(record(3))
    fsyncs.events.clear()
    assert dlq.purge() == 1
    assert fsyncs.events == [("fsync", str(dlq.path))]


def test_a_limit_raised_at_run_time_fsyncs_admissions_from_then_on(tmp_path, monkeypatch):
    mountinfo(tmp_path, monkeypatch, "nfs4")
    ledger = tmp_path / "dlq" / ".state" / "counters"
    here = limited(tmp_path / "dlq", Counters(ledger), max_pending_files=0, max_pending_bytes=0)
    here.max_pending_files = 10
    fsyncs = Fsyncs(monkeypatch)

    with here.reserve([record(1)]):
        assert fsyncs.of_ledger(ledger)


@pytest.mark.parametrize("fstype", ["ext4", "nfs4"])
@pytest.mark.parametrize("cap", [10, 50])
def test_processes_at_the_cap_never_pass_it_with_admissions_fsynced_or_not(tmp_path, monkeypatch, fstype,
                                                                          cap):
    mountinfo(tmp_path, monkeypatch, fstype)  # forked writers inherit it
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    base = tmp_path / "dlq"
    limited(base)
    procs = [ctx.Process(target=hammer, args=(base, cap, start, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)

    on_disk = len(list(base.glob("failed_*.json")))
    assert on_disk == sum(o[0] for o in outcomes)  # every write that answered success is there
    assert cap - 3 < on_disk <= cap


@pytest.mark.parametrize(
    ("fstype", "expected"),
    [("ext4", True), ("xfs", True), ("tmpfs", True), ("overlay", True), ("btrfs", True),
     ("nfs", False), ("nfs4", False), ("cifs", False), ("fuse.s3fs", False), ("9p", False),
     ("virtiofs", False), ("gfs2", False), ("", False)],
)
def test_one_kernel_filesystems_are_the_local_ones_and_anything_else_counts_as_shared(
        tmp_path, fstype, expected):
    info = tmp_path / "mountinfo"
    info.write_text(f"27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 0:50 / /data rw - {fstype} x rw\n")

    assert one_kernel(Path("/data/telhawk/dlq"), info) is expected
    assert one_kernel(Path("/var/lib/telhawk/dlq"), info) is True
    assert one_kernel(Path("/data"), tmp_path / "no-mountinfo") is False


def test_one_kernel_follows_symbolic_links_to_where_the_files_really_are(tmp_path):
    info = tmp_path / "mountinfo"
    share = tmp_path / "share"
    share.mkdir()
    info.write_text(f"27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 0:50 / {share} rw - nfs4 srv:/ rw\n")
    (tmp_path / "dlq").symlink_to(share)

    assert one_kernel(tmp_path / "dlq", info) is False


# -- threads writing at once share directory fsyncs ---------------------------------------------------


class DiskOrder:
    """Numbers, across threads, fsync starts and ends (by inode) and renames (by the inode named)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold_first_dir_fsync_for: tuple[object, int]) -> None:
        self.events: list[tuple[int, str, int]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        real_fsync, real_replace = os.fsync, os.replace
        sync, waiting = hold_first_dir_fsync_for
        held = [False]

        def note(kind: str, inode: int) -> int:
            with self._lock:
                seq = next(self._seq)
                self.events.append((seq, kind, inode))
                return seq

        def fsync(fd: int) -> None:
            inode = os.fstat(fd).st_ino
            is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
            note("dir fsync start" if is_dir else "fsync start", inode)
            if is_dir and not held[0]:
                held[0] = True
                until = time.monotonic() + WAIT_S  # bounded: without sharing, the others never wait
                while len(sync._cond._waiters) < waiting and time.monotonic() < until:  # type: ignore[attr-defined]
                    threading.Event().wait(0.001)
            real_fsync(fd)
            note("dir fsync end" if is_dir else "fsync end", inode)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            inode = os.stat(src).st_ino
            real_replace(src, dst)
            note("rename", inode)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        self.note = note

    def seqs(self, kind: str, inode: int | None = None) -> list[int]:
        return [s for s, k, i in self.events if k == kind and (inode is None or i == inode)]


def test_threads_dead_lettering_at_once_share_directory_fsyncs_each_begun_after_its_rename(tmp_path,
                                                                                           monkeypatch):
    writers = 8
    dlq = limited(tmp_path / "dlq")
    directory = dlq.path.stat().st_ino
    order = DiskOrder(monkeypatch, (dlq._dir_sync, writers - 1))
    answered: dict[int, tuple[str, int]] = {}

    def write(n: int) -> None:
        entry_id = dlq.write(record(n))
        answered[n] = (entry_id, order.note("answer", n))

    first_then_rest(write, writers, lambda: bool(order.seqs("dir fsync start")))

    assert len(answered) == writers
    starts, ends = order.seqs("dir fsync start", directory), order.seqs("dir fsync end", directory)
    assert len(starts) == 2  # one per write before
    for entry_id, answer in answered.values():
        inode = (dlq.path / f"{entry_id}.json").stat().st_ino
        renamed = order.seqs("rename", inode)[0]
        assert order.seqs("fsync end", inode)[0] < renamed  # its data before its name
        assert any(renamed < s < e < answer for s, e in zip(starts, ends, strict=True)), entry_id
    assert sorted(os.listdir(dlq.path)) == sorted(f"{i}.json" for i, _ in answered.values())


def test_one_kernel_reads_a_mountinfo_with_a_mount_point_that_is_not_utf8(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_bytes(b"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                     b"41 27 0:51 / /m\xe9dia rw - nfs4 srv:/x rw\n"  # a Latin-1 name, as the kernel gives it
                     b"40 27 0:50 / /data rw - nfs4 srv:/y rw\n")

    assert one_kernel(Path("/var/lib/telhawk/dlq"), info) is True
    assert one_kernel(Path("/data/telhawk/dlq"), info) is False
