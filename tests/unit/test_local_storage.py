"""The local backend (one SQLite database): durable group commits, one row per id, and its limits.

Real SQLite on real files throughout; failures are made real too: another connection holding the
write lock, a trigger refusing a row, a file size limit, a full or read-only filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from telhawk_ingest.config import load_settings
from telhawk_ingest.envelope import new_id
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.storage import local, make_backend
from telhawk_ingest.storage.base import Item, Status
from telhawk_ingest.storage.local import DB_NAME, LocalBackend, filesystem_type

ROOT = Path(__file__).resolve().parents[2]
DAY = 20_000 * 86400.0  # 2024-10-04 UTC
DAY_TEXT = "2024-10-04"


def item(n: int = 0, index: str = "main", when: float = DAY, item_id: str | None = None, **doc) -> Item:
    return Item(id=item_id or new_id(), index=index, time=when, document={"n": n, "pad": "x" * 200, **doc})


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    made = LocalBackend(tmp_path / "data")
    yield made
    made.close()


def rows(data_dir: Path, sql: str = "SELECT id, index_name, day, time, document FROM events ORDER BY rowid",
         params: tuple = ()) -> list[tuple]:
    """What another process would read: a connection of its own."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def ids(data_dir: Path) -> list[str]:
    return [row[0] for row in rows(data_dir)]


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# --- storing -----------------------------------------------------------------------------------


def test_a_stored_item_is_one_row_with_its_document_as_json_text(backend):
    stored = item(7, index="auth", host="web01")

    assert [o.status for o in backend.store([stored])] == [Status.STORED]

    [(row_id, index, day, when, document)] = rows(backend.data_dir)
    assert (row_id, index, day, when) == (stored.id, "auth", DAY_TEXT, DAY)
    assert json.loads(document) == stored.document
    assert list(backend.documents()) == [{"_id": stored.id, "_index": "auth", "_source": stored.document}]


def test_concurrent_batches_from_many_threads_are_all_stored_once(backend):
    sent: list[list[str]] = [[] for _ in range(8)]

    def writer(t: int) -> None:
        for _ in range(25):
            batch = [item(t) for _ in range(4)]
            sent[t] += [it.id for it in batch]
            assert all(o.stored for o in backend.store(batch))

    run_threads(8, writer)

    stored = ids(backend.data_dir)
    assert sorted(stored) == sorted(i for ids_ in sent for i in ids_)
    assert len(stored) == 800


def test_the_same_envelope_stored_twice_is_one_row_and_the_second_changes_nothing(backend):
    first = item(1)
    again = Item(first.id, "other", DAY + 86400 * 3, {"n": 2})

    assert backend.store([first])[0].stored
    assert backend.store([again, again])[0].stored

    stored = [(row[0], row[1], json.loads(row[4])) for row in rows(backend.data_dir)]
    assert stored == [(first.id, "main", first.document)]


def test_an_id_already_stored_before_a_restart_is_not_stored_again(tmp_path):
    batch = [item(n) for n in range(5)]
    before = LocalBackend(tmp_path / "data")
    assert all(o.stored for o in before.store(batch))
    before.close()

    after = LocalBackend(tmp_path / "data")
    new = item(9)
    outcomes = after.store([*batch, new])
    after.close()

    assert [o.status for o in outcomes] == [Status.STORED] * 6
    assert ids(tmp_path / "data") == [it.id for it in batch] + [new.id]


STORE_SAME_IDS = """
import sys
from pathlib import Path
from telhawk_ingest.storage.base import Item
from telhawk_ingest.storage.local import LocalBackend
data, shared, own = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3].split(",")
backend = LocalBackend(data)
for start in range(0, len(shared), 10):
    batch = [Item(i, "main", 1.7e9, {"id": i}) for i in shared[start:start + 10] + own[start:start + 10]]
    assert all(o.stored for o in backend.store(batch))
backend.close()
"""


def test_processes_storing_the_same_ids_at_once_keep_one_row_each(tmp_path):
    shared = [new_id() for _ in range(100)]
    own = [[new_id() for _ in range(100)] for _ in range(3)]
    procs = [
        subprocess.Popen([sys.executable, "-c", STORE_SAME_IDS, str(tmp_path / "data"), ",".join(shared),
                          ",".join(mine)], cwd=ROOT)
        for mine in own
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]

    stored = ids(tmp_path / "data")
    assert len(stored) == len(set(stored)) == 400
    assert set(stored) == set(shared) | {i for mine in own for i in mine}


def test_a_document_that_cannot_be_encoded_is_permanent_and_the_rest_are_stored(backend):
    batch = [item(1), item(2, big=2**70), item(3, nested={1: "non-string key"})]

    outcomes = backend.store(batch)

    assert [o.status for o in outcomes] == [Status.STORED, Status.PERMANENT, Status.PERMANENT]
    assert outcomes[1].error.startswith("event cannot be encoded as JSON")
    assert outcomes[1].details == {"error_type": "json_encode_error", "field": "big"}
    assert outcomes[2].details == {"error_type": "json_encode_error", "field": "nested"}
    assert ids(backend.data_dir) == [batch[0].id]


