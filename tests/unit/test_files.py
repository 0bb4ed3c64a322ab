"""Durable private files: every write reaches the disk, and so does every new name, before we say so."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from telhawk_ingest import files
from telhawk_ingest.files import append_synced, fsync_dir, open_append, private_dir, write_all, write_synced


class Syscalls:
    """Records open/write/fsync/close/mkdir as (call, path) while still doing them for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        real_open, real_write, real_fsync, real_close = os.open, os.write, os.fsync, os.close
        # Only the test's own thread: background threads of other tests (counters flusher, SQLite
        # writer) may be writing and closing their own files meanwhile.
        me = threading.get_ident()

        def note(kind: str, fd: int) -> None:
            if threading.get_ident() == me:
                self.calls.append((kind, os.readlink(f"/proc/self/fd/{fd}")))

        def opened(path: os.PathLike[str] | str, flags: int, mode: int = 0o777) -> int:
            fd = real_open(path, flags, mode)
            note("open", fd)
            return fd

        def written(fd: int, data: bytes | memoryview) -> int:
            note("write", fd)
            return real_write(fd, data)

        def synced(fd: int) -> None:
            note("fsync", fd)
            real_fsync(fd)

        def closed(fd: int) -> None:
            note("close", fd)
            real_close(fd)

        monkeypatch.setattr(os, "open", opened)
        monkeypatch.setattr(os, "write", written)
        monkeypatch.setattr(os, "fsync", synced)
        monkeypatch.setattr(os, "close", closed)

    def of(self, *kinds: str) -> list[tuple[str, str]]:
        return [call for call in self.calls if call[0] in kinds]


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> Syscalls:
    return Syscalls(monkeypatch)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_open_flags_create_new_files_exclusively_and_append_to_existing_ones():
    # Appends and reads on the volumes never go through a link or wait on a FIFO, and no
    # descriptor leaks into a child process (files.py's docstring).
    volume = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    assert files.NEW == os.O_WRONLY | os.O_CREAT | os.O_EXCL
    assert os.O_WRONLY | os.O_CREAT | os.O_APPEND | volume == files.APPEND
    assert os.O_RDONLY | volume == files.READ


def test_write_synced_writes_then_fsyncs_the_file_before_closing_it(tmp_path, syscalls):
    target = tmp_path / "record.json"

    write_synced(target, b'{"a": 1}')

    assert target.read_bytes() == b'{"a": 1}' and mode(target) == 0o600
    path = str(target)
    assert syscalls.calls == [("open", path), ("write", path), ("fsync", path), ("close", path)]


def test_write_synced_never_overwrites_a_file_and_leaves_it_as_it_was(tmp_path):
    target = tmp_path / "record.json"
    target.write_bytes(b"first")

    with pytest.raises(FileExistsError):
        write_synced(target, b"second")

    assert target.read_bytes() == b"first"


def test_write_synced_closes_the_file_when_the_write_fails(tmp_path, syscalls, monkeypatch):
    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)

    with pytest.raises(OSError, match="No space"):
        write_synced(tmp_path / "record.json", b"data")

    path = str(tmp_path / "record.json")
    assert syscalls.calls == [("open", path), ("close", path)]


def test_a_short_write_continues_where_it_stopped(tmp_path, monkeypatch):
    real_write = os.write
    sizes: list[int] = []

    def three_bytes_at_a_time(fd: int, data: bytes | memoryview) -> int:
        sizes.append(real_write(fd, bytes(data[:3])))
        return sizes[-1]

    monkeypatch.setattr(os, "write", three_bytes_at_a_time)
    fd = os.open(tmp_path / "out", files.NEW, 0o600)
    try:
        write_all(fd, b"0123456789")
    finally:
        os.close(fd)

    assert (tmp_path / "out").read_bytes() == b"0123456789"
    assert sizes == [3, 3, 3, 1]


def test_append_synced_creating_a_file_fsyncs_it_and_its_directory_entry(tmp_path, syscalls):
    target = tmp_path / "audit.log"

    append_synced(target, b"one\n")

    assert target.read_bytes() == b"one\n" and mode(target) == 0o600
    assert syscalls.of("write", "fsync") == [("fsync", str(tmp_path)), ("write", str(target)),
                                             ("fsync", str(target))]


