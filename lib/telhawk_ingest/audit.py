"""The operator audit log: who did what to the DLQ, and to how many entries (SPEC §8).

One JSON line per operator call, appended and fsync'd to this process's own file under
`<dlq.base_path>/.state/audit/`, so instances sharing the volume never interleave writes. The
operator's name is logged, never a credential. Files are appended to and read only as regular
files, never through a link or a FIFO planted under their name (files.py).

Bounded, so that nobody can fill the volume through it:

- Granted calls are always written. Refused calls (`denied`: no or a wrong credential;
  `refused`: a call an operator made that was not understood) are written at most
  REFUSED_LINES_PER_WINDOW times per REFUSED_WINDOW_S per process; past that they are counted,
  and one `refused_suppressed` line at the end of the window says how many, by whom, where.
- A process's file is closed at MAX_FILE_BYTES and a new one started.
- Files unchanged for ABSORB_AFTER_S (processes gone: serverless cold starts leave one each) and
  archives under half of MAX_FILE_BYTES are folded into archives of at most MAX_FILE_BYTES
  (fold.py: claim by rename, temp+fsync+rename, each archive's first line names the files it
  absorbed). Past MAX_FILES archives the oldest are deleted, with a warning in the service log:
  at most MAX_FILES x MAX_FILE_BYTES of archives, plus the files of processes active in the
  last ABSORB_AFTER_S.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from . import fold
from .envelope import rfc3339
from .files import append_synced, private_dir, read_regular
from .logs import log_event

log = logging.getLogger(__name__)

# What `entries` reads of one file at most.
MAX_READ_BYTES = 256 * 1024 * 1024
REFUSALS = frozenset({"denied", "refused"})
REFUSED_WINDOW_S = 60.0
REFUSED_LINES_PER_WINDOW = 20
# At most this many (action, operator, status, method, path) groups itemized in a summary line.
SUMMARY_GROUPS = 20
MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 100
ABSORB_AFTER_S = 900.0
COMPACT_INTERVAL_S = 60.0
RECENT_S = 2 * fold.CLAIM_STALE_S
ARCHIVE_PREFIX = "archive-"
SUFFIX = ".log"


class AuditLog:
    def __init__(self, directory: Path, clock: Callable[[], float] = time.time,
                 summary_timer: bool = True) -> None:
        """`clock`: unix seconds, for the refused-call windows; `summary_timer`: write a window's
        summary line when it ends even if no call follows (a daemon timer thread)."""
        self.directory = directory
        self._clock = clock
        self._summary_timer = summary_timer
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._size = 0
        self._pid = 0
        self._window_start = -REFUSED_WINDOW_S
        self._window_lines = 0
        self._suppressed: Counter[tuple[str, str | None, Any, Any, Any]] = Counter()
        self._timer: threading.Timer | None = None
        self._next_compaction = 0.0

    def record(
        self, operator: str | None, action: str, count: int, params: Mapping[str, Any] | None = None
    ) -> None:
        """One line: who (None when the credential was refused), what, and how many entries.
        Refusals (REFUSALS) are rate-limited and summarized (module docstring)."""
        params = dict(params or {})
        if action in REFUSALS:
            now = self._clock()
            with self._lock:
                summary = self._close_window(now)
                admitted = self._window_lines < REFUSED_LINES_PER_WINDOW
                if admitted:
                    self._window_lines += 1
                else:
                    key = (action, operator, params.get("status"), params.get("method"), params.get("path"))
                    self._suppressed[key] += 1
                    self._arm_timer(now)
            if summary is not None:
                self._write(summary)
            if not admitted:
                return
        self._write({"time": rfc3339(), "operator": operator, "action": action, "count": count,
                     "params": params})
        # The operator's name, never the token (the audit line's own fields).
        log_event(log, logging.INFO, "operator", f"operator {operator or '(not authenticated)'}: {action}, "
                  f"{count} entries", operator=operator, action=action, count=count, params=params)

    def flush_suppressed(self, now: float | None = None) -> None:
        """Write the summary of a refused-call window that has ended, if calls were suppressed."""
        with self._lock:
            summary = self._close_window(self._clock() if now is None else now)
        if summary is not None:
            self._write(summary)

    def _close_window(self, now: float) -> dict[str, Any] | None:
        """Start a new window when the current one has ended; its summary line, if any. Caller
        holds the lock."""
        if now - self._window_start < REFUSED_WINDOW_S:
            return None
        summary = None
        if self._suppressed:
            total = sum(self._suppressed.values())
            groups = self._suppressed.most_common()
            calls = [{"action": a, "operator": o, "status": s, "method": m, "path": p, "count": n}
                     for (a, o, s, m, p), n in groups[:SUMMARY_GROUPS]]
            who = sorted({o or "callers without a valid credential" for (_, o, *_), _ in groups})
            summary = {
                "time": rfc3339(), "operator": None, "action": "refused_suppressed", "count": total,
                "params": {
                    "message": f"{total} more refused calls from {', '.join(who)} suppressed",
                    "since": rfc3339(self._window_start),
                    "until": rfc3339(self._window_start + REFUSED_WINDOW_S),
                    "calls": calls, "groups_not_itemized": max(0, len(groups) - SUMMARY_GROUPS),
                },
            }
        self._window_start, self._window_lines = now, 0
        self._suppressed = Counter()
        return summary

    def _arm_timer(self, now: float) -> None:
        if not self._summary_timer or self._timer is not None:
            return
        delay = max(0.0, self._window_start + REFUSED_WINDOW_S - now) + 0.01

        def fire() -> None:
            self._timer = None
            self.flush_suppressed()
            with self._lock:  # woken a little early (the timer's clock is not the wall clock)
                if self._suppressed:
                    self._arm_timer(self._clock())

        self._timer = threading.Timer(delay, fire)
        self._timer.daemon = True
        self._timer.start()

    def _write(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            try:
                if self._path is None or self._pid != os.getpid() or self._size + len(line) > MAX_FILE_BYTES:
                    # A new file after fork, and when this one is full.
                    self._pid = os.getpid()
                    private_dir(self.directory)
                    name = fold.unique_name(f"{socket.gethostname()}-{self._pid}-", SUFFIX)  # in order
                    self._path, self._size = self.directory / name, 0
                append_synced(self._path, line)
                self._size += len(line)
            except OSError as exc:
                # The call itself has happened; say so loudly rather than fail it after the fact.
                log.error("audit log not writable (%s): %s", exc, line.decode())
                return
        self.compact_if_due()

    def compact_if_due(self) -> None:
        """`compact` at most every COMPACT_INTERVAL_S per process; failures are logged."""
        with self._lock:
            if time.monotonic() < self._next_compaction:
                return
            self._next_compaction = time.monotonic() + COMPACT_INTERVAL_S
        try:
            self.compact()
        except OSError as exc:
            log.warning("audit: compaction in %s failed: %s", self.directory, exc)

    # -- bounds --------------------------------------------------------------------------------

    def compact(self, now: float | None = None) -> int:
        """Fold files of processes gone quiet (unchanged for ABSORB_AFTER_S by `now`, unix
        seconds) and archives under half of MAX_FILE_BYTES into archives, then delete the oldest
        archives past MAX_FILES. Returns how many files were folded. Raises OSError when the
        folder cannot be written."""
        now = time.time() if now is None else now
        started = time.time()
        own = None if self._path is None else self._path.name
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except FileNotFoundError:
            return 0
        fold.remove_stale_temp_files(self.directory, now)
        archived = {name for path in self._archives(entries) for name in _header(path)}
        fid = fold.folder_id()
        chosen: list[tuple[Path, int]] = []
        for entry in entries:
            name, original = entry.name, fold.original(entry.name)
            if name == own or not original.endswith(SUFFIX):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if fold.is_claim(name):
                if not fold.left_by_a_stopped_fold(Path(entry.path), st.st_ctime, now, archived):
                    continue
            elif original.startswith(ARCHIVE_PREFIX):
                if st.st_size >= MAX_FILE_BYTES // 2:
                    continue  # full enough: kept as it is until retention deletes it
            elif now - st.st_mtime < ABSORB_AFTER_S:
                continue
            if (path := fold.claim(self.directory, name, fid)) is not None:
                chosen.append((path, st.st_size))
        if len(chosen) == 1 and fold.original(chosen[0][0].name).startswith(ARCHIVE_PREFIX):
            fold.release(self.directory, [chosen[0][0]])
            chosen = []
        folded = 0
        for batch in _batches(chosen):
            # The first line names what the archive holds, with when it was absorbed: a merged
            # archive's names are carried on for RECENT_S, as long as a leftover claim of one of
            # them can exist (a fold deletes those fold.CLAIM_STALE_S old before it writes).
            absorbed: dict[str, float] = {}
            body = []
            for path in batch:
                try:
                    data = read_regular(path, MAX_READ_BYTES)
                except OSError as exc:  # a link or FIFO claimed under an audit name: not ours to read
                    log.warning("audit: %s skipped while folding: %s", path.name, exc)
                    data = b""
                absorbed[fold.original(path.name)] = now
                if fold.original(path.name).startswith(ARCHIVE_PREFIX):
                    first, _, data = data.partition(b"\n")
                    absorbed.update({n: at for n, at in _names(first).items() if now - at < RECENT_S})
                body.append(data if data.endswith(b"\n") or not data else data + b"\n")
            lines = [orjson.dumps({"absorbed": absorbed, "archived": rfc3339(now)}) + b"\n", *body]
            name = fold.unique_name(ARCHIVE_PREFIX, SUFFIX)
            if fold.commit(self.directory, name, b"".join(lines), batch, started):
                folded += len(batch)
        self._retain()
        return folded

    def _archives(self, entries: list[os.DirEntry[str]]) -> list[Path]:
        return [Path(e.path) for e in entries if fold.original(e.name).startswith(ARCHIVE_PREFIX)]

    def _retain(self) -> None:
        """Delete the oldest archives while there are more than MAX_FILES of them."""
        try:
            archives = sorted(n for n in os.listdir(self.directory)
                              if n.startswith(ARCHIVE_PREFIX) and n.endswith(SUFFIX))
        except FileNotFoundError:
            return
        oldest = archives[:max(0, len(archives) - MAX_FILES)]
        for name in oldest:
            (self.directory / name).unlink(missing_ok=True)
        if oldest:
            log.warning("audit: deleted the %d oldest archives in %s: at most %d are kept",
                        len(oldest), self.directory, MAX_FILES)

    def entries(self, max_file_bytes: int = MAX_READ_BYTES) -> Iterator[dict[str, Any]]:
        """Every instance's entries, file by file (a file an archive absorbed is read once); a name
        that is not a regular file of at most `max_file_bytes` (a link, a FIFO) is skipped with a
        warning."""
        try:
            scanned = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except FileNotFoundError:
            return
        archived = {name for path in self._archives(scanned) for name in _header(path)}
        for entry in scanned:
            original = fold.original(entry.name)
            if not original.endswith(SUFFIX) or original in archived:
                continue
            try:
                data = read_regular(Path(entry.path), max_file_bytes)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("audit log %s skipped: %s", entry.name, exc)
                continue
            for line in data.splitlines():
                if line.strip():
                    item = orjson.loads(line)
                    if "action" in item:
                        yield item


def _header(path: Path) -> list[str]:
    """The names an archive absorbed (its first line)."""
    try:
        with open(path, "rb") as handle:
            return list(_names(handle.readline()))
    except OSError:
        return []


def _names(first_line: bytes) -> dict[str, float]:
    """An archive's first line: absorbed name -> when (unix seconds)."""
    try:
        absorbed = orjson.loads(first_line).get("absorbed", {})
        return {str(n): float(at) for n, at in absorbed.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return {}


def _batches(chosen: list[tuple[Path, int]]) -> Iterator[list[Path]]:
    """Claimed files in groups of at most MAX_FILE_BYTES (a larger file alone)."""
    batch: list[Path] = []
    size = 0
    for path, nbytes in chosen:
        if batch and size + nbytes > MAX_FILE_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += nbytes
    if batch:
        yield batch
