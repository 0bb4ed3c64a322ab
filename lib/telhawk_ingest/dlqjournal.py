"""The DLQ's rewrite journal: which entries were rewritten in place, so that every process's cache of
entry summaries (dlq.py's catalog, dlqindex.py's index on the volume) forgets what it learned about
them, even when the new file got the old file's inode back.

Here: appending entry names to the journal, reading what was appended since a `Position`, deciding
whether a position can still be continued, and removing old journal files. Not here: what a cache
does with the names (dlq.py).

Why a journal. The caches key a summary by (name, inode), which the directory listing gives for free,
and a rewrite (a new file renamed over the name) changes the name's inode. But ext4 hands a freed
inode to the next new file, so a name rewritten twice alternates inodes A, B, A: a cache that saw it
under A takes the third content for the first. Comparing anything more per entry (ctime, size) costs a
stat per file on every listing (100,000 stats: seconds), which is what the inode key avoids; a
generation number inside the file costs a read. The journal costs nothing per entry on the listing
path: a few files, read from where the reader stopped, only when the DLQ folder changed.

Layout: `<dlq>/.state/rewrites/<16 hex: ms since the epoch>-<16 hex: random>`, private files
(0600) of the service's user in a private folder (0700), each written by one DeadLetterQueue object
only, appended to (O_APPEND, never through a link), one entry file name per line. A rewriter appends
the name and fsyncs it BEFORE renaming the new file over the entry, so a reader that sees the new
content under an old inode has a line it has not read yet. Names sort in creation order: a new file
is named after every file present when it is made, whatever the clock says.

Bounded: a writer starts a new file once its file is ROTATE_S old or ROTATE_BYTES large; files
whose last append is RETAIN_S old are removed, in name order, never the newest, stopping at the
first that is not that old. A reader that stopped at a `Position` continues from it when the
position is younger than RETAIN_S - SKEW_S (nothing appended since can have been removed yet: hosts'
clocks agree within SKEW_S), or when every file it names is still there (a removed file is older by
name than all of them, so it existed when the position was taken and was read in full); when there
were no files then and there are none now. Otherwise lines may be lost, and the reader's cache is
dropped whole (`read` returns None for the names).

Whatever is planted in the folder at worst makes readers read entries again: a file that is not a
private regular file of this user's or not named as above is not a journal file; lines that are not
entry names are skipped; a known file that shrank, disappeared early or grew by more than READ_CAP
bytes makes the position unusable (caches dropped, entries read from their files).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import APPEND, READ, fsync_dir, open_regular, write_all

JOURNAL_DIR = "rewrites"  # under dlqindex.STATE_DIR
ROTATE_S = 3600.0
ROTATE_BYTES = 1024 * 1024
RETAIN_S = 24 * 3600.0
SKEW_S = 3600.0
READ_CAP = 64 * 1024 * 1024  # bytes appended to one file since a position that a reader reads
TAIL_BYTES = 4096  # read back to find the last whole line when a position skips a file's content
NAME_RE = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}$")
LAST_MS = (1 << 64) - 1  # names keep 16 hex digits even after a file planted with the largest
# A DLQ entry id (dlq.py builds its names' patterns from this; it imports this module): a fresh
# UUIDv7's 32 hex digits, or an envelope id with its dashes (an entry named after its envelope).
ENTRY_ID = r"failed_\d{1,12}_(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ENTRY_RE = re.compile(f"^{ENTRY_ID}\\.json$".encode(), re.MULTILINE)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_REOPEN = APPEND & ~os.O_CREAT


@dataclass(frozen=True, slots=True)
class Position:
    """How far a reader has read: bytes per journal file (always at a line end), and the wall-clock
    time (unix seconds) taken before that read began."""

    offsets: dict[str, int] = field(default_factory=dict)
    at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"offsets": self.offsets, "at": self.at}

    @classmethod
    def from_json(cls, value: object) -> Position:
        """A position as `to_json` gave it; ValueError for anything else."""
        if not isinstance(value, dict):
            raise ValueError("journal position is not an object")
        offsets, at = value.get("offsets"), value.get("at")
        if not (isinstance(offsets, dict) and isinstance(at, int | float)
                and all(isinstance(k, str) and NAME_RE.match(k) and isinstance(v, int) and v >= 0
                        for k, v in offsets.items())):
            raise ValueError("journal position fields of the wrong type")
        return cls(dict(offsets), float(at))


def journal_dir(dlq_path: Path | str, state: str | None) -> str | None:
    """`<state>/rewrites` when it is a real directory of this user's; None otherwise (or when
    `state`, the DLQ's private `.state` folder, is None)."""
    if state is None:
        return None
    path = os.path.join(state, JOURNAL_DIR)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return path if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() else None