@pytest.mark.parametrize(
    "when",
    [math.nan, math.inf, -math.inf, 1e300, -1e300, 1718905365392963.0, 1730682123456.0, 253402300800.0],
)
def test_a_time_without_a_date_never_raises_and_the_day_comes_from_the_id(backend, when):
    # The id's own time is 2024-06-20T17:42:45.392Z.
    stored = item(when=when, item_id=new_id(now_ns=1718905365392 * 1_000_000))

    assert backend.store([stored])[0].stored

    [(_, _, day, row_time, _)] = rows(backend.data_dir)
    assert (day, row_time) == ("2024-06-20", 1718905365.392)


@pytest.mark.parametrize(
    ("when", "day"),
    [(-86400.0, "1969-12-31"), (0.0, "1970-01-01"), (253402300799.0, "9999-12-31"),
     (DAY + 86399.9, DAY_TEXT)],
)
def test_times_with_a_date_pick_their_utc_day(backend, when, day):
    assert backend.store([item(when=when)])[0].stored
    assert rows(backend.data_dir, "SELECT day, time FROM events") == [(day, when)]


def test_a_batch_larger_than_one_statement_is_still_one_transaction(backend, monkeypatch):
    monkeypatch.setattr(local, "MAX_STATEMENT_ROWS", 8)
    batch = [item(n) for n in range(20)]
    assert all(o.stored for o in backend.store(batch))
    refuse_id(backend.data_dir, "boom")
    mixed = [item(n) for n in range(19)] + [item(item_id="boom")]

    outcomes = backend.store(mixed)

    assert {o.status for o in outcomes} == {Status.RETRY}
    assert ids(backend.data_dir) == [it.id for it in batch]  # nothing of the refused transaction


def test_a_batch_of_exactly_one_statement_commits_as_that_statement_alone(backend, monkeypatch, statements):
    monkeypatch.setattr(local, "MAX_STATEMENT_ROWS", 8)
    writes = ("INSERT", "BEGIN", "COMMIT")

    assert all(o.stored for o in backend.store([item(n) for n in range(8)]))
    assert [s.split(" ")[0].upper() for s in statements if s.upper().startswith(writes)] == ["INSERT"]
    statements.clear()
    assert all(o.stored for o in backend.store([item(n) for n in range(9)]))
    assert [s.split(" ")[0].upper() for s in statements if s.upper().startswith(writes)] == [
        "BEGIN", "INSERT", "INSERT", "COMMIT"]
    assert len(ids(backend.data_dir)) == 17


def test_submit_gives_a_future_an_asyncio_loop_can_await(backend):
    batch = [item(n) for n in range(3)]

    async def send() -> list:
        return await asyncio.wrap_future(backend.submit(batch))

    assert [o.status for o in asyncio.run(send())] == [Status.STORED] * 3
    assert ids(backend.data_dir) == [it.id for it in batch]


# --- durability: WAL, synchronous FULL, and no answer before the commit ----------------------------


def test_the_write_connection_uses_wal_and_synchronous_full(backend, monkeypatch):
    opened: list[sqlite3.Connection] = []
    real_connect = local.connect

    def recording(db: Path) -> sqlite3.Connection:
        conn = real_connect(db)
        opened.append(conn)
        return conn

    monkeypatch.setattr(local, "connect", recording)
    assert backend.store([item()])[0].stored

    writer = opened[0]
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: the WAL is fsync'd per commit
    assert writer.execute("PRAGMA busy_timeout").fetchone() == (0,)  # `execute` polls for the lock itself
    # Persistent in the file: every other connection, in any process, writes to the WAL too.
    assert rows(backend.data_dir, "PRAGMA journal_mode") == [("wal",)]
    assert rows(backend.data_dir, "PRAGMA page_size") == [(16384,)]  # ten ~1 KB documents a page


def lock_database(data_dir: Path) -> sqlite3.Connection:
    """Another connection holding SQLite's write lock until it commits or rolls back."""
    other = sqlite3.connect(data_dir / DB_NAME, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_store_returns_only_after_the_commit_of_its_rows(backend):
    assert backend.store([item(0)])[0].stored
    other = lock_database(backend.data_dir)
    late = item(1)
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(backend.store([late])))
    thread.start()

    thread.join(0.3)
    assert thread.is_alive() and answers == []  # waiting for the lock: not answered yet
    other.execute("COMMIT")
    thread.join(10)

    assert [o.status for o in answers[0]] == [Status.STORED]
    assert late.id in ids(backend.data_dir)  # committed, as another connection sees it
    other.close()


def test_a_commit_that_cannot_get_the_write_lock_in_time_is_retry_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "BUSY_TIMEOUT_SECONDS", 0.2)
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(0)])[0].stored
    other = lock_database(backend.data_dir)
    blocked = [item(1), item(2)]

    outcomes = backend.store(blocked)
    other.execute("ROLLBACK")
    other.close()

    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert "database is locked" in outcomes[0].error
    assert outcomes[0].details == {"error_type": "OperationalError", "sqlite_error": "SQLITE_BUSY"}
    assert len(ids(backend.data_dir)) == 1
    assert all(o.stored for o in backend.store(blocked))  # the retry retry.py makes
    assert len(ids(backend.data_dir)) == 3
    backend.close()


