"""What is planted on the volumes is never followed, never blocks a reader, and never leaks out.

Someone who can write in the DLQ directory or the state directories beside it can put a symbolic
link, a FIFO or an oversized file under a name the service reads. Each such name must read as a
corrupt entry (or count as nothing), every call must return, and no byte from outside the volume
may come back. Real links and real FIFOs in temp directories; each call runs in a thread with a
timeout, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from telhawk_ingest import files
from telhawk_ingest.audit import AuditLog
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import MAX_RECORD_BYTES, DeadLetterQueue, DlqFilter, make_record, record_cap
from telhawk_ingest.errors import ApiError, ConfigError
from telhawk_ingest.files import UnsafeFile, append_synced, read_regular
from telhawk_ingest.stats import Counters
from telhawk_ingest.storage.local import DB_NAME, LocalBackend

T = TypeVar("T")
SECRET = "outside-the-dlq-secret-0123456789"
ENTRY = "failed_1700000000_0190f3a1b2c37d4e8f901234567890ab"


def finishes(call: Callable[[], T], unblock: Path | None = None, timeout: float = 10.0) -> T:
    """`call()`'s result, or a test failure when it has not returned within `timeout` seconds.
    `unblock`: a FIFO to open for writing afterwards, so a reader stuck on it can exit."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if unblock is not None:
            try:
                os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"{getattr(call, '__name__', call)} did not return within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def outside_record(tmp_path: Path) -> Path:
    """A well-formed DLQ record outside the DLQ, carrying a secret: what a planted link points at."""
    target = tmp_path / "outside" / "secret.json"
    target.parent.mkdir()
    rec = make_record({"id": "x", "source": "s", "source_type": SECRET, "format": "raw", "payload": SECRET,
                       "attributes": {}, "received_at": ""}, "normalization_failed", SECRET)
    rec["id"] = ENTRY
    target.write_text(json.dumps(rec))
    return target


def good_record() -> dict[str, Any]:
    return make_record({"id": "e1", "source": "fw", "source_type": "cisco_asa", "format": "raw",
                        "payload": "ok", "attributes": {}, "received_at": ""},
                       "normalization_failed", "boom", now=1_600_000_000)


@pytest.fixture
def dlq(tmp_path: Path) -> DeadLetterQueue:
    queue = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    queue.write(good_record(), now=1_600_000_000)
    return queue


def no_secret(value: Any) -> None:
    assert SECRET not in json.dumps(value, default=str)


# --- DLQ entries ------------------------------------------------------------------------------


def test_a_symlink_under_an_entry_name_is_corrupt_and_never_followed(dlq, tmp_path):
    target = outside_record(tmp_path)
    (dlq.path / f"{ENTRY}.json").symlink_to(target)

    events, total, _ = finishes(dlq.list)
    stats = finishes(dlq.stats)
    with pytest.raises(ApiError) as caught:
        finishes(lambda: dlq.get(ENTRY))

    assert [e["envelope"]["payload"] for e in events] == ["ok"] and total == 1
    assert caught.value.status == 409
    assert stats["corrupt_files"] == [f"{ENTRY}.json"]
    no_secret([events, stats, caught.value.body()])


def test_a_fifo_under_an_entry_name_blocks_neither_stats_nor_listing_nor_get(dlq):
    fifo = dlq.path / f"{ENTRY}.json"
    os.mkfifo(fifo, 0o600)

    stats = finishes(dlq.stats, unblock=fifo)
    events, total, _ = finishes(dlq.list, unblock=fifo)
    with pytest.raises(ApiError) as caught:
        finishes(lambda: dlq.get(ENTRY), unblock=fifo)

    assert stats["corrupt_files"] == [f"{ENTRY}.json"] and stats["pending_files"] == 2
    assert total == 1 and len(events) == 1
    assert caught.value.status == 409


