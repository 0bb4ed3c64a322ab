"""The local backend's RESTART checkpoints: the WAL starts over (and gives its disk space back) once
it grew past WAL_RESTART_BYTES, a reader keeping it from finishing is waited for up to
BUSY_TIMEOUT_SECONDS, and a checkpoint that fails is logged, never raised into a commit.

Real SQLite on real files; the clock of the polling is injected (no real sleeps).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from telhawk_ingest.envelope import new_id
from telhawk_ingest.storage import local
from telhawk_ingest.storage.base import Item
from telhawk_ingest.storage.local import DB_NAME, LocalBackend, restart_wal
from tests.unit.test_local_storage import wait_for


class PollClock:
    """Stands in for the `time` module of storage.local: monotonic time advances only by the
    pauses asked for, which are recorded; `after_pause` runs after each."""

    def __init__(self, after_pause: Callable[[int], None] = lambda n: None) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []
        self.after_pause = after_pause

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        self.after_pause(len(self.pauses))


def fill(conn: sqlite3.Connection, count: int = 200) -> None:
    for _ in range(count):
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?)", (new_id(), "main", "2024-10-04", 1.7e9,
                                                                  '{"pad": "%s"}' % ("x" * 1000)))


def reader(db: Path) -> sqlite3.Connection:
    """Another connection in a read transaction on the WAL: a RESTART checkpoint must wait for it."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN")
    other.execute("SELECT count(*) FROM events").fetchone()
    return other


def wal_size(db: Path) -> int:
    return os.path.getsize(f"{db}-wal")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(local, "JOURNAL_SIZE_LIMIT_BYTES", 0)  # a WAL that starts over is cut to nothing
    path = tmp_path / DB_NAME
    yield path


def test_a_restart_checkpoint_lets_the_next_commit_start_the_wal_over(db):
    conn = local.connect(db)
    fill(conn)
    grown = wal_size(db)
    assert grown > 1_000_000

    assert restart_wal(conn) is True
    fill(conn, 1)

    assert wal_size(db) < 100_000  # the WAL started over: the disk space of the burst is back
    assert conn.execute("SELECT count(*) FROM events").fetchone() == (201,)
    conn.close()


Held = tuple[sqlite3.Connection, sqlite3.Connection, PollClock]


