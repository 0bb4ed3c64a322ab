"""The local backend at its edges: the writer's retention run (chunks, and a delete that fails),
the first day retention keeps for a clock before 1970, the RESTART checkpoint's deadline, the
fork hook that gives a child new locks, and mount points the kernel writes without escapes.

Real SQLite on real files; clocks are injected (no real sleeps for polling).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from telhawk_ingest.envelope import new_id
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.storage import local
from telhawk_ingest.storage.base import Item, Status, encode_document
from telhawk_ingest.storage.local import (
    LocalBackend,
    check_files,
    check_local_filesystem,
    connect,
    filesystem_type,
)
from tests.unit.test_local_checkpoints import PollClock
from tests.unit.test_local_storage import (
    DAY,
    DAY_TEXT,
    Clock,
    days_stored,
    ids,
    item,
    lock_database,
    refuse_id,
    wait_for,
)

T = TypeVar("T")


def test_the_writers_retention_run_deletes_every_chunk_while_no_commit_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "RETENTION_CHUNK_ROWS", 3)
    backend = LocalBackend(tmp_path / "data", retention_days=2, clock=Clock(DAY + 3600))

    backend.store([item(when=DAY - 5 * 86400) for _ in range(10)] + [item()])

    # Nothing else is stored: the run after that commit goes on until the last old row is gone.
    wait_for(lambda: days_stored(tmp_path / "data") == [DAY_TEXT])
    backend.close()


def test_a_retention_run_that_fails_is_logged_and_the_commit_stands(tmp_path, caplog):
    clock = Clock(DAY + 3600)
    backend = LocalBackend(tmp_path / "data", retention_days=2, clock=clock)
    backend.store([item(1)])
    conn = sqlite3.connect(backend.db_path)
    conn.execute("CREATE TRIGGER keep BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'kept'); END")
    conn.commit()
    conn.close()
    old, new = item(2, when=DAY - 5 * 86400), item(3)
    clock.now += local.RETENTION_INTERVAL_SECONDS  # the next run is due

    with caplog.at_level(logging.WARNING, logger=local.__name__):
        assert [o.stored for o in backend.store([old, new])] == [True, True]
        backend.close()  # the writer's run after the commit is over

    assert [r.getMessage() for r in caplog.records] == [
        f"local storage: retention could not delete old rows from {backend.db_path}: kept"]
    assert len(ids(tmp_path / "data")) == 3


def test_retention_counts_days_down_from_the_utc_day_of_a_clock_before_1970(tmp_path):
    backend = LocalBackend(tmp_path / "data", retention_days=1, clock=Clock(0.0))

    # 1969-12-31T23:59:59Z: its day is 1969-12-31, and one day of retention keeps 1969-12-30 on.
    assert backend.cutoff_day(-1.0) == "1969-12-30"
    assert backend.cutoff_day(0.0) == "1969-12-31"


def within(seconds: float, call: Callable[[], T]) -> T:
    """What `call` returns, or raises, run on a thread of its own: a test failure, never a hang,
    when it waits past `seconds`."""
    done: list[tuple[T | None, BaseException | None]] = []

    def run() -> None:
        try:
            done.append((call(), None))
        except BaseException as exc:
            done.append((None, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert done, f"still waiting after {seconds} s"
    result, error = done[0]
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def test_the_fork_hook_gives_the_child_new_locks_so_it_never_waits_for_its_parents(tmp_path: Path):
    backend = LocalBackend(tmp_path / "data")
    first, second = item(1), item(2)
    assert backend.store([first])[0].stored
    backend.close()
    # At a fork, threads of the parent may hold any of these; none of them runs in the child.
    for lock in (backend._state_lock, backend._sqlite_lock, backend._checkpoint_lock):
        lock.acquire()

    backend._forked()  # what the child runs after os.fork (os.register_at_fork)

    assert within(10, lambda: backend.store([second]))[0].stored
    within(10, backend.close)
    assert ids(tmp_path / "data") == [first.id, second.id]



ROOT_MOUNT = "27 1 254:0 / / rw - ext4 /dev/vda rw\n"


@pytest.mark.parametrize(("mount_point", "path", "expected"), [
    # The kernel escapes only space, tab, newline and backslash: other white space is written as is.
    ("/mnt/my\u00a0share", "/mnt/my\u00a0share/data", "nfs4"),
    # A directory whose name ends in a space is not the one without it.
    ("/mnt/a\\040", "/mnt/a/data", "ext4"),
    ("/mnt/a\\040", "/mnt/a /data", "nfs4"),
    # Only the slash of the mount point is dropped before comparing.
    ("/srv/XX", "/srv/XX/data", "nfs4"),
    ("/srv/XX", "/srv/data", "ext4"),
    ("/srv/data/", "/srv/data/x", "nfs4"),
])
def test_a_mount_point_is_read_whole_and_contains_only_what_lies_below_it(mount_point, path, expected):
    mountinfo = ROOT_MOUNT + f"40 27 0:50 / {mount_point} rw - nfs4 srv:/ rw\n"

    assert filesystem_type(path, mountinfo) == expected


def test_a_mountinfo_line_that_ends_after_the_filesystem_type_still_names_it():
    assert filesystem_type("/data/x", ROOT_MOUNT + "42 27 0:52 / /data rw - nfs4") == "nfs4"


def test_a_mountinfo_naming_a_mount_point_in_another_encoding_is_still_read(tmp_path):
    # Mount points are bytes to the kernel: one that is not UTF-8 must not hide the others.
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_bytes(ROOT_MOUNT.encode() + b"39 27 0:49 / /mnt/caf\xe9 rw - ext4 /dev/vdb rw\n"
                          + f"40 27 0:50 / {tmp_path} rw - nfs4 srv:/ rw\n".encode())

    with pytest.raises(ConfigError, match="is on a nfs4 filesystem"):
        check_local_filesystem(tmp_path / "data", mountinfo)


def test_a_mountinfo_that_cannot_be_read_is_logged_with_its_path(tmp_path, caplog):
    missing = tmp_path / "no-mountinfo"

    with caplog.at_level(logging.DEBUG, logger=local.__name__):
        check_local_filesystem(tmp_path / "data", missing)

    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read {missing}: the filesystem of storage.data_dir is not checked"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user needs root")
def test_a_data_directory_linked_by_a_system_user_other_than_root_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "data"
    link.symlink_to(real)
    os.lchown(link, 1, 1)  # daemon's, on most systems: only root's and the service's own are followed

    with pytest.raises(ConfigError, match="is a symbolic link owned by uid 1; refusing to follow it"):
        check_files(link / local.DB_NAME)


def test_a_database_that_cannot_be_put_in_wal_mode_is_refused_naming_the_mode_it_has():
    # SQLite keeps an in-memory database in "memory" mode whatever is asked.
    with pytest.raises(sqlite3.OperationalError, match=r"^journal_mode is memory, not wal$"):
        connect(Path(":memory:"))


def test_an_event_from_before_1970_is_stored_under_its_utc_day(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    backend.store([item(when=-1.0)])  # 1969-12-31T23:59:59Z
    backend.close()

    assert days_stored(tmp_path / "data") == ["1969-12-31"]


@pytest.mark.parametrize(("before", "after"),
                         [(0o777, 0o600), (0o607, 0o600), (0o700, 0o700), (0o400, 0o400)])
def test_an_existing_database_open_to_others_is_made_0600_and_one_that_is_not_is_left_alone(tmp_path, before,
                                                                                         after):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    db = data / local.DB_NAME
    sqlite3.connect(db).close()
    os.chmod(db, before)

    backend = LocalBackend(data)
    backend.store([item()])
    backend.close()

    assert os.stat(db).st_mode & 0o777 == after


def test_a_link_put_in_place_of_the_database_after_its_check_never_has_its_target_made_private(tmp_path):
    # Between check_files and the open, a link may appear where the database is: the mode is
    # changed on the link itself, never on whatever it points to.
    target = tmp_path / "someone-elses"
    target.write_text("")
    target.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / local.DB_NAME).symlink_to(target)

    with contextlib.suppress(OSError, NotImplementedError):  # Linux cannot change a link's own mode
        local._create_private(data / local.DB_NAME)

    assert target.stat().st_mode & 0o777 == 0o644


def test_a_statement_polls_for_the_write_lock_until_its_deadline_exactly_and_other_errors_at_once(
        tmp_path, monkeypatch):
    db = tmp_path / local.DB_NAME
    conn = local.connect(db)
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock
    # Should the lock be polled for past the deadline, it is let go after a while: no hang.
    clock = PollClock(after_pause=lambda n: writer.execute("COMMIT") if n == 10 else None)
    monkeypatch.setattr(local, "time", clock)
    monkeypatch.setattr(local, "BUSY_TIMEOUT_SECONDS", 1.375)
    monkeypatch.setattr(local, "POLL_FIRST_SECONDS", 0.125)
    monkeypatch.setattr(local, "POLL_MAX_SECONDS", 0.5)
    insert = "INSERT INTO events VALUES ('a', 'main', '2024-10-04', 1.7e9, '{}')"

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        local.execute(conn, insert)
    # Pauses double up to their cap; tried at 0, 0.125, 0.375, 0.875 and 1.375 s: not past the deadline.
    assert clock.pauses == [0.125, 0.25, 0.5, 0.5]

    clock.pauses.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        local.execute(conn, "SELECT * FROM no_such_table")
    assert clock.pauses == []  # not a lock held: nothing to wait for
    writer.close()
    conn.close()


def test_a_completion_callback_that_fails_is_logged_and_the_writer_goes_on(tmp_path, caplog):
    backend = LocalBackend(tmp_path / "data")

    def gone(outcomes: object) -> None:
        raise RuntimeError("the caller went away")

    with caplog.at_level(logging.ERROR, logger=local.__name__):
        backend.enqueue([item(1)], gone)
        assert backend.store([item(2)])[0].stored  # after the first job: queued behind it
    backend.close()

    assert [r.getMessage() for r in caplog.records] == [
        "local storage: a caller's completion callback failed"]
    assert len(ids(tmp_path / "data")) == 2


def test_the_writer_and_its_checkpointer_are_named_daemon_threads(tmp_path):
    # Named so that a thread dump or a log line shows them; daemon so that a process that ends
    # without closing the backend is not held up by threads waiting for work.
    before = set(threading.enumerate())
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item()])[0].stored
    started = {(thread.name, thread.daemon) for thread in set(threading.enumerate()) - before}
    backend.close()

    assert started == {("telhawk-local-writer", True), ("telhawk-local-checkpointer", True)}


def sized(nbytes: int) -> Item:
    """An item whose document is `nbytes` of JSON text."""
    document = {"p": "x" * (nbytes - len('{"p":""}'))}
    assert len(encode_document(document)) == nbytes
    return Item(id=new_id(), index="main", time=DAY, document=document)


class Asked(threading.Event):
    """The checkpointer's wake-up event, noting how many rows were committed at each request."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.at_rows: list[int] = []

    def set(self) -> None:
        self.at_rows.append(len(ids(self.data_dir)))
        super().set()


