"""Counters shared by every instance on the DLQ volume and kept across restarts (SPEC §8, §11).

Each process owns one small binary file under `<dlq.base_path>/.state/counters/` and rewrites
it in place with a single pwrite: no locks between processes (NFS and bucket mounts make file
locks unreliable). A reader sums every file.

Writes are batched: a change is written by the process's flusher thread, at once when nothing
was written in the last FLUSH_INTERVAL_S seconds, else at the end of that interval, so a
process writes its file at most twice a second however many requests it serves. Other
processes therefore see a count up to FLUSH_INTERVAL_S late (plus the time of one write); a
reader in the same process writes its own pending counts first and sees them at once. A clean
shutdown (`retire`, `retire_all`) loses nothing; a process killed outright (SIGKILL, out of
memory) loses what it counted in its last interval at most, never what it had written, since the
page cache holds every write.

A process that exits cleanly renames its file to `*.retired`; the next process to start adopts
one retired file as its own and counts on from its values.

Anyone who can write on the volume could plant something under a counters name: files are
opened without following links or blocking (files.open_regular), and only regular files count.
A retired "file" that is a link or a FIFO is removed when adopted, never written through; a
reader skips such names and counts an unreadable or oversized file as zeros.

Bounded on serverless platforms (every cold start is a new process, most never exit cleanly):
files unchanged for ABSORB_AFTER_S are folded into one compacted file (`compacted-*.totals`)
by whichever process runs its compaction next (every COMPACT_INTERVAL_S, and at its first
write), with the lock-free steps of fold.py. A compacted file holds the sums, the names it took
in the last RECENT_S (what readers skip), and the values it took from each file by the file's
name (kept RECORD_KEEP_S, read only to correct, below). A compaction waits for MIN_BATCH
files to fold (or one that waited 2 x ABSORB_AFTER_S). So the folder holds the files of processes
active in the last 2 x ABSORB_AFTER_S at most (MIN_BATCH more at a low start rate), plus one
compacted file per concurrent compaction, and `healthz` reads that many.

Never counted twice, never lost, only late, even when a process was only frozen (Lambda,
Cloud Run without CPU between requests) and its file was taken:

- a reader skips every file whose name a compacted file records (fold.py);
- a process checks after each fsync'd write, and before each write, that its file is still its
  own (open by name, same inode). When it was taken, the process assumes the file held what it
  last wrote, keeps its counts apart from that (`_base`), and goes on in a new file; it then looks
  for the compacted file's record of what was really taken, and corrects by the difference. The
  record can only hold less than the process's last write (a write that did not reach the volume
  before the file was taken), so until it is found the totals are at most one write low, never
  high. Records are kept RECORD_KEEP_S: a process frozen in the middle of a write for longer
  than that keeps its assumption, and that one write is lost.

Not here: the health and metrics documents built from these numbers (service.py, metrics.py).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import socket
import stat
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import fold
from .files import open_regular, private_dir, read_regular

log = logging.getLogger(__name__)

# How events reach the pipeline (the `trigger` label of metrics.py): HTTP (HEC), and the event
# sources of SPEC §12. HTTP needs no counters of its own: its counts are the totals less the others'.
TRIGGERS = ("http", "pubsub", "sqs", "kinesis", "schedule")
_COUNTED_TRIGGERS = TRIGGERS[1:]


def trigger_counter(name: str, trigger: str) -> str:
    """The counter of `name` for events that came through `trigger` (not `http`)."""
    return f"{name}_via_{trigger}"


def by_trigger(name: str) -> tuple[str, ...]:
    """The per-trigger counters of counter `name`, one per trigger other than HTTP, in TRIGGERS order."""
    return tuple(trigger_counter(name, trigger) for trigger in _COUNTED_TRIGGERS)


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
    # Entries deleted to make room under dlq.full_policy: drop_oldest, and expired by dlq.max_age.
    "dlq_dropped",
    "dlq_expired",
    # Events stored at their first try (no retry): with `stored`, the share that needed a retry.
    "stored_first_try",
    # The same events counted per trigger other than HTTP (`trigger`, below); HTTP's are the
    # totals less these. A counter gets per-trigger copies by appending `*by_trigger(name)`.
    *by_trigger("stored"),
    *by_trigger("stored_first_try"),
    *by_trigger("dlq_normalization_failed"),
    *by_trigger("dlq_validation_failed"),
    *by_trigger("dlq_storage_failed"),
    # Ingest requests refused 503 code 9 at once for hec.max_in_flight (shedding.py).
    "requests_shed",
    # Ingest requests refused 503 code 9 for their token's rate limit (ratelimit.py).
    "requests_rate_limited",
    # Event-triggered messages whose data could not be decoded into events (dlq.REASONS), by
    # trigger too.
    "dlq_decode_failed",
    *by_trigger("dlq_decode_failed"),
    # Messages or records handed back to their platform to be delivered again (triggers.py: some
    # event could be neither stored nor dead-lettered), per event-driven trigger.
    "trigger_pubsub_failures",
    "trigger_sqs_failures",
    "trigger_kinesis_failures",
    # Scheduled runs (retention, replay) that finished, and those that raised (schedules.py).
    "trigger_schedule_runs",
    "trigger_schedule_failures",
)
# Where each counter is in COUNTERS (and in a file).
_INDEX = {name: index for index, name in enumerate(COUNTERS)}
# (counter, trigger) -> where its per-trigger copy is, for the counters that have them.
_TRIGGER_INDEX = {(name, via): _INDEX[trigger_counter(name, via)] for name in COUNTERS
                  for via in _COUNTED_TRIGGERS if trigger_counter(name, via) in _INDEX}
# The trigger whose events the current code counts (`trigger`); None: HTTP. A context variable, so
# it follows a request into worker threads (asyncio.to_thread copies the context).
_current_trigger: contextvars.ContextVar[str | None] = contextvars.ContextVar("telhawk_trigger", default=None)


@contextlib.contextmanager
def trigger(name: str) -> Iterator[None]:
    """Count the events of the code run inside under trigger `name` (one of TRIGGERS): every
    `Counters.add` of a counter that has per-trigger copies (`by_trigger`) also adds to the copy of
    `name`. For event-driven entry points: `with stats.trigger("sqs"): service.ingest(envelopes)`.
    Raises ValueError for a name not in TRIGGERS."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown trigger {name!r}; expected one of {', '.join(TRIGGERS)}")
    token = _current_trigger.set(None if name == "http" else name)
    try:
        yield
    finally:
        _current_trigger.reset(token)


