"""The comparison baseline of `python -m bench storage`: the append-only NDJSON file backend the
product used before its embedded store became SQLite, kept here unchanged as `NdjsonBackend`, and
`ndjson`, the HEC ingest function served with it.

The bench serves `ndjson` in place of the real ingest function (bench/server.py, `ingest_handler`),
so the same emulator, HTTP stack and pipeline run with this backend instead of storage/local.py.
This file is loaded by functions-framework from its path, so it imports nothing relative.

How the backend worked: `<storage.data_dir>/<index>/<YYYY-MM-DD>.ndjson`, the day taken from the
event time in UTC, one `{"_id", "_index", "_source"}` line per event; one O_APPEND write() per
file per batch; each process keeps one descriptor per file, and the threads appending to it share
fsyncs: a batch returns only after an fsync that started after its own write completed had
succeeded, one fsync covering every write completed before it started. A failed fsync fails every
write it may have covered (RETRY). What it did not do, and why it was replaced: it stored an
envelope sent twice twice, and a write torn by a full disk left a partial line that the next
appended record was glued to.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import functions_framework.aio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.config import load_settings
from telhawk_ingest.files import open_append, private_dir, write_all
from telhawk_ingest.http import handle_hec
from telhawk_ingest.service import Service
from telhawk_ingest.storage.base import STORED, Item, Outcome, retry

log = logging.getLogger(__name__)

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


class NdjsonBackend:
    name = "ndjson"

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
        lines = [orjson.dumps({"_id": it.id, "_index": it.index, "_source": it.document}) for it in batch]
        outcomes: list[Outcome] = [STORED] * len(batch)
        for i, item in enumerate(batch):
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
        return os.access(self.data_dir, os.W_OK) or not self.data_dir.exists()

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


_service: Service | None = None
_service_lock = threading.Lock()


def ndjson_service() -> Service:
    """The process's Service, with this backend, built on first use (after gunicorn's fork)."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                settings = load_settings()
                _service = Service(settings, backend=NdjsonBackend(settings.storage.data_dir))
    return _service


@functions_framework.aio.http
async def ndjson(request: Request) -> Response:
    """HEC ingest as functions/ingest_event.py serves it, storing with NdjsonBackend."""
    return await handle_hec(request, ndjson_service)
