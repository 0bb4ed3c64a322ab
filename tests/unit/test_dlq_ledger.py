"""What the DLQ records in the shared counters (its ledger, read by every process for the limits):
admitted, written, and returned when a reservation is left or a write fails; and what a failed write
leaves behind (nothing) and answers. Real files and real Counters files."""

from __future__ import annotations

import errno
import os

import pytest

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest import files
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue
from telhawk_ingest.errors import DLQUnavailable
from telhawk_ingest.stats import Counters
from tests.unit.test_dlq import record

LEDGER = ("dlq_files_admitted", "dlq_bytes_admitted", "dlq_files_written", "dlq_bytes_written",
          "dlq_files_returned", "dlq_bytes_returned")


@pytest.fixture
def shared(tmp_path):
    counters = Counters(tmp_path / "counters")
    queue = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0), ledger=counters)
    return queue, counters


def ledger(counters: Counters) -> tuple[int, ...]:
    totals = counters.totals()
    return tuple(totals[name] for name in LEDGER)


def on_disk(queue: DeadLetterQueue) -> int:
    return sum(p.stat().st_size for p in queue.path.iterdir())


def test_a_write_is_admitted_then_written_in_files_and_bytes(shared):
    queue, counters = shared
    queue.write_many([record(1), record(2)])

    size = on_disk(queue)
    assert ledger(counters) == (2, size, 2, size, 0, 0)


def test_a_reservation_left_without_writing_returns_what_it_admitted(shared):
    queue, counters = shared
    with queue.reserve([record(1)]) as held:
        held.add([record(2), record(3)])
        admitted = held.nbytes
        assert held.files == 3
        assert ledger(counters) == (3, admitted, 0, 0, 0, 0)

    assert ledger(counters) == (3, admitted, 0, 0, 3, admitted)
    assert os.listdir(queue.path) == []


def test_a_reservation_written_returns_nothing_and_adding_nothing_admits_nothing(shared):
    queue, counters = shared
    with queue.reserve([]) as held:
        held.add([])
        assert held.write() == []
        held.add([record(1)])
        [entry_id] = held.write()

    size = on_disk(queue)
    assert ledger(counters) == (1, size, 1, size, 0, 0)
    assert os.listdir(queue.path) == [f"{entry_id}.json"]


def test_what_is_added_after_a_write_and_released_is_returned_once_and_exactly(shared):
    queue, counters = shared
    with queue.reserve([record(1)]) as held:
        held.write()
        written = on_disk(queue)
        held.add([record(2)])
        added = held.nbytes
        held.release()
        assert (held.files, held.nbytes) == (0, 0)

    assert ledger(counters) == (2, written + added, 1, written, 1, added)


@pytest.mark.parametrize(("code", "hint"), [(errno.ENOSPC, " (disk full)"), (errno.EIO, "")])
def test_a_write_that_fails_part_way_leaves_no_file_answers_503_and_returns_the_batch(
        shared, monkeypatch, code, hint):
    queue, counters = shared
    real = dlq_module.write_synced
    written: list[str] = []

    def failing_second(path, data):
        if written:
            real(path, data[: len(data) // 2])  # a torn temp file, as a full disk leaves it
            raise OSError(code, os.strerror(code))
        written.append(path.name)
        real(path, data)

    monkeypatch.setattr(dlq_module, "write_synced", failing_second)

    with pytest.raises(DLQUnavailable) as failed:
        queue.write_many([record(1), record(2), record(3)])

    assert str(failed.value) == f"dlq.base_path: {queue.path} is not writable (errno {code}{hint})"
    assert os.listdir(queue.path) == []
    files_admitted, bytes_admitted, *rest = ledger(counters)
    assert files_admitted == 3
    assert rest == [0, 0, 3, bytes_admitted]
    assert queue.list()[1] == 0


def test_a_batch_whose_directory_fsync_fails_is_removed_again_and_answers_503(shared, monkeypatch):
    """Every entry was renamed into place, but their names may not survive a power cut: none stays,
    and the client's resend writes them again."""
    queue, counters = shared

    def failing(path: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(files, "fsync_dir", failing)
    with pytest.raises(DLQUnavailable) as failed:
        queue.write_many([record(1), record(2)])

    assert str(failed.value) == f"dlq.base_path: {queue.path} is not writable (errno {errno.EIO})"
    assert os.listdir(queue.path) == []
    assert queue.list()[1] == 0
    files_admitted, bytes_admitted, *rest = ledger(counters)
    assert (files_admitted, rest) == (2, [0, 0, 2, bytes_admitted])  # given back, never written


def values(admitted=(0, 0), written=(0, 0), returned=(0, 0)) -> list[int]:
    from telhawk_ingest.stats import COUNTERS

    out = [0] * len(COUNTERS)
    for names, pair in (((LEDGER[0], LEDGER[1]), admitted), ((LEDGER[2], LEDGER[3]), written),
                        ((LEDGER[4], LEDGER[5]), returned)):
        for name, value in zip(names, pair, strict=True):
            out[COUNTERS.index(name)] = value
    return out


AT = 10_000.0


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        # admitted, less returned, less what was written before the listing (so in it)
        ({"p": (AT - 5, values(written=(1, 100)))},
         {"p": (AT - 1, values((5, 500), (2, 200), (1, 100)))}, (3, 300)),
        # a file the listing's ledger did not have: nothing of it was in the listing
        ({}, {"p": (AT - 1, values((2, 20), (2, 20)))}, (2, 20)),
        # never below zero for one file, and files add up
        ({"p": (AT - 5, values(written=(9, 900)))},
         {"p": (AT - 1, values((2, 200), (9, 900))), "q": (AT - 2, values((1, 10)))}, (1, 10)),
        # a process silent for exactly STALE_TEMP_S still counts; longer, it died: its admissions lapse
        ({}, {"p": (AT - 600, values((1, 10)))}, (1, 10)),
        ({}, {"p": (AT - 600.5, values((1, 10)))}, (0, 0)),
        # a dead process's file lapses alone: the live files after it still count
        ({}, {"p": (AT - 601, values((1, 10))), "q": (AT - 1, values((2, 20))),
              "r": (AT - 2, values((4, 40)))}, (6, 60)),
    ],
)
def test_entries_that_may_be_in_place_without_being_listed(before, now, expected):
    assert dlq_module._unlisted(before, now, AT) == expected