def current_trigger() -> str:
    """The trigger the current code counts under (`trigger`): `http` outside any."""
    return _current_trigger.get() or "http"
_MAGIC = b"THC1"
# A process writes its counters file at most this often (seconds): the lag other readers see.
FLUSH_INTERVAL_S = 0.5
_HEADER = struct.Struct("<4sI")
# A counters file is 8 bytes and 8 per counter; anything much larger was not written here.
MAX_FILE_BYTES = 4096
# This process's file: read-write, never through a link, never blocking (files.py).
_OWN = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OWN_SUFFIXES = (".counters", ".retired")
# Compaction: a process file unchanged this long (seconds, by its mtime) is folded. Longer than
# the DLQ ledger's own staleness (dlq.STALE_TEMP_S, 600 s) plus clock skew between hosts, so what
# a folded file held already counted zero in the ledger's in-flight estimate (dlq._unlisted).
ABSORB_AFTER_S = 900.0
COMPACT_INTERVAL_S = 60.0
# A compaction rewrites the compacted file: it waits for this many files to fold, unless one of
# them has waited twice ABSORB_AFTER_S already.
MIN_BATCH = 32
RECORD_KEEP_S = 86_400.0
COMPACTED_PREFIX = "compacted-"
COMPACTED_SUFFIX = ".totals"
_ZEROS = (0,) * len(COUNTERS)


def _is_compacted(name: str) -> bool:
    return name.startswith(COMPACTED_PREFIX) and name.endswith(COMPACTED_SUFFIX)


@dataclass(frozen=True, slots=True)
class _Compacted:
    """A compacted file. Its first line: the sums, and the names it and the compacted files it
    folded took in the last RECENT_S (readers skip files of these names). Its second line, read
    only by a process whose file was taken and by compactions: what it took from each file, by
    name, for RECORD_KEEP_S (name -> (when, values))."""

    values: dict[str, int]
    recent: frozenset[str]
    absorbed: dict[str, tuple[float, dict[str, int]]] | None  # None: the second line was not read


