"""The `local` storage backend: one SQLite database under `storage.data_dir` (SPEC §6).

Layout: `<storage.data_dir>/events.sqlite3` (with SQLite's `-wal` and `-shm` files beside it),
one table, one row per stored event:

    events(id TEXT, index_name TEXT, day TEXT, time REAL, document TEXT)
      id          the envelope id, the document `_id`; a UNIQUE index keeps it once
      index_name  the HEC index (`_index`)
      day         the UTC storage day, `YYYY-MM-DD`, from `time`
      time        unix seconds that chose the day (`Item.time`, or the time in the id when
                  `Item.time` has no date: base.storage_time)
      document    the stored document as JSON text (`json_extract(document, '$.hec.host')`)

It is a rowid table (rows are appended in commit order) with a unique index on `id` and an
index on `(day, index_name)` for queries by day and for retention. Envelope ids are UUIDv7, time
ordered, so the unique index grows at its right edge.

Durability (SPEC §2): journal_mode WAL and synchronous FULL, so a commit returns only once the
WAL is fsync'd; a transaction is all or nothing, so a write that fails half way (disk full, file
size limit, I/O error, a kill) leaves nothing of itself behind and never makes another row
unreadable. `store` returns only after the commit holding its rows has succeeded; a failed
commit reports RETRY for every row it held (retry.py retries, then dead-letters).

Idempotent by `_id` (as OpenSearch's `create` + 409): a row whose id is already there is
skipped (`ON CONFLICT (id) DO NOTHING`, which unlike `INSERT OR IGNORE` skips nothing else) and
counts as STORED, across retries, replays, restarts and processes.

Group commit: one writer thread per process owns the write connection. `store` (or, for callers
that must not block, `submit`, which hands back a concurrent.futures.Future, or `enqueue`, which
calls back from the writer thread, e.g. into an asyncio loop) queues its rows; the writer takes
everything queued and commits it as one multi-row INSERT statement in autocommit mode: one
transaction, and one SQLite call that runs without the GIL from taking the write lock to the WAL
fsync. Processes on one host share the database: SQLite's locks order their commits, and a writer
polls for the lock up to BUSY_TIMEOUT_SECONDS while another's commit runs. Checkpoints (copying
the WAL into the database) run on a second thread and connection, off the commit path. After a
fork the child starts its own threads and connections on first use (the pid is checked); a fork
waits for a commit or checkpoint in flight, so the child never inherits SQLite's locks half held.

Single host only: SQLite's WAL needs shared memory and POSIX locks that network filesystems do
not give, so `local` refuses to start when `storage.data_dir` is on NFS, EFS, SMB or another
network or FUSE filesystem (read from /proc/self/mountinfo). It also refuses a database, `-wal`
or `-shm` that is not a regular file owned by the service's user (a symbolic link planted there
would redirect writes). Files are 0600 and a directory it creates is 0700, as the DLQ's.

Retention (`storage.retention_days`, off by default): rows whose storage day is more than N
days before the current UTC day are deleted, by `prune` and by the writer at most once per
RETENTION_INTERVAL_SECONDS, in chunks so that ingest commits interleave.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import orjson

from ..errors import ConfigError
from ..files import MOUNTINFO, filesystem_type, fsync_dir, private_dir, uncreatable
from .base import STORED, Item, Outcome, encode_document, index_of, retry, storage_time, utc_day

log = logging.getLogger(__name__)

DB_NAME = "events.sqlite3"
# SQLite's own files beside the database, all checked before opening.
SIDE_SUFFIXES = ("", "-wal", "-shm")
# How long a commit waits for another process's commit before it is reported RETRY. It polls
# for SQLite's write lock (first after POLL_FIRST_SECONDS, doubling up to POLL_MAX_SECONDS)
# rather than sleeping in SQLite's busy handler, whose waits grow to 100 ms and leave the lock
# idle while several processes queue for it.
BUSY_TIMEOUT_SECONDS = 5.0
POLL_FIRST_SECONDS = 0.0001
POLL_MAX_SECONDS = 0.001
# Rows in one INSERT statement at most (5 parameters a row; SQLite's limit on parameters may
# lower it: statement_limit). Queued jobs share a commit up to this many rows.
MAX_STATEMENT_ROWS = 4096
# ON CONFLICT (upsert) needs 3.24.
MIN_SQLITE = (3, 24, 0)
# The WAL is cut back to this size when it starts over, so a burst does not keep its disk space.
JOURNAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# A process asks its checkpointer for a (PASSIVE) checkpoint after committing this many bytes of
# documents. Under constant load from several processes a passive checkpoint may never catch up
# with the writers, and the WAL starts over only once it has: past WAL_RESTART_BYTES the writer
# itself runs a RESTART checkpoint, which holds other writers off until it is done.
CHECKPOINT_BYTES = 4 * 1024 * 1024
WAL_RESTART_BYTES = 64 * 1024 * 1024
RETENTION_INTERVAL_SECONDS = 3600.0
RETENTION_CHUNK_ROWS = 5000
SCHEMA_VERSION = 1
# Documents are about 1 KB: 16 KiB pages hold ten of them, where 4 KiB pages (SQLite's default)
# hold two or three and leave a quarter empty; a third less CPU per row, and fewer WAL frames.
PAGE_SIZE = 16384

# Filesystem types (as /proc/self/mountinfo names them) where SQLite's WAL is not safe: network
# and cluster filesystems, and FUSE (any `fuse.*`), whose locks and shared memory SQLite cannot
# rely on. EFS is mounted as nfs4.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "ocfs2", "gfs2", "9p", "virtiofs", "davfs", "fuse", "fuseblk",
})

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    day TEXT NOT NULL,
    time REAL NOT NULL,
    document TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS events_day_index ON events (day, index_name);
PRAGMA user_version = {SCHEMA_VERSION};
"""
INSERT_HEAD = "INSERT INTO events (id, index_name, day, time, document) VALUES "
INSERT_TAIL = " ON CONFLICT (id) DO NOTHING"
DELETE_CHUNK = "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE day < ? LIMIT ?)"