def test_a_checkpoint_is_asked_for_each_time_the_documents_committed_since_the_last_reach_the_bound(
        tmp_path, monkeypatch):
    monkeypatch.setattr(local, "CHECKPOINT_BYTES", 300)
    backend = LocalBackend(tmp_path / "data")
    asked = Asked(backend.data_dir)
    backend._wake_checkpointer = asked

    for batch in (
        [100, 99], [100],  # 299 bytes, in two requests: one short of the bound
        [100],  # 399: asked, and counting starts again
        [100, 100], [99],  # 299 again
        [101],  # 400: asked
        [150, 150],  # exactly 300, in one request: asked
        [100],  # 100: the request before was answered, and its checkpoint asked for
    ):
        assert all(o.stored for o in backend.store([sized(n) for n in batch]))
    requests = list(asked.at_rows)
    backend.close()

    assert requests == [4, 8, 10]  # rows committed at each request


def test_requests_queued_behind_a_lock_share_a_commit_up_to_exactly_its_row_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "statement_limit", lambda conn: 4)
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(0)])[0].stored
    refuse_id(backend.data_dir, "boom")
    other = lock_database(backend.data_dir)
    doomed = backend.submit([item(item_id="boom")])
    filling = backend.submit([item(1), item(2), item(3)])  # 4 rows with the one before: one commit
    over = backend.submit([item(4)])  # a 5th row: the next commit
    after = backend.submit([item(5)])  # behind it: the next commit too
    wait_for(lambda: backend._queue.qsize() == 1)  # all but the last taken by the writer
    other.execute("COMMIT")
    other.close()

    assert [o.status for o in doomed.result(10) + filling.result(10)] == [Status.RETRY] * 4
    assert "refused by test" in filling.result()[0].error
    assert [o.status for o in over.result(10) + after.result(10)] == [Status.STORED] * 2
    backend.close()
    assert len(ids(tmp_path / "data")) == 3


