"""DLQ listings and purges by filter: the time bounds include their second, the content filters
combine, and a purge by filter leaves the rest and the corrupt files alone. Real files."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from typing import Any

import pytest

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, DlqFilter, truncated_entry
from telhawk_ingest.errors import ApiError
from tests.unit.test_dlq import record


@pytest.fixture
def dlq(tmp_path) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))


@pytest.fixture
def three(dlq):
    a = dlq.write(record(1, "normalization_failed", "no normalizer registered for x"), now=100)
    b = dlq.write(record(2, "storage_failed", "503 from storage", source_type="linux_secure"), now=200)
    c = dlq.write(record(3, "storage_failed", "400 mapper_parsing_exception"), now=300)
    return a, b, c


def listed(dlq, **flt) -> list[str]:
    page, total, cursor = dlq.list(DlqFilter(**flt))
    assert total == len(page) and cursor is None
    return [r["id"] for r in page]


def test_the_time_bounds_include_the_second_they_name(dlq, three):
    a, b, c = three
    assert listed(dlq, since=200) == [b, c]
    assert listed(dlq, until=200) == [a, b]
    assert listed(dlq, since=200, until=200) == [b]
    assert listed(dlq, since=201, until=299) == []
    assert listed(dlq, since=100, until=300) == [a, b, c]


def test_content_filters_combine_with_each_other_and_with_time(dlq, three):
    _, b, c = three
    assert listed(dlq, reason="storage_failed", source_type="cisco_asa") == [c]
    assert listed(dlq, reason="storage_failed", error="503") == [b]
    assert listed(dlq, reason="storage_failed", until=250) == [b]
    assert listed(dlq, source_type="cisco_asa", since=150) == [c]
    assert listed(dlq, error="mapper_parsing", since=301) == []
    assert listed(dlq, reason="validation_failed") == []


def test_a_purge_by_filter_deletes_only_matching_entries_and_keeps_corrupt_ones(dlq, three):
    a, b, _ = three
    corrupt = dlq.path / f"failed_250_{'ab' * 16}.json"
    corrupt.write_text('{"timestamp": "trunc')

    assert dlq.purge(DlqFilter(reason="storage_failed", since=250)) == 1

    assert sorted(os.listdir(dlq.path)) == sorted([f"{a}.json", f"{b}.json", corrupt.name])
    assert dlq.purge(DlqFilter(until=150)) == 1
    assert sorted(os.listdir(dlq.path)) == sorted([f"{b}.json", corrupt.name])
    assert dlq.purge() == 2
    assert os.listdir(dlq.path) == []


def test_an_entry_that_is_gone_or_corrupt_answers_404_or_409(dlq, three):
    a, _, _ = three
    corrupt = f"failed_250_{'ab' * 16}"
    (dlq.path / f"{corrupt}.json").write_text("[1, 2]")

    with pytest.raises(ApiError) as err:
        dlq.get(corrupt)
    assert (err.value.status, str(err.value)) == (409, f"DLQ entry {corrupt} is corrupt and cannot be read")

    dlq.delete(a)
    for call in (dlq.get, dlq.delete):
        with pytest.raises(ApiError) as err:
            call(a)
        assert (err.value.status, str(err.value)) == (404, f"no DLQ entry {a}")


@pytest.mark.parametrize("content", ["[1, 2]", '{"envelope": "not an object"}', "{trunc"])
def test_reading_a_corrupt_entry_afresh_gives_none(dlq, three, content):
    corrupt = f"failed_250_{'ab' * 16}"
    (dlq.path / f"{corrupt}.json").write_text(content)

    assert dlq.read(corrupt) is None
    assert dlq.read(three[0])["id"] == three[0]


def test_matching_ids_leave_corrupt_entries_out_unless_told_not_to_parse(dlq, three):
    """`parse=False` (replay, which reads every entry anyway): filters on times alone are matched on
    ordinary names, corrupt files included; an entry named after its envelope is placed in time by
    its record, so with a time filter only."""
    a, b, c = three
    corrupt = f"failed_250_{'ab' * 16}"
    named = f"failed_260_{'0' * 8}-0000-7000-8000-{'0' * 12}"
    for entry in (corrupt, named):
        (dlq.path / f"{entry}.json").write_text("{trunc")

    assert list(dlq.iter_matching(DlqFilter())) == [a, b, c]
    assert list(dlq.iter_matching(DlqFilter(since=150))) == [b, c]
    assert list(dlq.iter_matching(DlqFilter(), parse=False)) == [a, b, corrupt, named, c]
    assert list(dlq.iter_matching(DlqFilter(since=150), parse=False)) == [b, corrupt, c]


def test_a_record_without_reason_error_or_source_type_is_filtered_as_having_empty_ones(dlq, three):
    sparse = f"failed_250_{'ab' * 16}"
    (dlq.path / f"{sparse}.json").write_text(json.dumps({"id": sparse, "envelope": {}}))

    assert listed(dlq, reason="") == [sparse]
    assert listed(dlq, source_type="") == [sparse]
    assert listed(dlq, error="") == [three[0], three[1], sparse, three[2]]
    for flt in ({"reason": "None"}, {"source_type": "None"}, {"error": "None"}, {"error": "XX"}):
        assert listed(dlq, **flt) == []


def test_a_corrupt_entry_repaired_in_place_is_no_longer_reported_once_read(dlq, three):
    """An operator fixing the file where it is (same inode): the next page that reads it finds a
    record, and health stops calling it corrupt."""
    entry = f"failed_250_{'ab' * 16}"
    path = dlq.path / f"{entry}.json"
    path.write_text("{trunc")
    assert dlq.stats()["corrupt_files"] == [path.name]

    with open(path, "r+") as fixed:
        fixed.write(json.dumps({"id": entry, "envelope": {}, "reason": "storage_failed"}))

    assert [r["id"] for r in dlq.list()[0]] == [three[0], three[1], entry, three[2]]
    assert dlq.stats()["corrupt_files"] == []


def test_a_truncated_entry_keeps_every_member_but_the_envelope_and_says_how_large_it_was(dlq, three):
    a, _, _ = three
    stored = json.loads((dlq.path / f"{a}.json").read_text())

    entry = truncated_entry(stored)

    envelope_json = json.dumps(stored["envelope"], separators=(",", ":"), ensure_ascii=False)
    assert entry == {**{k: v for k, v in stored.items() if k != "envelope"},
                     "envelope_bytes": len(envelope_json.encode()), "truncated": True}
    assert list(entry)[-2:] == ["envelope_bytes", "truncated"]


def test_the_health_figures_of_a_dlq_with_entries_a_corrupt_file_a_temp_file_and_a_deletion(dlq, three):
    a, b, c = three
    corrupt = f"failed_250_{'ab' * 16}.json"
    (dlq.path / corrupt).write_text("{")
    (dlq.path / f".tmp-failed_260_{'cd' * 16}").write_bytes(b"{}")
    (dlq.path / "notes.txt").write_text("operator notes")
    dlq.delete(b)
    os.utime(dlq.path, (1, 1))  # a listing of a directory changed long ago is trusted at once

    health = dlq.stats(verify_budget_s=5)

    entries = [f"{a}.json", f"{c}.json", corrupt]
    free = health.pop("free_bytes")
    assert isinstance(free, int) and free > 0
    assert health == {
        "enabled": True, "pending_files": 3, "base_path": str(dlq.path), "corrupt_files": [corrupt],
        "unverified_files": 0, "temp_files": 1,
        "pending_bytes": sum((dlq.path / name).stat().st_size for name in entries),
        "refusal": None, "accepting": True,
    }


def test_health_verifies_no_file_without_a_budget_and_says_how_many_are_left(dlq, three):
    cold = type(dlq)(dlq_settings(dlq))
    assert cold.stats(verify_budget_s=0)["unverified_files"] == 3
    assert cold.stats(verify_budget_s=5)["unverified_files"] == 0


def test_health_of_a_folder_removed_underneath_counts_nothing_in_it(dlq, three):
    assert listed(dlq, reason="storage_failed") == list(three[1:])  # summaries and sizes known
    shutil.rmtree(dlq.path)

    health = dlq.stats(verify_budget_s=0)

    assert {k: health[k] for k in ("pending_files", "pending_bytes", "corrupt_files", "unverified_files",
                                   "temp_files")} == {
        "pending_files": 0, "pending_bytes": 0, "corrupt_files": [], "unverified_files": 0, "temp_files": 0}


def test_health_verifies_each_unread_file_in_turn_and_finds_a_corrupt_one_between_them(dlq, three):
    corrupt = f"failed_150_{'ab' * 16}.json"  # second of the four by name
    (dlq.path / corrupt).write_text("{")
    cold = type(dlq)(dlq_settings(dlq))

    health = cold.stats(verify_budget_s=5)

    assert (health["corrupt_files"], health["unverified_files"]) == ([corrupt], 0)


class SteppedClock:
    """dlq's `time` with a monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_health_verifies_for_20_ms_by_default_and_starts_no_file_once_they_are_spent(dlq, three,
                                                                                   monkeypatch):
    cold = type(dlq)(dlq_settings(dlq))
    clock = SteppedClock()
    monkeypatch.setattr("telhawk_ingest.dlq.time", clock)
    real_load = cold._load

    def taking_10_ms(name: str) -> dict[str, Any] | None:
        clock.now += 0.01
        return real_load(name)

    monkeypatch.setattr(cold, "_load", taking_10_ms)

    assert cold.stats()["unverified_files"] == 1  # read at 0 and 10 ms; at 20 ms the budget is spent
    assert cold.stats()["unverified_files"] == 0


