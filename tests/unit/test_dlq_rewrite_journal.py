"""An entry rewritten twice (a replay that failed again, twice) is listed, purged and counted as it
is now by every process, even when its name got its first inode back, as ext4 does (SPEC §7, §11):
the rewrite journal under `.state/rewrites/`, its bounds, and planted journal files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from freezegun import freeze_time

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest import dlqindex, dlqjournal
from telhawk_ingest.dlq import DeadLetterQueue, DlqFilter
from telhawk_ingest.errors import DLQUnavailable
from tests.unit import test_dlq_index
from tests.unit.test_dlq_index import expected, fill, index_file, listed, queue, refail, save_index

# The index tests' fixtures: indexing from 5 entries on (autouse), and the entry files read.
small_threshold = test_dlq_index.small_threshold
reads = test_dlq_index.reads

NORM = DlqFilter(reason="normalization_failed")
VALID = DlqFilter(reason="validation_failed")
STORE = DlqFilter(reason="storage_failed")


def inode(path: Path, entry_id: str) -> int:
    return (path / f"{entry_id}.json").stat().st_ino


def refail_twice(dlq: DeadLetterQueue, path: Path, entry_id: str) -> bool:
    """Rewrite `entry_id` twice through `dlq` (validation_failed, then storage_failed "still
    down"), its name ending with its first inode, as ext4 gives it when no other file took the
    inode the first rewrite freed (test_ext4_... shows it for real): the first inode is held by a
    second link meanwhile, and the second rewrite's content goes into it and is renamed over the
    name, so the journal line and the final content are the rewrite's own. Returns True."""
    entry = path / f"{entry_id}.json"
    hold = path / ".hold"
    os.link(entry, hold)
    first = hold.stat().st_ino
    refail(dlq, entry_id, "validation_failed", "class_uid: required")
    refail(dlq, entry_id, "storage_failed", "still down")
    hold.write_bytes(entry.read_bytes())  # same inode, the second rewrite's bytes
    os.replace(hold, entry)
    return inode(path, entry_id) == first


def journal_dir(path: Path) -> Path:
    return path / dlqindex.STATE_DIR / dlqjournal.JOURNAL_DIR


def agrees(dlq: DeadLetterQueue, path: Path) -> None:
    for flt in (NORM, VALID, STORE, DlqFilter(error="still down"), DlqFilter(error="error 0")):
        assert listed(dlq, flt) == (expected(path, flt), len(expected(path, flt))), flt


def test_ext4_gives_a_name_rewritten_twice_its_first_inode_back_and_listings_see_the_rewrite(tmp_path):
    """The fault for real on the test machine's disk (ext4): rewrites give the name its first inode
    back unless another file on the disk took it meanwhile (a few entries are tried). Where no inode
    comes back the listings must be right all the same; the other tests force the reuse."""
    path = tmp_path / "dlq"
    ids = fill(path, 8)
    reader = queue(path)
    assert listed(reader, NORM)[0] == expected(path, NORM)  # summaries cached under their inodes
    rewriter = queue(path)
    for entry_id in [i for i in ids if i in expected(path, NORM)]:
        first = inode(path, entry_id)
        refail(rewriter, entry_id, "validation_failed", "class_uid: required")
        refail(rewriter, entry_id, "storage_failed", "still down")
        if inode(path, entry_id) == first:
            break
    assert entry_id not in listed(reader, NORM)[0]
    assert entry_id in listed(reader, STORE)[0]
    agrees(reader, path)


# -- the fault: warm and cold caches, listings and a purge -----------------------------------


def test_a_warm_catalog_lists_an_entry_rewritten_twice_elsewhere_under_its_new_reason(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path, 3)  # below the index threshold: the per-process catalog alone
    reader = queue(path)
    assert ids[0] in listed(reader, NORM)[0]  # its summary now cached under its inode

    assert refail_twice(queue(path), path, ids[0])

    assert ids[0] not in listed(reader, NORM)[0]
    assert ids[0] in listed(reader, STORE)[0]
    assert listed(reader, DlqFilter(error="still down"))[0] == [ids[0]]
    assert list(reader.iter_matching(STORE)) == [i for i in expected(path, STORE)]
    agrees(reader, path)


def test_a_warm_catalog_over_the_index_lists_it_as_it_is_now(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    reader = save_index(path)  # read every entry, saved the index, keeps it
    assert ids[0] in listed(reader, NORM)[0]

    assert refail_twice(queue(path), path, ids[0])

    assert ids[0] in listed(reader, STORE)[0] and ids[0] not in listed(reader, NORM)[0]
    agrees(reader, path)


def test_an_entry_rewritten_twice_while_the_index_is_being_saved_is_not_taken_from_it(tmp_path,
                                                                                     monkeypatch):
    """The index is built from what was read before its journal position; a rewrite that another
    thread of the process follows while the file is written is after it, so the entry is read again."""
    path = tmp_path / "dlq"
    ids = fill(path)
    reader = queue(path)
    real_save = dlqindex.save

    def save_meanwhile(dlq_path: Path, index: dlqindex.SummaryIndex) -> bool:
        assert refail_twice(queue(path), path, ids[0])
        reader.stats()  # another thread: lists the folder, following the journal
        return real_save(dlq_path, index)

    monkeypatch.setattr(dlqindex, "save", save_meanwhile)
    assert ids[0] in listed(reader, NORM)[0]  # every entry read: the index is saved
    monkeypatch.setattr(dlqindex, "save", real_save)

    assert ids[0] not in listed(reader, NORM)[0]
    assert ids[0] in listed(reader, STORE)[0]
    agrees(reader, path)


def test_an_entry_read_while_it_was_rewritten_twice_is_not_cached_with_its_old_content(tmp_path,
                                                                                      monkeypatch):
    """A listing read the entry's old content; before it was cached, the entry was rewritten twice (its
    inode back) and another thread followed the journal: the old summary must not stand for it."""
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    reader = queue(path)
    real_read = dlq_module.read_regular_ino
    raced: list[str] = []

    def read_meanwhile(file: str, max_bytes: int) -> tuple[bytes, int]:
        got = real_read(file, max_bytes)
        if file.endswith(f"{ids[0]}.json") and not raced:
            raced.append(file)
            assert refail_twice(queue(path), path, ids[0])
            reader.stats(verify_budget_s=0)  # another thread: lists the folder, following the journal
        return got

    monkeypatch.setattr(dlq_module, "read_regular_ino", read_meanwhile)
    assert ids[0] in reader.iter_matching(NORM)  # matched on what was read: true when it was read
    monkeypatch.setattr(dlq_module, "read_regular_ino", real_read)

    assert raced and ids[0] not in list(reader.iter_matching(NORM))
    assert ids[0] in listed(reader, STORE)[0]


def test_an_entry_that_did_not_parse_when_read_and_was_rewritten_meanwhile_is_not_marked_corrupt(
        tmp_path, monkeypatch):
    """The entry's bytes did not parse when read (a damaged file); before that was cached, a replay
    rewrote it into a valid one under its first inode and another thread followed the journal: the
    rewritten entry must not be taken for corrupt (and hidden from this process's listings)."""
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    entry, hold = path / f"{ids[0]}.json", path / ".hold"
    good = {**json.loads(entry.read_bytes()), "reason": "storage_failed", "error": "still down"}
    entry.write_bytes(b"{damaged")
    reader = queue(path)
    real_read = dlq_module.read_regular_ino

    def rewrite_meanwhile(file: str, max_bytes: int) -> tuple[bytes, int]:
        got = real_read(file, max_bytes)
        if file.endswith(entry.name):
            monkeypatch.setattr(dlq_module, "read_regular_ino", real_read)
            os.link(entry, hold)  # the first inode, for the rewritten content to come back to
            queue(path).rewrite(ids[0], dict(good))
            hold.write_bytes(entry.read_bytes())
            os.replace(hold, entry)
            reader.stats(verify_budget_s=0)  # another thread: lists the folder, following the journal
        return got

    monkeypatch.setattr(dlq_module, "read_regular_ino", rewrite_meanwhile)
    assert ids[0] not in list(reader.iter_matching(NORM))
    assert dlq_module.read_regular_ino is real_read  # the race happened

    assert ids[0] in listed(reader, STORE)[0]
    assert reader.stats(verify_budget_s=0)["corrupt_files"] == []


def test_an_entry_that_could_not_be_opened_while_it_was_rewritten_is_not_marked_corrupt(tmp_path,
                                                                                       monkeypatch):
    """Opening the entry failed (it was not a regular file then); before that was cached, the entry
    was rewritten into a valid one and another thread followed the journal: the rewritten entry must
    not be taken for corrupt (and hidden from this process's listings)."""
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    reader = queue(path)
    real_read = dlq_module.read_regular_ino

    def fail_meanwhile(file: str, max_bytes: int) -> tuple[bytes, int]:
        if file.endswith(f"{ids[0]}.json"):
            monkeypatch.setattr(dlq_module, "read_regular_ino", real_read)
            assert refail_twice(queue(path), path, ids[0])
            reader.stats(verify_budget_s=0)  # another thread: lists the folder, following the journal
            raise OSError(40, "Too many levels of symbolic links")
        return real_read(file, max_bytes)

    monkeypatch.setattr(dlq_module, "read_regular_ino", fail_meanwhile)
    assert ids[0] not in list(reader.iter_matching(NORM))
    assert dlq_module.read_regular_ino is real_read  # the race happened

    assert ids[0] in listed(reader, STORE)[0]
    assert reader.stats(verify_budget_s=0)["corrupt_files"] == []


def test_a_new_process_with_the_index_reads_the_entries_rewritten_since_it_was_saved(tmp_path, reads):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    assert refail_twice(queue(path), path, ids[0])
    refail_twice(queue(path), path, ids[3])

    reads.clear()
    got, count = listed(queue(path), STORE)

    assert got == expected(path, STORE) and ids[0] in got and ids[3] in got
    assert count == len(got)
    # The index still answers for the rest: only the rewritten entries and the page were read.
    assert set(reads) - {f"{i}.json" for i in got} == set()
    assert sorted(set(reads) & {f"{ids[0]}.json", f"{ids[3]}.json"}) == sorted([f"{ids[0]}.json",
                                                                                f"{ids[3]}.json"])
    agrees(queue(path), path)


def test_an_entry_rewritten_since_the_index_was_saved_is_read_whatever_inode_the_index_gives(tmp_path):
    """A name in the journal since the index's position is unconfirmed: the index's row for it is
    believed under no inode, not even one no file has (here 1, with a summary the file never had)."""
    path = tmp_path / "dlq"
    ids = fill(path)
    saved = dlqindex.load(Path(save_index(path).path), 1000)
    assert saved is not None
    refail(queue(path), ids[0], "validation_failed", "class_uid: required")
    rows = [dlqindex.Row(row.name, 1, False, "storage_failed", "cisco:asa", "planted")
            if row.name == f"{ids[0]}.json" else row for row in saved.rows()]
    planted = dlqindex.SummaryIndex.build(rows)
    planted.journal = saved.journal  # saved before the rewrite
    test_dlq_index.plant(path, planted.encode(dlqindex.directory_id(path)))

    assert listed(queue(path), DlqFilter(error="planted")) == ([], 0)
    assert ids[0] in listed(queue(path), VALID)[0]
    agrees(queue(path), path)


def test_another_os_process_using_the_index_lists_it_under_its_new_reason(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    assert refail_twice(queue(path), path, ids[0])
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from telhawk_ingest import dlq\n"
        "from telhawk_ingest.config import DlqSettings\n"
        "dlq.INDEX_MIN_ENTRIES = 5\n"
        "q = dlq.DeadLetterQueue(DlqSettings(base_path=Path(sys.argv[1]), min_free_bytes=0))\n"
        "out = {r: [e['id'] for e in q.list(dlq.DlqFilter(reason=r), limit=1000)[0]]\n"
        "       for r in ('normalization_failed', 'storage_failed')}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          timeout=60, check=True)
    out = json.loads(done.stdout)
    assert ids[0] in out["storage_failed"] and ids[0] not in out["normalization_failed"]
    assert out["storage_failed"] == expected(path, STORE)


def test_a_filtered_purge_never_deletes_an_entry_whose_reason_changed(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    purger = queue(path)
    assert ids[0] in listed(purger, NORM)[0]
    assert refail_twice(queue(path), path, ids[0])

    assert purger.purge_preview(NORM)[1] == []  # fill(3): only ids[0] was normalization_failed
    assert purger.purge(NORM) == 0
    assert (path / f"{ids[0]}.json").exists()
    assert json.loads((path / f"{ids[0]}.json").read_bytes())["reason"] == "storage_failed"


def test_a_filtered_purge_through_the_index_deletes_what_matches_now(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    purger = save_index(path)
    before = expected(path, NORM)
    refail_twice(queue(path), path, ids[0])
    refail(queue(path), ids[1], "normalization_failed", "now it is")  # validation -> normalization

    assert queue(path).purge(NORM) == len(before)  # a new process, through the index
    assert (path / f"{ids[0]}.json").exists()
    assert not (path / f"{ids[1]}.json").exists()
    assert expected(path, NORM) == []
    assert listed(purger, NORM) == ([], 0)


# -- the journal itself ----------------------------------------------------------------------


def test_the_journal_is_private_and_names_each_rewrite(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    refail_twice(queue(path), path, ids[0])
    refail(queue(path), ids[1], "storage_failed", "x")

    folder = journal_dir(path)
    assert folder.stat().st_mode & 0o777 == 0o700
    files = sorted(folder.iterdir())
    assert len(files) == 2  # one per DeadLetterQueue object that rewrote
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert set(lines) == {f"{ids[0]}.json", f"{ids[1]}.json"}
    assert lines.count(f"{ids[1]}.json") == 1 and lines.count(f"{ids[0]}.json") >= 2


def test_a_rewrite_that_cannot_be_journaled_leaves_the_entry_as_it_was(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    (path / ".state").mkdir(mode=0o700, exist_ok=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, journal_dir(path))  # planted: never written through

    with pytest.raises(DLQUnavailable):
        refail(queue(path), ids[0], "storage_failed", "still down")

    assert json.loads((path / f"{ids[0]}.json").read_bytes())["reason"] == "normalization_failed"
    assert list(outside.iterdir()) == []
    assert not [n for n in os.listdir(path) if n.startswith(".tmp-")]


def test_a_writer_starts_new_files_and_old_ones_are_removed_but_the_newest(tmp_path, monkeypatch):
    monkeypatch.setattr(dlqjournal, "ROTATE_BYTES", 120)  # two lines (56 bytes each) a file
    path = tmp_path / "dlq"
    ids = fill(path, 6)
    writer = queue(path)
    with freeze_time("2026-11-01 00:00:00", tick=True):
        for entry in ids[:4]:
            refail(writer, entry, "storage_failed", "x")
    folder = journal_dir(path)
    old = sorted(os.listdir(folder))
    assert len(old) == 2
    week_ago = os.stat(folder / old[0]).st_mtime - 7 * 86400
    for name in old:
        os.utime(folder / name, (week_ago, week_ago))

    refail(queue(path), ids[4], "storage_failed", "x")  # a new writer's file: the old ones go
    now = sorted(os.listdir(folder))
    assert now[:1] == old[1:] and len(now) == 2  # the newest when it looked is kept
    assert now[1] > old[1]

    refail(queue(path), ids[5], "storage_failed", "x")
    assert sorted(os.listdir(folder))[0] == now[1]  # old[1] went at the next new file


def test_the_newest_journal_file_is_kept_however_old():
    files = {"0000000000000001-0000000000000000": (10, 0.0), "0000000000000002-0000000000000000": (10, 0.0)}
    removed = dlqjournal.remove_old("/nonexistent", dict(files), now=1e9)
    assert removed == ["0000000000000001-0000000000000000"]


def test_removal_stops_at_the_first_young_file(tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    names = [f"{i:016x}-{0:016x}" for i in (1, 2, 3, 4)]
    for name in names:
        (folder / name).write_text("")
    files = {names[0]: (0, 0.0), names[1]: (0, 2e9), names[2]: (0, 0.0), names[3]: (0, 0.0)}
    assert dlqjournal.remove_old(str(folder), files, now=2e9) == [names[0]]
    assert sorted(os.listdir(folder)) == names[1:]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings and errors logged: the DLQ's INFO lines (each dead letter) are captured too when
    an earlier test left the package's loggers at INFO."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_catalog_whose_journal_was_removed_since_its_last_read_drops_everything(tmp_path, caplog):
    path = tmp_path / "dlq"
    ids = fill(path, 3)
    with freeze_time("2026-11-01 00:00:00", tick=True):
        reader = queue(path)
        refail(queue(path), ids[2], "validation_failed", "x")  # a journal file exists
        assert ids[0] in listed(reader, NORM)[0]  # read the journal, and cached ids[0]
    refail_twice(queue(path), path, ids[0])
    for name in os.listdir(journal_dir(path)):
        os.unlink(journal_dir(path) / name)  # as if removed after RETAIN_S (or planted away)

    caplog.set_level(logging.WARNING, "telhawk_ingest.dlq")
    with freeze_time("2026-11-03 00:00:00", tick=True):
        assert ids[0] not in listed(reader, NORM)[0]  # the reader's position is two days old
        assert ids[0] in listed(reader, STORE)[0]
    assert warnings(caplog) == [
        f"DLQ rewrite journal in {path} cannot be continued: cached summaries dropped"]


def test_an_index_whose_journal_was_removed_since_it_was_saved_is_not_used(tmp_path, reads, caplog):
    path = tmp_path / "dlq"
    ids = fill(path)
    with freeze_time("2026-11-01 00:00:00", tick=True):
        refail(queue(path), ids[2], "validation_failed", "x")
        save_index(path)
    refail_twice(queue(path), path, ids[0])
    for name in os.listdir(journal_dir(path)):
        os.unlink(journal_dir(path) / name)

    with freeze_time("2026-11-03 00:00:00", tick=True), caplog.at_level(logging.INFO, "telhawk_ingest.dlq"):
        reads.clear()
        got = listed(queue(path), STORE)[0]
    assert got == expected(path, STORE) and ids[0] in got
    assert len(set(reads)) == len(ids)  # every entry read again: nothing taken from the index
    assert f"DLQ summary index in {path} ignored: the rewrite journal since it was saved is gone" in [
        r.getMessage() for r in caplog.records]


def test_an_old_index_whose_journal_files_are_all_there_is_still_used(tmp_path, reads):
    path = tmp_path / "dlq"
    ids = fill(path)
    with freeze_time("2026-11-01 00:00:00", tick=True):
        refail(queue(path), ids[2], "validation_failed", "x")
        save_index(path)
    with freeze_time("2026-11-05 00:00:00", tick=True):
        reads.clear()
        got = listed(queue(path), STORE)[0]
    assert got == expected(path, STORE)
    assert set(reads) == {f"{i}.json" for i in got}  # the page only


def test_a_summary_read_before_a_journal_line_is_not_cached_after_it():
    catalog = dlq_module._Catalog()
    summary = dlq_module.Summary("normalization_failed", "x", "e", 1)
    before = catalog.epoch
    catalog.invalidate(["failed_1_" + "0" * 32 + ".json"])  # read meanwhile by another thread
    catalog.put("failed_1_" + "0" * 32 + ".json", 7, summary, since=before)
    assert catalog.get("failed_1_" + "0" * 32 + ".json", 7) is False
    catalog.put("failed_1_" + "0" * 32 + ".json", 7, summary, since=catalog.epoch)
    assert catalog.get("failed_1_" + "0" * 32 + ".json", 7) == summary


def test_a_summary_read_before_a_later_journal_line_or_a_clear_is_not_cached():
    catalog = dlq_module._Catalog()
    name, other = (f"failed_{n}_{'0' * 32}.json" for n in (1, 2))
    summary = dlq_module.Summary("normalization_failed", "x", "e", 1)
    catalog.invalidate([other])
    catalog.invalidate([other])  # each journal read counts: reads are ordered against all of them

    before = catalog.epoch
    catalog.invalidate([name])
    catalog.put(name, 7, summary, since=before)
    assert catalog.get(name, 7) is False

    before = catalog.epoch
    catalog.clear()
    catalog.put(name, 7, summary, since=before)
    assert catalog.get(name, 7) is False


def test_a_name_found_in_the_journal_is_neither_corrupt_nor_sized_until_read_again(tmp_path):
    """Its inode may be the one it had before (a name rewritten twice): the size and corruption
    known for it are dropped with its summary, and its file is looked at again."""
    catalog = dlq_module._Catalog()
    name = f"failed_1_{'0' * 32}.json"
    (tmp_path / name).write_bytes(b"{}" * 25)
    ino = (tmp_path / name).stat().st_ino
    catalog.put(name, ino, dlq_module.CORRUPT, size=100)
    assert catalog.corrupt == {name}

    catalog.invalidate([name])

    assert catalog.corrupt == set()
    assert catalog.total_size(frozenset({name}), {name: ino}, tmp_path) == 50


def plant_link(path: Path, tmp_path: Path) -> str:
    """An entry name in `path` that is a symbolic link to a record outside it; returns its id."""
    outside = tmp_path / "outside.json"
    entry_id = f"failed_1700000000_{'a' * 32}"
    record = {**dlq_module.make_record({"source_type": "x"}, "storage_failed", "e"), "id": entry_id}
    outside.write_bytes(json.dumps(record).encode())
    path.mkdir(exist_ok=True)
    os.symlink(outside, path / f"{entry_id}.json")
    return entry_id


def test_an_entry_that_is_a_link_is_tried_once_per_process_and_reported_corrupt(tmp_path, reads):
    path = tmp_path / "dlq"
    dlq = queue(path)
    entry_id = plant_link(path, tmp_path)

    assert listed(dlq, STORE) == ([], 0)
    assert listed(dlq, STORE) == ([], 0)
    assert dlq.stats()["corrupt_files"] == [f"{entry_id}.json"]
    assert reads == [f"{entry_id}.json"]


def test_a_link_replaced_by_a_rewrite_while_it_was_marked_is_not_taken_for_corrupt(tmp_path, monkeypatch):
    """The name was a link when opened; before its inode is read to mark it corrupt, a rewrite renames
    a real record over it and another thread follows that journal line: the mark would hide it."""
    path = tmp_path / "dlq"
    dlq = queue(path)
    entry_id = plant_link(path, tmp_path)
    target = str(path / f"{entry_id}.json")
    real = os.lstat
    raced: list[str] = []

    def lstat(file: os.PathLike | str, *args: object, **kwargs: object) -> os.stat_result:
        if str(file) == target and not raced:
            raced.append(target)
            os.replace(tmp_path / "outside.json", target)
            dlq._catalog.invalidate([f"{entry_id}.json"])
        return real(file, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    assert listed(dlq, STORE) == ([], 0)

    assert raced and listed(dlq, STORE) == ([entry_id], 1)
    assert dlq.stats()["corrupt_files"] == []


def test_an_entry_removed_and_written_again_with_its_old_inode_is_read_afresh(tmp_path):
    """A message delivered again after its entry was replayed away writes the same name (its
    envelope's), and ext4 may give it the inode the removed file had: nothing learned of the removed
    entry (corrupt, its size) may stand for the new one."""
    path = tmp_path / "dlq"
    dlq = queue(path)
    entry_id = plant_link(path, tmp_path)
    entry, hold = path / f"{entry_id}.json", path / ".hold"
    entry.unlink()
    entry.write_bytes(b"{trunc")
    assert listed(dlq, STORE) == ([], 0)
    assert dlq.stats()["corrupt_files"] == [entry.name]
    os.link(entry, hold)  # keeps the inode for the next file under the name

    assert dlq.remove([entry_id]) == [entry_id]
    hold.write_bytes((tmp_path / "outside.json").read_bytes())
    os.replace(hold, entry)

    stats = dlq.stats(verify_budget_s=0)
    assert (stats["corrupt_files"], stats["pending_bytes"]) == ([], entry.stat().st_size)
    assert listed(dlq, STORE) == ([entry_id], 1)


# -- planted and damaged journal files: at worst entries are read again --------------------------


def plant_journal(path: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    folder = journal_dir(path)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path / dlqindex.STATE_DIR, 0o700)
    target = folder / name
    target.write_bytes(data)
    os.chmod(target, mode)
    return target


JUNK = [
    b"\x00\xff garbage without a line end",
    b"../../etc/passwd\nfailed_1_zz.json\n\n" + b"x" * 5000 + b"\n",
    b"failed_1700000000_" + b"0" * 32 + b".json\n",  # an entry that does not exist
]


@pytest.mark.parametrize("data", JUNK)
def test_planted_journal_lines_never_hide_or_invent_entries(tmp_path, data):
    path = tmp_path / "dlq"
    ids = fill(path)
    reader = save_index(path)
    plant_journal(path, f"{9:016x}-{1:016x}", data)
    refail(queue(path), ids[0], "storage_failed", "still down")

    agrees(reader, path)
    agrees(queue(path), path)


def test_planted_journal_files_that_are_not_private_regular_files_are_skipped(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    reader = save_index(path)
    plant_journal(path, f"{9:016x}-{1:016x}", f"{ids[1]}.json\n".encode(), mode=0o666)
    os.mkfifo(journal_dir(path) / f"{9:016x}-{2:016x}")
    os.symlink("/etc/passwd", journal_dir(path) / f"{9:016x}-{3:016x}")
    refail_twice(queue(path), path, ids[0])

    agrees(reader, path)
    agrees(queue(path), path)


def test_a_journal_file_that_shrank_makes_readers_read_entries_again(tmp_path):
    path = tmp_path / "dlq"
    ids = fill(path)
    reader = save_index(path)
    refail(queue(path), ids[0], "storage_failed", "still down")
    agrees(reader, path)  # reader's position is past that line
    journal = next(journal_dir(path).iterdir())
    journal.write_bytes(b"")  # truncated by someone
    refail_twice(queue(path), path, ids[1])

    agrees(reader, path)
    agrees(queue(path), path)


def set_journal_position(path: Path, position: object) -> None:
    """Replace the journal position in the header of the index saved under `path`."""
    data = index_file(path).read_bytes()
    magic, rest = data[:len(dlqindex.MAGIC)], data[len(dlqindex.MAGIC):]
    header, body = rest.split(b"\n", 1)
    fields = json.loads(header)
    fields["journal"] = position
    index_file(path).write_bytes(magic + json.dumps(fields).encode() + b"\n" + body)


def test_an_index_with_a_damaged_journal_position_is_ignored(tmp_path, reads, caplog):
    path = tmp_path / "dlq"
    fill(path)
    save_index(path)
    set_journal_position(path, {"offsets": {"../x": -1}, "at": "now"})

    reads.clear()
    with caplog.at_level(logging.WARNING, "telhawk_ingest.dlq"):
        got = listed(queue(path), STORE)[0]
    assert got == expected(path, STORE)
    assert len(set(reads)) == len(expected(path, DlqFilter()))
    assert warnings(caplog) == [
        f"DLQ summary index in {path} ignored: journal position fields of the wrong type"]


def test_an_index_saved_without_a_journal_position_is_used_from_the_journal_start(tmp_path, reads):
    path = tmp_path / "dlq"
    ids = fill(path)
    save_index(path)
    set_journal_position(path, None)

    reads.clear()
    got = listed(queue(path), STORE)[0]
    assert got == expected(path, STORE)
    assert set(reads) == {f"{i}.json" for i in got}  # the page only: the rest from the index
    assert len(got) < len(ids)


def test_an_entry_this_process_wrote_and_another_rewrote_twice_before_any_listing(tmp_path):
    path = tmp_path / "dlq"
    writer = queue(path)  # knows the summaries of what it writes, without reading them back
    entry = writer.write(dlq_module.make_record({"source_type": "x", "payload": "p"}, "normalization_failed",
                                                "boom"))
    assert refail_twice(queue(path), path, entry)

    assert listed(writer, NORM) == ([], 0)
    assert listed(writer, STORE) == ([entry], 1)


def test_a_warm_catalog_reads_again_only_the_entries_the_journal_names(tmp_path, reads):
    path = tmp_path / "dlq"
    ids = fill(path, 4)  # below the index threshold: the catalog alone
    reader = queue(path)
    assert list(reader.iter_matching(STORE)) == expected(path, STORE)
    other = queue(path)
    refail_twice(other, path, ids[1])
    refail(other, ids[3], "storage_failed", "once")

    reads.clear()
    assert list(reader.iter_matching(STORE)) == expected(path, STORE)
    assert sorted(reads) == sorted([f"{ids[1]}.json", f"{ids[3]}.json"])
