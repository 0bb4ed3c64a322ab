"""Entry names of both kinds (SPEC §7): ordinary ones (32 hex digits, their seconds the failure's)
and those named after their envelope (a UUID with dashes, their seconds the publish time), told
apart by the name alone; ids of neither shape, and anything reaching outside the folder, refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telhawk_ingest import dlqindex, dlqjournal
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import FILE_RE, DeadLetterQueue, DlqFilter, check_id, is_named, make_record
from telhawk_ingest.errors import ApiError
from telhawk_ingest.triggers import envelope_id
from tests.unit import test_dlq_index

reads = test_dlq_index.reads  # the entry files a DLQ opens to read

UUID = "019b76da-a800-7a40-9023-bc23c65a88fe"


@pytest.mark.parametrize("entry_id", [f"failed_1767225600_{UUID}", f"failed_0_{'0' * 32}",
                                      f"failed_1796032781_{UUID.replace('-', '')}"])
def test_both_kinds_of_names_are_entry_ids(entry_id):
    assert check_id(entry_id) == entry_id
    assert FILE_RE.fullmatch(f"{entry_id}.json")
    assert is_named(entry_id) == ("-" in entry_id)


@pytest.mark.parametrize("entry_id", [
    f"failed_1_{UUID}/../../etc/passwd", f"failed_1_{UUID.upper()}", f"failed_1_{UUID[:-1]}",
    f"failed_1_{UUID}-0", f"failed_1_{UUID.replace('-', '')}-", "failed_1_../" + "0" * 29,
    f"failed_1_{UUID[:8]}{UUID[9:]}", f"failed_1_{UUID}\n",
])
def test_anything_else_is_refused_before_the_filesystem(entry_id):
    with pytest.raises(ApiError) as caught:
        check_id(entry_id)
    assert caught.value.status == 400


def triggered(published_ms: int, failed_at: float) -> dict:
    envelope = {"id": envelope_id("sqs", "q", "m", published_ms, 0), "source": "s", "source_type": "x",
                "format": "raw", "payload": "p", "attributes": {}, "received_at": "2026-11-30T10:00:00Z"}
    return make_record(envelope, "normalization_failed", "no normalizer", now=failed_at)


def test_a_triggered_entry_is_timed_by_its_record_and_a_corrupt_one_by_its_name(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    with dlq.reserve([triggered(1_514_764_800_000, 1_796_032_781.5)], named=True) as held:
        [named] = held.write()  # the README's sample SQS event: sent in 2018
    ordinary = dlq.write(triggered(0, 1_796_032_000.0), now=1_796_032_000)

    assert named.startswith("failed_1514764800_") and is_named(named) and not is_named(ordinary)
    assert dlq.oldest_entry_time() == 1_796_032_000  # the ordinary one failed first
    assert [i for i in dlq.iter_matching(DlqFilter(since=1_796_032_500), parse=False)] == [named]
    assert dlq.oldest(1, 0) == [ordinary]

    # A named entry that cannot be read has no first failure: its name's time stands in for it,
    # and time filters, which cannot place it, leave it out as listings leave corrupt entries out.
    (dlq.path / f"{named}.json").write_bytes(b"{not json")
    dlq._catalog.clear()
    assert dlq.oldest_entry_time() == 1_514_764_800
    assert list(dlq.iter_matching(DlqFilter(until=1_796_033_000), parse=False)) == [ordinary]
    assert dlq.list(DlqFilter(since=0))[1] == 1


def test_a_rewrite_of_a_triggered_entry_is_in_the_journal_every_reader_follows(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    with dlq.reserve([triggered(1_514_764_800_000, 1_796_032_781.5)], named=True) as held:
        [named] = held.write()
    before = dlqjournal.Position({}, time.time())
    record = dlq.read(named)
    record.update(reason="storage_failed", stage="store", attempts=2)
    dlq.rewrite(named, record)

    directory = dlqjournal.journal_dir(dlq.path, dlqindex.state_dir(dlq.path))
    _, names = dlqjournal.read(directory, before)
    assert names == {f"{named}.json"}  # so a name given its old inode back is read again
    assert dlq.list(DlqFilter(reason="storage_failed", since=1_796_032_700))[1] == 1


def named_and_ordinary(tmp_path: Path, reads: list[str]) -> tuple[DeadLetterQueue, str, str]:
    """A triggered entry named for a message that first failed in 2018, and an ordinary one that
    failed now; the DLQ of another process, which has read nothing yet."""
    writer = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    with writer.reserve([triggered(1_514_764_800_000, 1_796_032_781.5)], named=True) as held:
        [named] = held.write()
    ordinary = writer.write(triggered(0, 1_796_032_900.0), now=1_796_032_900)
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    reads.clear()
    return dlq, named, ordinary


def test_a_triggered_entry_is_read_once_for_its_first_failure_and_an_unchanged_folder_not_at_all(
        tmp_path, reads):
    dlq, named, ordinary = named_and_ordinary(tmp_path, reads)

    assert dlq.oldest(1, 0) == [named]
    assert dlq.oldest(2, 0) == [named, ordinary]
    assert dlq.oldest_entry_time() == 1_796_032_781
    assert reads == [f"{named}.json"]  # once per process and inode, however many listings

    # A folder unchanged since well before the listing: the answer is kept with the listing, and
    # nothing is looked at again, even where the summaries were forgotten meanwhile.
    os.utime(dlq.path, (time.time() - 10, time.time() - 10))
    assert dlq.oldest_entry_time() == 1_796_032_781
    dlq._catalog.clear()
    reads.clear()
    assert dlq.oldest_entry_time() == 1_796_032_781
    assert reads == []


def test_a_time_filter_reads_a_triggered_entry_once_however_many_listings(tmp_path, reads):
    dlq, named, ordinary = named_and_ordinary(tmp_path, reads)

    for _ in range(3):  # the named entry failed before the window: placed, not listed
        assert [r["id"] for r in dlq.list(DlqFilter(since=1_796_032_800))[0]] == [ordinary]

    assert reads == [f"{named}.json"] + [f"{ordinary}.json"] * 3  # the page is read each time