def _files(directory: str | None) -> dict[str, tuple[int, float]]:
    """Journal files in `directory`: name -> (size, mtime), lstat'ed (a link is no journal file)."""
    if directory is None:
        return {}
    found = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not NAME_RE.match(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
                    found[entry.name] = (st.st_size, st.st_mtime)
    except OSError:
        return {}
    return found


def continues(since: Position, files: dict[str, tuple[int, float]], now: float) -> bool:
    """Whether nothing appended after `since` can have been removed (module docstring)."""
    if now - since.at < RETAIN_S - SKEW_S:
        return True
    if since.offsets:
        return all(name in files for name in since.offsets)
    return not files


def read(directory: str | None, since: Position | None) -> tuple[Position, set[str] | None]:
    """What was appended to the journal in `directory` (journal_dir) after `since`: (the position
    now, the entry file names in those lines). The names are None when `since` cannot be
    continued, or a file it knows shrank or grew by more than READ_CAP: the caller then drops
    what it cached whole. `since` None (a reader that has cached nothing yet): the position now,
    without reading any line (an empty set)."""
    now = time.time()
    files = _files(directory)
    usable = since is None or continues(since, files, now)
    offsets: dict[str, int] = {}
    names: set[str] = set()
    for name, (size, _mtime) in files.items():
        start = None if since is None else since.offsets.get(name, 0)
        if start is not None and (size < start or size - start > READ_CAP):
            usable, start = False, None
        if start is not None and not usable:
            start = None  # nothing read is used: only where the file ends
        assert directory is not None
        try:
            offsets[name] = _read_lines(os.path.join(directory, name), start, size, names)
        except OSError:
            if since is not None and name in since.offsets:
                usable = False  # a known file we can no longer read
    return Position(offsets, now), names if usable else None


def _read_lines(path: str, start: int | None, size: int, names: set[str]) -> int:
    """Read `path` from byte `start` to its last whole line, adding the entry names found to
    `names`; `start` None: only find where its last whole line ends. Returns that offset."""
    fd = open_regular(path, READ)
    try:
        if start is None:
            begin = max(0, size - TAIL_BYTES)
            tail = os.pread(fd, size - begin, begin)
            end = tail.rfind(b"\n")
            # A tail without a line end: a line longer than any a writer makes, i.e. not ours.
            return begin + end + 1 if end >= 0 else size
        data = os.pread(fd, size - start, start) if size > start else b""
    finally:
        os.close(fd)
    end = data.rfind(b"\n")
    if end < 0:
        return start
    names.update(m.decode() for m in _ENTRY_RE.findall(data, 0, end + 1))
    return start + end + 1


class Writer:
    """This DLQ object's journal file: `record` appends entry names durably. Thread-safe. The file
    is opened for each record (no descriptor is held by a DLQ object)."""

    def __init__(self, dlq_path: Path, state_dir: Any) -> None:
        """`state_dir(create: bool) -> str | None`: the DLQ's private `.state` folder."""
        self._path = dlq_path
        self._state_dir = state_dir
        self._lock = threading.Lock()
        self._file: str | None = None
        self._opened = 0.0
        self._size = 0

    def record(self, names: list[str]) -> None:
        """Append `names` (entry file names), one a line, and fsync them; OSError when that cannot
        be done (the caller must not rewrite then). A file removed meanwhile (its last append was
        older than RETAIN_S: a writer paused that long) gets the lines again in a new file."""
        data = "".join(f"{name}\n" for name in names).encode()
        with self._lock:
            for _ in range(2):
                try:
                    fd = open_regular(self._current(len(data)), _REOPEN)
                except FileNotFoundError:
                    self._file = None
                    continue
                try:
                    write_all(fd, data)
                    os.fsync(fd)
                    kept = os.fstat(fd).st_nlink > 0
                finally:
                    os.close(fd)
                self._size += len(data)
                if kept:
                    return
                self._file = None
            raise OSError(errno.ESTALE, "DLQ rewrite journal files removed while written")

    def _current(self, adding: int) -> str:
        """The file to append `adding` bytes to: this object's, or a new one (ROTATE_S, ROTATE_BYTES)."""
        if self._file is not None and (time.monotonic() - self._opened < ROTATE_S
                                       and self._size + adding <= ROTATE_BYTES):
            return self._file
        directory = self._directory()
        files = _files(directory)
        remove_old(directory, files)
        ms = int(time.time() * 1000)
        if files:
            ms = min(max(ms, int(max(files)[:16], 16) + 1), LAST_MS)
        path = os.path.join(directory, f"{ms:016x}-{secrets.token_hex(8)}")
        os.close(os.open(path, _CREATE, 0o600))
        fsync_dir(Path(directory))  # the new name survives a power cut with its lines
        self._file, self._opened, self._size = path, time.monotonic(), 0
        return path

    def _directory(self) -> str:
        state = self._state_dir(True)
        if state is None:
            raise OSError(errno.EACCES, "not a private directory", os.path.join(self._path, ".state"))
        path = os.path.join(state, JOURNAL_DIR)
        try:
            os.mkdir(path, 0o700)
            fsync_dir(Path(state))
        except FileExistsError:
            pass
        directory = journal_dir(self._path, state)
        if directory is None:
            raise OSError(errno.EACCES, "not a private directory", path)
        return directory


def remove_old(directory: str, files: dict[str, tuple[int, float]], now: float | None = None) -> list[str]:
    """Remove journal files whose last append is RETAIN_S before `now`, oldest name first, never the
    newest, stopping at the first younger one (module docstring); returns the names removed."""
    cutoff = (time.time() if now is None else now) - RETAIN_S
    removed = []
    for name in sorted(files)[:-1]:
        if files[name][1] >= cutoff:
            break
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
        except OSError:
            break
        removed.append(name)
    for name in removed:
        files.pop(name, None)
    return removed