def test_a_filtered_listing_and_purge_skip_a_fifo_and_purge_removes_only_the_link(dlq, tmp_path):
    target = outside_record(tmp_path)
    (dlq.path / f"{ENTRY}.json").symlink_to(target)
    fifo = dlq.path / "failed_1700000001_0190f3a1b2c37d4e8f901234567890ac.json"
    os.mkfifo(fifo, 0o600)

    flt = DlqFilter(source_type=SECRET)
    events, total, _ = finishes(lambda: dlq.list(flt), unblock=fifo)
    assert (events, total) == ([], 0)
    assert finishes(lambda: dlq.purge(flt), unblock=fifo) == 0

    purged = finishes(dlq.purge, unblock=fifo)

    assert purged == 3
    assert os.listdir(dlq.path) == []
    assert target.read_text().count(SECRET) >= 1  # the file the link pointed at is untouched


def test_an_entry_over_the_record_size_cap_is_corrupt(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0), max_record_bytes=4096)
    dlq.write(good_record(), now=1_600_000_000)
    big = json.loads(json.dumps(good_record()))
    big["envelope"]["payload"] = "x" * 5000
    (dlq.path / f"{ENTRY}.json").write_text(json.dumps(big))

    events, total, _ = dlq.list()
    stats = dlq.stats()

    assert (len(events), total) == (1, 1)
    assert stats["corrupt_files"] == [f"{ENTRY}.json"]
    with pytest.raises(ApiError) as caught:
        dlq.get(ENTRY)
    assert caught.value.status == 409


def test_the_record_size_cap_takes_any_record_a_writer_can_make_from_the_body_limit():
    assert record_cap(10 * 1024 * 1024) == MAX_RECORD_BYTES
    # Each byte of a body of control characters is escaped to six in the record.
    assert record_cap(64 * 1024 * 1024) >= 6 * 64 * 1024 * 1024 + 1024
    # Past 128 MiB, seven times the body limit, as the README says.
    assert record_cap(64 * 1024 * 1024) == 7 * 64 * 1024 * 1024
    assert record_cap(MAX_RECORD_BYTES // 7 + 1) == 7 * (MAX_RECORD_BYTES // 7 + 1)


def test_a_dangling_symlink_is_a_corrupt_entry_not_a_missing_one(dlq, tmp_path):
    (dlq.path / f"{ENTRY}.json").symlink_to(tmp_path / "nowhere")

    with pytest.raises(ApiError) as caught:
        dlq.get(ENTRY)

    assert caught.value.status == 409
    assert dlq.stats()["corrupt_files"] == [f"{ENTRY}.json"]


def test_pending_bytes_count_a_link_by_its_own_size_not_its_targets(dlq, tmp_path):
    target = tmp_path / "huge"
    target.write_bytes(b"x" * 1_000_000)
    before = dlq.stats()["pending_bytes"]
    (dlq.path / f"{ENTRY}.json").symlink_to(target)

    assert dlq.stats()["pending_bytes"] < before + 1000


def test_a_stale_temp_name_that_is_a_link_is_removed_without_touching_its_target(dlq, tmp_path):
    target = tmp_path / "keep"
    target.write_text("keep")
    link = dlq.path / f".tmp-{ENTRY}"
    link.symlink_to(target)
    os.utime(link, (1, 1), follow_symlinks=False)

    assert dlq.remove_stale_temp_files() == [link.name]
    assert target.read_text() == "keep"


# --- read_regular itself ------------------------------------------------------------------------


def test_read_regular_refuses_links_fifos_directories_and_oversized_files(tmp_path):
    regular = tmp_path / "f"
    regular.write_bytes(b"12345")
    (tmp_path / "link").symlink_to(regular)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()

    assert read_regular(regular, 5) == b"12345"
    with pytest.raises(OSError):
        read_regular(tmp_path / "link", 100)
    with pytest.raises(UnsafeFile, match="FIFO"):
        finishes(lambda: read_regular(tmp_path / "fifo", 100), unblock=tmp_path / "fifo")
    with pytest.raises(UnsafeFile, match="directory"):
        read_regular(tmp_path / "dir", 100)
    with pytest.raises(UnsafeFile, match="over the 4"):
        read_regular(regular, 4)



def test_the_refusal_names_what_was_found_instead_of_a_regular_file(tmp_path):
    with pytest.raises(UnsafeFile) as device:
        read_regular(Path("/dev/null"), 100)
    assert device.value.strerror == "not a regular file (a character device)"
    assert (device.value.errno, device.value.filename) == (errno.EINVAL, "/dev/null")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafeFile) as fifo:
        finishes(lambda: read_regular(tmp_path / "fifo", 100), unblock=tmp_path / "fifo")
    assert fifo.value.strerror == "not a regular file (a FIFO)"


