"""Counters shared by every instance on the DLQ volume and kept across restarts (SPEC §8, §11).

Each process owns one small binary file under `<dlq.base_path>/.state/counters/` and rewrites
it in place with a single pwrite: no locks between processes (NFS and bucket mounts make file
locks unreliable). A reader sums every file.

Writes are batched: a change is written by the process's flusher thread, at once when nothing
was written in the last FLUSH_INTERVAL_S seconds, else at the end of that interval, so a
process writes its file at most twice a second however many requests it serves. Other
processes therefore see a count up to FLUSH_INTERVAL_S late (plus the time of one write); a
reader in the same process writes its own pending counts first and sees them at once. A clean
shutdown (`retire`, `retire_all`) loses nothing; a process killed outright (SIGKILL, out of
memory) loses what it counted in its last interval at most, never what it had written, since the
page cache holds every write.

A process that exits cleanly renames its file to `*.retired`; the next process to start adopts
one retired file as its own and counts on from its values, so the number of files stays near the
number of live processes. Not here: the health and metrics documents built from these numbers
(service.py).
"""

from __future__ import annotations

import atexit
import os
import socket
import struct
import threading
import time
import uuid
import weakref
from pathlib import Path

from .files import private_dir

# Append only: a file records how many counters it holds, so files written by an older version,
# with fewer counters, still read correctly.
COUNTERS = (
    "stored",
    "dlq_normalization_failed",
    "dlq_validation_failed",
    "dlq_storage_failed",
    "storage_retries",
    "requests_rejected",
    "dlq_purged",
    "dlq_deleted",
    "replay_stored",
    "replay_failed",
    # The DLQ's ledger (dlq.py), for its limits across processes: entry files and bytes admitted
    # (recorded before the limits are checked), written, and returned (admitted, then not written).
    "dlq_files_admitted",
    "dlq_bytes_admitted",
    "dlq_files_written",
    "dlq_bytes_written",
    "dlq_files_returned",
    "dlq_bytes_returned",
)
# Where each counter is in COUNTERS (and in a file).
_INDEX = {name: index for index, name in enumerate(COUNTERS)}
_MAGIC = b"THC1"
# A process writes its counters file at most this often (seconds): the lag other readers see.
FLUSH_INTERVAL_S = 0.5
_HEADER = struct.Struct("<4sI")