def test_append_synced_to_an_existing_file_appends_and_fsyncs_only_the_file(tmp_path, syscalls):
    target = tmp_path / "audit.log"
    target.write_bytes(b"one\n")

    append_synced(target, b"two\n")

    assert target.read_bytes() == b"one\ntwo\n"
    assert syscalls.of("write", "fsync") == [("write", str(target)), ("fsync", str(target))]
    assert syscalls.of("open", "close") == [("open", str(target)), ("close", str(target))]


def test_every_descriptor_opened_is_closed(tmp_path, syscalls):
    append_synced(tmp_path / "new.log", b"a\n")
    append_synced(tmp_path / "new.log", b"b\n")
    write_synced(tmp_path / "new.json", b"{}")
    fsync_dir(tmp_path)

    opened = [path for call, path in syscalls.calls if call == "open"]
    closed = [path for call, path in syscalls.calls if call == "close"]
    assert sorted(opened) == sorted(closed)
    assert len(opened) == 5  # new file + its directory, the file again, a new file, a directory


def test_an_append_file_is_opened_for_appending_even_when_it_exists(tmp_path):
    target = tmp_path / "audit.log"
    target.write_bytes(b"old\n")
    fd = open_append(target)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"new\n")
    finally:
        os.close(fd)

    assert target.read_bytes() == b"old\nnew\n"


def test_a_new_append_file_whose_directory_cannot_be_synced_is_refused_and_closed(tmp_path, syscalls,
                                                                                  monkeypatch):
    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files, "fsync_dir", failing)

    with pytest.raises(OSError, match="Input/output"):
        open_append(tmp_path / "audit.log")

    assert syscalls.of("open", "close") == [("open", str(tmp_path / "audit.log")),
                                            ("close", str(tmp_path / "audit.log"))]


def test_fsync_dir_fsyncs_the_directory_itself(tmp_path, syscalls):
    fsync_dir(tmp_path)

    assert syscalls.calls == [("open", str(tmp_path)), ("fsync", str(tmp_path)), ("close", str(tmp_path))]


def test_fsync_dir_refuses_a_file(tmp_path):
    (tmp_path / "plain").write_bytes(b"")

    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "plain")


def test_private_dir_makes_each_new_level_0700_and_durable_in_its_parent(tmp_path, syscalls):
    made = private_dir(tmp_path / "a" / "b" / "c")

    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(made)] == [0o700] * 3
    assert syscalls.of("fsync") == [("fsync", str(tmp_path)), ("fsync", str(tmp_path / "a")),
                                    ("fsync", str(tmp_path / "a" / "b"))]


def test_private_dir_leaves_existing_levels_alone(tmp_path, syscalls):
    (tmp_path / "a").mkdir(mode=0o755)

    private_dir(tmp_path / "a" / "b")

    assert mode(tmp_path / "a") == 0o755 and mode(tmp_path / "a" / "b") == 0o700
    assert syscalls.of("fsync") == [("fsync", str(tmp_path / "a"))]
    assert private_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert len(syscalls.of("fsync")) == 1


def test_private_dir_accepts_a_level_another_process_made_first(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir
    raced: list[Path] = []

    def racing_mkdir(self: Path, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if self.name == "b" and not raced:
            raced.append(self)
            real_mkdir(self, 0o700)  # the other process wins
        real_mkdir(self, mode, parents, exist_ok)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)

    made = private_dir(tmp_path / "a" / "b" / "c")

    assert made.is_dir() and raced == [tmp_path / "a" / "b"]


def test_a_directory_is_unwritable_when_its_effective_user_may_not_write_and_search_it(tmp_path, monkeypatch):
    # Root passes access(2) whatever the mode bits say: what a non-root user would get, faked.
    asked: list[tuple[int, bool]] = []
    real_access = os.access

    def access(path: os.PathLike[str] | str, mode: int, **kw: bool) -> bool:
        if Path(path) != tmp_path:
            return real_access(path, mode, **kw)
        asked.append((mode, kw.get("effective_ids", False)))
        return False

    monkeypatch.setattr(os, "access", access)

    assert files.unwritable(tmp_path) == f"{tmp_path} is not writable by uid {os.geteuid()}"
    assert asked == [(os.W_OK | os.X_OK, True)]  # the effective ids, as the kernel checks a create