# A name stays in the first line this long: longer than any claim of it can be left behind
# (a compaction deletes leftover claims fold.CLAIM_STALE_S old before it rewrites this line).
RECENT_S = 2 * fold.CLAIM_STALE_S


def _as_values(named: dict[str, int]) -> list[int]:
    return [int(named.get(name, 0)) for name in COUNTERS]


def _named(values: list[int]) -> dict[str, int]:
    return {name: value for name, value in zip(COUNTERS, values, strict=True) if value}


# Parsed compacted files by (path, inode, size, mtime, both lines): files are written once.
_compacted_cache: dict[tuple[str, int, int, int, bool], _Compacted] = {}


def _load_compacted(path: Path, full: bool = False) -> _Compacted | None:
    """A compacted file's contents (`full`: both lines); None when it vanished; empty when it
    does not parse."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # gone, or a link planted under a compacted name: nothing of ours to read
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, full)
        if (found := _compacted_cache.get(key)) is not None:
            return found
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    finally:
        os.close(fd)
    first, _, second = data.partition(b"\n")
    try:
        head = orjson.loads(first)
        absorbed = None
        if full:
            absorbed = {str(name): (float(at), {str(k): int(v) for k, v in taken.items()})
                        for name, (at, taken) in orjson.loads(second)["absorbed"].items()}
        parsed = _Compacted({str(k): int(v) for k, v in head["values"].items()},
                            frozenset(str(n) for n in head["recent"]), absorbed)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.error("counters: %s is not a compacted counters file; its counts are not read", path)
        parsed = _Compacted({}, frozenset(), {} if full else None)
    if len(_compacted_cache) > 64:
        _compacted_cache.clear()
    _compacted_cache[key] = parsed
    return parsed


class Counters:
    """This process's counters, mirrored to its own file on the shared volume. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._values = [0] * len(COUNTERS)
        # This process's counts that other files hold (files taken by a compaction): its own file
        # holds `_values - _base`.
        self._base = [0] * len(COUNTERS)
        self._written = [0] * len(COUNTERS)  # what its file holds, as last written
        self._dirty = False
        self._unsynced = False
        self._fd: int | None = None
        self._path: Path | None = None
        self._identity: tuple[int, int] | None = None
        # Files of this process taken by a compaction whose record has not been read yet:
        # name -> what the process assumed they held.
        self._taken: dict[str, list[int]] = {}
        self._next_compaction = 0.0
        _live.add(self)

    def _open(self) -> int:
        """Open (or adopt) this process's file on first use, after any fork."""
        if self._fd is not None:
            return self._fd
        private_dir(self.directory)
        self._path = self.directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.counters"
        self._written = [0] * len(COUNTERS)
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
            self._written = _decode(os.pread(fd, MAX_FILE_BYTES + 1, 0))
            self._values = [a + b for a, b in zip(self._values, self._written, strict=True)]
            self._dirty = True
            break
        if self._fd is None:
            self._fd = open_regular(self._path, _OWN | os.O_CREAT | os.O_EXCL)
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)
        atexit.register(self.retire)
        return self._fd

    def add(self, now: bool = False, sync: bool = False, **deltas: int) -> None:
        """Count; the file is written by the flusher thread within FLUSH_INTERVAL_S. `now`: write
        it before returning, so other processes see the change at once; `sync` (implies `now`):
        fsync it too, so other hosts on a network volume see it on their next open (NFS
        close-to-open). The DLQ's ledger relies on both (dlq.py)."""
        changes = [(_INDEX[name], delta) for name, delta in deltas.items() if delta]
        if not changes:
            return
        if (via := _current_trigger.get()) is not None:
            changes += [(_TRIGGER_INDEX[name, via], delta) for name, delta in deltas.items()
                        if delta and (name, via) in _TRIGGER_INDEX]
        with self._lock:
            for index, delta in changes:
                self._values[index] += delta
            self._dirty = True
        if now or sync:
            self.flush(sync=sync)
        _flusher.wake()  # also fsyncs and checks what `now` wrote

    def flush(self, sync: bool = False) -> None:
        """Write pending counts to this process's file now: one pwrite; with `sync`, an fsync
        (even when the flusher thread wrote them a moment ago without one) and the check that
        the file is still this process's (module docstring)."""
        with self._lock:
            if self._taken:
                self._correct_taken()
            for _ in range(2):  # a second round when the file turned out to be taken
                try:
                    fd = self._open() if self._dirty or (sync and self._fd is not None) else None
                    if fd is None:
                        return
                    if self._dirty:
                        if self._taken_from_us():
                            self._give_up_file()
                            continue
                        content = [v - b for v, b in zip(self._values, self._base, strict=True)]
                        os.pwrite(fd, _HEADER.pack(_MAGIC, len(content)) + struct.pack(
                            f"<{len(content)}q", *content), 0)
                        self._written, self._dirty, self._unsynced = content, False, True
                    if sync and self._unsynced:
                        os.fsync(fd)
                        self._unsynced = False
                        if self._taken_from_us():
                            self._give_up_file()
                            continue
                    return
                except OSError:
                    # Counters are observability, not data: never fail a request over them. The
                    # counts stay pending and the next change tries again.
                    return

    def _still_own(self) -> bool:
        """Whether this process's file is still under its name (a compaction renames it away).
        Opened by name rather than stat'ed: on NFS an open revalidates (close-to-open)."""
        assert self._path is not None
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return (st.st_dev, st.st_ino) == self._identity

    def _taken_from_us(self) -> bool:
        """Whether a compaction claimed this process's file: it is not under its name any more,
        and a claim of it or a compacted file's record of it exists. A file removed by hand (or
        with its whole folder) is not taken: writes go on into it, as they always did."""
        if self._still_own():
            return False
        assert self._path is not None
        name = self._path.name
        return _claimed_or_present(self.directory, name) or _recorded(self.directory, name)[0] is not None

    def _give_up_file(self) -> None:
        """The file was taken by a compaction: assume it held what was last written (corrected
        once the compaction's record is read), and go on in a new file. Caller holds the lock."""
        assert self._path is not None and self._fd is not None
        os.close(self._fd)
        self._taken[self._path.name] = list(self._written)
        self._base = [b + w for b, w in zip(self._base, self._written, strict=True)]
        self._fd, self._path, self._identity = None, None, None
        self._written = [0] * len(COUNTERS)
        self._dirty = True
        self._correct_taken()

    def _correct_taken(self) -> None:
        """Replace the assumption about each taken file by what its compaction recorded taking.
        Caller holds the lock."""
        for name, assumed in list(self._taken.items()):
            recorded, complete = _recorded(self.directory, name)
            if recorded is None:
                if not complete or _claimed_or_present(self.directory, name):
                    continue  # the compaction is not committed yet, or the folder changed: later
                del self._taken[name]  # no record any more (module docstring): keep the assumption
                if self.directory.is_dir():
                    log.warning("counters: no compacted file records %s any more; its last write "
                                "may not be counted", name)
                continue
            del self._taken[name]
            if recorded != assumed:
                self._base = [b + r - a for b, r, a in zip(self._base, recorded, assumed, strict=True)]
                self._dirty = True

    def retire(self) -> None:
        """Write pending counts and hand the file over to the next process (clean shutdown)."""
        self.flush(sync=True)
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
        """Every instance's counters summed, this one's included (its pending counts written first).

        Compacted files count, and every file one of them records is skipped (fold.py). A file
        that vanishes while being read (taken by a compaction, adopted after a restart) means the
        folder changed under the reader: it reads again, up to four times."""
        for counters in list(_live):
            counters.flush()
        for _ in range(4):
            sums = self._sum_files()
            if sums is not None:
                break
        else:
            sums = self._sum_files(best_effort=True)
        assert sums is not None
        return dict(zip(COUNTERS, sums, strict=True))

    def _sum_files(self, best_effort: bool = False) -> list[int] | None:
        with self._lock:
            own = None if self._path is None else self._path.name
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            # Missing, or not readable (a file in its place, no permission): observability must not
            # fail the health document, so only this process's counts are known.
            entries = []
        compacted: dict[str, _Compacted] = {}
        for entry in entries:
            if _is_compacted(fold.original(entry.name)):
                found = _load_compacted(Path(entry.path))
                if found is None:
                    if not best_effort:
                        return None
                    continue
                compacted[entry.name] = found
        recorded = {name for c in compacted.values() for name in c.recent}
        sums = [0] * len(COUNTERS)
        for entry in entries:
            name = entry.name
            if fold.original(name) in recorded or name == own:
                continue
            if name in compacted:
                values = _as_values(compacted[name].values)
            elif fold.original(name).endswith(_OWN_SUFFIXES):
                found_values = _read_present(Path(entry.path))
                if found_values is None:
                    if not best_effort:
                        return None
                    continue
                values = found_values
            else:
                continue
            sums = [s + v for s, v in zip(sums, values, strict=True)]
        with self._lock:
            # A compaction committed since the last flush may record a file of ours: correct first.
            if self._taken and recorded & self._taken.keys():
                self._correct_taken()
            mine = [v - b for v, b in zip(self._values, self._base, strict=True)]
        return [s + m for s, m in zip(sums, mine, strict=True)]

    def snapshot(self) -> dict[str, tuple[float, list[int]]]:
        """Each file's last change (unix seconds) and values (COUNTERS order), by file name. This
        process's own values come from memory, counts the flusher has not written yet included,
        always under "" (so a reader comparing two snapshots sees one name for them, before and
        after the file is created). A file adopted (renamed) while being read may show under both
        names or neither: a reader that must never count low compares file by file (dlq.py does).
        Compacted and claimed files are left out: they hold only files unchanged for
        ABSORB_AFTER_S, whose in-flight entries the ledger counts as zero already."""
        out: dict[str, tuple[float, list[int]]] = {}
        with self._lock:
            own = "" if self._path is None else self._path.name
            out[""] = (time.time(), list(self._values))
        try:
            files = list(os.scandir(self.directory))
        except OSError:
            # Missing, or not readable (a file in its place, no permission): observability must not
            # fail the health document, so only this process's counts are known.
            files = []
        for entry in files:
            if entry.name.endswith(_OWN_SUFFIXES) and entry.name != own:  # own: from memory
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue  # a link, FIFO or directory under a counters name: not ours
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue  # adopted under another name since the listing
                out[entry.name] = (mtime, _read(Path(entry.path)))
        return out

    # -- compaction ----------------------------------------------------------------------------

    def compact(self, now: float | None = None) -> int:
        """Fold the files of processes gone quiet (unchanged for ABSORB_AFTER_S by `now`, unix
        seconds), and every compacted file, into one new compacted file; returns how many process
        files it absorbed. Does nothing for fewer than MIN_BATCH such files, unless one of them is
        twice that old or there are several compacted files. Safe with any number of processes
        compacting at once (fold.py); raises OSError when the folder cannot be written."""
        now = time.time() if now is None else now
        started = time.time()
        with self._lock:
            own = None if self._path is None else self._path.name
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        fold.remove_stale_temp_files(self.directory, now)
        recorded: set[str] = set()
        for entry in entries:
            if _is_compacted(fold.original(entry.name)):
                found = _load_compacted(Path(entry.path))
                recorded |= found.recent if found else frozenset()
        fid = fold.folder_id()
        claimed: list[Path] = []
        overdue = False
        for entry in entries:
            name, original = entry.name, fold.original(entry.name)
            if name == own or not (original.endswith(_OWN_SUFFIXES) or _is_compacted(original)):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if fold.is_claim(name):
                if not fold.left_by_a_stopped_fold(Path(entry.path), st.st_ctime, now, recorded):
                    continue
                overdue = True  # chosen by a compaction that stopped: fold it now
            elif not _is_compacted(name):
                if now - st.st_mtime < ABSORB_AFTER_S:
                    continue
                overdue = overdue or now - st.st_mtime >= 2 * ABSORB_AFTER_S
            if (path := fold.claim(self.directory, name, fid)) is not None:
                claimed.append(path)
        sources = [p for p in claimed if not _is_compacted(fold.original(p.name))]
        if len(sources) < MIN_BATCH and not overdue and len(claimed) - len(sources) <= 1:
            fold.release(self.directory, claimed)
            return 0
        values = [0] * len(COUNTERS)
        absorbed: dict[str, tuple[float, dict[str, int]]] = {}
        for path in claimed:
            original = fold.original(path.name)
            if _is_compacted(original):
                found = _load_compacted(path, full=True) or _Compacted({}, frozenset(), {})
                taken = _as_values(found.values)
                kept = (found.absorbed or {}).items()
                absorbed.update({n: r for n, r in kept if now - r[0] < RECORD_KEEP_S})
                absorbed[original] = (now, {})
            else:
                taken = _read(path)
                absorbed[original] = (now, _named(taken))
            values = [a + b for a, b in zip(values, taken, strict=True)]
        recent = sorted(n for n, (at, _) in absorbed.items() if now - at < RECENT_S)
        data = (orjson.dumps({"values": _named(values), "recent": recent}) + b"\n"
                + orjson.dumps({"absorbed": absorbed}))
        name = fold.unique_name(COMPACTED_PREFIX, COMPACTED_SUFFIX)
        if not fold.commit(self.directory, name, data, claimed, started):
            return 0
        return len(sources)

    def compact_if_due(self) -> None:
        """`compact` at most every COMPACT_INTERVAL_S per Counters; failures are logged."""
        if time.monotonic() < self._next_compaction or self._fd is None:
            return
        self._next_compaction = time.monotonic() + COMPACT_INTERVAL_S
        try:
            self.compact()
        except OSError as exc:
            log.warning("counters: compaction in %s failed: %s", self.directory, exc)