class Polling:
    """Stands in for the `time` module of storage.local: real time, and `polled` is set once the
    writer pauses to poll for the write lock."""

    def __init__(self) -> None:
        self.polled = threading.Event()
        self.monotonic = time.monotonic

    def sleep(self, seconds: float) -> None:
        self.polled.set()
        time.sleep(seconds)


def test_rows_that_join_a_commit_while_it_waits_for_the_lock_are_stored_with_it(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(0)])[0].stored
    polling = Polling()
    monkeypatch.setattr(local, "time", polling)
    other = lock_database(backend.data_dir)
    first = backend.submit([item(1)])
    assert polling.polled.wait(10)  # the writer holds the first request and polls for the lock
    joining = [item(2), item(3)]
    second = backend.submit(joining)
    wait_for(backend._queue.empty)
    other.execute("COMMIT")
    other.close()

    assert [o.status for o in first.result(10) + second.result(10)] == [Status.STORED] * 3
    backend.close()
    assert set(ids(tmp_path / "data")) >= {it.id for it in joining}


def test_a_commit_polls_for_the_lock_until_its_deadline_exactly_then_is_retry(tmp_path, monkeypatch, caplog):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(0)])[0].stored
    other = lock_database(backend.data_dir)
    # Should the lock be polled for past the deadline, it is let go after a while: no hang.
    clock = PollClock(after_pause=lambda n: other.execute("ROLLBACK") if n == 10 else None)
    monkeypatch.setattr(local, "time", clock)
    monkeypatch.setattr(local, "BUSY_TIMEOUT_SECONDS", 0.375)
    monkeypatch.setattr(local, "POLL_FIRST_SECONDS", 0.125)
    monkeypatch.setattr(local, "POLL_MAX_SECONDS", 0.5)

    with caplog.at_level(logging.WARNING, logger=local.__name__):
        [outcome] = backend.store([item(1)])
    if other.in_transaction:
        other.execute("ROLLBACK")
    other.close()

    assert clock.pauses == [0.125, 0.25]  # tried at 0, 0.125 and 0.375 s, the deadline, and not after
    assert (outcome.status, outcome.error) == (
        Status.RETRY, f"local storage: commit to {backend.db_path} failed: database is locked")
    assert caplog.records == []  # a lock held by another process is expected: no error logged
    monkeypatch.undo()
    assert backend.store([item(2)])[0].stored
    backend.close()