Row = tuple[str, str, str, float, str]


# --- where the database may live --------------------------------------------------------------


def check_local_filesystem(data_dir: Path, mountinfo: Path = MOUNTINFO) -> None:
    """Raise ConfigError when `data_dir` is on a network or FUSE filesystem (NETWORK_FILESYSTEMS).

    Without a readable mountinfo (not Linux) nothing is checked.
    """
    try:
        text = mountinfo.read_text(errors="replace")
    except OSError:
        log.debug("cannot read %s: the filesystem of storage.data_dir is not checked", mountinfo)
        return
    fstype = filesystem_type(os.path.realpath(data_dir), text)
    if fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")):
        raise ConfigError(
            f"storage.data_dir: {data_dir} is on a {fstype} filesystem; the local storage backend "
            "(SQLite in WAL mode) needs a local disk. Use a local path, or the opensearch backend "
            "(core.url) for storage shared between hosts"
        )


def check_files(db: Path) -> None:
    """Raise ConfigError unless the database and its `-wal`/`-shm`, where present, are regular
    files (not symbolic links) owned by the user the service runs as.

    The folder holding them (`storage.data_dir`) may be a symbolic link, as operators make them,
    but only one owned by the service's user or by root: a link someone else planted in its place
    would move the database wherever it points. The files are then checked where the link leads.
    """
    uid = os.geteuid()
    try:
        folder = os.lstat(db.parent)
    except OSError:
        folder = None  # not made yet: private_dir makes a real directory
    if folder is not None and stat.S_ISLNK(folder.st_mode) and folder.st_uid not in (uid, 0):
        raise ConfigError(
            f"storage.data_dir: {db.parent} is a symbolic link owned by uid {folder.st_uid}; refusing "
            f"to follow it (expected a directory, or a link owned by uid {uid} or root)"
        )
    for suffix in SIDE_SUFFIXES:
        path = Path(f"{db}{suffix}")
        try:
            st = os.lstat(path)
        except OSError:
            continue  # absent, or out of reach: then SQLite cannot open it either (a RETRY)
        if stat.S_ISLNK(st.st_mode):
            what = "a symbolic link"
        elif not stat.S_ISREG(st.st_mode):
            what = "not a regular file"
        elif st.st_uid != uid:
            what = f"owned by uid {st.st_uid}"
        else:
            continue
        raise ConfigError(
            f"storage.data_dir: {path} is {what}; refusing to open it (expected a regular file "
            f"owned by uid {uid}, the service's user)"
        )


