"""The DLQ's summary index on the volume: a process that just started lists filtered pages from it,
and it never makes a listing differ from what the entry files say (SPEC §7, §11), whatever another
process did to the entries since it was saved or whatever was planted in its place. Real files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest import dlqindex
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import FILE_RE, DeadLetterQueue, DlqFilter
from tests.unit.test_dlq import record

REASONS = ["normalization_failed", "validation_failed", "storage_failed"]
TYPES = ["cisco:asa", "linux:auth", "win:security"]
ENTRIES = 30


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Index from a handful of entries on, as a DLQ does from INDEX_MIN_ENTRIES."""
    monkeypatch.setattr(dlq_module, "INDEX_MIN_ENTRIES", 5)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every entry file a DLQ opens to read, in order."""
    opened: list[str] = []
    real = dlq_module.read_regular_ino

    def spy(path: str, max_bytes: int) -> tuple[bytes, int]:
        opened.append(os.path.basename(path))
        return real(path, max_bytes)

    monkeypatch.setattr(dlq_module, "read_regular_ino", spy)
    return opened


def spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple[Any, ...]]:
    """The arguments of every call of `owner.name` (a function of a module, or a method of a class)."""
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, counted)
    return calls


def queue(path: Path) -> DeadLetterQueue:
    """A new DLQ object: what a process that just started has (an empty catalog)."""
    return DeadLetterQueue(DlqSettings(base_path=path, min_free_bytes=0))


def fill(path: Path, count: int = ENTRIES, first: int = 0) -> list[str]:
    writer = queue(path)
    return [writer.write(record(first + i, reason=REASONS[i % 3], source_type=TYPES[i % 2],
                                error=f"error {i % 4}"), now=1_700_000_000 + first + i)
            for i in range(count)]


def index_file(path: Path) -> Path:
    return path / dlqindex.STATE_DIR / dlqindex.INDEX_NAME


def save_index(path: Path) -> DeadLetterQueue:
    """A process that reads every entry for a filtered listing, and so saves the index."""
    builder = queue(path)
    builder.list(DlqFilter(reason="storage_failed"))
    assert index_file(path).is_file()
    return builder


def expected(path: Path, flt: DlqFilter) -> list[str]:
    """What the entry files themselves say matches `flt`, oldest first (no DLQ code involved)."""
    out = []
    for name in sorted(n for n in os.listdir(path) if FILE_RE.match(n)):
        try:
            rec = json.loads((path / name).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("envelope"), dict):
            continue
        if ((flt.reason is None or rec["reason"] == flt.reason)
                and (flt.source_type is None or rec["envelope"].get("source_type") == flt.source_type)
                and (flt.error is None or flt.error in rec["error"])):
            out.append(name[:-5])
    return out


def listed(dlq: DeadLetterQueue, flt: DlqFilter, limit: int = 1000) -> tuple[list[str], int]:
    page, count, _ = dlq.list(flt, limit=limit)
    return [r["id"] for r in page], count


FILTERS = [DlqFilter(reason=r) for r in REASONS] + [
    DlqFilter(source_type="cisco:asa"), DlqFilter(reason="storage_failed", source_type="linux:auth"),
    DlqFilter(error="error 3"), DlqFilter(error="nowhere"), DlqFilter(reason="no_such_reason"),
]


def assert_agrees(path: Path) -> None:
    """A new DLQ object lists, for every filter, exactly what the files say."""
    for flt in FILTERS:
        ids, count = listed(queue(path), flt)
        assert ids == expected(path, flt), flt
        assert count == len(ids), flt


# -- used when it is right ---------------------------------------------------------------


def test_the_writer_of_entries_filters_and_counts_them_without_reading_them_back(tmp_path, reads,
                                                                                 monkeypatch):
    path = tmp_path / "dlq"
    writer = queue(path)
    ids = fill(path, 3)  # another object's writes: read once here
    mine = writer.write_many([record(10, reason="storage_failed"), record(11, reason="validation_failed")])
    reads.clear()

    assert list(writer.iter_matching(DlqFilter(reason="storage_failed"))) == [
        i for i in [*ids, *mine] if i in expected(path, DlqFilter(reason="storage_failed"))]
    assert sorted(reads) == sorted(f"{i}.json" for i in ids)

    stat_calls: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: stat_calls.append(str(p)) or real_lstat(p, *a, **k))
    assert writer.stats()["pending_bytes"] == sum(p.stat().st_size for p in path.glob("failed_*.json"))
    assert not [p for p in stat_calls if p.endswith(".json")]  # sizes known from the writes and reads


def test_a_new_process_reads_each_entry_once_and_knows_its_bytes_from_that_read(tmp_path, reads,
                                                                                 monkeypatch):
    path = tmp_path / "dlq"
    ids = fill(path, 3)  # below the index threshold: the catalog alone
    broken = path / f"failed_1700000099_{'ab' * 16}.json"
    broken.write_text("{not json")
    reader = queue(path)

    for _ in range(2):
        assert listed(reader, DlqFilter(reason="validation_failed")) == ([ids[1]], 1)

    # Every entry summarized once, the damaged one too; the page is read each time.
    assert sorted(reads) == sorted([*(f"{i}.json" for i in ids), broken.name, *[f"{ids[1]}.json"] * 2])
    stat_calls: list[str] = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: stat_calls.append(str(p)) or real_lstat(p, *a, **k))
    health = reader.stats()
    assert health["pending_bytes"] == sum(p.stat().st_size for p in path.glob("failed_*.json"))
    assert health["corrupt_files"] == [broken.name]
    assert not [p for p in stat_calls if p.endswith(".json")]  # sizes known from the reads
    assert len(reads) == 6


def test_a_new_process_with_an_index_reads_only_the_page(tmp_path, reads):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    reads.clear()

    ids, count = listed(queue(path), DlqFilter(reason="validation_failed"), limit=3)

    want = expected(path, DlqFilter(reason="validation_failed"))
    assert (ids, count) == (want[:3], len(want)) and count == ENTRIES // 3
    assert sorted(reads) == sorted(f"{i}.json" for i in ids)


def test_without_an_index_a_new_process_reads_every_entry_and_saves_one(tmp_path, reads):
    path = tmp_path / "dlq"
    fill(path)
    reads.clear()

    ids, count = listed(queue(path), DlqFilter(reason="validation_failed"), limit=3)

    assert (ids, count) == (expected(path, DlqFilter(reason="validation_failed"))[:3], ENTRIES // 3)
    assert len(reads) >= ENTRIES
    saved = dlqindex.load(path, ENTRIES)
    entries = sorted(n for n in os.listdir(path) if FILE_RE.match(n))
    assert saved is not None and sorted(saved.names) == entries
    st = os.stat(index_file(path))
    assert st.st_mode & 0o777 == 0o600
    assert os.listdir(index_file(path).parent) == [dlqindex.INDEX_NAME]  # no temp file left


def test_every_filter_agrees_with_the_files(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    assert_agrees(path)


def test_time_filters_combine_with_the_index(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    since, until = int(ids[6].split("_")[1]), int(ids[20].split("_")[1])
    flt = DlqFilter(reason="normalization_failed", since=since, until=until)
    in_window = [i for i in expected(path, DlqFilter(reason="normalization_failed"))
                 if since <= int(i.split("_")[1]) <= until]
    assert listed(queue(path), flt) == (in_window, len(in_window))


def test_below_the_threshold_no_index_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(dlq_module, "INDEX_MIN_ENTRIES", 1000)
    path = tmp_path / "dlq"
    fill(path)
    queue(path).list(DlqFilter(reason="storage_failed"))
    assert not index_file(path).exists()


def test_from_exactly_the_threshold_an_index_is_saved_and_used(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(dlq_module, "INDEX_MIN_ENTRIES", ENTRIES)
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    reads.clear()

    ids, count = listed(queue(path), DlqFilter(reason="validation_failed"), limit=3)

    assert (ids, count) == (expected(path, DlqFilter(reason="validation_failed"))[:3], ENTRIES // 3)
    assert sorted(reads) == sorted(f"{i}.json" for i in ids)


def test_a_process_loads_the_index_once_and_answers_a_filter_again_from_what_it_found(tmp_path,
                                                                                      monkeypatch):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    long_ago = time.time() - 10
    os.utime(path, (long_ago, long_ago))  # unchanged since well before the listings: one listing
    loads = spy(monkeypatch, dlqindex, "load")
    views = spy(monkeypatch, dlqindex.SummaryIndex, "view")
    searches = spy(monkeypatch, dlqindex.IndexView, "select")
    reader = queue(path)

    for flt in FILTERS[:2] * 2:
        assert listed(reader, flt) == (expected(path, flt), len(expected(path, flt))), flt

    # Loaded on first use, checked against the folder's listing once, searched once per filter.
    assert (len(loads), len(views), len(searches)) == (1, 1, 2)


def test_a_process_that_saved_the_index_lists_from_it_without_loading_it_back(tmp_path, reads,
                                                                              monkeypatch):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    reader = queue(path)
    store, valid = DlqFilter(reason="storage_failed"), DlqFilter(reason="validation_failed")
    listed(reader, store, limit=3)  # from the index: only its page is read, and known since
    fill(path, 10, first=200)
    assert listed(reader, store) == (expected(path, store), len(expected(path, store)))
    saved = dlqindex.load(path, 100)  # saved again: the new entries were more than 1 in 50
    assert saved is not None and len(saved) == ENTRIES + 10
    loads = spy(monkeypatch, dlqindex, "load")
    reads.clear()

    ids, count = listed(reader, valid, limit=3)

    assert (ids, count) == (expected(path, valid)[:3], len(expected(path, valid)))
    assert sorted(reads) == sorted(f"{i}.json" for i in ids)  # the entries it never read: from the index
    assert loads == []
    reads.clear()
    assert listed(queue(path), valid, limit=3) == (ids, count)  # and so does a new process
    assert sorted(reads) == sorted(f"{i}.json" for i in ids)


# -- never stale ---------------------------------------------------------------------------


def refail(dlq: DeadLetterQueue, entry_id: str, reason: str, error: str) -> None:
    """What a replay that fails again does: the entry rewritten under its name (a new inode)."""
    rec = dlq.get(entry_id)
    rec.update(reason=reason, error=error, attempts=rec["attempts"] + 1)
    dlq.rewrite(entry_id, rec)


def test_an_entry_rewritten_by_another_process_after_the_index_is_listed_as_it_is_now(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    moved = ids[0]  # normalization_failed when indexed
    refail(queue(path), moved, "validation_failed", "class_uid: required")

    assert moved not in listed(queue(path), DlqFilter(reason="normalization_failed"))[0]
    assert moved in listed(queue(path), DlqFilter(reason="validation_failed"))[0]
    assert listed(queue(path), DlqFilter(error="class_uid"))[0] == [moved]
    assert_agrees(path)


def test_deleted_and_new_entries_after_the_index(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    other = queue(path)
    other.remove([ids[2], ids[5]])  # both storage_failed
    other.purge(DlqFilter(reason="validation_failed"))
    added = fill(path, 6, first=100)

    got, count = listed(queue(path), DlqFilter(reason="storage_failed"))
    assert ids[2] not in got and ids[5] not in got
    assert {added[2], added[5]} <= set(got)
    assert count == len(expected(path, DlqFilter(reason="storage_failed")))
    assert_agrees(path)


def test_a_process_using_the_index_notices_changes_made_after_it_loaded_it(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    reader = queue(path)
    assert ids[0] in listed(reader, DlqFilter(reason="normalization_failed"))[0]

    refail(queue(path), ids[0], "storage_failed", "still down")
    queue(path).remove([ids[3]])

    assert ids[0] in listed(reader, DlqFilter(reason="storage_failed"))[0]
    assert ids[0] not in listed(reader, DlqFilter(reason="normalization_failed"))[0]
    assert ids[3] not in listed(reader, DlqFilter(reason="normalization_failed"))[0]


def test_an_error_match_past_the_indexed_text_is_found_in_the_file(tmp_path, reads):
    path = tmp_path / "dlq"
    fill(path)
    long_one = queue(path).write(record(50, error="x" * (dlqindex.ERROR_CAP + 10) + " needle"))
    save_index(path)
    reads.clear()

    assert listed(queue(path), DlqFilter(error="needle")) == ([long_one], 1)
    assert listed(queue(path), DlqFilter(error="x" * 20)) == ([long_one], 1)
    assert f"{long_one}.json" in reads


def indexed_with_a_corrupt_entry(path: Path) -> str:
    """The usual entries and one that does not parse, indexed: the corrupt entry's id."""
    fill(path)
    broken = "failed_1700000099_" + "ab" * 16
    (path / f"{broken}.json").write_text("{not json")
    save_index(path)
    return broken