def _recorded(directory: Path, name: str) -> tuple[list[int] | None, bool]:
    """What a compacted file in `directory` records taking from file `name`, if one does, and
    whether every compacted file listed could be read (False: one vanished, look again later)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return None, True
    complete = True
    for entry in entries:
        if _is_compacted(fold.original(entry.name)):
            found = _load_compacted(Path(entry.path), full=True)
            if found is None:
                complete = False
            elif found.absorbed and name in found.absorbed:
                return _as_values(found.absorbed[name][1]), True
    return None, complete


def _claimed_or_present(directory: Path, name: str) -> bool:
    """Whether `name` still exists, under its own name or claimed (a compaction not committed)."""
    try:
        return any(fold.original(entry.name) == name for entry in os.scandir(directory))
    except FileNotFoundError:
        return False


# Every Counters of this process, for flush_all and retire_all.
_live: weakref.WeakSet[Counters] = weakref.WeakSet()


def flush_all() -> None:
    """Write the pending counts of every Counters in this process, fsync'd and checked, and run
    their compaction when due (the flusher thread; Lambda after each invocation)."""
    for counters in list(_live):
        counters.flush(sync=True)
        counters.compact_if_due()


def retire_all() -> None:
    """Clean shutdown of this process's counters: write everything, hand the files over."""
    for counters in list(_live):
        counters.retire()