def test_a_commit_failing_in_an_unexpected_way_is_logged_with_its_traceback_and_retry(tmp_path, monkeypatch,
                                                                                     caplog):
    backend = LocalBackend(tmp_path / "data")

    def broken(rows: list, limit: int) -> tuple:
        raise RuntimeError("a bug")

    monkeypatch.setattr(local, "_insert", broken)
    with caplog.at_level(logging.ERROR, logger=local.__name__):
        [outcome] = backend.store([item(1)])

    assert [(r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        (f"local storage: unexpected error committing to {backend.db_path}", True)]
    assert (outcome.status, outcome.error, outcome.details) == (
        Status.RETRY, f"local storage: commit to {backend.db_path} failed: a bug",
        {"error_type": "RuntimeError"})
    monkeypatch.undo()
    assert backend.store([item(2)])[0].stored  # waiters always get an answer, and the writer goes on
    backend.close()


def test_close_waits_for_the_writer_and_the_checkpointer_up_to_twice_the_busy_timeout_each(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item()])[0].stored
    threads = [backend._thread, backend._checkpointer]
    waits: list[tuple[str, float | None]] = []

    def timed(thread: threading.Thread) -> Callable[[float | None], None]:
        join = thread.join

        def recording(timeout: float | None = None) -> None:
            waits.append((thread.name, timeout))
            join(timeout)

        return recording

    for thread in threads:
        assert thread is not None
        thread.join = timed(thread)  # type: ignore[method-assign]
    backend.close()

    assert waits == [("telhawk-local-writer", 10.0), ("telhawk-local-checkpointer", 10.0)]
    assert not any(thread.is_alive() for thread in threads if thread is not None)


def test_close_while_the_writer_waits_for_the_lock_commits_what_was_queued_and_stops_it_then(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(0)])[0].stored
    other = lock_database(backend.data_dir)
    queued = [backend.submit([item(n)]) for n in range(1, 4)]
    writer, queue = backend._thread, backend._queue
    closing = threading.Thread(target=backend.close)
    closing.start()
    wait_for(queue.empty)  # the writer holds the requests and the request to stop
    other.execute("COMMIT")
    other.close()

    closing.join(5)
    assert writer is not None and not writer.is_alive() and not closing.is_alive()
    assert all(future.result(0)[0].stored for future in queued)
    assert len(ids(tmp_path / "data")) == 4