def refuse_id(data_dir: Path, refused: str) -> None:
    """A trigger that makes any transaction inserting `refused` fail: a real failed commit."""
    conn = sqlite3.connect(data_dir / DB_NAME)
    conn.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.id = '{refused}' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by test'); END")
    conn.commit()
    conn.close()


def test_a_failed_commit_is_retry_for_every_row_it_held_even_those_of_other_requests(backend):
    assert backend.store([item(0)])[0].stored
    refuse_id(backend.data_dir, "boom")
    other = lock_database(backend.data_dir)
    # Queued while the writer waits for the lock: all three share its next commit.
    first = backend.submit([item(1)])
    doomed = backend.submit([item(2), item(item_id="boom")])
    bystander = backend.submit([item(3)])
    wait_for(backend._queue.empty)

    other.execute("COMMIT")
    other.close()

    assert [o.status for o in first.result(10)] == [Status.RETRY]
    assert [o.status for o in doomed.result(10)] == [Status.RETRY, Status.RETRY]
    assert [o.status for o in bystander.result(10)] == [Status.RETRY]
    assert "refused by test" in bystander.result()[0].error
    assert len(ids(backend.data_dir)) == 1
    assert all(o.stored for o in backend.store([item(4), item(5)]))  # a fresh connection, no poison


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """Every SQL statement the backend's connections run, in order (sqlite3 trace callback)."""
    traced: list[str] = []
    real_connect = local.connect

    def tracing(db: Path) -> sqlite3.Connection:
        conn = real_connect(db)
        conn.set_trace_callback(traced.append)
        return conn

    monkeypatch.setattr(local, "connect", tracing)
    return traced


def test_requests_that_arrive_while_another_process_commits_share_the_next_commit(backend, statements):
    assert backend.store([item(0)])[0].stored
    other = lock_database(backend.data_dir)
    statements.clear()
    waiting = [item(n) for n in range(1, 6)]
    futures = [backend.submit([it]) for it in waiting]
    wait_for(backend._queue.empty)
    other.execute("COMMIT")
    other.close()

    assert all(f.result(10)[0].stored for f in futures)
    committed = [s for s in statements if s.startswith("INSERT")][-1]  # traced with its values
    assert all(it.id in committed for it in waiting)  # one statement, one transaction, one fsync
    assert len(ids(backend.data_dir)) == 6


# --- torn writes: a write that fails half way leaves nothing behind ---------------------------------