def test_a_file_over_the_cap_is_refused_with_its_size_and_name(tmp_path):
    regular = tmp_path / "f"
    regular.write_bytes(b"12345")

    with pytest.raises(UnsafeFile) as err:
        read_regular(regular, 4)

    assert (err.value.errno, err.value.strerror, err.value.filename) == (
        errno.EFBIG, "5 bytes, over the 4 this reader takes", str(regular))


def test_a_file_that_grows_past_the_cap_after_its_size_was_checked_is_refused_after_one_byte_more(
        tmp_path, monkeypatch):
    grown = tmp_path / "f"
    grown.write_bytes(b"x" * (1 << 20))  # exactly the cap: taken, by its size
    real_read = os.read
    me = threading.get_ident()
    reads: list[int] = []

    def reading(fd: int, n: int) -> bytes:
        if threading.get_ident() == me and os.readlink(f"/proc/self/fd/{fd}") == str(grown):
            if not reads:
                with open(grown, "ab") as more:  # written by someone else once its size was checked
                    more.write(b"yy")
            reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", reading)

    with pytest.raises(UnsafeFile) as err:
        read_regular(grown, 1 << 20)

    assert (err.value.errno, err.value.strerror, err.value.filename) == (
        errno.EFBIG, f"over the {1 << 20} bytes this reader takes", str(grown))
    assert reads == [1 << 20, 1]  # 1 MiB at a time, and no byte beyond the first one too many


@pytest.mark.parametrize(("mode", "kind"), [
    (stat.S_IFIFO | 0o600, "a FIFO"),
    (stat.S_IFSOCK | 0o755, "a socket"),       # open(2) of a socket fails (ENXIO) before fstat
    (stat.S_IFDIR | 0o700, "a directory"),
    (stat.S_IFCHR | 0o666, "a character device"),
    (stat.S_IFBLK | 0o660, "a block device"),  # not creatable in an unprivileged test
    (stat.S_IFLNK | 0o777, "mode 120000"),     # any other type: its octal type bits
])
def test_every_kind_of_file_is_named_in_the_refusal(mode: int, kind: str):
    assert files._kind(mode) == kind


# --- counters and the audit log -----------------------------------------------------------------


def test_a_fifo_under_a_counters_name_does_not_block_the_totals(tmp_path):
    counters = Counters(tmp_path / "counters")
    counters.add(now=True, stored=3)  # the folder exists, as on a running service
    fifo = tmp_path / "counters" / "planted.counters"
    os.mkfifo(fifo, 0o600)

    assert finishes(counters.totals, unblock=fifo)["stored"] == 3


def test_a_fifo_or_a_link_under_a_compacted_name_counts_nothing_and_blocks_nothing(tmp_path):
    counters = Counters(tmp_path / "counters")
    counters.add(now=True, stored=3)
    elsewhere = tmp_path / "elsewhere.totals"
    elsewhere.write_bytes(b'{"values":{"stored":1000},"recent":[]}\n{"absorbed":{}}')
    (tmp_path / "counters" / "compacted-link.totals").symlink_to(elsewhere)
    fifo = tmp_path / "counters" / "compacted-fifo.totals"
    os.mkfifo(fifo, 0o600)

    assert finishes(counters.totals, unblock=fifo)["stored"] == 3


def test_a_counters_link_counts_nothing(tmp_path):
    counters = Counters(tmp_path / "counters")
    counters.add(now=True, stored=3)
    other = tmp_path / "elsewhere.counters"
    Counters(tmp_path / "other").add(now=True, stored=1000)
    other_file = next((tmp_path / "other").glob("*.counters"))
    (tmp_path / "counters" / "planted.counters").symlink_to(other_file)

    assert counters.totals()["stored"] == 3
    assert not other.exists()