class Counters:
    """This process's counters, mirrored to its own file on the shared volume. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._values = [0] * len(COUNTERS)
        self._dirty = False
        self._fd: int | None = None
        self._path: Path | None = None
        _live.add(self)

    def _open(self) -> int:
        """Open (or adopt) this process's file on first use, after any fork."""
        if self._fd is not None:
            return self._fd
        private_dir(self.directory)
        self._path = self.directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.counters"
        for retired in sorted(self.directory.glob("*.retired")):
            try:
                os.rename(retired, self._path)  # only one process wins each retired file
            except OSError:
                continue
            self._values = [a + b for a, b in zip(self._values, _read(self._path), strict=True)]
            break
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        atexit.register(self.retire)
        return self._fd

    def add(self, now: bool = False, sync: bool = False, **deltas: int) -> None:
        """Count; the file is written by the flusher thread within FLUSH_INTERVAL_S. `now`: write
        it before returning, so other processes see the change at once; `sync` (implies `now`):
        fsync it too, so other hosts on a network volume see it on their next open (NFS
        close-to-open). The DLQ's ledger relies on both (dlq.py)."""
        changes = [(_INDEX[name], delta) for name, delta in deltas.items() if delta]
        if not changes:
            return
        with self._lock:
            for index, delta in changes:
                self._values[index] += delta
            self._dirty = True
        if now or sync:
            self.flush(sync=sync)
        else:
            _flusher.wake()

    def flush(self, sync: bool = False) -> None:
        """Write pending counts to this process's file now: one pwrite, and an fsync when `sync`
        (even when the flusher thread wrote them a moment ago without one)."""
        with self._lock:
            if not self._dirty and not (sync and self._fd is not None):
                return
            try:
                fd = self._open()
                if self._dirty:
                    os.pwrite(fd, _HEADER.pack(_MAGIC, len(self._values)) + struct.pack(
                        f"<{len(self._values)}q", *self._values), 0)
                    self._dirty = False
                if sync:
                    os.fsync(fd)
            except OSError:
                # Counters are observability, not data: never fail a request over them. The
                # counts stay pending and the next change tries again.
                return

    def retire(self) -> None:
        """Write pending counts and hand the file over to the next process (clean shutdown)."""
        self.flush()
        with self._lock:
            if self._fd is None or self._path is None:
                return
            os.close(self._fd)
            self._fd = None
            try:
                os.rename(self._path, self._path.with_suffix(".retired"))
            except OSError:
                pass

    def totals(self) -> dict[str, int]:
        """Every instance's counters summed, this one's included (its pending counts written first)."""
        flush_all()
        sums = [0] * len(COUNTERS)
        for _mtime, values in self.snapshot().values():
            for i, value in enumerate(values):
                sums[i] += value
        return dict(zip(COUNTERS, sums, strict=True))

    def snapshot(self) -> dict[str, tuple[float, list[int]]]:
        """Each file's last change (unix seconds) and values (COUNTERS order), by file name. This
        process's own values come from memory, counts the flusher has not written yet included,
        always under "" (so a reader comparing two snapshots sees one name for them, before and
        after the file is created). A file adopted (renamed) while being read may show under both
        names or neither: a reader that must never count low compares file by file (dlq.py does)."""
        out: dict[str, tuple[float, list[int]]] = {}
        with self._lock:
            own = "" if self._path is None else self._path.name
            out[""] = (time.time(), list(self._values))
        try:
            files = list(os.scandir(self.directory))
        except FileNotFoundError:
            files = []
        for entry in files:
            if entry.name.endswith((".counters", ".retired")) and entry.name != own:  # own: from memory
                try:
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue  # adopted under another name since the listing
                out[entry.name] = (mtime, _read(Path(entry.path)))
        return out


# Every Counters of this process, for flush_all and retire_all.
_live: weakref.WeakSet[Counters] = weakref.WeakSet()


def flush_all() -> None:
    """Write the pending counts of every Counters in this process (Lambda: after each invocation)."""
    for counters in list(_live):
        counters.flush()


def retire_all() -> None:
    """Clean shutdown of this process's counters: write everything, hand the files over."""
    for counters in list(_live):
        counters.retire()


class _Flusher:
    """The process's one flusher thread: writes pending counts at most every FLUSH_INTERVAL_S.

    Started on first use in each process (a thread does not survive a fork). It waits with
    `Event.wait`, never `time.sleep`, so tests that replace `time.sleep` do not see it.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._pause = threading.Event()  # never set: its wait() is the interval

    def wake(self) -> None:
        if self._pid != os.getpid():
            self._start()
        if not self._wanted.is_set():
            self._wanted.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wanted, self._pause = threading.Event(), threading.Event()
            threading.Thread(target=self._run, name="counters-flusher", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        wanted, pause = self._wanted, self._pause
        while True:
            wanted.wait()
            wanted.clear()
            flush_all()
            pause.wait(FLUSH_INTERVAL_S)


_flusher = _Flusher()
# A fork copies the lock in whatever state another thread left it: the child starts afresh.
os.register_at_fork(after_in_child=_flusher.__init__)


def _read(path: Path) -> list[int]:
    """One file's values, padded to the current counter list; unreadable files count as zeros."""
    try:
        data = path.read_bytes()
        magic, n = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            return [0] * len(COUNTERS)
        values = list(struct.unpack_from(f"<{n}q", data, _HEADER.size))
    except (OSError, struct.error):
        return [0] * len(COUNTERS)
    return (values + [0] * len(COUNTERS))[: len(COUNTERS)]
