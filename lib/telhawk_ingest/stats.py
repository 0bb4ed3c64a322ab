"""Counters shared by every instance on the DLQ volume and kept across restarts (SPEC §8, §11).

Each process owns one small binary file under `<dlq.base_path>/.state/counters/` and rewrites
it in place with a single pwrite after every change: no locks between processes (NFS and bucket
mounts make file locks unreliable), and a process that crashes loses nothing, since the page
cache already holds the write. A reader sums every file.

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
import uuid
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
)
_MAGIC = b"THC1"
_HEADER = struct.Struct("<4sI")


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
            self._values = [a + b for a, b in zip(self._values, _read(self._path), strict=True)]
            break
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        self._flush()
        atexit.register(self.retire)
        return self._fd

    def _flush(self) -> None:
        assert self._fd is not None
        os.pwrite(self._fd, _HEADER.pack(_MAGIC, len(self._values)) + struct.pack(
            f"<{len(self._values)}q", *self._values), 0)

    def add(self, **deltas: int) -> None:
        if not any(deltas.values()):
            return
        with self._lock:
            for name, delta in deltas.items():
                self._values[COUNTERS.index(name)] += delta
            try:
                self._open()
                self._flush()
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
        with self._lock:
            if self._fd is None:
                sums = list(self._values)  # not yet written anywhere
        try:
            files = list(os.scandir(self.directory))
        except OSError:
            # Missing, or not readable (a file in its place, no permission): observability must not
            # fail the health document, so only this process's counts are known.
            files = []
        for entry in files:
            if entry.name.endswith((".counters", ".retired")):
                for i, value in enumerate(_read(Path(entry.path))):
                    sums[i] += value
        return dict(zip(COUNTERS, sums, strict=True))


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