@pytest.fixture
def held(db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    """A database with a grown WAL, another connection in a read transaction on it, and the poll
    clock in place of storage.local's `time`: (write connection, reader, clock)."""
    conn = local.connect(db)
    fill(conn)
    other = reader(db)
    clock = PollClock()
    monkeypatch.setattr(local, "time", clock)
    yield conn, other, clock
    other.close()
    conn.close()


def test_a_restart_checkpoint_polls_for_a_reader_with_doubling_pauses_and_finishes_once_it_is_gone(
        db, held):
    conn, other, clock = held
    clock.after_pause = lambda n: other.execute("COMMIT") if n == 6 else None

    assert restart_wal(conn) is True

    assert clock.pauses == pytest.approx([0.0001, 0.0002, 0.0004, 0.0008, 0.001, 0.001])
    fill(conn, 1)
    assert wal_size(db) < 100_000


def test_a_restart_checkpoint_gives_up_after_the_busy_timeout_while_a_reader_stays(held, monkeypatch):
    conn, _, clock = held
    monkeypatch.setattr(local, "BUSY_TIMEOUT_SECONDS", 0.05)

    assert restart_wal(conn) is False

    assert sum(clock.pauses) == pytest.approx(0.05, abs=0.0011)  # polled until the deadline, not past it
    assert max(clock.pauses) == pytest.approx(0.001)


def test_a_restart_checkpoint_gives_up_at_its_deadline_exactly(held, monkeypatch):
    conn, _, clock = held
    # Pauses that add up to the deadline exactly (binary fractions).
    monkeypatch.setattr(local, "BUSY_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(local, "POLL_FIRST_SECONDS", 0.25)
    monkeypatch.setattr(local, "POLL_MAX_SECONDS", 0.25)

    assert restart_wal(conn) is False

    assert clock.pauses == [0.25, 0.25]  # tried at 0, 0.25 and 0.5 s: not once past the deadline


def items(count: int) -> list[Item]:
    return [Item(new_id(), "main", 1.7e9, {"n": n, "pad": "x" * 1000}) for n in range(count)]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    made = LocalBackend(tmp_path / "data")
    yield made
    made.close()


def test_the_writer_restarts_the_wal_only_once_it_is_over_the_limit(backend, db, monkeypatch):
    assert all(o.stored for o in backend.store(items(200)))
    grown = wal_size(backend.db_path)

    monkeypatch.setattr(local, "WAL_RESTART_BYTES", grown)  # at the limit, not over it: kept
    backend._restart_wal_when_big()
    assert all(o.stored for o in backend.store(items(1)))
    assert wal_size(backend.db_path) >= grown

    monkeypatch.setattr(local, "WAL_RESTART_BYTES", wal_size(backend.db_path) - 1)
    backend._restart_wal_when_big()
    assert all(o.stored for o in backend.store(items(1)))
    assert wal_size(backend.db_path) < 100_000
    assert len(list(backend.documents())) == 202


def test_a_wal_kept_large_by_a_reader_is_logged_and_the_writer_carries_on(backend, db, monkeypatch, caplog):
    assert all(o.stored for o in backend.store(items(50)))
    other = reader(backend.db_path)
    monkeypatch.setattr(local, "WAL_RESTART_BYTES", 0)
    monkeypatch.setattr(local, "time", PollClock())

    with caplog.at_level(logging.WARNING, logger=local.__name__):
        backend._restart_wal_when_big()

    assert [r.getMessage() for r in caplog.records] == [
        f"local storage: the WAL of {backend.db_path} stays large: readers or writers kept the checkpoint "
        "from finishing"]
    other.close()
    monkeypatch.undo()
    assert all(o.stored for o in backend.store(items(1)))
    assert len(list(backend.documents())) == 51


def test_a_checkpoint_that_fails_is_logged_and_never_raised(backend, db, monkeypatch, caplog):
    assert all(o.stored for o in backend.store(items(5)))
    os.unlink(f"{backend.db_path}-wal")  # gone from under the writer: its size cannot be read
    monkeypatch.setattr(local, "WAL_RESTART_BYTES", 0)

    with caplog.at_level(logging.WARNING, logger=local.__name__):
        backend._restart_wal_when_big()

    [record] = caplog.records
    assert record.getMessage().startswith(f"local storage: checkpoint of {backend.db_path} failed: ")
    assert "No such file" in record.getMessage()


def test_a_checkpoint_that_cannot_open_its_connection_is_logged_and_the_next_request_tries_again(
        backend, monkeypatch, caplog):
    assert all(o.stored for o in backend.store(items(1)))  # the writer's connection is open
    monkeypatch.setattr(local, "CHECKPOINT_BYTES", 1)  # every commit asks for a checkpoint
    real_connect = local.connect
    checkpoints: list[str] = []

    def unable(db: Path) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    def tracing(db: Path) -> sqlite3.Connection:
        conn = real_connect(db)
        conn.set_trace_callback(checkpoints.append)
        return conn

    monkeypatch.setattr(local, "connect", unable)
    with caplog.at_level(logging.WARNING, logger=local.__name__):
        assert all(o.stored for o in backend.store(items(1)))
        wait_for(lambda: len(caplog.records) > 0)
    monkeypatch.setattr(local, "connect", tracing)
    assert all(o.stored for o in backend.store(items(1)))
    wait_for(lambda: "PRAGMA wal_checkpoint(PASSIVE)" in checkpoints)

    assert [r.getMessage() for r in caplog.records] == [
        f"local storage: checkpoint of {backend.db_path} failed: unable to open database file"]
