"""Envelope ids (UUIDv7, RFC 9562) and the RFC 3339 times every record and answer carries."""

from __future__ import annotations

import uuid

import pytest

from telhawk_ingest import envelope
from telhawk_ingest.envelope import new_id, parse_time, rfc3339

NOW_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def test_an_id_is_a_uuid7_holding_its_millisecond_and_74_random_bits():
    texts = [new_id(now_ns=NOW_NS) for _ in range(2000)]

    for text in texts[:50]:
        value = uuid.UUID(text)
        assert str(value) == text and len(text) == 36 and text == text.lower()
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert value.int >> 80 == 1_700_000_000_123
        assert text.startswith("018bcfe5-687b-7")
    # The 74 random bits differ from id to id, in rand_a (12 bits) and in rand_b (62 bits) alike.
    assert len(set(texts)) == len(texts)
    assert len({uuid.UUID(t).int >> 64 & 0xFFF for t in texts}) > 1000
    assert len({uuid.UUID(t).int & ((1 << 62) - 1) for t in texts}) == len(texts)


def test_ids_take_the_current_time_and_sort_by_it(monkeypatch):
    monkeypatch.setattr(envelope.time, "time_ns", lambda: NOW_NS)
    assert uuid.UUID(new_id()).int >> 80 == 1_700_000_000_123
    earlier = new_id(now_ns=NOW_NS - 1_000_000)
    assert sorted([new_id(now_ns=NOW_NS), earlier])[0] == earlier


def test_an_id_at_the_epoch_is_still_a_uuid7():
    value = uuid.UUID(new_id(now_ns=0))
    assert value.int >> 80 == 0 and value.version == 7


def test_ids_made_at_once_are_all_different():
    assert len({new_id(now_ns=NOW_NS) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (1_700_000_000.123456, "2023-11-14T22:13:20.123Z"),
        (1_700_006_400.0, "2023-11-15T00:00:00.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (0.9999, "1970-01-01T00:00:00.999Z"),
    ],
)
def test_rfc3339_is_utc_with_milliseconds_and_z_wherever_the_server_is(ts, text, west_of_utc):
    assert rfc3339(ts) == text


def test_rfc3339_without_a_time_is_now(waits):
    assert rfc3339() == "2026-01-02T03:04:05.000Z"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.5, 1_700_000_000.5),
        (" 1700000000.25 ", 1_700_000_000.25),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20.5Z", 1_700_000_000.5),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        (" 2023-11-14T22:13:20 ", 1_700_000_000.0),  # no zone: UTC, not the server's zone
        # RFC 3339 section 5.6: "T" and "Z" may be lower case
        ("2023-11-14t22:13:20z", 1_700_000_000.0),
        ("2023-11-14T22:13:20.5z", 1_700_000_000.5),
        ("2023-11-14Z", 1_699_920_000.0),  # a date in UTC: its midnight (Z is read as +00:00)
        ("2023-11-14", 1_699_920_000.0),
    ],
)
def test_parse_time_reads_epoch_seconds_and_rfc3339_text(value, seconds, west_of_utc):
    result = parse_time(value)
    assert result == seconds and isinstance(result, float)


def test_parse_time_refuses_text_that_is_no_time():
    with pytest.raises(ValueError):
        parse_time("yesterday")
