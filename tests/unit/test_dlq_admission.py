"""The DLQ's answers before it takes an entry: free space counted a block per file, each limit named
with its setting and figures, a disabled or unusable directory, and the temp files killed writers
left. Real directories; the filesystem's free space is given (os.statvfs) where it decides."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import (
    MIN_ENTRY_BYTES,
    STALE_TEMP_S,
    TEMP_PREFIX,
    DeadLetterQueue,
    _smallest_entry_bytes,
    make_record,
)
from telhawk_ingest.envelope import Envelope, new_id, rfc3339
from telhawk_ingest.errors import DLQUnavailable
from tests.unit.test_dlq import record

BLOCK = 4096


def dlq_at(path: Path, **settings) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=path, **{"min_free_bytes": 0, **settings}))


def free_blocks(monkeypatch: pytest.MonkeyPatch, blocks: int) -> None:
    real = os.statvfs

    def statvfs(path: os.PathLike | str) -> os.statvfs_result:
        got = real(path)
        return os.statvfs_result((BLOCK, BLOCK, got.f_blocks, blocks, blocks, got.f_files, got.f_ffree,
                                  got.f_favail, got.f_flag, got.f_namemax))

    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize(("min_free", "refused"), [(100 * BLOCK - 1000 - BLOCK, False),
                                                   (100 * BLOCK - 1000 - BLOCK + 1, True)])
def test_free_space_counts_a_whole_block_for_each_file_besides_its_bytes(tmp_path, monkeypatch, min_free,
                                                                         refused):
    dlq = dlq_at(tmp_path / "dlq", min_free_bytes=min_free)
    free_blocks(monkeypatch, 100)

    answer = dlq.refusal(1, 1000)

    if refused:
        assert answer == (f"dlq.base_path: {dlq.path}: 1 more file(s) of 1000 bytes would leave less than "
                          f"dlq.min_free_bytes={min_free} free ({100 * BLOCK} bytes free)")
    else:
        assert answer is None
    assert (dlq.refusal(2, 1000) is None) is False  # a second file takes a block more


def test_a_full_volume_without_a_free_space_floor_says_it_is_full_not_less_than_zero(tmp_path, monkeypatch):
    dlq = dlq_at(tmp_path / "dlq", min_free_bytes=0)
    free_blocks(monkeypatch, 2)

    assert dlq.refusal(1, BLOCK) is None  # its bytes and a block: just fits
    answer = dlq.refusal(1, BLOCK + 1)

    assert answer == (f"dlq.base_path: {dlq.path} is full: 1 more file(s) of {BLOCK + 1} bytes do not fit in "
                      f"the {2 * BLOCK} bytes free (each file takes at least one {BLOCK}-byte block)")
    assert "min_free_bytes" not in answer


def test_each_limit_is_named_with_its_setting_and_what_is_pending(tmp_path):
    by_files = dlq_at(tmp_path / "a", max_pending_files=3)
    by_files.write_many([record(1), record(2)])
    assert by_files.refusal(1) is None
    assert by_files.refusal(2) == (
        "the DLQ would hold more than dlq.max_pending_files=3 files (2 pending, 2 more)")

    by_bytes = dlq_at(tmp_path / "b", max_pending_bytes=10_000)
    by_bytes.write(record(1))
    held = sum(p.stat().st_size for p in by_bytes.path.iterdir())
    assert by_bytes.refusal(1, 10_000 - held) is None
    assert by_bytes.refusal(1, 10_001 - held) == (
        f"the DLQ would hold more than dlq.max_pending_bytes=10000 bytes ({held} pending, "
        f"{10_001 - held} more)")


def test_the_smallest_entry_is_a_one_character_raw_event_written_in_second_0(tmp_path):
    """Health asks the limits about an entry of MIN_ENTRY_BYTES: exactly the size of the smallest
    file the DLQ writes (a shorter name's seconds, empty metadata and error, one payload byte)."""
    dlq = dlq_at(tmp_path / "dlq")
    smallest = Envelope(new_id(), "", "", "raw", "x", {}, rfc3339(0)).to_dict()
    entry_id = dlq.write(make_record(smallest, "storage_failed", "", now=0), now=0)
    later = dlq.write(make_record(smallest, "storage_failed", "", now=1_700_000_000))

    assert _smallest_entry_bytes() == (dlq.path / f"{entry_id}.json").stat().st_size == MIN_ENTRY_BYTES
    assert (dlq.path / f"{later}.json").stat().st_size > MIN_ENTRY_BYTES


@pytest.mark.parametrize(("setting", "at_limit", "over", "answer"), [
    ("max_pending_files", (3, 1), (4, 1), "4 entries are more than dlq.max_pending_files=3"),
    ("max_pending_bytes", (1, 3000), (1, 3001),
     "3001 bytes of entries are more than dlq.max_pending_bytes=3000"),
])
def test_under_drop_oldest_only_entries_larger_than_a_limit_itself_are_refused(tmp_path, setting, at_limit,
                                                                                over, answer):
    dlq = dlq_at(tmp_path / "dlq", full_policy="drop_oldest", **{setting: at_limit[0] * at_limit[1]})
    dlq.write_many([record(1), record(2), record(3)])  # pending: dropping makes room for any of these

    assert dlq.refusal(*at_limit) is None
    assert dlq.refusal(*over) == answer


def test_limits_of_0_take_any_number_of_entries(tmp_path):
    dlq = dlq_at(tmp_path / "dlq", max_pending_files=0, max_pending_bytes=0)
    dlq.write_many([record(n) for n in range(5)])
    assert dlq.refusal(10**4, 10**6) is None


def test_a_disabled_dlq_says_so_and_makes_no_directory(tmp_path):
    dlq = dlq_at(tmp_path / "dlq", enabled=False)
    assert dlq.refusal() == "the DLQ is disabled (dlq.enabled: false)"
    with pytest.raises(DLQUnavailable, match=r"^the DLQ is disabled \(dlq.enabled: false\)$"):
        dlq.check_writable()
    assert not (tmp_path / "dlq").exists()


def test_a_directory_whose_filesystem_cannot_be_read_is_unusable_with_the_reason(tmp_path, monkeypatch):
    dlq = dlq_at(tmp_path / "dlq")
    real = os.statvfs
    calls: list[str] = []

    def failing(path):
        calls.append(str(path))
        if len(calls) > 1:  # files.unwritable reads it first
            raise OSError(5, "Input/output error")
        return real(path)

    monkeypatch.setattr(os, "statvfs", failing)
    assert dlq.refusal() == f"dlq.base_path: {dlq.path} is not usable (Input/output error)"


def test_an_existing_directory_open_to_others_is_made_private(tmp_path):
    path = tmp_path / "dlq"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    dlq_at(path)
    assert path.stat().st_mode & 0o777 == 0o700


def test_a_directory_that_cannot_be_made_is_logged_and_refused_not_raised(tmp_path, caplog):
    (tmp_path / "file").write_bytes(b"")
    with caplog.at_level(logging.ERROR):
        dlq = dlq_at(tmp_path / "file" / "dlq")
    assert f"dlq.base_path: {dlq.path} cannot be prepared: [Errno 20] Not a directory: '{dlq.path}'" in [
        r.getMessage() for r in caplog.records]
    assert dlq.refusal() is not None


def test_temp_files_are_removed_from_exactly_stale_temp_s_old_and_logged(tmp_path, caplog):
    dlq = dlq_at(tmp_path / "dlq")
    stale, fresh = (dlq.path / f"{TEMP_PREFIX}failed_1_{c * 32}" for c in "ab")
    for path, mtime in ((stale, 1000.0), (fresh, 1000.5)):
        path.write_bytes(b"{}")
        os.utime(path, (mtime, mtime))

    with caplog.at_level(logging.WARNING):
        removed = dlq.remove_stale_temp_files(now=1000.0 + STALE_TEMP_S)

    assert removed == [stale.name]
    assert os.listdir(dlq.path) == [fresh.name]
    assert [r.getMessage() for r in caplog.records] == [
        f"removed 1 temp files left in {dlq.path} by writers that were killed"]
    assert STALE_TEMP_S == 600


def test_a_temp_file_removed_by_another_instance_meanwhile_is_passed_over(tmp_path, monkeypatch):
    dlq = dlq_at(tmp_path / "dlq")
    for c in "ab":
        path = dlq.path / f"{TEMP_PREFIX}failed_1_{c * 32}"
        path.write_bytes(b"{}")
        os.utime(path, (1000.0, 1000.0))
    real_lstat = os.lstat
    taken: list[str] = []

    def lstat(path: os.PathLike | str, *args: object, **kwargs: object) -> os.stat_result:
        if os.path.basename(path).startswith(TEMP_PREFIX) and not taken:
            taken.append(os.path.basename(path))
            os.unlink(path)  # another instance starting removed it first
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    removed = dlq.remove_stale_temp_files(now=1000.0 + STALE_TEMP_S)

    assert len(removed) == 1 and removed[0] not in taken
    assert os.listdir(dlq.path) == []


def test_temp_files_that_cannot_be_looked_at_are_logged_as_an_error_and_start_up_goes_on(
        tmp_path, monkeypatch, caplog):
    dlq = dlq_at(tmp_path / "dlq")

    def denied(path: object) -> list[str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "listdir", denied)
    with caplog.at_level(logging.WARNING):
        assert dlq.remove_stale_temp_files() == []

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR,
         f"dlq.base_path: {dlq.path}: stale temp files cannot be removed: [Errno 13] Permission denied")]
