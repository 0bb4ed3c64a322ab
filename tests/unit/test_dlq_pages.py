"""Listing pages are bounded by bytes as well as count: a page ends before the record that would pass
the bytes, and a record too large for any page is listed without its envelope, never with part of
it (SPEC §11)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import LIST_PAGE_BYTES, DeadLetterQueue, DlqFilter, make_record


@pytest.fixture
def dlq(tmp_path: Path) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))


def write(dlq: DeadLetterQueue, n: int, payload_bytes: int, source_type: str = "cisco_asa") -> str:
    envelope = {"id": f"env-{n}", "source": "fw", "source_type": source_type, "format": "raw",
                "payload": "x" * payload_bytes, "attributes": {}, "received_at": "2026-01-01T00:00:00.000Z"}
    return dlq.write(make_record(envelope, "normalization_failed", "boom", now=1_700_000_000.0 + n),
                     now=1_700_000_000 + n)


def size(dlq: DeadLetterQueue, entry_id: str) -> int:
    return (dlq.path / f"{entry_id}.json").stat().st_size


def every_page(dlq: DeadLetterQueue, **kw) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        page, _, cursor = dlq.list(cursor=cursor, **kw)
        pages.append(page)
        if cursor is None:
            return pages


def test_the_default_page_is_8_mib():
    assert LIST_PAGE_BYTES == 8 * 1024 * 1024


def test_a_page_ends_before_the_record_that_would_pass_its_bytes_and_the_cursor_goes_on(dlq):
    ids = [write(dlq, n, 3000) for n in range(10)]
    budget = 4 * size(dlq, ids[0])

    pages = every_page(dlq, limit=100, max_bytes=budget)

    assert [len(page) for page in pages] == [4, 4, 2]
    assert [entry["id"] for page in pages for entry in page] == ids
    assert all(sum(size(dlq, e["id"]) for e in page) <= budget for page in pages)
    assert all("truncated" not in entry for page in pages for entry in page)


def test_the_count_limit_still_applies_under_the_bytes(dlq):
    ids = [write(dlq, n, 10) for n in range(5)]
    assert [len(page) for page in every_page(dlq, limit=2, max_bytes=10**6)] == [2, 2, 1]
    assert [e["id"] for page in every_page(dlq, limit=2, max_bytes=10**6) for e in page] == ids


def test_a_page_holds_at_most_100_records_by_default(dlq):
    ids = [write(dlq, n, 10) for n in range(101)]

    page, total, cursor = dlq.list()

    assert [e["id"] for e in page] == ids[:100]
    assert (total, cursor) == (101, ids[99])


def test_a_cursor_starts_the_page_after_the_entry_it_names(dlq):
    ids = [write(dlq, n, 10) for n in range(5)]

    page, total, cursor = dlq.list(limit=2, cursor=ids[1])

    assert ([e["id"] for e in page], total, cursor) == (ids[2:4], 5, ids[3])


def test_a_record_larger_than_a_page_is_listed_without_its_envelope_and_the_cursor_goes_past_it(dlq):
    small = write(dlq, 1, 100)
    big = write(dlq, 2, 50_000)
    after = write(dlq, 3, 100)

    pages = every_page(dlq, limit=100, max_bytes=10_000)

    listed = [entry for page in pages for entry in page]
    assert [entry["id"] for entry in listed] == [small, big, after]
    entry = listed[1]
    assert "envelope" not in entry
    assert entry["truncated"] is True
    whole = orjson.loads((dlq.path / f"{big}.json").read_bytes())
    assert entry["envelope_bytes"] == len(orjson.dumps(whole["envelope"]))
    assert {k: v for k, v in entry.items() if k not in ("envelope_bytes", "truncated")} == \
        {k: v for k, v in whole.items() if k != "envelope"}
    assert all("envelope" in e and "truncated" not in e for e in (listed[0], listed[2]))


def test_a_record_of_exactly_the_page_bytes_is_whole_and_fits_after_one_listed_truncated(dlq):
    big = write(dlq, 1, 50_000)
    exact = write(dlq, 2, 3000)

    pages = every_page(dlq, limit=100, max_bytes=size(dlq, exact))

    assert [[e["id"] for e in page] for page in pages] == [[big, exact]]
    assert pages[0][0]["truncated"] is True and "envelope" not in pages[0][0]
    assert "envelope" in pages[0][1] and "truncated" not in pages[0][1]


def test_a_record_that_fits_a_page_alone_is_never_truncated_but_starts_the_next_page(dlq):
    first = write(dlq, 1, 6000)
    second = write(dlq, 2, 6000)

    pages = every_page(dlq, limit=100, max_bytes=size(dlq, first) + 100)

    assert [[e["id"] for e in page] for page in pages] == [[first], [second]]
    assert all("envelope" in e for page in pages for e in page)


def test_filtered_listings_are_bounded_the_same_way(dlq):
    ids = [write(dlq, n, 3000, source_type="a" if n % 2 else "b") for n in range(8)]
    budget = 2 * size(dlq, ids[1]) + 10

    pages = every_page(dlq, flt=DlqFilter(source_type="a"), limit=100, max_bytes=budget)

    assert [[e["id"] for e in page] for page in pages] == [ids[1:4:2], ids[5:8:2]]