def test_an_entry_corrupt_when_indexed_and_replaced_since_is_listed(tmp_path):
    path = tmp_path / "dlq"
    broken = indexed_with_a_corrupt_entry(path)
    assert broken not in listed(queue(path), DlqFilter(reason="normalization_failed"))[0]

    good = record(99)
    good["id"] = broken
    tmp = path / "replacement"
    tmp.write_text(json.dumps(good))
    os.replace(tmp, path / f"{broken}.json")  # a new file renamed over the name: a new inode

    assert broken in listed(queue(path), DlqFilter(reason="normalization_failed"))[0]
    assert_agrees(path)


def test_an_entry_indexed_as_corrupt_matches_no_filter_not_even_one_every_text_matches(tmp_path):
    path = tmp_path / "dlq"
    broken = indexed_with_a_corrupt_entry(path)
    assert [r.name for r in rows_of(path) if r.corrupt] == [f"{broken}.json"]

    flt = DlqFilter(error="")
    assert listed(queue(path), flt) == (expected(path, flt), ENTRIES)


def test_a_stale_index_is_replaced_by_a_process_that_read_the_difference(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    added = fill(path, 10, first=200)

    queue(path).list(DlqFilter(reason="storage_failed"))

    saved = dlqindex.load(path, 100)
    assert saved is not None
    assert sorted(saved.names) == sorted(n for n in os.listdir(path) if FILE_RE.match(n))
    assert set(f"{i}.json" for i in added) <= set(saved.names)


def test_an_index_that_lists_what_is_there_is_not_saved_again(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    os.utime(index_file(path), ns=(1, 1))  # a file saved again would have a time of now

    assert_agrees(path)

    assert index_file(path).stat().st_mtime_ns == 1


def test_entries_removed_since_the_index_make_a_listing_save_it_again_without_them(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    queue(path).remove(ids[:5])

    assert listed(queue(path), DlqFilter(reason="storage_failed")) == (
        expected(path, DlqFilter(reason="storage_failed")), ENTRIES // 3 - 1)

    saved = dlqindex.load(path, 100)
    assert saved is not None and sorted(saved.names) == [f"{i}.json" for i in sorted(ids[5:])]


def test_a_process_saves_the_index_at_most_once_a_minute(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    with freeze_time("2026-11-01 00:00:00") as frozen:
        reader = save_index(path)
        added = fill(path, 5, first=100)
        listed(reader, DlqFilter(reason="storage_failed"))
        assert not set(f"{i}.json" for i in added) & set(dlqindex.load(path, 100).names)

        frozen.tick(dlq_module.INDEX_SAVE_INTERVAL_S)
        fill(path, 1, first=200)
        listed(reader, DlqFilter(reason="storage_failed"))
        assert set(f"{i}.json" for i in added) <= set(dlqindex.load(path, 100).names)


def test_a_time_window_reads_only_its_own_entries_whose_error_the_index_cut_short(tmp_path, reads):
    path = tmp_path / "dlq"
    fill(path)
    long_error = "x" * (dlqindex.ERROR_CAP + 10) + " needle"
    early, late = (queue(path).write(record(n, error=long_error), now=1_700_000_000 + n) for n in (100, 200))
    save_index(path)
    reads.clear()

    assert listed(queue(path), DlqFilter(error="needle", since=1_700_000_150)) == ([late], 1)
    assert set(reads) == {f"{late}.json"}
    assert listed(queue(path), DlqFilter(error="needle")) == ([early, late], 2)


# -- planted, corrupt or foreign index files: ignored ----------------------------------------


def plant(path: Path, data: bytes) -> None:
    target = index_file(path)
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def valid_bytes(path: Path) -> bytes:
    save_index(path)
    return index_file(path).read_bytes()


def rows_of(path: Path) -> list[dlqindex.Row]:
    saved = dlqindex.load(path, 1000)
    assert saved is not None
    return list(saved.rows())


def test_an_index_naming_each_entry_twice_is_ignored(tmp_path, caplog):
    path = tmp_path / "dlq"
    fill(path)
    rows = rows_of(Path(save_index(path).path))
    twice = dlqindex.SummaryIndex.build(sorted(rows + rows, key=lambda r: r.name))
    plant(path, twice.encode(dlqindex.directory_id(path)))

    # One process: given up once, logged once, the files read instead (time-bounded listings, which
    # do not save an index in its place).
    reader = queue(path)
    with caplog.at_level(logging.WARNING, "telhawk_ingest.dlq"):
        for flt in (DlqFilter(reason="storage_failed", since=0), DlqFilter(error="error 3", since=0)):
            assert listed(reader, flt) == (expected(path, flt), len(expected(path, flt))), flt
    assert [r.getMessage() for r in caplog.records
            if r.name == "telhawk_ingest.dlq" and r.levelno >= logging.WARNING] == [
        f"DLQ summary index in {path} ignored: the index names an entry twice"]
    assert_agrees(path)


def test_an_index_naming_entries_that_do_not_exist_lists_none_of_them(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    rows = rows_of(Path(save_index(path).path))
    ghosts = [dlqindex.Row(f"failed_1700000001_{i:032x}.json", 12345 + i, False, "storage_failed",
                           "cisco:asa", "ghost") for i in range(10)]
    plant(path, dlqindex.SummaryIndex.build(rows + ghosts).encode(dlqindex.directory_id(path)))
    assert listed(queue(path), DlqFilter(error="ghost")) == ([], 0)
    assert_agrees(path)


def test_an_index_claiming_other_inodes_is_not_believed(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    rows = rows_of(Path(save_index(path).path))
    lies = [dlqindex.Row(r.name, r.inode + 1, False, "storage_failed", "cisco:asa", "lie") for r in rows]
    plant(path, dlqindex.SummaryIndex.build(lies).encode(dlqindex.directory_id(path)))
    assert listed(queue(path), DlqFilter(error="lie")) == ([], 0)
    assert_agrees(path)


@pytest.mark.parametrize("damage", ["garbage", "empty", "cut", "flipped", "bad_code", "oversized",
                                    "header_only"])
def test_a_damaged_index_is_ignored(tmp_path, damage, reads):
    path = tmp_path / "dlq"
    fill(path)
    good = valid_bytes(path)
    header_end = good.index(b"\n", len(dlqindex.MAGIC)) + 1
    if damage == "garbage":
        data = os.urandom(4096)
    elif damage == "empty":
        data = b""
    elif damage == "cut":
        data = good[: len(good) - 7]
    elif damage == "flipped":  # the first entry marked corrupt, its checksum left as it was
        at = len(good) - 13 * ENTRIES
        data = good[:at] + bytes([good[at] | dlqindex.CORRUPT]) + good[at + 1:]
    elif damage == "bad_code":
        index = dlqindex.SummaryIndex.decode(good, dlqindex.directory_id(path))
        index.errors[0] = len(index.texts) + 5
        data = index.encode(dlqindex.directory_id(path))
    elif damage == "oversized":
        data = good + b"\0" * dlqindex.max_index_bytes(ENTRIES)
    else:
        data = good[:header_end]
    plant(path, data)
    reads.clear()

    assert_agrees(path)
    assert len(reads) >= ENTRIES  # read from the files, as without an index


def test_an_index_from_another_dlq_folder_is_ignored(tmp_path, reads):
    first, second = tmp_path / "a", tmp_path / "b"
    fill(first)
    save_index(first)
    second.mkdir(mode=0o700)
    for name in os.listdir(first):  # the same files, same inodes, moved over
        if FILE_RE.match(name):
            os.rename(first / name, second / name)
    plant(second, index_file(first).read_bytes())
    reads.clear()

    assert dlqindex.load(second, ENTRIES) is None
    assert_agrees(second)
    assert len(reads) >= ENTRIES


def test_an_index_reached_through_a_symbolic_link_is_ignored(tmp_path, reads):
    path = tmp_path / "dlq"
    fill(path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(valid_bytes(path))
    index_file(path).unlink()
    index_file(path).symlink_to(elsewhere)
    reads.clear()

    assert_agrees(path)
    assert len(reads) >= ENTRIES


def test_a_state_folder_that_is_a_link_is_neither_read_nor_written_through(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    data = valid_bytes(path)
    shutil.rmtree(path / dlqindex.STATE_DIR)
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / dlqindex.INDEX_NAME).write_bytes(data)
    os.chmod(outside / dlqindex.INDEX_NAME, 0o600)
    (path / dlqindex.STATE_DIR).symlink_to(outside)
    before = (outside / dlqindex.INDEX_NAME).read_bytes()
    queue(path).write(record(300, reason="storage_failed"))

    assert dlqindex.load(path, ENTRIES) is None
    assert_agrees(path)
    assert (outside / dlqindex.INDEX_NAME).read_bytes() == before
    assert sorted(os.listdir(outside)) == [dlqindex.INDEX_NAME]


@pytest.mark.parametrize("kind", ["group_writable", "fifo"])
def test_an_index_file_that_is_not_a_private_regular_file_is_ignored(tmp_path, kind):
    path = tmp_path / "dlq"
    fill(path)
    valid_bytes(path)
    if kind == "group_writable":
        os.chmod(index_file(path), 0o660)
    else:
        index_file(path).unlink()
        os.mkfifo(index_file(path), 0o600)

    assert dlqindex.load(path, ENTRIES) is None
    assert_agrees(path)


def test_a_temp_file_left_by_a_killed_index_writer_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    state = path / dlqindex.STATE_DIR
    old = state / f"{dlqindex.TEMP_PREFIX}{dlqindex.INDEX_NAME}-killed"
    recent = state / f"{dlqindex.TEMP_PREFIX}{dlqindex.INDEX_NAME}-writing"
    old.write_bytes(b"partial")
    recent.write_bytes(b"partial")
    os.utime(old, (1_700_000_000, 1_700_000_000))
    index_file(path).unlink()  # so that the next full listing saves one

    save_index(path)

    assert sorted(os.listdir(state)) == sorted([dlqindex.INDEX_NAME, recent.name])


def test_two_processes_saving_at_once_leave_one_whole_index(tmp_path):
    path = tmp_path / "dlq"
    fill(path)
    first, second = queue(path), queue(path)
    first.list(DlqFilter(reason="storage_failed"))
    second.list(DlqFilter(reason="storage_failed"))

    assert os.listdir(path / dlqindex.STATE_DIR) == [dlqindex.INDEX_NAME]
    saved = dlqindex.load(path, ENTRIES)
    assert saved is not None and len(saved) == ENTRIES
    assert_agrees(path)


def test_an_index_save_after_the_folder_went_away_is_not_made_and_does_not_fail(tmp_path, caplog):
    gone = tmp_path / "dlq"
    index = dlqindex.SummaryIndex.build([dlqindex.Row("failed_1.json", 1, False, "storage_failed")])

    with caplog.at_level("WARNING", logger="telhawk_ingest.dlqindex"):
        assert dlqindex.save(gone, index) is False

    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"DLQ summary index not saved: [Errno 2] No such file or directory: '{gone}'"
    ]
    assert not gone.exists()


def test_a_listing_does_not_wait_for_another_thread_saving_the_index(tmp_path, monkeypatch):
    monkeypatch.setattr(dlq_module, "INDEX_SAVE_INTERVAL_S", 0.0)
    path = tmp_path / "dlq"
    fill(path)
    dlq = queue(path)
    saving, go_on = threading.Event(), threading.Event()
    real_save = dlqindex.save

    def slow_save(dlq_path: Path, index: dlqindex.SummaryIndex) -> bool:
        saving.set()
        go_on.wait(10)
        return real_save(dlq_path, index)

    monkeypatch.setattr(dlqindex, "save", slow_save)
    saves = spy(monkeypatch, dlqindex, "save")
    answers: dict[str, tuple[list[str], int]] = {}

    def list_in_thread(key: str, flt: DlqFilter) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.update({key: listed(dlq, flt)}))
        thread.start()
        return thread

    first = list_in_thread("first", DlqFilter(reason="storage_failed"))
    try:
        assert saving.wait(10)
        second = list_in_thread("second", DlqFilter(reason="validation_failed"))
        second.join(5)
        assert not second.is_alive()  # it found the save under way and left it to the first
        assert len(saves) == 1
    finally:
        go_on.set()
        first.join(10)
    for key, flt in (("first", DlqFilter(reason="storage_failed")),
                     ("second", DlqFilter(reason="validation_failed"))):
        assert answers[key] == (expected(path, flt), len(expected(path, flt)))
    assert len(saves) == 1


def test_after_an_index_that_could_not_be_built_the_next_listing_saves_one(tmp_path, monkeypatch):
    monkeypatch.setattr(dlq_module, "INDEX_SAVE_INTERVAL_S", 0.0)
    path = tmp_path / "dlq"
    fill(path)
    reader = queue(path)
    real_build = dlqindex.SummaryIndex.build
    builds: list[int] = []

    def out_of_memory_once(rows: list[dlqindex.Row]) -> dlqindex.SummaryIndex:
        builds.append(len(rows))
        if len(builds) == 1:
            raise MemoryError
        return real_build(rows)

    monkeypatch.setattr(dlqindex.SummaryIndex, "build", staticmethod(out_of_memory_once))
    with pytest.raises(MemoryError):
        reader.list(DlqFilter(reason="storage_failed"))
    assert not index_file(path).exists()

    flt = DlqFilter(reason="validation_failed")
    assert listed(reader, flt) == (expected(path, flt), len(expected(path, flt)))
    saved = dlqindex.load(path, ENTRIES)
    assert saved is not None and len(saved) == ENTRIES and builds == [ENTRIES, ENTRIES]
    assert_agrees(path)
