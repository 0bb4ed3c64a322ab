"""The DLQ's summary index: what a filtered listing needs of every entry, kept on the volume so a
process that just started answers `GET /api/v1/dlq?reason=...` (SPEC §11) without reading each file.

Here: the index's format, writing it (atomically, 0600, never through a link) and reading it back
(anything unexpected: ignored), and selecting the entries that match a filter from it. Not here:
deciding when it is written or used, and reading entries (dlq.py).

The index is a cache, never a source of truth. Anyone able to write the volume could plant a file
where it lives, so nothing in it is believed unless the directory itself confirms it: an indexed
entry counts only while its name is in the directory listing with the inode the index gives (the
same rule that makes dlq.py's per-process catalog notice a rewrite by another process), names that
are gone are dropped, and names the index lacks or gives another inode are read from their files.
An index that is not a regular file owned by this user, is larger than its cap, fails its checksum,
does not parse, names the same entry twice, or was made for another directory (its device and
inode) is ignored whole. What a planted index can still do is claim a wrong summary for an entry
it names correctly; whoever can do that can equally rewrite the entry itself.

Per entry: its file name, inode, flags (corrupt; error text truncated), and codes into one table of
distinct texts for its reason, source type and error. Error texts are kept up to ERROR_CAP
characters; a truncated one that does not contain an `error=` filter's text might contain it
further on, so such entries are reported as unsure and the caller reads their files. Entries whose
reason or source type is longer than TEXT_CAP are left out (read from their files when needed).

Rewrites: an entry rewritten twice can get its old inode back (ext4 reuses freed inodes), so the
index also records how far it had read the rewrite journal (dlqjournal.py); a process loading it
takes the entries named in the journal since then as unconfirmed, and ignores the index whole when
that position cannot be continued (journal files removed since).

Layout: MAGIC, one JSON line (directory identity, count, text table, sizes, CRC-32 of the body,
journal position),
then the body: names joined by newlines, inodes (8 bytes each), flags (1 byte each), then reason,
source type and error codes (4 bytes each), little-endian.
"""

from __future__ import annotations

import logging
import operator
import os
import stat
import sys
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, filterfalse
from pathlib import Path
from typing import Any

import orjson

from .envelope import new_id
from .files import open_regular, write_all

log = logging.getLogger(__name__)

STATE_DIR = ".state"  # beside the shared counters and the audit log (config.Settings.state_path)
INDEX_NAME = "dlq-summaries"
TEMP_PREFIX = ".tmp-"
MAGIC = b"telhawk-dlq-summaries 1\n"
ERROR_CAP = 200  # characters of an entry's error text kept in the index
TEXT_CAP = 200  # reasons and source types longer than this are not indexed
# The largest index a reader takes for a directory of n names: a fixed part and a share per name
# (a real index is about 80 bytes per entry plus its distinct texts); a writer whose index would
# be larger (many distinct long texts) does not write it.
FIXED_BYTES = 1024 * 1024
BYTES_PER_NAME = 512
STALE_TEMP_S = 600  # temp files this old belong to a writer that was killed
CORRUPT = 1
TRUNCATED = 2
_NOT_CORRUPT = bytes(0 if b & CORRUPT else 1 for b in range(256))
_IS_TRUNCATED = bytes(1 if b & TRUNCATED else 0 for b in range(256))
_NOT = bytes([1, 0]) + bytes(254)  # 0 <-> 1 for masks of one byte per entry
_BIG = sys.byteorder == "big"


def max_index_bytes(names: int) -> int:
    """The size cap of an index for a directory of `names` entries (see BYTES_PER_NAME)."""
    return FIXED_BYTES + names * BYTES_PER_NAME


@dataclass(frozen=True, slots=True)
class Row:
    """One entry as indexed: `corrupt` entries have empty texts."""

    name: str
    inode: int
    corrupt: bool
    reason: str = ""
    source_type: str = ""
    error: str = ""
    truncated: bool = False


def _codes(values: Iterable[int]) -> array:
    return array("I", values)