def fault_report(mode: str, directory: Path, wrap: list[str] | None = None) -> dict:
    command = [*(wrap or []), sys.executable, "-m", "tests.local_faults", mode, str(directory / "data")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_nothing_lost_or_torn(report: dict) -> None:
    assert report["before"] == ["stored"]
    assert report["during"] == ["retry"]  # the failed write: every event of it, nothing half
    assert report["stored_during"] == []
    assert report["refused_present_before_resend"] == []
    assert report["after"] == ["stored"]  # once the disk takes writes again
    assert report["resend"] == ["stored"]
    assert report["integrity"] == "ok"
    assert (report["acked"], report["missing"], report["duplicates"], report["rows"]) == (250, [], 0, 250)


def test_a_wal_write_cut_short_by_the_file_size_limit_loses_and_tears_nothing(tmp_path):
    report = fault_report("fsize", tmp_path)

    assert_nothing_lost_or_torn(report)
    assert "disk I/O error" in report["error"] or "disk is full" in report["error"]


def private_tmpfs(size: str, directory: Path) -> list[str]:
    """A command prefix running its argument with a tmpfs of `size` on `directory`, in a mount
    namespace of its own (nothing is left mounted); skips unless root with unshare and mount."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs root, unshare and mount to give the test a filesystem of its own")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size},mode=0700 tmpfs "{directory}" && exec "$@"', "sh"]


def test_a_full_disk_refuses_the_write_whole_and_every_acknowledged_row_reads_back(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    report = fault_report("full", mount_point, private_tmpfs("2m", mount_point))

    assert_nothing_lost_or_torn(report)
    assert "database or disk is full" in report["error"]
    assert (report["healthy_during"], report["healthy_after"]) == (False, True)


def test_a_read_only_filesystem_refuses_the_write_and_health_says_so(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    report = fault_report("readonly", mount_point, private_tmpfs("4m", mount_point))

    assert_nothing_lost_or_torn(report)
    assert (report["healthy_during"], report["healthy_after"]) == (False, True)


# --- processes: fork ---------------------------------------------------------------------------------


def descriptors_of(path: Path) -> list[int]:
    """The file descriptors this process has open on `path` or its `-wal`/`-shm` (Linux /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                found.append(int(fd))
    return sorted(found)


def test_a_forked_child_stores_through_its_own_writer_and_the_parent_keeps_working(backend):
    parent_first, child_item, parent_after = item(1), item(2), item(3)
    assert backend.store([parent_first])[0].stored  # the parent's writer and connection exist now
    parents = descriptors_of(backend.db_path)

    pid = os.fork()
    if pid == 0:  # the child: answer through the exit status only
        try:
            # The parent's connections are kept, never closed here: closing one may checkpoint or
            # delete the WAL the parent is using.
            gc.collect()
            kept = descriptors_of(backend.db_path) == parents != []
            ok = kept and backend.store([child_item])[0].stored and backend._thread is not None
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.store([parent_after])[0].stored
    assert ids(backend.data_dir) == [parent_first.id, child_item.id, parent_after.id]


def test_a_backend_the_fork_hooks_did_not_see_still_starts_its_own_writer_in_the_child(backend, monkeypatch):
    # One made by another thread while this one forked: the hooks never reset it, so the child
    # finds the parent's pid in it, and the parent's writer, which the child does not have.
    parent_first, child_item = item(1), item(2)
    assert backend.store([parent_first])[0].stored
    monkeypatch.setattr(local, "_BACKENDS", weakref.WeakSet())

    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if backend.submit([child_item]).result(5)[0].stored else 1)
        except BaseException:
            os._exit(2)  # no answer: the job went to a writer the child does not have
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert ids(backend.data_dir) == [parent_first.id, child_item.id]


# --- where the database may live ----------------------------------------------------------------------

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /mnt/efs rw,relatime shared:12 - nfs4 fs-0123.efs.eu-west-1.amazonaws.com:/ rw,vers=4.1
41 40 0:51 / /mnt/efs/scratch rw,relatime - ext4 /dev/vdb rw
42 27 0:52 / /mnt/my\\040share rw - cifs //host/share rw
43 27 0:53 / /home/op/remote rw - fuse.sshfs op@host:/data rw
44 27 0:54 / /mnt/efsx rw - xfs /dev/vdc rw
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/var/lib/telhawk/data", "ext4"),
        ("/mnt/efs", "nfs4"),
        ("/mnt/efs/telhawk/data", "nfs4"),
        ("/mnt/efs/scratch/data", "ext4"),  # a local disk mounted inside the share
        ("/mnt/efsx/data", "xfs"),  # a name that merely starts like the share's
        ("/mnt/my share/data", "cifs"),
        ("/home/op/remote/data", "fuse.sshfs"),
    ],
)
def test_the_filesystem_of_a_path_is_the_longest_mount_point_containing_it(path, expected):
    assert filesystem_type(path, MOUNTINFO) == expected


@pytest.mark.parametrize("path", ["/mnt/efs/telhawk/data", "/mnt/my share/x", "/home/op/remote/x"])
def test_local_storage_refuses_a_network_or_fuse_filesystem_naming_the_setting(tmp_path, path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)

    with pytest.raises(ConfigError, match=r"^storage\.data_dir: .* filesystem; .*local disk"):
        LocalBackend(Path(path), mountinfo=mountinfo)


def test_a_symlink_to_a_network_filesystem_is_followed_before_the_check(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO.replace("/mnt/efs ", f"{tmp_path}/share "))
    (tmp_path / "share").mkdir()
    (tmp_path / "data").symlink_to(tmp_path / "share")

    with pytest.raises(ConfigError, match="nfs4"):
        LocalBackend(tmp_path / "data", mountinfo=mountinfo)


def test_the_settings_path_refuses_an_nfs_data_dir_at_start(tmp_path, monkeypatch):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    monkeypatch.setattr(local, "MOUNTINFO", mountinfo)
    settings = load_settings(env={"INGEST_STORAGE_DATA_DIR": "/mnt/efs/data"})

    with pytest.raises(ConfigError, match=r"storage\.data_dir: /mnt/efs/data is on a nfs4 filesystem"):
        make_backend(settings)


def test_a_local_disk_is_accepted_as_this_machine_mounts_it(tmp_path):
    # /proc/self/mountinfo: tmp_path is on a local disk, so the store opens and takes a write.
    backend = LocalBackend(tmp_path / "data")
    one = item(1)
    try:
        assert backend.store([one])[0].stored
        assert ids(backend.data_dir) == [one.id]
    finally:
        backend.close()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_a_symlink_in_place_of_a_database_file_is_refused(tmp_path, suffix):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere").write_bytes(b"")
    Path(f"{data / DB_NAME}{suffix}").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(ConfigError, match=rf"storage.data_dir: .*{DB_NAME}{suffix} is a symbolic link"):
        LocalBackend(data)


def test_a_directory_in_place_of_the_database_is_refused(tmp_path):
    (tmp_path / "data" / DB_NAME).mkdir(parents=True)

    with pytest.raises(ConfigError, match="is not a regular file"):
        LocalBackend(tmp_path / "data")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_database_owned_by_another_user_is_refused(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item()])[0].stored
    backend.close()
    os.chown(tmp_path / "data" / DB_NAME, 12345, 12345)

    with pytest.raises(ConfigError, match="is owned by uid 12345"):
        LocalBackend(tmp_path / "data")


