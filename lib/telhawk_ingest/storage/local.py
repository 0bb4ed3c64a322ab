"""The `local` storage backend: append-only NDJSON files per index per day, fsync'd (SPEC §6).

Layout: `<storage.data_dir>/<index>/<YYYY-MM-DD>.ndjson`, the day taken from the event time in UTC.
Each line is `{"_id", "_index", "_source"}`, shaped like an OpenSearch hit so tools can treat both
alike. A batch costs one write and one fsync per file it touches. Writes use O_APPEND with one
write() per file per batch, which Linux keeps whole between processes on a local filesystem; this
backend is meant for a local disk, and OpenSearch is the one to share between hosts.

Not here: retries (retry.py). A failed write is reported RETRY; when the tries run out the events
are dead-lettered.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..files import APPEND, private_dir, write_synced
from .base import STORED, Item, Outcome, retry

_UNSAFE = re.compile(r"[^a-z0-9_.-]")


def index_dir_name(index: str) -> str:
    """A file-system-safe directory name for an index (never `..` or a path)."""
    name = _UNSAFE.sub("_", index.lower()).lstrip(".")
    return name or "_"


class LocalBackend:
    name = "local"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        # (index, UTC day number) -> file. Building paths and formatting dates per event was a
        # third of the ingest time; a batch rarely spans more than one or two days.
        self._files: dict[tuple[str, int], Path] = {}
        self._lock = threading.Lock()

    def _file(self, index: str, ts: float) -> Path:
        key = (index, int(ts // 86400))
        path = self._files.get(key)
        if path is None:
            day = datetime.fromtimestamp(key[1] * 86400, tz=UTC).strftime("%Y-%m-%d")
            path = private_dir(self.data_dir / index_dir_name(index)) / f"{day}.ndjson"
            with self._lock:
                if len(self._files) > 4096:
                    self._files.clear()
                self._files[key] = path
        return path

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        groups: dict[Path, list[int]] = {}
        lines = [orjson.dumps({"_id": it.id, "_index": it.index, "_source": it.document}) for it in batch]
        outcomes: list[Outcome] = [STORED] * len(batch)
        try:
            for i, item in enumerate(batch):
                groups.setdefault(self._file(item.index, item.time), []).append(i)
        except OSError as exc:
            return [retry(f"local storage: cannot create {self.data_dir}: {exc.strerror}")] * len(batch)
        for path, members in groups.items():
            try:
                write_synced(path, b"\n".join(lines[i] for i in members) + b"\n", APPEND)
            except OSError as exc:
                failed = retry(f"local storage: cannot write {path.name}: {exc.strerror}", errno=exc.errno)
                for i in members:
                    outcomes[i] = failed
        return outcomes

    def healthy(self) -> bool:
        return os.access(self.data_dir, os.W_OK) or not self.data_dir.exists()

    def close(self) -> None:
        pass

    def documents(self, index: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored line, for tests and operators (`_id`, `_index`, `_source`)."""
        dirs = [self.data_dir / index_dir_name(index)] if index else sorted(self.data_dir.glob("*"))
        for directory in dirs:
            for path in sorted(directory.glob("*.ndjson")):
                with path.open("rb") as fh:
                    for line in fh:
                        if line.strip():
                            yield orjson.loads(line)