@dataclass(eq=False)
class SummaryIndex:
    """Entries' summaries in columns (see the module docstring): `names_text` is the entries' file
    names joined by newlines; `names[i]` goes with `inodes[i]`, `flags[i]` and the codes at `i`,
    which index `texts`."""

    names_text: str
    inodes: array
    flags: bytes
    reasons: array
    types: array
    errors: array
    texts: list[str]
    _code: dict[str, int] = field(default_factory=dict, repr=False)
    # How far the rewrite journal had been read when these summaries were true (dlqjournal.Position
    # as JSON); None in an index saved without one, which then continues no journal.
    journal: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._code = dict(zip(self.texts, range(len(self.texts)), strict=True))

    def __len__(self) -> int:
        return len(self.inodes)

    @cached_property
    def names(self) -> list[str]:
        """The entries' file names (split from `names_text` when first needed)."""
        return self.names_text.split("\n") if self.inodes else []

    @classmethod
    def build(cls, rows: Iterable[Row]) -> SummaryIndex:
        """An index of `rows` (error texts capped here; over-long reasons and types left out)."""
        texts: dict[str, int] = {}
        code = texts.setdefault
        names: list[str] = []
        inodes = array("Q")
        flags = bytearray()
        reasons, types, errors = _codes(()), _codes(()), _codes(())
        for row in rows:
            if len(row.reason) > TEXT_CAP or len(row.source_type) > TEXT_CAP:
                continue
            error, truncated = row.error, row.truncated
            if len(error) > ERROR_CAP:
                error, truncated = error[:ERROR_CAP], True
            names.append(row.name)
            inodes.append(row.inode)
            flags.append((CORRUPT if row.corrupt else 0) | (TRUNCATED if truncated else 0))
            reasons.append(code(row.reason, len(texts)))
            types.append(code(row.source_type, len(texts)))
            errors.append(code(error, len(texts)))
        return cls("\n".join(names), inodes, bytes(flags), reasons, types, errors, list(texts))

    def rows(self, which: bytes | None = None, names: list[str] | None = None) -> Iterator[Row]:
        """The indexed entries (only those whose byte in `which` is 1, when given; `names`: strings
        equal to `self.names`, when the caller has them)."""
        texts, flags = self.texts, self.flags
        names = self.names if names is None else names
        positions: Iterable[int] = range(len(self))
        if which is not None:
            positions = compress(positions, which)
        for i in positions:
            f = flags[i]
            yield Row(names[i], self.inodes[i], bool(f & CORRUPT), texts[self.reasons[i]],
                      texts[self.types[i]], texts[self.errors[i]], bool(f & TRUNCATED))

    # -- the file ------------------------------------------------------------------------

    def encode(self, directory: tuple[int, int]) -> bytes:
        """The index file's bytes, for the DLQ directory identified by (st_dev, st_ino)."""
        columns = [self.inodes, self.reasons, self.types, self.errors]
        if _BIG:
            columns = [array(c.typecode, c) for c in columns]
            for c in columns:
                c.byteswap()
        inodes, reasons, types, errors = columns
        body = b"".join([
            self.names_text.encode(), inodes.tobytes(), self.flags, reasons.tobytes(),
            types.tobytes(), errors.tobytes(),
        ])
        names_bytes = len(body) - 21 * len(self)
        header = {"directory": list(directory), "count": len(self), "names_bytes": names_bytes,
                  "texts": self.texts, "crc32": zlib.crc32(body), "journal": self.journal}
        return MAGIC + orjson.dumps(header) + b"\n" + body

    @classmethod
    def decode(cls, data: bytes, directory: tuple[int, int]) -> SummaryIndex:
        """An index from its file's bytes; ValueError when they are not an index for `directory`
        (st_dev, st_ino), or are inconsistent in any way this can check."""
        if not data.startswith(MAGIC):
            raise ValueError("not a DLQ summary index")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise ValueError("no header")
        try:
            header = orjson.loads(data[len(MAGIC):end])
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"header does not parse: {exc}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        count, names_bytes, texts = header.get("count"), header.get("names_bytes"), header.get("texts")
        if header.get("directory") != list(directory):
            raise ValueError("made for another directory")
        if not (isinstance(count, int) and isinstance(names_bytes, int) and count >= 0 and names_bytes >= 0
                and isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
            raise ValueError("header fields of the wrong type")
        body = memoryview(data)[end + 1:]
        if len(body) != names_bytes + 21 * count:
            raise ValueError("body size does not match the header")
        if zlib.crc32(body) != header.get("crc32"):
            raise ValueError("checksum mismatch")
        at = names_bytes
        names_text = bytes(body[:at]).decode()
        if (names_text.count("\n") + 1 if count else 0) != count or (not count and names_text):
            raise ValueError("name count does not match the header")
        inodes = _column("Q", body[at:at + 8 * count])
        at += 8 * count
        flags = bytes(body[at:at + count])
        at += count
        columns = []
        for _ in range(3):
            column = _column("I", body[at:at + 4 * count])
            at += 4 * count
            if count and max(column) >= len(texts):
                raise ValueError("a text code out of range")
            columns.append(column)
        if _BIG:
            for column in (inodes, *columns):
                column.byteswap()
        index = cls(names_text, inodes, flags, *columns, texts)
        index.journal = header.get("journal")
        return index

    # -- use -----------------------------------------------------------------------------

    def view(self, names: list[str], inodes: dict[str, int]) -> IndexView:
        """What of this index a directory listing confirms (`names`: its entry names, sorted;
        `inodes`: every name's inode in it); ValueError when the index names one confirmed entry
        twice (never written so)."""
        return IndexView(self, names, inodes)


def _column(typecode: str, data: memoryview) -> array:
    column = array(typecode)
    column.frombytes(data)
    return column


def _mask(values: Iterable[bool]) -> int:
    """Booleans as a mask of one byte (0 or 1) per value, as an int, so that masks combine with `&`
    in one C-level operation."""
    return int.from_bytes(bytes(values))


class IndexView:
    """An index checked against one directory listing: `confirmed` (one byte per indexed entry, 1
    when the listing has its name with its inode), `dropped` (indexed entries it does not confirm)
    and `unindexed` (the listing's names the index does not confirm: new entries, rewritten ones,
    and any the index left out).

    When the index names exactly the listing's entries (nothing was added or removed since it was
    saved), the two are compared as one text and one array, and the index's names are never split
    out; otherwise name by name. Every step runs in C over the columns (map, compress, int masks),
    where a Python loop over 100,000 entries would take several times as long.
    """

    def __init__(self, index: SummaryIndex, names: list[str], inodes: dict[str, int]) -> None:
        self.index = index
        self.names: list[str]  # the index's names, as strings equal to the listing's where aligned
        if len(index) == len(names) and index.names_text == "\n".join(names):
            self.names = names
            present = array("Q", map(inodes.__getitem__, names))
            if present == index.inodes:
                self.confirmed = b"\x01" * len(names)
                self._unconfirmed: frozenset[str] = frozenset()
            else:
                self.confirmed = bytes(map(operator.eq, present, index.inodes))
                self._unconfirmed = frozenset(compress(names, self.confirmed.translate(_NOT)))
            self._covered: set[str] | None = None
            self.dropped = len(self._unconfirmed)
            return
        self.names = index.names
        self.confirmed = bytes(map(operator.eq, map(inodes.get, self.names), index.inodes))
        self._covered = set(compress(self.names, self.confirmed))
        if len(self._covered) != self.confirmed.count(1):
            raise ValueError("the index names an entry twice")
        self.dropped = len(self.names) - len(self._covered)

    def rows(self) -> Iterator[Row]:
        """The entries the listing confirms, as indexed."""
        return self.index.rows(self.confirmed, self.names)

    def unindexed(self, names: list[str]) -> list[str]:
        """Those of `names` (some of the listing's, sorted) that the index does not confirm."""
        if self._covered is not None:
            return list(filterfalse(self._covered.__contains__, names))
        return list(filter(self._unconfirmed.__contains__, names)) if self._unconfirmed else []

    def select(self, reason: str | None, source_type: str | None, error: str | None
               ) -> tuple[list[str], list[str]]:
        """(confirmed parseable entries that match, confirmed entries that may match but whose error
        text was truncated before the `error` substring could show), each in index order."""
        index = self.index
        count = len(index)
        if count == 0:
            return [], []
        mask = int.from_bytes(self.confirmed) & int.from_bytes(index.flags.translate(_NOT_CORRUPT))
        for wanted, column in ((reason, index.reasons), (source_type, index.types)):
            if wanted is not None:
                code = index._code.get(wanted)
                mask &= 0 if code is None else _mask(map(code.__eq__, column))
        unsure = 0
        if error is not None:
            hits = {code for code, text in enumerate(index.texts) if error in text}
            hit = _mask(map(hits.__contains__, index.errors))
            unsure = mask & ~hit & int.from_bytes(index.flags.translate(_IS_TRUNCATED))
            mask &= hit
        return (list(compress(self.names, mask.to_bytes(count))),
                list(compress(self.names, unsure.to_bytes(count))) if unsure else [])


# -- on the volume -------------------------------------------------------------------------


def _state_dir(dlq_path: Path, create: bool) -> str | None:
    """`<dlq>/.state` when it is a real directory of this user's (not a link planted in its place);
    created 0700 when missing and `create`; None otherwise."""
    path = os.path.join(dlq_path, STATE_DIR)
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return None
    return path


def state_dir(dlq_path: Path, create: bool = False) -> str | None:
    """The DLQ's private `.state` folder (see `_state_dir`), for the other caches kept there."""
    return _state_dir(dlq_path, create)


def directory_id(dlq_path: Path) -> tuple[int, int]:
    st = os.stat(dlq_path)
    return st.st_dev, st.st_ino


def load(dlq_path: Path, names: int) -> SummaryIndex | None:
    """The index saved for this DLQ directory, or None when there is none or it is not one to use
    (module docstring; logged). `names`: entries in the directory now, which bounds the size taken."""
    state = _state_dir(dlq_path, create=False)
    if state is None:
        return None
    path = os.path.join(state, INDEX_NAME)
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("DLQ summary index %s ignored: %s", path, exc)
        return None
    try:
        st = os.fstat(fd)
        cap = max_index_bytes(names)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ValueError("not a private file of this user's")
        if st.st_size > cap:
            raise ValueError(f"{st.st_size} bytes, over the {cap} taken for {names} entries")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise ValueError(f"over the {cap} bytes taken for {names} entries")
        return SummaryIndex.decode(data, directory_id(dlq_path))
    except (OSError, ValueError) as exc:
        log.warning("DLQ summary index %s ignored: %s", path, exc)
        return None
    finally:
        os.close(fd)


def save(dlq_path: Path, index: SummaryIndex) -> bool:
    """Replace the saved index with `index` atomically (temp file 0600, created without following a
    link, then renamed); False when it was not written (logged): a cache write never fails a call."""
    try:
        data = index.encode(directory_id(dlq_path))
    except OSError as exc:  # the folder removed, or unreachable (ESTALE), since it was listed
        log.warning("DLQ summary index not saved: %s", exc)
        return False
    if len(data) > max_index_bytes(len(index.names)):
        log.info("DLQ summary index not saved: %d bytes of distinct texts is over its cap", len(data))
        return False
    state = _state_dir(dlq_path, create=True)
    if state is None:
        log.warning("DLQ summary index not saved: %s/%s is not a private directory", dlq_path, STATE_DIR)
        return False
    _remove_stale_temps(state)
    tmp = os.path.join(state, f"{TEMP_PREFIX}{INDEX_NAME}-{new_id()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(state, INDEX_NAME))
    except OSError as exc:
        log.warning("DLQ summary index not saved in %s: %s", state, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def _remove_stale_temps(state: str) -> None:
    """Temp files of index writers killed before their rename."""
    prefix = f"{TEMP_PREFIX}{INDEX_NAME}-"
    cutoff = time.time() - STALE_TEMP_S
    try:
        names = [n for n in os.listdir(state) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            if os.lstat(os.path.join(state, name)).st_mtime < cutoff:
                os.unlink(os.path.join(state, name))
        except OSError:
            continue