def test_a_symlink_planted_while_running_is_refused_when_the_database_is_opened_again(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item()])[0].stored
    backend.close()  # the last connection: SQLite removes the -wal and -shm files
    wal = Path(f"{tmp_path / 'data' / DB_NAME}-wal")
    wal.symlink_to(tmp_path / "elsewhere")

    outcome = backend.store([item()])[0]

    assert outcome.status is Status.RETRY
    assert "is a symbolic link" in outcome.error
    assert not (tmp_path / "elsewhere").exists()
    assert backend.healthy() is False
    backend.close()


def test_files_are_private_and_new_folders_0700(tmp_path):
    backend = LocalBackend(tmp_path / "a" / "data")
    assert backend.store([item()])[0].stored

    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        assert (tmp_path / "a" / "data" / name).stat().st_mode & 0o777 == 0o600, name
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "data").stat().st_mode & 0o777 == 0o700
    backend.close()


def test_an_existing_database_readable_by_others_is_made_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / DB_NAME).close()
    os.chmod(data / DB_NAME, 0o644)
    backend = LocalBackend(data)

    assert backend.store([item()])[0].stored
    assert (data / DB_NAME).stat().st_mode & 0o777 == 0o600
    backend.close()


# --- health --------------------------------------------------------------------------------------------


def test_health_before_and_after_the_first_write(tmp_path):
    backend = LocalBackend(tmp_path / "not" / "yet")
    assert backend.healthy() is True  # made on first write, in a writable folder
    assert backend.store([item()])[0].stored
    assert backend.healthy() is True
    backend.close()


def test_a_file_that_is_not_a_database_is_unhealthy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"not a database, " * 512)
    backend = LocalBackend(data)

    assert backend.healthy() is False
    assert backend.store([item()])[0].status is Status.RETRY


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_folder_the_service_user_cannot_write_is_unhealthy_and_refuses_writes_as_retry():
    home = Path(tempfile.mkdtemp(prefix="telhawk-test-"))  # pytest's own tmp folders are root's only
    try:
        home.chmod(0o755)
        (home / "data").mkdir(mode=0o755)  # root's: the service user may read it, not write it
        check = ("from telhawk_ingest.storage.local import LocalBackend; from tests.unit.test_local_storage "
                 f"import item; b = LocalBackend({str(home / 'data')!r}); "
                 "print(b.healthy(), b.store([item()])[0].status.value)")
        as_nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                     sys.executable, "-c", check]

        done = subprocess.run(as_nobody, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "PYTHONPATH": f"{ROOT / 'lib'}:{ROOT}"})

        assert done.stdout.split() == ["False", "retry"], done.stderr
    finally:
        shutil.rmtree(home)


# --- retention -----------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def days_stored(data_dir: Path) -> list[str]:
    return [row[0] for row in rows(data_dir, "SELECT day FROM events ORDER BY day")]


def test_prune_deletes_days_more_than_retention_days_before_today(tmp_path):
    # The backend's own clock at 1970: its writer's opportunistic prune removes nothing here.
    backend = LocalBackend(tmp_path / "data", retention_days=7, clock=Clock(0.0))
    today = DAY
    for back in (9, 8, 7, 1, 0):
        backend.store([item(when=today - back * 86400 + 3600)])

    assert backend.prune(now=today + 86399) == 2

    assert days_stored(tmp_path / "data") == ["2024-09-27", "2024-10-03", DAY_TEXT]
    assert backend.prune(now=today + 86399) == 0
    backend.close()


def test_without_retention_nothing_is_ever_pruned(backend):
    backend.store([item(when=0.0)])

    assert backend.prune(now=DAY) == 0
    assert days_stored(backend.data_dir) == ["1970-01-01"]


def test_prune_deletes_in_chunks_until_every_old_row_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "RETENTION_CHUNK_ROWS", 3)
    backend = LocalBackend(tmp_path / "data", retention_days=1, clock=Clock(0.0))
    backend.store([item(when=DAY - 5 * 86400) for _ in range(10)] + [item()])

    assert backend.prune(now=DAY) == 10
    assert days_stored(tmp_path / "data") == [DAY_TEXT]
    backend.close()


def test_the_writer_prunes_after_a_commit_at_most_once_per_interval(tmp_path):
    clock = Clock(DAY + 3600)
    backend = LocalBackend(tmp_path / "data", retention_days=2, clock=clock)
    old = DAY - 3 * 86400

    backend.store([item(when=old), item()])
    backend.store([item()])  # committed after the writer's prune: the first commit's prune is done
    assert days_stored(tmp_path / "data") == [DAY_TEXT, DAY_TEXT]

    clock.now += local.RETENTION_INTERVAL_SECONDS - 1
    backend.store([item(when=old)])
    backend.store([item()])
    assert days_stored(tmp_path / "data").count("2024-10-01") == 1  # not due yet: kept

    clock.now += 1
    backend.store([item()])
    backend.store([item()])
    assert "2024-10-01" not in days_stored(tmp_path / "data")
    backend.close()


