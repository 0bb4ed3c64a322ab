"""The dead-letter queue: one JSON file per failed event in a directory (SPEC §7).

Here: admitting records against the DLQ's writability and limits (SPEC §2, §9), writing them
durably (temp file in the same directory, fsync, atomic rename, fsync of the directory), reading,
listing, deleting and purging them, and the statistics `healthz` shows. Not here: deciding what
fails (service.py) or the counter files themselves (stats.py).

Limits are kept without locks across processes and hosts: pending files and bytes are the last
listing plus what a ledger says may have appeared since. The ledger is the shared counters: each
process records what it admits before checking the sum, what it writes, and what it gives back;
see `DeadLetterQueue._pending` and `_unlisted`, and `_admit` for when an admission is fsync'd.

A request waits for its entry file's fsync and one directory fsync that began after its rename;
threads of a process writing at once share directory fsyncs (files.DirSync).

File names are `failed_<unix-seconds>_<uuid7 hex>.json`: they sort by time, and the random part
of a UUIDv7 makes them unique across processes and instances sharing the volume without locks
(file locks are unreliable on NFS and bucket-backed mounts). Their seconds are when the entry was
written, at or just after its first failure, so time filters, the oldest entry's age and drop_oldest
read them from the name alone. Entries of event-triggered events are named after their envelope id
instead (`named_stem`): `failed_<publish seconds>_<envelope id, with its dashes>.json`, the same on
every delivery of their message; their seconds are the message's publish time, which says nothing
of when they failed, so for them every time-based feature reads the record's `timestamp` (through
the catalog: once per process and inode). A reader never sees a partial file:
temp files are named `.tmp-failed_*`, which the file pattern never matches. A writer holds its
temp file for the milliseconds of one write and fsync; one killed in between leaves it behind, so
a DLQ removes those older than STALE_TEMP_S when it starts, and counts the rest in its stats.

An entry's content changes only when a replay that failed again rewrites it (`rewrite`: a new
file renamed over the name, so the name gets a new inode). What a process learned by parsing a
file (its summary, or that it is corrupt) stays true while the name keeps its inode; the
`_Catalog` caches that per (name, inode) and only reads names it has not seen under their
current inode, keeping listings and health fast with 100,000 pending files. Inodes come with
the directory listing itself (readdir's d_ino), so noticing a rewrite costs no stat per file.
A name rewritten twice can get its first inode back (ext4 reuses a freed inode for the next new
file), so a rewrite also appends the name to the rewrite journal first (dlqjournal.py), which every
DLQ object reads on from where it stopped whenever the folder changed, forgetting what it knew of
the names it finds there; the summary index on the volume (dlqindex.py) records how far the journal
had been read when it was saved.

Whatever else is under an entry's name is corrupt, and never followed: entries are read with
files.read_regular, so a symbolic link (to a file outside the DLQ), a FIFO (which would hang the
reader, and with it `healthz`), any other non-regular file, or a file over the record size cap
(`record_cap`) is reported in `corrupt_files` and skipped by listings, like a file that does not
parse. Sizes are taken with lstat. Purging such an entry removes the name, never what it points to.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import orjson

from . import dlqindex, dlqjournal
from .config import DlqSettings
from .envelope import id_time, new_id, parse_time, rfc3339
from .errors import ApiError, DLQUnavailable
from .files import DirSync, fsync_dir, one_kernel, private_dir, read_regular_ino, unwritable, write_synced
from .logs import log_event
from .stats import COUNTERS

log = logging.getLogger(__name__)

# The unique part: 32 hex digits (a fresh UUIDv7's), or a UUID with its dashes (an envelope id's:
# an entry named after its envelope, `named_stem`). Neither can hold a `/` or `..`.
_ID = dlqjournal.ENTRY_ID
ID_RE = re.compile(f"^{_ID}$")
FILE_RE = re.compile(f"^{_ID}\\.json$")
TEMP_PREFIX = ".tmp-"
# A temp file older than this belongs to no live writer (which holds it for milliseconds) even
# with clocks minutes apart between hosts sharing the volume; start-up removes it.
STALE_TEMP_S = 600
# How the limits see the directory (see DeadLetterQueue._pending): a listing is reused for up to
# REBASE_S, and looked at again before refusing when older than REBASE_ON_REFUSAL_S.
REBASE_S = 60.0
REBASE_ON_REFUSAL_S = 1.0
# The ledger's counters (stats.COUNTERS), (files, bytes) each: admitted (recorded before the
# limits are checked), written (renamed into place), returned (admitted, then not written).
ADMITTED = ("dlq_files_admitted", "dlq_bytes_admitted")
WRITTEN = ("dlq_files_written", "dlq_bytes_written")
RETURNED = ("dlq_files_returned", "dlq_bytes_returned")
# The largest entry file a reader takes; larger ones are reported corrupt. A record holds its
# event's text once, JSON-escaped: a control character becomes six bytes, so at the default
# 10 MiB body limit no record reaches 61 MiB. `record_cap` raises it with hec.max_body_bytes.
MAX_RECORD_BYTES = 128 * 1024 * 1024
REASONS = ("normalization_failed", "validation_failed", "storage_failed", "decode_failed")
# A listing page holds at most this many bytes of records (SPEC §11 bounds it by count; this
# bounds the answer and the memory a listing takes whatever the records' sizes).
LIST_PAGE_BYTES = 8 * 1024 * 1024
STAGES = {"normalization_failed": "normalize", "validation_failed": "validate", "storage_failed": "store",
          "decode_failed": "decode"}
# Under drop_oldest, rounds of dropping before an admission is refused after all (other processes
# admitting at the same moment take the room made; each round drops what they took).
MAKE_ROOM_ROUNDS = 5
# A dry run names at most this many of the entries it would touch (it counts them all).
PREVIEW_IDS = 100


def _smallest_entry_bytes() -> int:
    """The size of the smallest entry an event can make: a one-character raw event with empty
    metadata and an empty error (every real entry is at least this large)."""
    envelope = {"id": "0" * 36, "source": "", "source_type": "", "format": "raw", "payload": "x",
                "attributes": {}, "received_at": rfc3339(0)}
    record = make_record(envelope, "storage_failed", "", now=0)
    record["id"] = f"failed_0_{'0' * 32}"
    return len(orjson.dumps(record))


def record_cap(max_body_bytes: int) -> int:
    """The entry size cap for a service taking bodies of up to `max_body_bytes`: MAX_RECORD_BYTES,
    or room for such a body escaped at six bytes per byte with an envelope around it."""
    return max(MAX_RECORD_BYTES, 7 * max_body_bytes)


def named_stem(record: dict[str, Any]) -> str | None:
    """The entry id of a record named after its envelope (an event-triggered event's, SPEC §7):
    `failed_<seconds>_<envelope id, dashes kept>`, the seconds being the envelope id's time
    (UUIDv7: the message's publish time), so a message delivered again names its entries the same.
    The dashes tell such a name from an ordinary one (`is_named`), whose seconds are its failure's.
    None when the envelope id is not a UUIDv7."""
    envelope = record.get("envelope")
    envelope_id = envelope.get("id") if isinstance(envelope, dict) else None
    when = id_time(envelope_id) if isinstance(envelope_id, str) else None
    if when is None:
        return None
    stem = f"failed_{int(when)}_{envelope_id.lower()}"
    return stem if ID_RE.fullmatch(stem) else None


def check_id(entry_id: str) -> str:
    """Reject anything that is not a DLQ entry name before it comes near the filesystem."""
    if not ID_RE.fullmatch(entry_id):
        raise ApiError(400, f"not a DLQ entry id: {entry_id[:80]!r} "
                            "(expected failed_<seconds>_<32 hex digits or a UUID>)")
    return entry_id


def is_named(entry: str) -> bool:
    """Whether an entry id or file name is named after its envelope (`named_stem`): its seconds
    are then its message's publish time, not when it first failed."""
    return "-" in entry


def make_record(
    envelope: dict[str, Any],
    reason: str,
    error: str,
    attempts: int = 1,
    details: dict[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """A DLQ record: the seed's fields first, exactly as the seed names them, then ours.

    `id` is filled in by `DeadLetterQueue.write`, since it is the file's name.
    """
    stamp = rfc3339(now)
    return {
        "timestamp": stamp,
        "envelope": envelope,
        "error": error,
        "reason": reason,
        "attempts": attempts,
        "last_attempt": stamp,
        "id": "",
        "stage": STAGES[reason],
        "details": details or {},
    }


def truncated_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A listing entry for a record too large for a page: every member but `envelope`, then
    `envelope_bytes` (the envelope's size as JSON) and `"truncated": true`.

    The envelope is left out whole, never cut down: a client that posts `.envelope` back to HEC
    (the seed's replay loop) gets `null` for this entry, which HEC refuses, rather than a partial
    event stored under the real id, where it would make the real event unstorable.
    """
    entry = {key: value for key, value in record.items() if key != "envelope"}
    entry["envelope_bytes"] = len(orjson.dumps(record["envelope"]))
    entry["truncated"] = True
    return entry


MIN_ENTRY_BYTES = _smallest_entry_bytes()


@dataclass(frozen=True, slots=True)
class Summary:
    """What listings filter on, kept per file so filtering needs no re-read."""

    reason: str
    source_type: str
    error: str
    seconds: int


@dataclass(frozen=True, slots=True)
class DlqFilter:
    reason: str | None = None
    source_type: str | None = None
    since: float | None = None
    until: float | None = None
    error: str | None = None

    def matches_name(self, seconds: int) -> bool:
        return (self.since is None or seconds >= self.since) and (self.until is None or seconds <= self.until)

    def matches(self, s: Summary) -> bool:
        return (
            (self.reason is None or s.reason == self.reason)
            and (self.source_type is None or s.source_type == self.source_type)
            and (self.error is None or self.error in s.error)
            and self.matches_name(s.seconds)
        )

    @property
    def needs_content(self) -> bool:
        return any(v is not None for v in (self.reason, self.source_type, self.error))


NO_FILTER = DlqFilter()
CORRUPT = None  # the catalog's mark for a file that matches the pattern but does not parse


class _Catalog:
    """Per-process cache of file name -> Summary (or CORRUPT), each known for one inode.

    An entry is rewritten only by renaming a new file over its name (`DeadLetterQueue.rewrite`),
    which gives the name a new inode; a listing reads every name's inode from the directory
    itself (readdir's d_ino: no stat per file), so what was learned about a name counts only
    while its inode is the one it was learned from, in every process sharing the directory.
    Because an inode can come back (a name rewritten twice), names found in the rewrite journal
    are forgotten (`invalidate`), and a summary read before that (`epoch` taken before the read)
    is not put back afterwards.
    Corrupt names are also kept as a set, so counting them never walks the whole backlog.
    """

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, Summary | None]] = {}
        self.corrupt: set[str] = set()
        # File sizes, for pending bytes: known from this process's writes, else stat'ed once.
        self._sizes: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        # Counts invalidations; the epoch of each name's last one, and of the last `clear`.
        self.epoch = 0
        self._invalidated: dict[str, int] = {}
        self._cleared = 0

    def get(self, name: str, inode: int | None) -> Summary | bool | None:
        """The summary, CORRUPT (None), or False when this process has not read the file yet
        (or read it under another inode, before a rewrite)."""
        known = self._known.get(name)
        if known is None or known[0] != inode:
            return False
        return known[1]

    def put(self, name: str, inode: int, summary: Summary | None, size: int | None = None,
            since: int | None = None) -> None:
        """Remember what the file `name` under `inode` holds; `since`: the `epoch` before it was
        read, so that what was read before the name was invalidated is dropped."""
        with self._lock:
            if since is not None and (since < self._cleared or self._invalidated.get(name, -1) > since):
                return
            self._known[name] = (inode, summary)
            if size is not None:
                self._sizes[name] = (inode, size)
            if summary is CORRUPT:
                self.corrupt.add(name)
            else:
                self.corrupt.discard(name)

    def forget(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._known.pop(name, None)
                self._sizes.pop(name, None)
                self.corrupt.discard(name)
                self._invalidated.pop(name, None)  # removed: entry names are never used again

    def invalidate(self, names: Iterable[str]) -> None:
        """Forget `names` (rewritten since they were read: found in the rewrite journal)."""
        with self._lock:
            self.epoch += 1
            for name in names:
                self._known.pop(name, None)
                self._sizes.pop(name, None)
                self.corrupt.discard(name)
                self._invalidated[name] = self.epoch

    def clear(self) -> None:
        """Forget everything (rewrites may have been missed: dlqjournal.read)."""
        with self._lock:
            self.epoch += 1
            self._cleared = self.epoch
            self._known.clear()
            self._sizes.clear()
            self.corrupt.clear()
            self._invalidated.clear()

    def unseen(self, present: frozenset[str], inodes: Mapping[str, int]) -> list[str]:
        """Names present on disk that this process has not read under their inode, oldest first."""
        known = self._known
        return sorted(name for name in present if (k := known.get(name)) is None or k[0] != inodes[name])

    def retain(self, inodes: Mapping[str, int]) -> None:
        """Forget names that are gone, and what was learned under an inode a name no longer has
        (`inodes`: every name in the directory)."""
        with self._lock:
            for name in [n for n, k in self._known.items() if inodes.get(n) != k[0]]:
                del self._known[name]
                self.corrupt.discard(name)
            for name in [n for n, k in self._sizes.items() if inodes.get(n) != k[0]]:
                del self._sizes[name]
            for name in [n for n in self._invalidated if n not in inodes]:
                del self._invalidated[name]

    def total_size(self, present: frozenset[str], inodes: Mapping[str, int], directory: Path) -> int:
        """Bytes of the named files, stat'ing only those whose size is not known for their inode."""
        with self._lock:
            missing = [n for n in present if (k := self._sizes.get(n)) is None or k[0] != inodes[n]]
        found = {}
        for name in missing:
            try:
                st = os.lstat(directory / name)
            except FileNotFoundError:
                continue  # purged since the listing
            found[name] = (st.st_ino, st.st_size)
        with self._lock:
            self._sizes.update(found)
            return sum(k[1] for name in present if (k := self._sizes.get(name)) is not None)


@dataclass(frozen=True)
class _Listing:
    """One scan of the directory: entry names oldest first, and the directory mtime it saw."""

    names: list[str]
    inodes: dict[str, int]  # every name's inode in the directory, as it gave it (readdir's d_ino)
    mtime_ns: int
    temp_files: int
    # Directory mtimes have a coarse clock: a change in the same tick as the scan could leave the
    # mtime as it was. A listing is reused only when the last change was well before the scan.
    trusted: bool

    @cached_property
    def present(self) -> frozenset[str]:
        """The entry names as a set (made when first needed: 100,000 names take 15-25 ms, which a
        filtered listing through the summary index does without)."""
        return frozenset(self.names)

    @cached_property
    def named(self) -> list[str]:
        """The names of entries named after their envelope (`is_named`), oldest name first."""
        return [name for name in self.names if "-" in name]


LISTING_TRUST_S = 0.1
# Filters whose matching names a DLQ keeps for its current listing (DeadLetterQueue._matching).
MATCH_CACHE_FILTERS = 16
# The summary index on the volume (dlqindex.py) is used and kept from this many entries on (fewer
# are read in a few tens of milliseconds); a process saves it at most every INDEX_SAVE_INTERVAL_S,
# after a filtered listing over every entry that found more than 1/INDEX_STALE_SHARE of them
# missing from the index (new, rewritten or gone), or found no index at all.
INDEX_MIN_ENTRIES = 1000
INDEX_SAVE_INTERVAL_S = 60.0
INDEX_STALE_SHARE = 50
# One C-level pass over all names instead of a Python-level match per name (100,000 names: ~70 ms
# against ~200 ms).
_NAMES_RE = re.compile(FILE_RE.pattern, re.MULTILINE)
# `.tmp-<entry id>`, or `.tmp-<entry id>.<16 hex>` for an entry named after its envelope: every
# delivery of its message writes one, at the same moment when deliveries race (`_temp_path`).
_TEMP_RE = re.compile(f"^{re.escape(TEMP_PREFIX)}{_ID}(?:\\.[0-9a-f]{{16}})?$")


def _temp_names(names: list[str]) -> list[str]:
    """The temp files among a directory's names (a prefix test first: ~5 ms for 100,000 names)."""
    return [n for n in names if n.startswith(TEMP_PREFIX) and _TEMP_RE.match(n)]


def _summarize(record: dict[str, Any], seconds: int) -> Summary:
    """What filters need of a record; `seconds`: its name's (`_seconds`). The summary's seconds are
    when it first failed: the name's, or for an entry named after its envelope (`is_named`, told by
    the record's id) its `timestamp` (the name's when that cannot be read)."""
    envelope = record.get("envelope") or {}
    if is_named(str(record.get("id", ""))):
        try:
            seconds = int(parse_time(record["timestamp"]))
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
            pass
    return Summary(
        reason=str(record.get("reason", "")),
        source_type=str(envelope.get("source_type", "")) if isinstance(envelope, dict) else "",
        error=str(record.get("error", "")),
        seconds=seconds,
    )


class Ledger(Protocol):
    """Counters every process sharing the directory adds to, one file per process (stats.Counters):
    `snapshot` gives each file's last change (unix seconds) and values in stats.COUNTERS order."""

    def add(self, now: bool = False, sync: bool = False, **deltas: int) -> None: ...

    def snapshot(self) -> dict[str, tuple[float, list[int]]]: ...


class LocalLedger:
    """The ledger of a DLQ used without shared counters: this process's own entries only."""

    def __init__(self) -> None:
        self._values = [0] * len(COUNTERS)
        self._lock = threading.Lock()

    def add(self, now: bool = False, sync: bool = False, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._values[COUNTERS.index(name)] += delta

    def snapshot(self) -> dict[str, tuple[float, list[int]]]:
        with self._lock:
            return {"": (time.time(), list(self._values))}


_AT = {name: COUNTERS.index(name) for name in (*ADMITTED, *WRITTEN, *RETURNED)}


def _unlisted(before: dict[str, tuple[float, list[int]]], now: dict[str, tuple[float, list[int]]],
              at: float) -> tuple[int, int]:
    """Files and bytes that may be in place without being in a listing taken after `before`.

    Per ledger file: written since the listing (not in it), plus admitted and neither written nor
    returned yet (in flight). Compared file by file, each part never below zero, so a file
    adopted by a new process (renamed) while a snapshot was read, showing under both names or
    neither, can only count high; so can a process that went on in a new file after a compaction
    took its old one (stats.py), whose new file may write entries the old one admitted. A file
    unchanged for STALE_TEMP_S belongs to a process that died: what it admitted and never wrote
    or returned is not in flight any more, and counts zero.
    """
    totals = [0, 0]
    for name, (mtime, values) in now.items():
        if at - mtime > STALE_TEMP_S:
            continue
        old = before.get(name)
        for k in (0, 1):
            written = values[_AT[WRITTEN[k]]]
            written_before = old[1][_AT[WRITTEN[k]]] if old else 0
            in_flight = values[_AT[ADMITTED[k]]] - values[_AT[RETURNED[k]]] - written
            totals[k] += max(0, written - written_before) + max(0, in_flight)
    return totals[0], totals[1]


@dataclass(frozen=True, slots=True)
class _Baseline:
    """A listing's pending files and bytes, and the ledger as read just before it."""

    files: int
    nbytes: int
    ledger: dict[str, tuple[float, list[int]]]
    at: float  # time.monotonic() when taken


@dataclass(frozen=True, slots=True)
class _Entry:
    """One record ready to write: its file stem (the entry id) and its bytes."""

    stem: str
    data: bytes
    summary: Summary
    # Named after its envelope (an event-triggered one, `named_stem`): created only if absent, and
    # an entry already under the name is this one's earlier write (a redelivery).
    exclusive: bool = False


class Reservation:
    """Entries the DLQ has admitted and not yet written; they count against its limits meanwhile.

    Ingest reserves the failures it knows before storing anything, so a request that would take the
    DLQ past a limit is refused whole (SPEC §2); it adds the storage failures once storing is done
    (`add` may refuse them too); `write` makes every entry durable at once, all or nothing. Leaving
    the `with` block gives back whatever was not written.
    """

    def __init__(self, dlq: DeadLetterQueue, named: bool = False) -> None:
        self._dlq = dlq
        self._named = named
        self._entries: list[_Entry] = []
        self.files = 0
        self.nbytes = 0
        # Ids of entries `write` found already written under their name (`named_stem`): a message
        # delivered again dead-letters nothing twice, and they are not counted again.
        self.existing: set[str] = set()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def add(self, records: list[dict[str, Any]], now: float | None = None) -> None:
        """Admit more records (ids assigned, serialized) or raise DLQUnavailable, adding none."""
        if not records:
            return
        entries = self._dlq._entries(records, now, self._named)
        nbytes = sum(len(e.data) for e in entries)
        self._dlq._admit(len(entries), nbytes)
        self._entries.extend(entries)
        self.files += len(entries)
        self.nbytes += nbytes

    def write(self) -> list[str]:
        """Write every admitted entry durably and return their ids; DLQUnavailable leaves none."""
        if not self._entries:
            return []
        ids = self._dlq._write_entries(self._entries, self.existing)
        self._entries, self.files, self.nbytes = [], 0, 0
        return ids

    def release(self) -> None:
        """Give back what was admitted and not written."""
        if self.files:
            self._dlq._record(RETURNED, self.files, self.nbytes)
        self._entries, self.files, self.nbytes = [], 0, 0


class DeadLetterQueue:
    """The DLQ directory. Thread-safe; any number of processes may share the directory."""

    def __init__(self, settings: DlqSettings, ledger: Ledger | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES,
                 on_drop: Callable[[list[str]], None] | None = None) -> None:
        """`ledger`: where writes are recorded for every process sharing the directory to see
        (the service passes its shared Counters); alone, a DLQ knows only its own writes.
        `max_record_bytes`: entry files larger than this are reported corrupt (`record_cap`).
        `on_drop(ids)`: called with the ids of entries `dlq.full_policy: drop_oldest` deleted to
        make room (the service counts and audits them), while the admission lock is held."""
        self.enabled = settings.enabled
        self.full_policy = settings.full_policy
        self.on_drop = on_drop
        self.max_record_bytes = max_record_bytes
        self.path = Path(settings.base_path)
        self._dir = str(self.path)
        self.max_pending_files = settings.max_pending_files
        self.max_pending_bytes = settings.max_pending_bytes
        self.min_free_bytes = settings.min_free_bytes
        self._catalog = _Catalog()
        self._listing: _Listing | None = None
        self._verified: _Listing | None = None
        self._unseen: list[str] = []
        self._stats_lock = threading.Lock()
        self._ledger: Ledger = ledger if ledger is not None else LocalLedger()
        self._ledger_shared = not self._ledger_on_one_kernel()  # across hosts: see there
        self._dir_sync = DirSync(self.path)
        self._admit_lock = threading.Lock()
        self._base: _Baseline | None = None
        self._listing_bytes: tuple[_Listing, int] | None = None
        self._oldest: tuple[_Listing, int | None] | None = None  # oldest_entry_time, per listing
        # Filtered listings' matching names, per filter, for the listing they were computed on.
        self._matches: dict[DlqFilter, tuple[_Listing, list[str]]] = {}
        # The summary index (dlqindex.py): loaded once, replaced by the one this process saves.
        self._index: dlqindex.SummaryIndex | None = None
        self._index_loaded = False
        self._index_view: tuple[_Listing, dlqindex.IndexView] | None = None
        self._index_saved_at: float | None = None
        self._index_lock = threading.Lock()
        # The rewrite journal (dlqjournal.py): how far this object has read it, the names found in
        # it that the loaded index may still give an older summary of, and this object's file.
        self._journal_at: dlqjournal.Position | None = None
        self._index_stale: frozenset[str] = frozenset()
        self._index_saving = False
        self._journal_lock = threading.Lock()
        self._journal = dlqjournal.Writer(self.path, lambda create: dlqindex.state_dir(self.path, create))
        if self.enabled:
            self._prepare()
            self.remove_stale_temp_files()
            # Where the journal ends now: lines before it concern nothing this object will cache.
            self._follow_journal()

    # -- writing -------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the directory 0700; an existing one is tightened when we own it."""
        try:
            private_dir(self.path)
            if self.path.stat().st_uid == os.getuid():
                self.path.chmod(0o700)
        except OSError as exc:
            # Not fatal at start-up: ingest answers 503 while the DLQ cannot be written.
            log.error("dlq.base_path: %s cannot be prepared: %s", self.path, exc)

    def remove_stale_temp_files(self, now: float | None = None) -> list[str]:
        """Remove temp files (`.tmp-failed_*`) last modified STALE_TEMP_S or more before `now`:
        what writers killed between create and rename left. Returns the names removed."""
        cutoff = (time.time() if now is None else now) - STALE_TEMP_S
        removed = []
        try:
            for name in _temp_names(os.listdir(self.path)):
                try:
                    if os.lstat(self.path / name).st_mtime <= cutoff:
                        os.unlink(self.path / name)
                        removed.append(name)
                except FileNotFoundError:
                    continue  # renamed by its writer, or removed by another instance starting
            if removed:
                fsync_dir(self.path)
        except OSError as exc:
            log.error("dlq.base_path: %s: stale temp files cannot be removed: %s", self.path, exc)
        if removed:
            log.warning("removed %d temp files left in %s by writers that were killed", len(removed),
                        self.path)
        return removed

    # -- admission: the limits, checked before anything of a request is stored ----------------

    def refusal(self, files: int = 1, nbytes: int = MIN_ENTRY_BYTES) -> str | None:
        """Why `files` more entries of `nbytes` bytes in all would be refused now; None if taken.

        The one answer both ingest (before storing anything) and health use (SPEC §2, §3). Health
        asks about the smallest entry an event can make (MIN_ENTRY_BYTES), so "not accepting"
        means no event at all could be dead-lettered, exactly when ingest refuses every one. Checked
        in order: disabled; base path missing, not a directory, on a read-only filesystem or not
        writable by this process's effective user (files.unwritable); free space would fall below
        dlq.min_free_bytes; pending files or bytes would pass dlq.max_pending_files or
        dlq.max_pending_bytes (0: no limit). Pending counts what every process sharing the
        directory has admitted and not yet written too (see `_pending`). Under `dlq.full_policy:
        drop_oldest` the pending limits refuse only entries larger than the limits themselves.
        """
        with self._admit_lock:
            if self.full_policy == "drop_oldest":
                return self._unusable(files, nbytes) or self._beyond_limits(files, nbytes)
            return self._unusable(files, nbytes) or self._over_limits(files, nbytes, admitted=False)

    def check_writable(self) -> None:
        """Raise DLQUnavailable (with the reason) when one more entry would be refused now."""
        if (reason := self.refusal()) is not None:
            raise DLQUnavailable(reason)

    def accepting(self) -> bool:
        """Whether one more entry would be taken now."""
        return self.refusal() is None

    def reserve(self, records: list[dict[str, Any]], now: float | None = None, named: bool = False
                ) -> Reservation:
        """Admit `records` (serialized now, ids assigned) or raise DLQUnavailable with the reason.

        Nothing is written until `Reservation.write`; until then the entries count against the
        limits for every process. Use as a context manager so that what is not written is
        returned. `named`: the entries (these and those added later) are named after their
        envelope ids (`named_stem`: event-triggered events, SPEC §7) and created only if absent.
        """
        held = Reservation(self, named)
        held.add(records, now)
        return held

    def write(self, record: dict[str, Any], now: float | None = None) -> str:
        return self.write_many([record], now)[0]

    def write_many(self, records: list[dict[str, Any]], now: float | None = None) -> list[str]:
        """Admit and write records durably; return their ids. All or nothing: DLQUnavailable."""
        with self.reserve(records, now) as held:
            return held.write()

    @property
    def _limited(self) -> bool:
        return bool(self.max_pending_files or self.max_pending_bytes)

    def _unusable(self, files: int, nbytes: int) -> str | None:
        """Why the directory cannot take `files` files of `nbytes` in all, limits aside."""
        if not self.enabled:
            return "the DLQ is disabled (dlq.enabled: false)"
        if (problem := unwritable(self.path)) is not None:
            return f"dlq.base_path: {problem}"
        try:
            fs = os.statvfs(self.path)
        except OSError as exc:
            return f"dlq.base_path: {self.path} is not usable ({exc.strerror})"
        # Each file takes at least one block, whatever its size.
        free = fs.f_bavail * fs.f_frsize
        if free - nbytes - files * fs.f_frsize < self.min_free_bytes:
            wanted = f"{files} more file(s) of {nbytes} bytes"
            if self.min_free_bytes:
                return (f"dlq.base_path: {self.path}: {wanted} would leave less than dlq.min_free_bytes="
                        f"{self.min_free_bytes} free ({free} bytes free)")
            return (f"dlq.base_path: {self.path} is full: {wanted} do not fit in the {free} bytes free "
                    f"(each file takes at least one {fs.f_frsize}-byte block)")
        return None

    def _over_limits(self, files: int, nbytes: int, admitted: bool) -> str | None:
        """Why `files`/`nbytes` more would pass a limit; `admitted`: already in the ledger. Before
        refusing, the directory is listed again when the last listing is over a second old, since
        deletions since then are not subtracted. The caller holds _admit_lock."""
        if not self._limited:
            return None
        over = self._over(files, nbytes, admitted)
        base = self._base
        if over is not None and (base is None or time.monotonic() - base.at > REBASE_ON_REFUSAL_S):
            self._base = None
            over = self._over(files, nbytes, admitted)
        return over

    def _over(self, files: int, nbytes: int, admitted: bool) -> str | None:
        pending_files, pending_bytes = self._pending()
        if admitted:
            pending_files, pending_bytes = pending_files - files, pending_bytes - nbytes
        if self.max_pending_files and pending_files + files > self.max_pending_files:
            return (f"the DLQ would hold more than dlq.max_pending_files={self.max_pending_files} "
                    f"files ({pending_files} pending, {files} more)")
        if self.max_pending_bytes and pending_bytes + nbytes > self.max_pending_bytes:
            return (f"the DLQ would hold more than dlq.max_pending_bytes={self.max_pending_bytes} "
                    f"bytes ({pending_bytes} pending, {nbytes} more)")
        return None

    def _pending(self) -> tuple[int, int]:
        """Files and bytes pending now, admitted ones included, erring high, without listing the
        directory each time.

        The last listing (taken at most REBASE_S ago), plus what the ledger says may be in place
        without being in it (`_unlisted`): every process records what it admits before checking,
        so of two processes admitting at once, the later one always counts the earlier one's
        entries. Deletions since the listing are not subtracted until the next one. The caller
        holds _admit_lock.
        """
        base = self._base
        if base is None or time.monotonic() - base.at > REBASE_S:
            ledger = self._ledger.snapshot()  # before listing: an entry written in between counts twice
            listing = self._scan()
            base = self._base = _Baseline(len(listing.names), self._bytes_of(listing), ledger,
                                          time.monotonic())
        files, nbytes = _unlisted(base.ledger, self._ledger.snapshot(), time.time())
        return base.files + files, base.nbytes + nbytes

    def _admit(self, files: int, nbytes: int) -> None:
        """Record `files`/`nbytes` as admitted, or raise DLQUnavailable having recorded nothing
        (or returned what was recorded)."""
        with self._admit_lock:
            if (reason := self._unusable(files, nbytes)) is not None:
                raise DLQUnavailable(reason)
            # Recorded first, then checked; fsync'd only where other hosts read the ledger
            # (`_ledger_on_one_kernel`).
            self._record(ADMITTED, files, nbytes, sync=self._limited and self._ledger_shared)
            reason = self._over_limits(files, nbytes, admitted=True)
            if reason is not None and self.full_policy == "drop_oldest":
                reason = self._beyond_limits(files, nbytes)
                # Other processes admitting meanwhile take room too: a few rounds, then refuse.
                for _ in range(MAKE_ROOM_ROUNDS if reason is None else 0):
                    if (reason := self._make_room(files, nbytes)) is None:
                        break
            if reason is not None:
                self._record(RETURNED, files, nbytes)
                raise DLQUnavailable(reason)

    def _ledger_on_one_kernel(self) -> bool:
        """Whether the ledger and the directory are on a filesystem of one kernel's page cache
        (files.ONE_KERNEL_FILESYSTEMS): then an admission is written (pwrite) but not fsync'd.

        The limits need one thing of an admission: every process that checks the limits after it
        was recorded counts it (`_pending`). Where every process sharing the volume runs on one
        kernel, the written admission is in the page cache that all of them read, so that holds as
        soon as the write returns; fsync adds nothing to it. What fsync adds is surviving a power
        cut or kernel crash, and that is of no use to the limits there: the crash ends every
        process on the volume with it, an admission in flight then stands for an entry no one
        will write, and the processes that start afterwards count what is in the directory from a
        listing of their own (an admission that survived counts high until STALE_TEMP_S, never
        low). Entries themselves stay fsync'd (file and directory) before any answer (SPEC §2).

        On NFS, EFS, SMB, FUSE and bucket mounts (any other type, or when the type cannot be
        told) other hosts read the ledger file over the network: with close-to-open semantics a
        reader's open sees what was flushed to the server before it, and a writer that keeps its
        file open flushes only by fsync (or by its client's own write-back, whenever that comes).
        There each admission stays fsync'd before the limits are checked. Skipping it while the
        DLQ is far from its limits would not do: what other hosts have admitted and not flushed
        yet is bounded by time (their flusher's interval), not by count, so no margin below the
        limits is safe from a burst.
        """
        directory = getattr(self._ledger, "directory", None)  # stats.Counters: its own folder
        return all(one_kernel(path) for path in (self.path, *([directory] if directory else [])))

    def _beyond_limits(self, files: int, nbytes: int) -> str | None:
        """Why `files`/`nbytes` alone pass a pending limit (no dropping makes room for them)."""
        if self.max_pending_files and files > self.max_pending_files:
            return f"{files} entries are more than dlq.max_pending_files={self.max_pending_files}"
        if self.max_pending_bytes and nbytes > self.max_pending_bytes:
            return f"{nbytes} bytes of entries are more than dlq.max_pending_bytes={self.max_pending_bytes}"
        return None

    def _make_room(self, files: int, nbytes: int) -> str | None:
        """Under drop_oldest: delete the oldest entries until `files`/`nbytes` (already admitted)
        fit the pending limits; None when they do, else why not (entries admitted by other
        processes and not yet written cannot be dropped). The caller holds _admit_lock."""
        self._base = None  # a fresh listing: only what is there can be dropped
        pending_files, pending_bytes = self._pending()
        excess_files = pending_files - self.max_pending_files if self.max_pending_files else 0
        excess_bytes = pending_bytes - self.max_pending_bytes if self.max_pending_bytes else 0
        self._drop(self.oldest(excess_files, excess_bytes))
        self._base = None
        return self._over(files, nbytes, admitted=True)

    def oldest(self, files: int, nbytes: int, skip: frozenset[str] = frozenset()) -> list[str]:
        """Ids of the oldest entries by first failure (corrupt ones included, those in `skip` left
        out) that together make at least `files` files and `nbytes` bytes (either may be zero or
        less: nothing is needed on that count)."""
        chosen: list[str] = []
        for name in self._by_first_failure(self._scan()):
            if files <= 0 and nbytes <= 0:
                break
            if name[:-5] in skip:
                continue
            try:
                size = os.lstat(self.path / name).st_size
            except FileNotFoundError:
                continue
            chosen.append(name[:-5])
            files, nbytes = files - 1, nbytes - size
        return chosen

    def _drop(self, ids: list[str]) -> list[str]:
        """Delete entries to make room; `on_drop` hears of the ones this call removed."""
        dropped = self._remove([f"{i}.json" for i in ids])
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return dropped

    def _record(self, names: tuple[str, str], files: int, nbytes: int, sync: bool = False) -> None:
        # Written at once (not by the counters' flusher): other processes' limit checks read it.
        self._ledger.add(now=True, sync=sync, **{names[0]: files, names[1]: nbytes})

    def _entries(self, records: list[dict[str, Any]], now: float | None, named: bool = False
                 ) -> list[_Entry]:
        """Records with their ids assigned (with `named`, `named_stem` where the envelope id is a
        UUIDv7; else the failure's seconds and a fresh UUIDv7), serialized as they will be written."""
        seconds = int(time.time() if now is None else now)
        entries = []
        for record in records:
            stem = named_stem(record) if named else None
            exclusive = stem is not None
            if stem is None:
                stem = f"failed_{seconds}_{new_id().replace('-', '')}"
            record["id"] = stem
            entries.append(_Entry(stem, orjson.dumps(record), _summarize(record, _seconds(stem)), exclusive))
        return entries

    def _write_entries(self, entries: list[_Entry], existing: set[str] | None = None) -> list[str]:
        """Write entries durably; all or nothing: raise DLQUnavailable on failure.

        Each file is fsync'd before its rename; the directory is fsync'd once after all renames,
        which makes the renames durable for the whole batch at the cost of one extra fsync. That
        fsync is shared with other threads of this process renaming entries at the same moment
        (files.DirSync): each waits for one that began after its last rename. An exclusive entry
        (`named_stem`) is linked into place instead, which fails when the name exists: that entry
        was written by an earlier delivery of its message, is left as it is and counts as written;
        its id goes into `existing`.
        """
        done: list[Path] = []
        tmp: Path | None = None
        found: set[str] = set()
        try:
            for entry in entries:
                tmp = self._temp_path(entry)
                inode = write_synced(tmp, entry.data)
                final = self.path / f"{entry.stem}.json"
                if entry.exclusive:
                    try:
                        os.link(tmp, final)
                    except FileExistsError:
                        found.add(entry.stem)  # another delivery's, earlier or at this moment
                    os.unlink(tmp)
                else:
                    os.replace(tmp, final)
                tmp = None
                if entry.stem in found:
                    continue
                if not entry.exclusive:
                    done.append(final)
                self._catalog.put(final.name, inode, entry.summary, len(entry.data))
            self._dir_sync.sync()
        except OSError as exc:
            self._undo(done, tmp)
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise DLQUnavailable(
                f"dlq.base_path: {self.path} is not writable (errno {exc.errno}{hint})"
            ) from exc
        written = [e for e in entries if e.stem not in found]
        self._record(WRITTEN, len(written), sum(len(e.data) for e in written))
        if found:
            self._record(RETURNED, len(found), sum(len(e.data) for e in entries if e.stem in found))
        if existing is not None:
            existing |= found
        ids = [entry.stem for entry in entries]
        # Ids and reasons only: an error text may quote the event (a validation message does).
        log_event(log, logging.INFO, "dlq_write", f"dead-lettered {len(written)} event(s)",
                  ids=[e.stem for e in written], reasons=[e.summary.reason for e in written],
                  count=len(written))
        return ids

    def _temp_path(self, entry: _Entry) -> Path:
        """Where an entry is written before its rename or link: a name of its own. An ordinary
        entry's id is already unique; an entry named after its envelope is written by every
        delivery of its message, so its temp name takes a random suffix (two deliveries racing
        must never create, or undo, each other's temp file)."""
        suffix = f".{secrets.token_hex(8)}" if entry.exclusive else ""
        return self.path / f"{TEMP_PREFIX}{entry.stem}{suffix}"

    def _undo(self, done: list[Path], tmp: Path | None) -> None:
        """A failed batch leaves nothing behind that a resend would write again: the caller answers
        503 and the client resends. Entries named after their envelope stay: a delivery of the same
        message running at the same moment may have found one in place and answered success, and a
        redelivery finds them and writes nothing twice."""
        for path in [*done, *([tmp] if tmp else [])]:
            try:
                path.unlink()
            except OSError:
                pass
        self._catalog.forget(p.name for p in done)

    def _bytes_of(self, listing: _Listing) -> int:
        """Pending bytes of a listing: sizes known from writes and earlier listings, the rest
        stat'ed once per process (a cold process with 100,000 pending files: one stat each)."""
        cached = self._listing_bytes
        if cached is not None and cached[0] is listing:
            return cached[1]
        total = self._catalog.total_size(listing.present, listing.inodes, self.path)
        self._listing_bytes = (listing, total)
        return total

    # -- reading -------------------------------------------------------------------------

    def _names(self) -> list[str]:
        """Entry file names, oldest first. Names not matching the pattern are ignored entirely."""
        return self._scan().names

    def _scan(self) -> _Listing:
        """The directory's entries, rescanned only when its mtime says something changed."""
        try:
            mtime_ns = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return _Listing([], {}, 0, 0, False)
        listing = self._listing
        if listing is not None and listing.trusted and listing.mtime_ns == mtime_ns:
            return listing
        started_ns = time.time_ns()
        # Before the names: a rewrite's line precedes its rename, which changes the folder's mtime.
        self._follow_journal()
        try:
            # Inodes come with the names (d_ino), no stat: 100,000 names took about as long as
            # with os.listdir, matching included (alternated runs).
            with os.scandir(self.path) as found:
                inodes = {entry.name: entry.inode() for entry in found}
        except FileNotFoundError:
            inodes = {}
        joined = "\n".join(inodes)
        names = _NAMES_RE.findall(joined)
        names.sort()
        # Temp files live for the milliseconds of a write: one search of the text usually rules
        # them out, where testing each name took 15 ms per 100,000.
        temp_files = len(_temp_names(list(inodes))) if TEMP_PREFIX in joined else 0
        listing = _Listing(names, inodes, mtime_ns, temp_files,
                           trusted=started_ns - mtime_ns > LISTING_TRUST_S * 1e9)
        self._listing = listing
        return listing

    def _follow_journal(self) -> None:
        """Read the rewrite journal on from where this object stopped: forget the names rewritten
        since, in the catalog and for the loaded index; drop both whole when lines may have been
        lost (dlqjournal.read)."""
        with self._journal_lock:
            directory = dlqjournal.journal_dir(self.path, dlqindex.state_dir(self.path))
            position, names = dlqjournal.read(directory, self._journal_at)
            self._journal_at = position
            if names is None:
                log.warning("DLQ rewrite journal in %s cannot be continued: cached summaries dropped",
                            self.path)
                self._catalog.clear()
                self._index, self._index_loaded, self._index_stale = None, True, frozenset()
            elif names:
                self._catalog.invalidate(names)
                if self._index is not None or self._index_saving:
                    self._index_stale = self._index_stale | names

    def _load(self, name: str) -> dict[str, Any] | None:
        """Parse one file; None when it is corrupt (or vanished under a concurrent purge). Not a
        regular file, a link, or over the size cap: corrupt, and never followed (module docstring)."""
        return self._load_sized(name)[0]

    def _load_sized(self, name: str) -> tuple[dict[str, Any] | None, int]:
        """`_load`, and the file's size in bytes (0 when it could not be read)."""
        since = self._catalog.epoch  # what is read now may be outdated by a journal line read meanwhile
        try:
            # A string path: pathlib's joining was a tenth of a replay's time per entry.
            data, inode = read_regular_ino(f"{self._dir}/{name}", self.max_record_bytes)
        except FileNotFoundError:
            self._catalog.forget([name])
            return None, 0
        except OSError:
            self._put_corrupt(name, since)
            return None, 0
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("envelope"), dict):
            self._catalog.put(name, inode, CORRUPT, len(data), since)
            return None, len(data)
        self._catalog.put(name, inode, _summarize(record, _seconds(name)), len(data), since)
        return record, len(data)

    def _put_corrupt(self, name: str, since: int) -> None:
        """Mark an entry that cannot even be opened as a regular file (a link, a FIFO) corrupt;
        `since`: the catalog's epoch before the open, so that an entry rewritten (and its journal
        line followed) after the failed open is not taken for corrupt under its new inode."""
        try:
            inode = os.lstat(self.path / name).st_ino
        except OSError:
            return
        self._catalog.put(name, inode, CORRUPT, since=since)

    def _summary(self, name: str, inode: int | None) -> Summary | None:
        """The file's summary, read once per process and inode; None when it is corrupt or gone."""
        known = self._catalog.get(name, inode)
        if known is False:
            record = self._load(name)
            return None if record is None else _summarize(record, _seconds(name))
        return known if isinstance(known, Summary) else None

    def get(self, entry_id: str) -> dict[str, Any]:
        check_id(entry_id)
        path = self.path / f"{entry_id}.json"
        if not os.path.lexists(path):
            raise ApiError(404, f"no DLQ entry {entry_id}")
        record = self._load(path.name)
        if record is None:
            raise ApiError(409, f"DLQ entry {entry_id} is corrupt and cannot be read")
        return record

    def list(
        self, flt: DlqFilter = NO_FILTER, limit: int = 100, cursor: str | None = None,
        max_bytes: int | None = None,
    ) -> tuple[list[dict[str, Any]], int, str | None]:
        """A page of records, oldest first: (records, total matching, next cursor or None).

        A page holds at most `limit` records and `max_bytes` bytes of them (LIST_PAGE_BYTES by
        default; a record counts as its file's size, about what it takes in the answer): it ends
        before the record that would pass the bytes, which the next cursor starts with. A record
        larger than `max_bytes` alone is listed without its envelope (`truncated_entry`), never
        with part of it. Without content filters only the page's files are read; with them,
        every candidate is summarized once per process and cached.
        """
        if cursor is not None:
            check_id(cursor)
        budget = LIST_PAGE_BYTES if max_bytes is None else max_bytes
        listing = self._scan()
        candidates = self._in_time(listing, flt)
        if flt.needs_content:
            matching = self._matching(listing, candidates, flt)
            total = len(matching)
            page, i = self._page(matching, _after(matching, cursor), limit, budget)
            more = i < len(matching)
        else:
            page, i = self._page(candidates, _after(candidates, cursor), limit, budget)
            corrupt = self._catalog.corrupt
            if candidates is listing.names:
                known_corrupt = len(corrupt & listing.present)
            else:
                known_corrupt = sum(1 for n in candidates if n in corrupt)
            total = len(candidates) - known_corrupt
            more = any(n not in corrupt for n in candidates[i:])
        next_cursor = page[-1]["id"] if page and more else None
        return page, total, next_cursor

    def _in_time(self, listing: _Listing, flt: DlqFilter) -> list[str]:
        """The names whose first failure is within `flt`'s `since`/`until` (all of them, the same
        list, without either): from the name alone, or for an entry named after its envelope from
        its summary (read once per process; a corrupt one is left out, as listings leave it)."""
        if flt.since is None and flt.until is None:
            return listing.names
        candidates = []
        for name in listing.names:
            if "-" in name:
                summary = self._summary(name, listing.inodes[name])
                if summary is not None and flt.matches_name(summary.seconds):
                    candidates.append(name)
            elif flt.matches_name(_seconds(name)):
                candidates.append(name)
        return candidates

    def _failure_seconds(self, name: str, listing: _Listing) -> int:
        """When an entry first failed, in unix seconds: its name's, or for an entry named after its
        envelope its summary's (the name's when it is corrupt)."""
        if "-" in name:
            summary = self._summary(name, listing.inodes.get(name))
            if summary is not None:
                return summary.seconds
        return _seconds(name)

    def _by_first_failure(self, listing: _Listing) -> list[str]:
        """The listing's names, oldest first failure first (name order while none is named after
        its envelope)."""
        if not listing.named:
            return listing.names
        return sorted(listing.names, key=lambda name: (self._failure_seconds(name, listing), name))

    def _matching(self, listing: _Listing, candidates: list[str], flt: DlqFilter) -> list[str]:
        """The candidates whose summaries match `flt`, remembered for the listing they came from:
        while the directory is unchanged (the same _Listing) the next page or the next call with
        the same filter costs nothing more (an entry changes only by a rewrite, a rename over its
        name, which changes the directory, and so the listing; module docstring).

        With INDEX_MIN_ENTRIES entries or more, the summary index on the volume answers for the
        entries the directory confirms (`_indexed_matching`); without one, every candidate is
        summarized (read once per process), and a listing over every entry saves an index."""
        cached = self._matches.get(flt)
        if cached is not None and cached[0] is listing:
            return cached[1]
        view = self._view(listing)
        if view is not None:
            matching = self._indexed_matching(view, listing, candidates, flt)
        else:
            matching = self._read_matching(listing, candidates, flt)
            if candidates is listing.names and len(candidates) >= INDEX_MIN_ENTRIES:
                self._save_index(listing, None)
        if len(self._matches) >= MATCH_CACHE_FILTERS:
            self._matches.clear()
        self._matches[flt] = (listing, matching)
        return matching

    def _read_matching(self, listing: _Listing, names: Iterable[str], flt: DlqFilter) -> list[str]:
        """Those of `names` whose summaries (from the catalog, else read) match `flt`, in order."""
        known = self._catalog.get
        inodes = listing.inodes
        matching = []
        for name in names:
            summary = known(name, inodes[name])
            if summary is False:
                summary = self._summary(name, inodes[name])
            if isinstance(summary, Summary) and flt.matches(summary):
                matching.append(name)
        return matching

    def _view(self, listing: _Listing) -> dlqindex.IndexView | None:
        """The summary index as `listing` confirms it (dlqindex.IndexView), loaded from the volume
        on first use; None below INDEX_MIN_ENTRIES entries or without a usable index."""
        if len(listing.names) < INDEX_MIN_ENTRIES:
            return None
        if not self._index_loaded:
            with self._index_lock:
                if not self._index_loaded:
                    self._load_index(len(listing.names))
                    self._index_loaded = True
        index, stale = self._index, self._index_stale
        if index is None:
            return None
        cached = self._index_view
        if cached is not None and cached[0] is listing and cached[1].index is index:
            return cached[1]
        inodes = listing.inodes
        if stale:  # rewritten since the index was true: unconfirmed, as if their inode had changed
            inodes = {**inodes, **{name: 0 for name in stale if name in inodes}}
        try:
            view = index.view(listing.names, inodes)
        except ValueError as exc:
            log.warning("DLQ summary index in %s ignored: %s", self.path, exc)
            self._index = None
            return None
        self._index_view = (listing, view)
        return view

    def _load_index(self, names: int) -> None:
        """Use the index on the volume, with the names rewritten since it was saved (the journal
        from its position on) as `_index_stale`; none when there is none, or its journal position
        cannot be continued. The caller holds _index_lock."""
        index = dlqindex.load(self.path, names)
        if index is None:
            return
        try:
            since = dlqjournal.Position() if index.journal is None else dlqjournal.Position.from_json(
                index.journal)
        except ValueError as exc:
            log.warning("DLQ summary index in %s ignored: %s", self.path, exc)
            return
        directory = dlqjournal.journal_dir(self.path, dlqindex.state_dir(self.path))
        with self._journal_lock:  # from here on, `_follow_journal` adds to `_index_stale`
            _, stale = dlqjournal.read(directory, since)
            if stale is None:
                log.info("DLQ summary index in %s ignored: the rewrite journal since it was saved is gone",
                         self.path)
                return
            self._index, self._index_stale = index, frozenset(stale)

    def _indexed_matching(self, view: dlqindex.IndexView, listing: _Listing, candidates: list[str],
                          flt: DlqFilter) -> list[str]:
        """`_matching` through the index: the entries it confirms are matched in its columns; those
        it does not (new, rewritten, left out) and those whose truncated error text cannot settle
        an `error=` filter are summarized as without an index."""
        matched, unsure = view.select(flt.reason, flt.source_type, flt.error)
        if candidates is not listing.names:
            keep = frozenset(candidates)
            matched = list(filter(keep.__contains__, matched))
            unsure = list(filter(keep.__contains__, unsure))
        unindexed = view.unindexed(candidates)
        matched += self._read_matching(listing, [*unindexed, *unsure], flt)
        matched.sort()  # never trust the index's order; sorted runs make this a merge
        stale = len(unindexed) + view.dropped
        if candidates is listing.names and stale > len(candidates) // INDEX_STALE_SHARE:
            self._save_index(listing, view)
        return matched

    def _save_index(self, listing: _Listing, view: dlqindex.IndexView | None) -> None:
        """Save a summary index of every entry of `listing` (from `view` where it confirms an entry,
        else from the catalog), and use it from now on; at most every INDEX_SAVE_INTERVAL_S, by one
        thread at a time, never failing the call (a cache: dlqindex.save)."""
        now = time.monotonic()
        if self._index_saved_at is not None and now - self._index_saved_at < INDEX_SAVE_INTERVAL_S:
            return
        if not self._index_lock.acquire(blocking=False):
            return
        try:
            self._index_saved_at = now
            with self._journal_lock:
                # The summaries below are true as of this position (later lines: stale from now on).
                position, self._index_stale, self._index_saving = self._journal_at, frozenset(), True
            rows = list(view.rows()) if view is not None else []
            known, inodes = self._catalog.get, listing.inodes
            for name in listing.names if view is None else view.unindexed(listing.names):
                summary = known(name, inodes[name])
                if summary is CORRUPT:
                    rows.append(dlqindex.Row(name, inodes[name], True))
                elif isinstance(summary, Summary):
                    rows.append(dlqindex.Row(name, inodes[name], False, summary.reason,
                                             summary.source_type, summary.error))
            rows.sort(key=lambda row: row.name)
            index = dlqindex.SummaryIndex.build(rows)
            index.journal = None if position is None else position.to_json()
            dlqindex.save(self.path, index)
            with self._journal_lock:
                self._index, self._index_loaded, self._index_saving = index, True, False
        finally:
            if self._index_saving:  # failed before the end: the stale names were reset for nothing
                with self._journal_lock:
                    self._index, self._index_saving = None, False
            self._index_lock.release()

    def _page(self, names: list[str], start: int, limit: int, budget: int
              ) -> tuple[list[dict[str, Any]], int]:
        """The readable records of `names[start:]` that fit a page (see `list`), and the index of
        the first name the page did not consume."""
        page: list[dict[str, Any]] = []
        used = 0
        i = start
        while i < len(names) and len(page) < limit:
            record, size = self._load_sized(names[i])
            if record is not None:
                if size > budget:
                    record = truncated_entry(record)
                    size = 0
                elif page and used + size > budget:
                    break
                page.append(record)
                used += size
            i += 1
        return page, i

    def iter_matching(self, flt: DlqFilter, after: str | None = None, parse: bool = True) -> Iterator[str]:
        """Ids of parseable entries that match, oldest first; only those after the entry id
        `after` when given. Lazy: each entry is summarized (read once per process) when reached.
        `parse=False`: a filter that needs no content (`needs_content`, times only) is matched on
        names alone, without reading files, corrupt ones included (for callers that read every
        entry anyway, such as replay). Entries named after their envelope are matched on their
        first failure (their summary), never on their name's time."""
        listing = self._scan()
        timed = flt.since is not None or flt.until is not None
        for name in listing.names[_after(listing.names, after):]:
            named = "-" in name
            if not named and not flt.matches_name(_seconds(name)):
                continue
            if not parse and not flt.needs_content and not (named and timed):
                yield name[:-5]
                continue
            summary = self._summary(name, listing.inodes[name])
            if summary is not None and flt.matches(summary):
                yield name[:-5]

    # -- removing ------------------------------------------------------------------------

    def delete(self, entry_id: str) -> None:
        check_id(entry_id)
        try:
            (self.path / f"{entry_id}.json").unlink()
        except FileNotFoundError:
            raise ApiError(404, f"no DLQ entry {entry_id}") from None
        self._catalog.forget([f"{entry_id}.json"])
        self._base = None  # the limits look at the directory again

    def purge(self, flt: DlqFilter = NO_FILTER) -> int:
        """Delete matching entries; without a filter every entry, corrupt ones included."""
        return len(self._remove(self._purge_names(flt)))

    def _purge_names(self, flt: DlqFilter) -> list[str]:
        """The file names a purge with `flt` deletes: without a filter every entry, corrupt too."""
        if flt == NO_FILTER:
            return self._names()
        return [f"{i}.json" for i in self.iter_matching(flt)]

    def purge_preview(self, flt: DlqFilter = NO_FILTER, max_ids: int = PREVIEW_IDS) -> tuple[int, list[str]]:
        """What `purge(flt)` would delete now, deleting nothing: (count, the first `max_ids` ids)."""
        names = self._purge_names(flt)
        return len(names), [name[:-5] for name in names[:max_ids]]

    def remove(self, ids: Iterable[str], sync: bool = True) -> list[str]:
        """Delete the named entries (ids checked first); returns the ids this call removed (one
        already gone is skipped: another instance removed it first). `sync`: fsync the directory,
        so the removal survives a power cut; a caller for which an entry coming back is harmless
        (replay: its event is stored, and storing it again changes nothing) may skip it."""
        return self._remove([f"{check_id(i)}.json" for i in ids], sync)

    def _remove(self, names: list[str], sync: bool = True) -> list[str]:
        removed = []
        for name in names:
            try:
                os.unlink(f"{self._dir}/{name}")
                removed.append(name[:-5])
            except FileNotFoundError:
                pass  # another instance removed it first
        self._catalog.forget(names)
        self._base = None  # the limits look at the directory again
        if removed and sync:
            fsync_dir(self.path)
        return removed

    def read(self, entry_id: str) -> dict[str, Any] | None:
        """The entry's record read afresh from its file; None when it is gone or corrupt (not a
        regular file, over the size cap, not a record: module docstring). Unlike listings it
        leaves the catalog as it is: a reader about to replace or remove the entry (replay)
        would only have to correct it."""
        try:
            data, _ = read_regular_ino(f"{self._dir}/{check_id(entry_id)}.json", self.max_record_bytes)
            record = orjson.loads(data)
        except (OSError, orjson.JSONDecodeError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("envelope"), dict) else None

    def rewrite(self, entry_id: str, record: dict[str, Any]) -> None:
        """Replace an entry's content under the same name, atomically: a temp file in the
        directory, fsync'd, renamed over the entry, the directory fsync'd (SPEC §7: a reader
        sees the old record or the new one, never a mix). The entry's name is appended to the
        rewrite journal (dlqjournal.py, fsync'd) before the rename, and the new inode and that line
        tell every process's catalog and the summary index that the name changed (`_Catalog`),
        even when the name gets an inode back that it had before.

        The caller must hold the entry's claim (claims.py), so no other replay rewrites it at the
        same time. An entry removed meanwhile (a purge) is not brought back: FileNotFoundError.
        Raises DLQUnavailable when the directory cannot take the new file or the journal its
        line; the old one is then left as it was.
        """
        check_id(entry_id)
        record["id"] = entry_id
        data = orjson.dumps(record)
        final = self.path / f"{entry_id}.json"
        tmp = self.path / f"{TEMP_PREFIX}{entry_id}"
        if not os.path.lexists(final):
            raise FileNotFoundError(errno.ENOENT, "DLQ entry removed before its rewrite", str(final))
        try:
            tmp.unlink()  # left by a rewrite killed before its rename; the claim makes it ours
        except FileNotFoundError:
            pass
        try:
            inode = write_synced(tmp, data)
            # Journaled before the rename: the new file may get an inode the name had before.
            self._journal.record([final.name])
            os.replace(tmp, final)
            fsync_dir(self.path)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise DLQUnavailable(
                f"dlq.base_path: {self.path} is not writable (errno {exc.errno}{hint})") from exc
        self._catalog.put(final.name, inode, _summarize(record, _seconds(final.name)), len(data))

    def size_of(self, ids: Iterable[str]) -> int:
        """Bytes of the named entries' files (gone ones count zero)."""
        total = 0
        for entry_id in ids:
            try:
                total += os.lstat(self.path / f"{entry_id}.json").st_size
            except FileNotFoundError:
                continue
        return total

    def ids_named_before(self, seconds: float) -> list[str]:
        """Ids of entries whose name's time (when the file was written) is before `seconds`, and of
        every entry named after its envelope (its name's time is its message's publish time, which
        bounds nothing), name order; read from the listing alone."""
        return [name[:-5] for name in self._scan().names if "-" in name or _seconds(name) < seconds]

    def first_failure(self, entry_id: str) -> float | None:
        """When the entry first failed: its record's `timestamp` (unix seconds, SPEC §7); None
        when the entry is gone, corrupt or has no readable timestamp."""
        record = self._load(f"{entry_id}.json")
        if record is None:
            return None
        try:
            return parse_time(record["timestamp"])
        except (KeyError, TypeError, ValueError):
            return None

    # -- health --------------------------------------------------------------------------

    def oldest_entry_time(self) -> int | None:
        """When the pending entry that failed first did so, in unix seconds; None when there is
        none. The first ordinary name's seconds (written at its first failure), and the summaries
        of entries named after their envelope (their `timestamp`; the name's for a corrupt one).
        With an unchanged directory: one stat, and no file read (the answer is kept per listing)."""
        listing = self._scan()
        cached = self._oldest
        if cached is not None and cached[0] is listing:
            return cached[1]
        plain = next((name for name in listing.names if "-" not in name), None)
        times = [self._failure_seconds(name, listing) for name in listing.named]
        if plain is not None:
            times.append(_seconds(plain))
        oldest = min(times, default=None)
        self._oldest = (listing, oldest)
        return oldest

    def stats(self, verify_budget_s: float = 0.02) -> dict[str, Any]:
        """Pending files, and corrupt files among those this process has verified.

        Verifying means parsing; with a large backlog a cold process would need seconds, so each
        call verifies files it has not seen for at most `verify_budget_s` and says how many it
        has not verified yet (`unverified_files`); repeated calls converge on the full answer.
        With an unchanged directory a call costs one stat, whatever the backlog.
        """
        listing = self._scan()
        with self._stats_lock:
            if listing is not self._verified:
                self._catalog.retain(listing.inodes)
                self._unseen = self._catalog.unseen(listing.present, listing.inodes)
                self._verified = listing
            deadline = time.monotonic() + verify_budget_s
            done = 0
            while done < len(self._unseen) and time.monotonic() < deadline:
                self._load(self._unseen[done])
                done += 1
            del self._unseen[:done]
            unverified = len(self._unseen)
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "pending_files": len(listing.names),
            "base_path": str(self.path),
            "corrupt_files": sorted(self._catalog.corrupt & listing.present),
            "unverified_files": unverified,
            "temp_files": listing.temp_files,
        }
        try:
            out["free_bytes"] = shutil.disk_usage(self.path).free
        except OSError:
            out["free_bytes"] = None
        out["pending_bytes"] = self._bytes_of(listing)
        out["refusal"] = self.refusal()
        out["accepting"] = out["refusal"] is None
        return out


def _seconds(name: str) -> int:
    """The unix seconds in an entry name (`failed_<seconds>_...`)."""
    return int(name[7:name.index("_", 7)])


def _after(names: list[str], cursor: str | None) -> int:
    """Index of the first name after the cursor (an entry id); names are sorted."""
    if cursor is None:
        return 0
    return bisect.bisect_right(names, f"{cursor}.json")