def test_a_corrupt_entry_replaced_by_a_new_file_is_no_longer_reported_even_before_it_is_read(dlq, three):
    entry = f"failed_250_{'ab' * 16}"
    path = dlq.path / f"{entry}.json"
    path.write_text("{trunc")
    assert dlq.stats(verify_budget_s=5)["corrupt_files"] == [path.name]
    fixed = dlq.path / "fixed.tmp"
    fixed.write_text(json.dumps({"id": entry, "envelope": {}, "reason": "storage_failed"}))

    os.rename(fixed, path)  # a new inode under the name: what was learned of the old one no longer holds

    health = dlq.stats(verify_budget_s=0)
    assert (health["corrupt_files"], health["unverified_files"]) == ([], 1)


def test_a_listing_bounded_in_time_leaves_a_corrupt_entry_out_of_its_total_once(dlq, three):
    _, b, c = three
    (dlq.path / f"failed_250_{'ab' * 16}.json").write_text("{")

    assert listed(dlq, since=150) == [b, c]


def test_health_of_a_base_path_removed_by_hand_has_no_free_space_figure_and_refuses(dlq, three):
    shutil.rmtree(dlq.path)

    health = dlq.stats()

    assert health["free_bytes"] is None
    assert health["refusal"] == f"dlq.base_path: {dlq.path} is not usable (No such file or directory)"
    assert (health["pending_files"], health["accepting"]) == (0, False)