def test_retention_is_read_from_the_settings(tmp_path):
    env = {"INGEST_STORAGE_RETENTION_DAYS": "30", "INGEST_STORAGE_DATA_DIR": str(tmp_path / "data")}
    backend = make_backend(load_settings(env=env))

    assert isinstance(backend, LocalBackend) and backend.retention_days == 30
    assert load_settings(env={}).storage.retention_days is None
    with pytest.raises(ConfigError, match=r"storage\.retention_days"):
        load_settings(env={"INGEST_STORAGE_RETENTION_DAYS": "0"})


# --- checkpoints, reading, closing ---------------------------------------------------------------------


def test_checkpoints_run_off_the_commit_path_and_restart_a_wal_grown_too_big(
    tmp_path, monkeypatch, statements
):
    monkeypatch.setattr(local, "CHECKPOINT_BYTES", 1000)
    backend = LocalBackend(tmp_path / "data")
    assert backend.store([item(n) for n in range(10)])[0].stored
    wait_for(lambda: "PRAGMA wal_checkpoint(PASSIVE)" in statements)
    assert rows(backend.data_dir, "PRAGMA wal_autocheckpoint") == [(1000,)]  # a reader's default...
    assert backend._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # ...but not the writer's

    monkeypatch.setattr(local, "WAL_RESTART_BYTES", 0)
    assert backend.store([item(n) for n in range(10)])[0].stored
    wait_for(lambda: "PRAGMA wal_checkpoint(RESTART)" in statements)
    backend.close()
    assert len(ids(tmp_path / "data")) == 20


def test_documents_of_one_index_in_commit_order(backend):
    batch = [item(1, index="auth"), item(2, index="main"), item(3, index="auth")]
    backend.store(batch)

    assert [d["_id"] for d in backend.documents("auth")] == [batch[0].id, batch[2].id]
    assert [d["_index"] for d in backend.documents()] == ["auth", "main", "auth"]
    assert list(LocalBackend(backend.data_dir.parent / "nothing").documents()) == []


def test_close_finishes_what_is_queued_and_a_later_store_starts_again(backend):
    futures = [backend.submit([item(n)]) for n in range(20)]
    backend.close()

    assert all(f.result(10)[0].stored for f in futures)
    assert backend.store([item(99)])[0].stored
    assert len(ids(backend.data_dir)) == 21


def test_json_extract_finds_events_by_any_attribute(backend):
    backend.store([item(1, hec={"host": "web01", "fields": {"cluster": "prod-eu"}}),
                   item(2, hec={"host": "web02", "fields": {"cluster": "dev"}})])

    found = rows(backend.data_dir, "SELECT json_extract(document, '$.n') FROM events WHERE "
                 "json_extract(document, '$.hec.fields.cluster') = ? AND day = ?", ("prod-eu", DAY_TEXT))

    assert found == [(1,)]


def test_ids_are_uuids_so_the_unique_index_grows_at_its_right_edge():
    assert uuid.UUID(new_id()).version == 7


@pytest.mark.parametrize(
    "item_id",
    ["not-a-uuid", "00000000-0000-4000-8000-000000000000", "ffffffff-ffff-7fff-bfff-ffffffffffff"],
)
def test_an_id_without_a_usable_time_puts_a_timeless_event_on_the_first_day(backend, item_id):
    # Not a UUID, a UUIDv4, and a UUIDv7 whose 48-bit milliseconds reach past year 9999.
    assert backend.store([item(when=math.nan, item_id=item_id)])[0].stored

    assert rows(backend.data_dir, "SELECT day, time FROM events") == [("1970-01-01", 0.0)]


# --- health: free space as the service's user sees it; prune by the backend's clock; fork ----------


class Space:
    """os.statvfs for the health check: no space at all on `full`, plenty elsewhere."""

    def __init__(self, full: Path, bfree: int, bavail: int) -> None:
        self.full, self.bfree, self.bavail = str(full), bfree, bavail

    def __call__(self, path: os.PathLike | str) -> os.statvfs_result:
        blocks = (self.bfree, self.bavail) if str(path) == self.full else (10**6, 10**6)
        return os.statvfs_result((4096, 4096, 10**6, blocks[0], blocks[1], 10**6, 10**6, 10**6, 0, 255))


@pytest.mark.parametrize(
    ("euid", "bfree", "bavail", "healthy"),
    [
        (1000, 100, 0, False),  # only root's reserved blocks left: the service's user cannot write
        (1000, 100, 100, True),
        (0, 100, 0, True),  # root may use the reserved blocks
        (0, 0, 100, False),
        (1, 100, 0, False),
    ],
)
def test_health_reads_the_free_space_of_the_data_directory_as_its_user_may_use_it(
        tmp_path, monkeypatch, euid, bfree, bavail, healthy):
    data = tmp_path / "data"
    data.mkdir()
    backend = LocalBackend(data)
    monkeypatch.setattr(os, "statvfs", Space(data, bfree, bavail))
    monkeypatch.setattr(os, "geteuid", lambda: euid)

    assert backend.healthy() is healthy


