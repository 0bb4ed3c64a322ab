"""The operator audit log: who did what to the DLQ, and to how many entries (SPEC §8).

One JSON line per operator call, appended and fsync'd to this process's own file under
`<dlq.base_path>/.state/audit/`, so instances sharing the volume never interleave writes. The
operator's name is logged, never a credential. Files are appended to and read only as regular
files, never through a link or a FIFO planted under their name (files.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from .envelope import rfc3339
from .files import append_synced, private_dir, read_regular

log = logging.getLogger(__name__)

# What `entries` reads of one file at most.
MAX_READ_BYTES = 256 * 1024 * 1024


class AuditLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._pid = 0

    def record(
        self, operator: str | None, action: str, count: int, params: Mapping[str, Any] | None = None
    ) -> None:
        """One line: who (None when the credential was refused), what, and how many entries."""
        entry = {"time": rfc3339(), "operator": operator, "action": action, "count": count,
                 "params": dict(params or {})}
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            try:
                if self._path is None or self._pid != os.getpid():  # a new file after fork
                    self._pid = os.getpid()
                    private_dir(self.directory)
                    name = f"{socket.gethostname()}-{self._pid}-{uuid.uuid4().hex[:8]}.log"
                    self._path = self.directory / name
                append_synced(self._path, line)
            except OSError as exc:
                # The call itself has happened; say so loudly rather than fail it after the fact.
                log.error("audit log not writable (%s): %s", exc, line.decode())

    def entries(self, max_file_bytes: int = MAX_READ_BYTES) -> Iterator[dict[str, Any]]:
        """Every instance's entries, file by file; a name that is not a regular file of at most
        `max_file_bytes` (a link, a FIFO) is skipped with a warning."""
        for path in sorted(self.directory.glob("*.log")):
            try:
                data = read_regular(path, max_file_bytes)
            except OSError as exc:
                log.warning("audit log %s skipped: %s", path.name, exc)
                continue
            for line in data.splitlines():
                if line.strip():
                    yield orjson.loads(line)