class _Flusher:
    """The process's one flusher thread: writes pending counts at most every FLUSH_INTERVAL_S.

    Started on first use in each process (a thread does not survive a fork). It waits with
    `Event.wait`, never `time.sleep`, so tests that replace `time.sleep` do not see it.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._pause = threading.Event()  # never set: its wait() is the interval

    def wake(self) -> None:
        if self._pid != os.getpid():
            self._start()
        if not self._wanted.is_set():
            self._wanted.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._wanted, self._pause = threading.Event(), threading.Event()
            threading.Thread(target=self._run, name="counters-flusher", daemon=True).start()
            self._pid = os.getpid()

    def _run(self) -> None:
        wanted, pause = self._wanted, self._pause
        while True:
            wanted.wait()
            wanted.clear()
            flush_all()
            pause.wait(FLUSH_INTERVAL_S)


_flusher = _Flusher()


def _after_fork_in_child() -> None:
    """A forked child starts afresh: its own flusher, and Counters that neither hold the parent's
    counts nor write to the parent's file (a fork copies locks in whatever state another thread
    left them, too)."""
    _flusher.__init__()  # type: ignore[misc]
    for counters in list(_live):
        counters.__init__(counters.directory)  # type: ignore[misc]


os.register_at_fork(after_in_child=_after_fork_in_child)


def _read_present(path: Path) -> list[int] | None:
    """One file's values; None when it does not exist (any more); unreadable files count as zeros."""
    try:
        data = read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError:
        return list(_ZEROS)
    return _decode(data)


def _read(path: Path) -> list[int]:
    """One file's values, padded to the current counter list; unreadable files count as zeros."""
    try:
        return _decode(read_regular(path, MAX_FILE_BYTES))
    except OSError:
        return list(_ZEROS)


def _decode(data: bytes) -> list[int]:
    """The values in a counters file's bytes, padded to the current counter list; zeros when
    they are not a counters file."""
    try:
        magic, n = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            return list(_ZEROS)
        values = list(struct.unpack_from(f"<{n}q", data, _HEADER.size))
    except struct.error:
        return list(_ZEROS)
    return (values + [0] * len(COUNTERS))[: len(COUNTERS)]


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
