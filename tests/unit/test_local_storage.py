"""The local backend: whole lines under concurrency, shared fsyncs, and no success without one."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from telhawk_ingest.storage import local
from telhawk_ingest.storage.base import Item, Status
from telhawk_ingest.storage.local import AppendFile, LocalBackend

DAY = 20_000 * 86400.0  # 2024-10-04 UTC


def item(n: int, index: str = "main", when: float = DAY) -> Item:
    return Item(id=f"id-{n}", index=index, time=when, document={"n": n, "pad": "x" * 200})


def run_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_batches_keep_every_line_whole(tmp_path: Path):
    backend = LocalBackend(tmp_path)

    def writer(t: int) -> None:
        for b in range(25):
            outcomes = backend.store([item(t * 1000 + b * 10 + k) for k in range(4)])
            assert all(o.stored for o in outcomes)

    run_threads(8, writer)
    ids = sorted(doc["_source"]["n"] for doc in backend.documents())
    assert ids == sorted(t * 1000 + b * 10 + k for t in range(8) for b in range(25) for k in range(4))


def test_concurrent_appends_share_fsyncs_and_none_returns_before_one_covers_it(tmp_path, monkeypatch):
    path = tmp_path / "f.ndjson"
    file = AppendFile(path)
    lock = threading.Lock()
    finished: list[set[bytes]] = []  # lines on disk when each completed fsync started
    calls = 0

    def slow_fsync(fd: int) -> None:
        nonlocal calls
        seen = set(path.read_bytes().splitlines())
        time.sleep(0.005)  # long enough for other threads to write meanwhile
        with lock:
            calls += 1
            finished.append(seen)

    monkeypatch.setattr(local.os, "fsync", slow_fsync)

    def writer(t: int) -> None:
        for n in range(10):
            line = f"{t}-{n}".encode()
            file.append(line + b"\n")
            with lock:
                assert any(line in seen for seen in finished), "returned before an fsync covered it"

    run_threads(8, writer)
    assert len(path.read_bytes().splitlines()) == 80
    assert calls < 80


class FailFirstFsync:
    """The first fsync waits to be released, then fails; later ones succeed."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.release.wait(5)
            raise OSError(errno.EIO, "Input/output error")


def test_a_failed_fsync_fails_every_write_it_may_have_covered(tmp_path, monkeypatch):
    (tmp_path / "f.ndjson").touch()  # an existing file: the only fsyncs are the appends' own
    fsync = FailFirstFsync()
    monkeypatch.setattr(local.os, "fsync", fsync)
    file = AppendFile(tmp_path / "f.ndjson")
    errors: dict[str, OSError | None] = {}

    def append(name: str) -> None:
        try:
            file.append(name.encode() + b"\n")
            errors[name] = None
        except OSError as exc:
            errors[name] = exc

    first = threading.Thread(target=append, args=("a",))
    first.start()
    assert fsync.started.wait(5)
    # Written while the failing fsync runs: that fsync may have taken it, and a later
    # successful fsync proves nothing about pages a failed writeback dropped.
    second = threading.Thread(target=append, args=("b",))
    second.start()
    deadline = time.monotonic() + 5
    while b"b\n" not in (tmp_path / "f.ndjson").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    fsync.release.set()
    first.join()
    second.join()
    assert errors["a"] is not None and errors["a"].errno == errno.EIO
    assert errors["b"] is not None and errors["b"].errno == errno.EIO
    append("c")  # written after the failure: judged by an fsync of its own
    assert errors["c"] is None
    assert fsync.calls == 2


def test_the_backend_reports_a_failed_fsync_as_retry(tmp_path, monkeypatch):
    def failing(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local.os, "fsync", failing)
    outcomes = LocalBackend(tmp_path).store([item(1), item(2)])
    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert "No space left on device" in outcomes[0].error
    assert outcomes[0].details == {"errno": errno.ENOSPC}


def test_a_file_deleted_while_open_fails_its_writes_and_the_next_batch_makes_a_new_one(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path)
    assert backend.store([item(1)])[0].stored
    [path] = tmp_path.glob("main/*.ndjson")
    real_fsync = os.fsync

    def delete_then_fsync(fd: int) -> None:
        path.unlink(missing_ok=True)
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", delete_then_fsync)
    assert backend.store([item(2)])[0].status is Status.RETRY
    monkeypatch.setattr(local.os, "fsync", real_fsync)
    assert backend.store([item(3)])[0].stored
    assert [doc["_id"] for doc in backend.documents()] == ["id-3"]


def test_a_forked_child_opens_its_own_files(tmp_path, monkeypatch):
    backend = LocalBackend(tmp_path)
    assert backend.store([item(1)])[0].stored
    inherited = backend._files
    monkeypatch.setattr(local.os, "getpid", lambda: -1)
    assert backend.store([item(2)])[0].stored
    assert backend._files is not inherited
    assert [doc["_id"] for doc in backend.documents()] == ["id-1", "id-2"]


def test_open_files_are_bounded_and_an_evicted_file_is_reopened(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "MAX_OPEN_FILES", 2)
    backend = LocalBackend(tmp_path)
    first = backend._file(("main", 20_000))
    for day in range(20_000, 20_003):
        assert backend.store([item(day, when=day * 86400.0)])[0].stored
    assert len(backend._files) == 2
    with pytest.raises(local._Closed):  # evicted: a thread still holding it must look again
        first.append(b"{}\n")
    assert backend.store([item(4, when=DAY)])[0].stored
    assert sorted(doc["_id"] for doc in backend.documents()) == ["id-20000", "id-20001", "id-20002", "id-4"]
    backend.close()
    assert backend._files == {}


def test_a_new_day_file_and_its_folders_are_made_durable_by_fsyncing_their_parents(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(local.os, "fsync", recording_fsync)
    LocalBackend(tmp_path / "data").store([item(1)])

    day_file = next((tmp_path / "data").rglob("*.ndjson"))
    assert str(tmp_path) in synced  # made data/
    assert str(tmp_path / "data") in synced  # made data/<index>/
    assert str(day_file.parent) in synced  # created the day file
    assert str(day_file) in synced