def test_prune_without_a_time_uses_the_backends_clock(tmp_path):
    backend = LocalBackend(tmp_path / "data", retention_days=1, clock=Clock(0.0))
    backend.store([item(when=DAY - 5 * 86400), item()])
    backend._clock = Clock(DAY + 60)

    assert backend.prune() == 1

    assert days_stored(tmp_path / "data") == [DAY_TEXT]
    backend.close()


def test_a_fork_waits_for_the_commit_in_flight(backend):
    assert backend.store([item()])[0].stored
    forked = threading.Event()

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked.set()
        os.waitpid(pid, 0)

    backend._sqlite_lock.acquire()  # as the writer holds it through a commit
    forker = threading.Thread(target=fork)
    forker.start()
    try:
        assert not forked.wait(0.3)  # the child would inherit SQLite half way through the commit
    finally:
        backend._sqlite_lock.release()
    forker.join(10)
    assert forked.is_set()
    assert backend.store([item()])[0].stored


def test_health_gives_up_on_a_database_another_connection_locks_within_half_a_second(backend):
    assert backend.store([item()])[0].stored
    backend.close()  # the writer's connection would keep the exclusive lock out
    other = sqlite3.connect(backend.db_path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")  # in WAL mode this keeps readers out too
    other.execute("BEGIN EXCLUSIVE")

    started = time.monotonic()
    healthy = backend.healthy()
    waited = time.monotonic() - started

    other.close()
    assert healthy is False
    assert 0.4 <= waited < 1.2  # the probe's busy timeout: a health check never hangs on a lock


def test_a_commit_failing_on_the_filesystem_is_retry_with_the_errno(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    backend = LocalBackend(tmp_path / "file" / "data")  # its parent is a file: no folder can be made

    [outcome] = backend.store([item()])

    assert outcome.status is Status.RETRY
    assert outcome.details == {"error_type": "NotADirectoryError", "errno": 20}
    backend.close()


def test_error_details_name_the_sqlite_error_and_the_errno_only_when_there_is_one():
    assert local._details(OSError("no errno")) == {"error_type": "OSError"}
    assert local._details(sqlite3.OperationalError("made here")) == {"error_type": "OperationalError"}
    assert local._busy(sqlite3.OperationalError("made here, not by SQLite")) is False


# --- the settings and sizes the module decides ---------------------------------------------------------


def test_the_durability_and_size_settings_of_the_write_connection(tmp_path):
    conn = local.connect(tmp_path / DB_NAME)
    names = ("journal_mode", "synchronous", "journal_size_limit", "wal_autocheckpoint", "page_size",
             "user_version")
    pragmas = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
    indexes = indexes.fetchall()
    columns = [(c[1], c[2], c[3]) for c in conn.execute("PRAGMA table_info(events)")]
    conn.close()

    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "journal_size_limit": 16 * 1024 * 1024,
                       "wal_autocheckpoint": 0, "page_size": 16384, "user_version": 1}
    assert indexes == [("events_day_index", "CREATE INDEX events_day_index ON events (day, index_name)"),
                       ("events_id", "CREATE UNIQUE INDEX events_id ON events (id)")]
    assert columns == [("id", "TEXT", 1), ("index_name", "TEXT", 1), ("day", "TEXT", 1), ("time", "REAL", 1),
                       ("document", "TEXT", 1)]


def test_the_module_constants():
    assert local.BUSY_TIMEOUT_SECONDS == 5.0
    assert (local.POLL_FIRST_SECONDS, local.POLL_MAX_SECONDS) == (0.0001, 0.001)
    assert (local.MAX_STATEMENT_ROWS, local.MIN_SQLITE) == (4096, (3, 24, 0))
    assert (local.CHECKPOINT_BYTES, local.WAL_RESTART_BYTES) == (4 * 1024 * 1024, 64 * 1024 * 1024)
    assert (local.RETENTION_INTERVAL_SECONDS, local.RETENTION_CHUNK_ROWS) == (3600.0, 5000)
    assert local.SIDE_SUFFIXES == ("", "-wal", "-shm")


def test_an_sqlite_older_than_3_24_is_refused_at_start_and_3_24_is_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 9))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.23.9")

    with pytest.raises(ConfigError, match=r"^storage\.backend: local storage needs SQLite 3\.24\.0 or newer; "
                                          r"Python uses 3\.23\.9$"):
        LocalBackend(tmp_path / "data")
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 24, 0))
    LocalBackend(tmp_path / "data")  # the first release with upserts is enough


@pytest.mark.parametrize(("count", "size"),
                         [(1, 1), (16, 16), (17, 32), (512, 512), (513, 640), (4000, 4096)])