def _create_private(db: Path) -> None:
    """Create the database file 0600 before SQLite does (its `-wal` and `-shm` then take the
    same mode), durably; an existing one owned by us loses any group or other permission."""
    try:
        fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        mode = os.lstat(db).st_mode
        if mode & 0o077:
            os.chmod(db, stat.S_IMODE(mode) & 0o600, follow_symlinks=False)
        return
    os.close(fd)
    fsync_dir(db.parent)


def connect(db: Path) -> sqlite3.Connection:
    """A connection set up for durable writes (module docstring): WAL, synchronous FULL, the
    schema; no automatic checkpoints (the checkpointer thread runs them off the commit path) and
    no busy handler (`execute` waits for the write lock). Raises sqlite3.Error or OSError."""
    conn = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        # Only a new (empty) database takes it; set before WAL mode, which fixes the page size.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        mode = execute(conn, "PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        for statement in filter(str.strip, SCHEMA.split(";")):
            execute(conn, statement)
    except BaseException:
        conn.close()
        raise
    return conn


@functools.lru_cache(maxsize=4096)
def day_text(day_number: int) -> str:
    """`YYYY-MM-DD` of a UTC day number (`int(seconds // 86400)`), as the `day` column holds it."""
    return utc_day(day_number).isoformat()


def _row(item: Item) -> Row | Outcome:
    """The row of one item, or the permanent Outcome when its index is not an index name
    (`index_of`) or its document cannot be encoded as JSON (ints over 64 bits, non-string keys,
    nesting too deep: `encode_document`)."""
    index = index_of(item)
    if isinstance(index, Outcome):
        return index
    encoded = encode_document(item.document)
    if isinstance(encoded, Outcome):
        return encoded
    when = storage_time(item)
    document = encoded.decode()
    return (item.id, index, day_text(int(when // 86400)), when, document)


def _busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_BUSY


def execute(conn: sqlite3.Connection, statement: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
    """Run one statement; while another connection holds the write lock (SQLITE_BUSY), poll for
    it up to BUSY_TIMEOUT_SECONDS, then raise that error. The statement runs in one SQLite call
    each time, without the GIL."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = POLL_FIRST_SECONDS
    while True:
        try:
            return conn.execute(statement, params)
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)


def restart_wal(conn: sqlite3.Connection) -> bool:
    """A RESTART checkpoint: copy the whole WAL into the database, so the next commit starts the
    WAL over (and cuts it to JOURNAL_SIZE_LIMIT_BYTES). Polls as `execute` does while writers or
    readers are busy; False when it could not finish in BUSY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = POLL_FIRST_SECONDS
    while execute(conn, "PRAGMA wal_checkpoint(RESTART)").fetchone()[0]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)
    return True


def statement_limit(conn: sqlite3.Connection) -> int:
    """Rows one INSERT may carry on `conn`: MAX_STATEMENT_ROWS, or fewer where SQLite was built
    with a lower limit on parameters (999 before 3.32)."""
    return max(1, min(MAX_STATEMENT_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 5))


@functools.lru_cache(maxsize=128)
def _insert_statement(rows: int) -> str:
    """One INSERT of `rows` rows; an id already stored (or repeated) is skipped, nothing else is."""
    return INSERT_HEAD + ",".join(["(?, ?, ?, ?, ?)"] * rows) + INSERT_TAIL


def _insert(rows: list[Row], limit: int) -> tuple[str, list[Any]]:
    """(statement, parameters) inserting `rows` (at most `limit`). The statement is one of a few
    sizes, each prepared once: exact up to 16 rows, then a multiple of 16, then of 128, padded
    with copies of the last row, which the conflict clause skips."""
    count = len(rows)
    step = 1 if count <= 16 else 16 if count <= 512 else 128
    size = min(-(-count // step) * step, limit)
    params = [value for row in rows for value in row]
    params += list(rows[-1]) * (size - count)
    return _insert_statement(size), params


def _details(exc: BaseException) -> dict[str, Any]:
    details: dict[str, Any] = {"error_type": type(exc).__name__}
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        details["sqlite_error"] = name
    if isinstance(exc, OSError) and exc.errno is not None:
        details["errno"] = exc.errno
    return details


# --- the backend ------------------------------------------------------------------------------


Done = Callable[[list[Outcome]], None]


@dataclass(slots=True)
class _Job:
    """One `enqueue`: its rows, its outcomes so far (None where the commit decides), and whom to
    tell."""

    rows: list[Row]
    outcomes: list[Outcome | None]
    done: Done
    nbytes: int = 0  # of the documents

    def finish(self, outcome: Outcome) -> None:
        try:
            self.done([outcome if o is None else o for o in self.outcomes])
        except Exception:  # the caller's callback failed: the writer goes on for the others
            log.exception("local storage: a caller's completion callback failed")


def _settle(future: Future[list[Outcome]], outcomes: list[Outcome]) -> None:
    try:
        future.set_result(outcomes)
    except Exception:  # cancelled by its waiter (asyncio.wrap_future): nobody to tell
        pass


class _Waiter:
    """`store`'s wait for its job: a bare lock released by the writer (a Future's condition
    variable costs several times as much to make and to signal)."""

    __slots__ = ("_lock", "outcomes")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.outcomes: list[Outcome] = []

    def __call__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self._lock.release()

    def wait(self) -> list[Outcome]:
        self._lock.acquire()
        return self.outcomes


class LocalBackend:
    """The embedded store (module docstring). Raises ConfigError when `data_dir` may not hold it.

    `clock` (unix seconds) times the writer's retention runs; `mountinfo` replaces
    /proc/self/mountinfo (MOUNTINFO) as the source of filesystem types.
    """

    name = "local"

    def __init__(
        self,
        data_dir: Path,
        *,
        retention_days: int | None = None,
        clock: Callable[[], float] = time.time,
        mountinfo: Path | None = None,
    ) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(f"storage.backend: local storage needs SQLite {'.'.join(map(str, MIN_SQLITE))} "
                              f"or newer; Python uses {sqlite3.sqlite_version}")
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / DB_NAME
        self.retention_days = retention_days
        self._clock = clock
        check_local_filesystem(self.data_dir, mountinfo or MOUNTINFO)
        check_files(self.db_path)
        self._state_lock = threading.Lock()  # guards the threads and the queue
        self._sqlite_lock = threading.Lock()  # held around every use of the write connection
        self._checkpoint_lock = threading.Lock()  # held around every checkpoint
        self._conn: sqlite3.Connection | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._reset()
        _BACKENDS.add(self)

    def _reset(self) -> None:
        """Fresh per-process state: no writer thread yet, no connection (a parent's one is kept
        referenced, never used or closed: SQLite connections must not cross a fork)."""
        _INHERITED.extend(c for c in (self._conn, self._checkpoint_conn) if c is not None)
        self._conn = self._checkpoint_conn = None
        self._pid = os.getpid()
        self._queue: SimpleQueue[_Job | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._wake_checkpointer = threading.Event()
        self._stop_checkpointer = threading.Event()
        self._unchecked_bytes = 0
        self._next_prune = float("-inf")
        self._statement_limit = MAX_STATEMENT_ROWS

    def _forked(self) -> None:
        """In a forked child, before any other thread exists: new locks (the parent's may be
        held), then fresh state."""
        self._state_lock = threading.Lock()
        self._sqlite_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._reset()

    # -- writing --------------------------------------------------------------------------------

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        """Store every item; one Outcome per item, in order, once the commit holding them is over.

        STORED also for an id already there; RETRY for every row of a failed commit; PERMANENT
        for an item whose document cannot be encoded as JSON (no attempt could store it).
        """
        waiter = _Waiter()
        self.enqueue(batch, waiter)
        return waiter.wait()

    def submit(self, batch: Sequence[Item]) -> Future[list[Outcome]]:
        """Queue the batch for the writer; the future gives `store`'s answer after the commit."""
        future: Future[list[Outcome]] = Future()
        self.enqueue(batch, functools.partial(_settle, future))
        return future

    def enqueue(self, batch: Sequence[Item], done: Done) -> None:
        """Queue the batch for the writer without waiting: `done(outcomes)` gets `store`'s answer
        after the commit, called in the writer thread (at once in the caller's, when no item can be
        encoded), so it must not block. An event loop passes one that calls
        `loop.call_soon_threadsafe`: one thread hop to the commit and back, no future to chain."""
        rows: list[Row] = []
        outcomes: list[Outcome | None] = []
        nbytes = 0
        for item in batch:
            row = _row(item)
            if isinstance(row, Outcome):  # cannot be encoded: no try would store it
                outcomes.append(row)
                continue
            rows.append(row)
            outcomes.append(None)
            nbytes += len(row[4])
        job = _Job(rows, outcomes, done, nbytes)
        if not rows:
            job.finish(STORED)
            return
        if self._pid != os.getpid():
            with self._state_lock:
                if self._pid != os.getpid():
                    self._reset()
        with self._state_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, args=(self._queue,), daemon=True,
                                                name="telhawk-local-writer")
                self._checkpointer = threading.Thread(
                    target=self._checkpoints, args=(self._wake_checkpointer, self._stop_checkpointer),
                    daemon=True, name="telhawk-local-checkpointer")
                self._thread.start()
                self._checkpointer.start()
            self._queue.put(job)

    def _run(self, queue: SimpleQueue[_Job | None]) -> None:
        """The writer: wait for a job, commit it with everything queued by then, answer, repeat."""
        self._stopping = False  # close() was asked: commit what came before it, then stop
        self._carried: _Job | None = None  # taken from the queue, but for the next commit
        while not self._stopping or self._carried is not None:
            first = self._carried if self._carried is not None else queue.get()
            self._carried = None
            if first is None:
                return
            jobs = [first]
            self._take(queue, jobs)
            outcome = self._commit(jobs, queue)
            for job in jobs:
                job.finish(outcome)
            if outcome is STORED:
                self._unchecked_bytes += sum(job.nbytes for job in jobs)
                if self._unchecked_bytes >= CHECKPOINT_BYTES:
                    self._unchecked_bytes = 0
                    self._wake_checkpointer.set()
                    self._restart_wal_when_big()
                self._prune_when_due(queue)

    def _take(self, queue: SimpleQueue[_Job | None], jobs: list[_Job]) -> bool:
        """Add the queued jobs to `jobs` while they fit in one statement; True if any was added."""
        rows = sum(len(job.rows) for job in jobs)
        added = False
        while not self._stopping and self._carried is None:
            try:
                job = queue.get_nowait()
            except Empty:
                break
            if job is None:
                self._stopping = True
            elif rows + len(job.rows) > self._statement_limit:
                self._carried = job  # one statement is one transaction: keep it that way
            else:
                jobs.append(job)
                rows += len(job.rows)
                added = True
        return added

    def _restart_wal_when_big(self) -> None:
        """In the writer: a RESTART checkpoint once the WAL file is over WAL_RESTART_BYTES."""
        with self._sqlite_lock:
            try:
                big = os.lstat(f"{self.db_path}-wal").st_size > WAL_RESTART_BYTES
                if big and self._conn is not None and not restart_wal(self._conn):
                    log.warning("local storage: the WAL of %s stays large: readers or writers kept "
                                "the checkpoint from finishing", self.db_path)
            except (sqlite3.Error, OSError) as exc:
                log.warning("local storage: checkpoint of %s failed: %s", self.db_path, exc)

    def _commit(self, jobs: list[_Job], queue: SimpleQueue[_Job | None]) -> Outcome:
        """Insert the rows of `jobs` in one transaction; STORED once it committed, else RETRY.

        The transaction is one INSERT statement in autocommit mode, so the whole of it (taking the
        write lock, inserting, the WAL fsync) is one SQLite call that runs without the GIL: this
        process's request threads never hold up the write lock that every process shares, as
        they would if the writer needed the GIL back between statements. While another process
        holds the lock, the writer polls for it, and the requests that arrive meanwhile join this
        commit (`jobs` grows). A single job too big for one statement gets BEGIN IMMEDIATE ...
        COMMIT instead.
        """
        rows = [row for job in jobs for row in job.rows]
        with self._sqlite_lock:
            try:
                conn = self._connection()
                limit = self._statement_limit
                if len(rows) > limit:
                    execute(conn, "BEGIN IMMEDIATE")
                    for start in range(0, len(rows), limit):
                        conn.execute(*_insert(rows[start:start + limit], limit))
                    conn.execute("COMMIT")
                    return STORED
                deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
                pause = POLL_FIRST_SECONDS
                while True:
                    try:
                        conn.execute(*_insert(rows, limit))
                        return STORED
                    except sqlite3.OperationalError as exc:
                        if not _busy(exc) or time.monotonic() >= deadline:
                            raise
                    time.sleep(pause)
                    pause = min(pause * 2, POLL_MAX_SECONDS)
                    if self._take(queue, jobs):
                        rows = [row for job in jobs for row in job.rows]
            except Exception as exc:  # waiters must get an answer whatever happened
                if not isinstance(exc, sqlite3.Error | OSError | ConfigError):
                    log.exception("local storage: unexpected error committing to %s", self.db_path)
                # Closing rolls back whatever the failed transaction left; the next commit reopens.
                self._drop_connection()
                return retry(f"local storage: commit to {self.db_path} failed: {exc}", **_details(exc))

    def _checkpoints(self, wake: threading.Event, stop: threading.Event) -> None:
        """The checkpointer: copy the WAL into the database when the writer asks, on a connection
        of its own, so that commits never wait for it. A failed checkpoint loses nothing (the WAL
        keeps every frame) and is tried again at the next request."""
        while True:
            wake.wait()
            wake.clear()
            if stop.is_set():
                return
            with self._checkpoint_lock:
                try:
                    if self._checkpoint_conn is None:
                        check_files(self.db_path)
                        self._checkpoint_conn = connect(self.db_path)
                    self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (sqlite3.Error, OSError, ConfigError) as exc:
                    log.warning("local storage: checkpoint of %s failed: %s", self.db_path, exc)
                    conn, self._checkpoint_conn = self._checkpoint_conn, None
                    if conn is not None:
                        conn.close()

    def _connection(self) -> sqlite3.Connection:
        """The write connection, opened on first use (caller holds _sqlite_lock)."""
        if self._conn is None:
            private_dir(self.data_dir)
            check_files(self.db_path)
            _create_private(self.db_path)
            self._conn = connect(self.db_path)
            self._statement_limit = statement_limit(self._conn)
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    # -- retention ------------------------------------------------------------------------------

    def cutoff_day(self, now: float) -> str | None:
        """The first storage day `prune` keeps at `now` (unix seconds); None without retention."""
        if self.retention_days is None:
            return None
        return day_text(int(now // 86400) - self.retention_days)

    def prune(self, now: float | None = None) -> int:
        """Delete the rows whose storage day is more than `storage.retention_days` days before the
        UTC day of `now` (unix seconds; default the backend's clock); the number deleted.

        With retention 7 on 2024-11-10, days from 2024-11-03 on are kept. Deletes in chunks of
        RETENTION_CHUNK_ROWS, each its own transaction, so commits of ingest interleave. Raises
        sqlite3.Error or OSError when the database cannot be written.
        """
        cutoff = self.cutoff_day(self._clock() if now is None else now)
        if cutoff is None:
            return 0
        total = 0
        while True:
            deleted = self._delete_chunk(cutoff)
            total += deleted
            if deleted < RETENTION_CHUNK_ROWS:
                return total

    def _delete_chunk(self, cutoff: str) -> int:
        with self._sqlite_lock:
            try:
                return execute(self._connection(), DELETE_CHUNK, (cutoff, RETENTION_CHUNK_ROWS)).rowcount
            except BaseException:
                self._drop_connection()
                raise

    def _prune_when_due(self, queue: SimpleQueue[_Job | None]) -> None:
        """In the writer, after a commit: prune at most once per RETENTION_INTERVAL_SECONDS,
        yielding to queued commits between chunks (the prune stays due until it is done)."""
        now = self._clock()
        cutoff = self.cutoff_day(now)
        if cutoff is None or now < self._next_prune:
            return
        try:
            while self._delete_chunk(cutoff) == RETENTION_CHUNK_ROWS:
                if not queue.empty():
                    return
        except (sqlite3.Error, OSError, ConfigError) as exc:
            log.warning("local storage: retention could not delete old rows from %s: %s", self.db_path, exc)
        self._next_prune = now + RETENTION_INTERVAL_SECONDS

    # -- reading and health ---------------------------------------------------------------------

    def documents(self, index: str | None = None) -> Iterator[dict[str, Any]]:
        """Every stored event in commit order, shaped like an OpenSearch hit: `{"_id", "_index",
        "_source"}`; only those of one HEC index when given. Nothing when no database exists."""
        if not os.path.lexists(self.db_path):
            return
        check_files(self.db_path)
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            if index is None:
                rows = conn.execute("SELECT id, index_name, document FROM events ORDER BY rowid")
            else:
                rows = conn.execute("SELECT id, index_name, document FROM events WHERE index_name = ? "
                                    "ORDER BY rowid", (index,))
            for doc_id, doc_index, document in rows:
                yield {"_id": doc_id, "_index": doc_index, "_source": orjson.loads(document)}
        finally:
            conn.close()

    def healthy(self) -> bool:
        """True when a write could succeed now: the data directory (or, before it exists, the
        folder it will be made in) is writable, on a read-write filesystem with free space, and
        the database, when there, passes `check_files` and opens for writing."""
        if uncreatable(self.data_dir) is not None:
            return False
        directory = self.data_dir
        while not directory.exists() and directory.parent != directory:
            directory = directory.parent
        try:
            fs = os.statvfs(directory)
            if (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) == 0:
                return False
            if not os.path.lexists(self.db_path):  # a dangling link is there, and refused
                return True
            check_files(self.db_path)
            probe = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=rw", uri=True, timeout=0.5)
            try:
                probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                probe.close()
        except (OSError, sqlite3.Error, ConfigError):
            return False
        return True

    def close(self) -> None:
        """Finish what is queued, stop the writer and close the connection; a later `store` starts
        a new writer."""
        with self._state_lock:
            if self._pid != os.getpid():
                self._reset()
            thread, queue, checkpointer = self._thread, self._queue, self._checkpointer
            wake, stop = self._wake_checkpointer, self._stop_checkpointer
            self._thread, self._queue, self._checkpointer = None, SimpleQueue(), None
            self._wake_checkpointer, self._stop_checkpointer = threading.Event(), threading.Event()
            if thread is not None:
                queue.put(None)
                stop.set()
                wake.set()
        if thread is not None and checkpointer is not None:
            thread.join(timeout=BUSY_TIMEOUT_SECONDS * 2)
            checkpointer.join(timeout=BUSY_TIMEOUT_SECONDS * 2)
        with self._checkpoint_lock:
            conn, self._checkpoint_conn = self._checkpoint_conn, None
            if conn is not None:
                conn.close()
        with self._sqlite_lock:
            self._drop_connection()


# --- fork safety ------------------------------------------------------------------------------

_BACKENDS: weakref.WeakSet[LocalBackend] = weakref.WeakSet()
# Connections inherited through a fork: kept referenced so that garbage collection never closes
# them in the child (closing may checkpoint or delete the WAL the parent is using).
_INHERITED: list[sqlite3.Connection] = []
_held: list[LocalBackend] = []
# Two threads forking at once take turns: the hooks of one fork must release what they acquired.
_fork_lock = threading.Lock()


def _before_fork() -> None:
    """Wait for commits and checkpoints in flight, so the child never inherits SQLite half way
    through one."""
    _fork_lock.acquire()
    _held[:] = list(_BACKENDS)
    for backend in _held:
        backend._sqlite_lock.acquire()
        backend._checkpoint_lock.acquire()


def _after_fork_in_parent() -> None:
    for backend in _held:
        backend._checkpoint_lock.release()
        backend._sqlite_lock.release()
    _held.clear()
    _fork_lock.release()


def _after_fork_in_child() -> None:
    for backend in _held:
        backend._forked()
    _held.clear()
    _fork_lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