def test_a_retired_counters_link_is_removed_and_never_written_through(tmp_path, caplog):
    directory = tmp_path / "counters"
    directory.mkdir()
    target = tmp_path / "precious"
    target.write_bytes(b"do not overwrite me")
    (directory / "planted.retired").symlink_to(target)
    fifo = directory / "zz-fifo.retired"
    os.mkfifo(fifo, 0o600)

    counters = Counters(directory)
    with caplog.at_level("WARNING", logger="telhawk_ingest.stats"):
        finishes(lambda: counters.add(stored=7), unblock=fifo)

    assert target.read_bytes() == b"do not overwrite me"
    assert counters.totals()["stored"] == 7
    names = os.listdir(directory)
    assert len(names) == 1 and names[0].endswith(".counters")
    assert not os.path.islink(directory / names[0])
    own = directory / names[0]  # each planted file was renamed to this name, then removed
    assert [r.getMessage() for r in caplog.records if r.name == "telhawk_ingest.stats"] == [
        f"counters: planted.retired is not a counters file ([Errno {errno.ELOOP}] "
        f"{os.strerror(errno.ELOOP)}: '{own}'); removed, not adopted",
        f"counters: zz-fifo.retired is not a counters file ([Errno {errno.EINVAL}] "
        f"not a regular file (a FIFO): '{own}'); removed, not adopted",
    ]


def test_a_fifo_planted_in_place_of_a_process_own_counters_file_does_not_block_its_next_write(tmp_path):
    counters = Counters(tmp_path)
    counters.add(now=True, stored=1)
    assert counters._path is not None
    own = counters._path
    own.unlink()
    os.mkfifo(own, 0o600)

    finishes(lambda: counters.add(now=True, stored=2), unblock=own)

    assert finishes(counters.totals)["stored"] == 2  # what the removed file held went with it


def test_a_link_planted_in_place_of_a_process_own_counters_file_is_never_written_through(tmp_path):
    counters = Counters(tmp_path / "counters")
    counters.add(now=True, stored=1)
    assert counters._path is not None
    own = counters._path
    moved = tmp_path / "moved"
    os.rename(own, moved)
    own.symlink_to(moved)  # the same file, behind a link
    before = moved.read_bytes()

    finishes(lambda: counters.add(now=True, stored=2))

    assert moved.read_bytes() == before
    # The planted link goes: left there, the process's flusher thread would meet it (and warn)
    # on every round until the interpreter exits, after pytest has closed the streams.
    shutil.rmtree(tmp_path / "counters")
    counters.flush()


def test_the_audit_log_neither_appends_through_a_link_nor_blocks_on_a_fifo(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    (tmp_path / "link.log").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.log")

    with pytest.raises(OSError):
        append_synced(tmp_path / "link.log", b"x\n")
    with pytest.raises(OSError):
        finishes(lambda: append_synced(tmp_path / "fifo.log", b"x\n"), unblock=tmp_path / "fifo.log")
    assert target.read_bytes() == b"keep"

    audit = AuditLog(tmp_path)
    audit.record("ops", "purge_dlq", 1)
    assert [e["action"] for e in finishes(lambda: list(audit.entries()), unblock=tmp_path / "fifo.log")] == [
        "purge_dlq"
    ]


# --- the embedded store's folder ----------------------------------------------------------------


def test_a_symlinked_data_dir_of_the_services_own_is_followed_and_its_files_still_checked(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    (real / DB_NAME).symlink_to(tmp_path / "elsewhere")

    with pytest.raises(ConfigError, match="is a symbolic link; refusing"):
        LocalBackend(tmp_path / "data")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user needs root")
def test_a_data_dir_link_planted_by_another_user_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    os.lchown(tmp_path / "data", 12345, 12345)

    with pytest.raises(ConfigError, match="symbolic link owned by uid 12345"):
        LocalBackend(tmp_path / "data")
    assert os.listdir(real) == []


def test_a_dangling_link_in_place_of_the_database_makes_the_store_unhealthy(tmp_path):
    backend = LocalBackend(tmp_path / "data")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / DB_NAME).symlink_to(tmp_path / "not-yet")

    assert backend.healthy() is False
    with pytest.raises(ConfigError, match="is a symbolic link"):
        list(backend.documents())
    assert not (tmp_path / "not-yet").exists()
    backend.close()
