"""Counters shared by every instance on the DLQ volume and kept across restarts (SPEC §8, §11).

Each process owns one small binary file under `<dlq.base_path>/.state/counters/` and rewrites
it in place with a single pwrite after every change: no locks between processes (NFS and bucket
mounts make file locks unreliable), and a process that crashes loses nothing, since the page
cache already holds the write. A reader sums every file.

A process that exits cleanly renames its file to `*.retired`; the next process to start adopts
one retired file as its own and counts on from its values, so the number of files stays near the
number of live processes. Not here: the health and metrics documents built from these numbers
(service.py).

Anyone who can write on the volume could plant something under a counters name: files are
opened without following links or blocking (files.open_regular), and only regular files count.
A retired "file" that is a link or a FIFO is removed when adopted, never written through; a
reader skips such names and counts an unreadable or oversized file as zeros.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import struct
import threading
import time
import uuid
from pathlib import Path

from .files import open_regular, private_dir, read_regular

log = logging.getLogger(__name__)

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
_MAGIC = b"THC1"
_HEADER = struct.Struct("<4sI")
# A counters file is 8 bytes and 8 per counter; anything much larger was not written here.
MAX_FILE_BYTES = 4096
# This process's file: read-write, never through a link, never blocking (files.py).
_OWN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Counters:
    """This process's counters, mirrored to its own file on the shared volume. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._values = [0] * len(COUNTERS)
        self._fd: int | None = None
        self._path: Path | None = None

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
            try:
                fd = open_regular(self._path, _OWN)
            except OSError as exc:
                log.warning("counters: %s is not a counters file (%s); removed, not adopted",
                            retired.name, exc)
                _discard(self._path)  # the planted name only: unlinking a link leaves its target alone
                continue
            self._fd = fd
            added = _values(os.pread(fd, MAX_FILE_BYTES + 1, 0))
            self._values = [a + b for a, b in zip(self._values, added, strict=True)]
            break
        if self._fd is None:
            self._fd = open_regular(self._path, _OWN | os.O_CREAT | os.O_EXCL)
        self._flush()
        atexit.register(self.retire)
        return self._fd

    def _flush(self) -> None:
        assert self._fd is not None
        os.pwrite(self._fd, _HEADER.pack(_MAGIC, len(self._values)) + struct.pack(
            f"<{len(self._values)}q", *self._values), 0)

    def add(self, sync: bool = False, **deltas: int) -> None:
        """Add to this process's counters. `sync`: fsync the file too, so that other hosts on a
        network volume see the change on their next open (NFS close-to-open), not when the page
        cache is written back."""
        if not any(deltas.values()):
            return
        with self._lock:
            for name, delta in deltas.items():
                self._values[COUNTERS.index(name)] += delta
            try:
                fd = self._open()
                self._flush()
                if sync:
                    os.fsync(fd)
            except OSError:
                # Counters are observability, not data: never fail a request over them.
                pass

    def retire(self) -> None:
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
        """Every instance's counters summed, this one's included."""
        sums = [0] * len(COUNTERS)
        for _mtime, values in self.snapshot().values():
            for i, value in enumerate(values):
                sums[i] += value
        return dict(zip(COUNTERS, sums, strict=True))

    def snapshot(self) -> dict[str, tuple[float, list[int]]]:
        """Each file's last change (unix seconds) and values (COUNTERS order), by file name; this
        process's values not yet in a file under "". A file adopted (renamed) while being read may
        show under both names or neither: a reader that must never count low compares file by
        file (dlq.py does)."""
        out: dict[str, tuple[float, list[int]]] = {}
        with self._lock:
            if self._fd is None:
                out[""] = (time.time(), list(self._values))  # not yet written anywhere
        try:
            files = list(os.scandir(self.directory))
        except FileNotFoundError:
            files = []
        for entry in files:
            if entry.name.endswith((".counters", ".retired")):
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue  # a link, FIFO or directory under a counters name: not ours
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue  # adopted under another name since the listing
                out[entry.name] = (mtime, _read(Path(entry.path)))
        return out


def _read(path: Path) -> list[int]:
    """One file's values, padded to the current counter list; unreadable files count as zeros."""
    try:
        return _values(read_regular(path, MAX_FILE_BYTES))
    except OSError:
        return [0] * len(COUNTERS)


def _values(data: bytes) -> list[int]:
    """The values in a counters file's bytes, padded to the current counter list; zeros when
    they are not a counters file."""
    try:
        magic, n = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            return [0] * len(COUNTERS)
        values = list(struct.unpack_from(f"<{n}q", data, _HEADER.size))
    except struct.error:
        return [0] * len(COUNTERS)
    return (values + [0] * len(COUNTERS))[: len(COUNTERS)]


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