def dlq_settings(dlq) -> DlqSettings:
    return DlqSettings(base_path=dlq.path, min_free_bytes=0)


def test_a_filtered_listing_kept_for_its_directory_sees_entries_written_and_deleted_since(dlq, three,
                                                                                          monkeypatch):
    a, b, c = three
    monkeypatch.setattr("telhawk_ingest.dlq.LISTING_TRUST_S", 0.0)  # listings trusted at once
    assert listed(dlq, reason="storage_failed") == [b, c]
    reads: list[str] = []
    real = dlq._load_sized
    monkeypatch.setattr(dlq, "_load_sized", lambda name: reads.append(name) or real(name))

    assert listed(dlq, reason="storage_failed") == [b, c]  # the same directory: only the page is read
    assert sorted(reads) == [f"{b}.json", f"{c}.json"]
    d = dlq.write(record(4, "storage_failed", "timeout"), now=400)
    assert listed(dlq, reason="storage_failed") == [b, c, d]
    dlq.delete(b)
    assert listed(dlq, reason="storage_failed") == [c, d]
    assert listed(dlq, reason="normalization_failed") == [a]


def test_an_entry_purged_between_the_listing_and_its_read_is_left_out(dlq, three, monkeypatch):
    _, b, c = three
    reader = DeadLetterQueue(dlq_settings(dlq))  # another process, which has read nothing yet
    real = dlq_module.read_regular_ino

    def purge_meanwhile(file: str, max_bytes: int) -> tuple[bytes, int]:
        if file.endswith(f"{b}.json"):
            dlq.remove([c])
        return real(file, max_bytes)

    monkeypatch.setattr(dlq_module, "read_regular_ino", purge_meanwhile)

    page, total, cursor = reader.list(DlqFilter(reason="storage_failed"))

    assert ([r["id"] for r in page], total, cursor) == ([b], 1, None)
    assert not (dlq.path / f"{c}.json").exists()
    assert reader.stats()["pending_files"] == 2


@pytest.mark.parametrize("entry_id", ["../../etc/passwd", "/etc/passwd", "..", "failed_1_2/../../x",
                                      f"failed_1_{'0' * 32}.json", f"failed_1_{'0' * 32}\x00"])
def test_get_and_delete_refuse_an_id_that_is_not_an_entry_name_without_touching_the_filesystem(
        dlq, monkeypatch, entry_id):
    me = threading.get_ident()

    def forbidding(real):  # only in this thread: other tests' background threads keep working
        def call(*args, **kw):
            if threading.get_ident() == me:
                raise AssertionError("filesystem call")
            return real(*args, **kw)
        return call

    for name in ("stat", "lstat", "open", "unlink", "remove", "listdir", "scandir", "access"):
        monkeypatch.setattr(os, name, forbidding(getattr(os, name)))
    for call in (dlq.get, dlq.delete):
        with pytest.raises(ApiError) as err:
            call(entry_id)
        assert err.value.status == 400
