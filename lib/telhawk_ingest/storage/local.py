"""The `local` storage backend: append-only NDJSON files per index per day, fsync'd (SPEC §6).

Layout: `<storage.data_dir>/<index>/<YYYY-MM-DD>.ndjson`, the day taken from the event time in UTC.
Each line is `{"_id", "_index", "_source"}`, shaped like an OpenSearch hit so tools can treat both
alike. A batch costs one write per file it touches. Writes use O_APPEND with one write() per file
per batch, which Linux keeps whole between processes on a local filesystem; this backend is meant
for a local disk, and OpenSearch is the one to share between hosts.

Group commit: each process keeps one open descriptor per file, and the threads appending to it
share fsyncs. A batch returns only after an fsync that started after its own write completed had
succeeded (SPEC §2), but one fsync covers every write completed before it started, so threads
that finish writing while another's fsync runs need one more fsync between them, not one each.
When an fsync fails, every write that fsync might have covered reports failure (RETRY), even if
a later fsync succeeds: after a failed writeback Linux may drop the dirty pages and report the
error only once, so a later success proves nothing about them. The same goes for writes to a
file deleted while open: the next batch starts a new file under the same name.

Not here: retries (retry.py). A failed write is reported RETRY; when the tries run out the events
are dead-lettered.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..files import open_append, private_dir, uncreatable, write_all
from .base import STORED, Item, Outcome, encode_document, retry

_UNSAFE = re.compile(r"[^a-z0-9_.-]")

# Open day files kept per process. A day's file is written for a day or two, so this bounds
# descriptors without ever closing a file that is still in use.
MAX_OPEN_FILES = 256


def index_dir_name(index: str) -> str:
    """A file-system-safe directory name for an index (never `..` or a path)."""
    name = _UNSAFE.sub("_", index.lower()).lstrip(".")
    return name or "_"


class _Closed(Exception):
    """The file was closed (evicted) between lookup and append; look it up again."""


class AppendFile:
    """One append-only file, opened once, whose concurrent appends share fsyncs.

    Writes are numbered in the order they complete. `_durable` is the highest number an fsync
    that succeeded is known to cover; `_failed` the highest one a failed fsync may have covered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._closed = False
        # Lock order: _sync_lock, then _write_lock (never the other way round).
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._written = 0
        self._durable = 0
        self._failed = 0
        self._error: OSError | None = None

    def append(self, data: bytes) -> None:
        """Append `data` in one write; return once it is fsync'd, else raise OSError."""
        with self._write_lock:
            if self._closed:
                raise _Closed
            if self._fd < 0:
                self._fd = open_append(self.path)
            write_all(self._fd, data)
            self._written += 1
            mine = self._written
        with self._sync_lock:
            if mine > self._durable and mine > self._failed:
                self._sync()
            if mine <= self._failed:
                assert self._error is not None
                # Another thread's fsync covered this write and failed: the same failure here.
                raise OSError(self._error.errno, self._error.strerror)

    def close(self) -> None:
        """Make every write durable (or failed, for its waiters to see) and close the file."""
        with self._sync_lock:
            if self._fd >= 0 and self._written > max(self._durable, self._failed):
                try:
                    self._sync()
                except OSError:
                    pass  # recorded in _failed: the waiters of those writes report it
            with self._write_lock:
                self._closed = True
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1

    def _sync(self) -> None:
        """fsync covering every write completed so far. The caller holds _sync_lock."""
        covered = self._written  # read before fsync starts: later writes may miss this flush
        try:
            os.fsync(self._fd)
            if os.fstat(self._fd).st_nlink == 0:
                # Deleted while open (by an operator or a test): what was appended is gone with it.
                raise FileNotFoundError(errno.ENOENT, "deleted while being appended to", str(self.path))
        except OSError as exc:
            with self._write_lock:
                # Any write completed until now may have been in the failed writeback. Reopen, so
                # that the writes after this point are judged by fsyncs of their own.
                self._failed = self._written
                self._error = exc
                os.close(self._fd)
                self._fd = -1
            raise
        self._durable = covered


class LocalBackend:
    name = "local"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._reset()

    def _reset(self) -> None:
        """Fresh per-process state.

        A forked child must not share descriptors or locks (which a thread of the parent may have
        held at the fork) with its parent.
        """
        self._pid = os.getpid()
        # (index, UTC day number) -> file. Building paths and formatting dates per event was a
        # third of the ingest time; a batch rarely spans more than one or two days.
        self._files: dict[tuple[str, int], AppendFile] = {}
        self._lock = threading.Lock()

    def _file(self, key: tuple[str, int]) -> AppendFile:
        """The open file of (index, UTC day number), creating its directory on first use."""
        file = self._files.get(key)
        if file is None:
            index, day = key
            name = datetime.fromtimestamp(day * 86400, tz=UTC).strftime("%Y-%m-%d")
            path = private_dir(self.data_dir / index_dir_name(index)) / f"{name}.ndjson"
            evicted = None
            with self._lock:
                file = self._files.get(key)
                if file is None:
                    if len(self._files) >= MAX_OPEN_FILES:
                        evicted = self._files.pop(next(iter(self._files)))  # the oldest
                    file = self._files[key] = AppendFile(path)
            if evicted is not None:
                evicted.close()
        return file

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        if self._pid != os.getpid():
            self._reset()
        groups: dict[tuple[str, int], list[int]] = {}
        lines = [encode_document(it.document, {"_id": it.id, "_index": it.index}) for it in batch]
        outcomes: list[Outcome] = [STORED] * len(batch)
        for i, item in enumerate(batch):
            line = lines[i]
            if isinstance(line, Outcome):  # cannot be encoded: no try would store it
                outcomes[i] = line
                continue
            groups.setdefault((item.index, int(item.time // 86400)), []).append(i)
        for key, members in groups.items():
            outcome = self._write(key, b"\n".join(lines[i] for i in members) + b"\n")
            if outcome is not STORED:
                for i in members:
                    outcomes[i] = outcome
        return outcomes

    def _write(self, key: tuple[str, int], data: bytes) -> Outcome:
        while True:
            try:
                file = self._file(key)
            except OSError as exc:
                return retry(f"local storage: cannot create {self.data_dir}: {exc.strerror}", errno=exc.errno)
            try:
                file.append(data)
            except _Closed:
                # Evicted by another thread since the lookup: forget it if still listed, reopen.
                with self._lock:
                    if self._files.get(key) is file:
                        del self._files[key]
                continue
            except OSError as exc:
                return retry(f"local storage: cannot write {file.path.name}: {exc.strerror}", errno=exc.errno)
            return STORED

    def healthy(self) -> bool:
        """Whether files can be created under the data folder (or where it will be created):
        not on a read-only filesystem, writable by this user (files.uncreatable)."""
        return uncreatable(self.data_dir) is None

    def close(self) -> None:
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
        for file in files:
            file.close()

    def documents(self, index: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored line, for tests and operators (`_id`, `_index`, `_source`)."""
        dirs = [self.data_dir / index_dir_name(index)] if index else sorted(self.data_dir.glob("*"))
        for directory in dirs:
            for path in sorted(directory.glob("*.ndjson")):
                with path.open("rb") as fh:
                    for line in fh:
                        if line.strip():
                            yield orjson.loads(line)