def test_an_insert_is_padded_to_one_of_a_few_sizes_with_copies_of_its_last_row(count, size):
    batch = [(f"id{n}", "main", DAY_TEXT, DAY, "{}") for n in range(count)]

    statement, params = local._insert(batch, 4096)

    assert statement.count("(?, ?, ?, ?, ?)") == size
    assert statement == ("INSERT INTO events (id, index_name, day, time, document) VALUES "
                         + ",".join(["(?, ?, ?, ?, ?)"] * size) + " ON CONFLICT (id) DO NOTHING")
    assert params[:5 * count] == [value for row in batch for value in row]
    assert params[5 * count:] == list(batch[-1]) * (size - count)


def test_an_insert_is_never_padded_past_the_statement_limit():
    batch = [(f"id{n}", "main", DAY_TEXT, DAY, "{}") for n in range(20)]
    statement, params = local._insert(batch, 20)
    assert statement.count("(?, ?, ?, ?, ?)") == 20
    assert len(params) == 100


@pytest.mark.parametrize(("variables", "rows"), [(32766, 4096), (999, 199), (10, 2), (4, 1)])
def test_the_rows_of_one_statement_follow_sqlites_limit_on_parameters(tmp_path, variables, rows):
    conn = sqlite3.connect(tmp_path / "x.sqlite3")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
    assert local.statement_limit(conn) == rows
    conn.close()


def test_a_batch_padded_to_its_statement_size_stores_each_row_once(backend):
    batch = [item(n) for n in range(17)]
    assert all(o.stored for o in backend.store(batch))
    assert ids(backend.data_dir) == [it.id for it in batch]


# --- where the database may live: the mountinfo's details and the data directory's link ---------------


@pytest.mark.parametrize(
    ("mount_point", "path"),
    [("/mnt/a\\011b", "/mnt/a\tb/data"), ("/mnt/a\\012b", "/mnt/a\nb/data"),
     ("/mnt/a\\134b", "/mnt/a\\b/data"), ("/mnt/a\\040b", "/mnt/a b/data"),
     # Written unescaped by the kernel, and line ends for str.splitlines():
     ("/mnt/a\x0bb", "/mnt/a\x0bb/data"), ("/mnt/a\x1cb", "/mnt/a\x1cb/data"),
     ("/mnt/a\u2028b", "/mnt/a\u2028b/data"), ("/mnt/a\x85b", "/mnt/a\x85b/data")],
)
def test_mount_points_with_escaped_characters_are_read_as_the_kernel_writes_them(mount_point, path):
    mountinfo = f"27 1 254:0 / / rw - ext4 /dev/vda rw\n40 27 0:50 / {mount_point} rw - nfs4 srv:/ rw\n"
    assert filesystem_type(path, mountinfo) == "nfs4"


def test_malformed_mountinfo_lines_are_skipped_and_the_later_of_stacked_mounts_wins():
    mountinfo = "\n".join([
        "27 1 254:0 / / rw - ext4 /dev/vda rw",
        "short - nfs",  # fewer than five fields
        "40 27 0:50 / /data rw shared:1 nfs4 no-separator",
        "41 27 0:51 / /data rw -",  # no type after the separator
        "42 27 0:52 / /data rw - nfs4 srv:/ rw",
        "43 27 0:53 / /data rw - xfs /dev/vdb rw",
    ])
    assert filesystem_type("/data/x", mountinfo) == "xfs"
    assert filesystem_type("/data", mountinfo.replace("xfs /dev/vdb", "nfs4 srv:/")) == "nfs4"
    assert filesystem_type("/data/x", "\n".join(mountinfo.splitlines()[:4])) == ""
    assert filesystem_type("/x", "garbage\n") is None


def test_without_a_readable_mountinfo_the_filesystem_is_not_checked(tmp_path):
    backend = LocalBackend(tmp_path / "data", mountinfo=tmp_path / "no-mountinfo")
    assert backend.store([item()])[0].stored
    backend.close()


def test_a_network_filesystem_is_refused_with_the_setting_and_the_way_out(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                         f"40 27 0:50 / {tmp_path} rw - fuse.s3fs s3 rw\n")

    with pytest.raises(ConfigError) as refused:
        LocalBackend(tmp_path / "data", mountinfo=mountinfo)

    assert str(refused.value) == (
        f"storage.data_dir: {tmp_path / 'data'} is on a fuse.s3fs filesystem; the local storage backend "
        "(SQLite in WAL mode) needs a local disk. Use a local path, or the opensearch backend (core.url) for "
        "storage shared between hosts")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user needs root")
def test_a_data_directory_linked_by_another_user_is_refused_and_one_linked_by_root_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "data"
    link.symlink_to(real)
    backend = LocalBackend(link)  # a link of root's: followed
    assert backend.store([item()])[0].stored
    backend.close()
    assert (real / DB_NAME).exists()

    os.lchown(link, 12345, 12345)
    with pytest.raises(ConfigError) as refused:
        LocalBackend(link)
    assert str(refused.value) == (
        f"storage.data_dir: {link} is a symbolic link owned by uid 12345; refusing to follow it (expected a "
        "directory, or a link owned by uid 0 or root)")
