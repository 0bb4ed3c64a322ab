"""The envelope as the DLQ stores it and an operator reads it, and the ids whose time storage days
come from (RFC 9562 UUIDv7: version 7, variant 10xx)."""

from __future__ import annotations

import pytest

from telhawk_ingest.envelope import Envelope, id_time

ZERO = "00000000-0000-7000-8000-000000000000"


@pytest.mark.parametrize("variant", ["8", "9", "a", "b", "A", "B"])
def test_every_rfc_variant_digit_in_either_case_gives_the_ids_time(variant):
    assert id_time(f"0000000a-0001-7000-{variant}000-000000000000") == 0xA0001 / 1000


@pytest.mark.parametrize(
    "other",
    [
        "+0000000-0000-7000-8000-000000000000",  # int() would read the sign
        "0000_000-0000-7000-8000-000000000000",  # ... the underscore
        " 0000000-0000-7000-8000-000000000000",  # ... the space
        "\u0660" * 8 + "-0000-7000-8000-000000000000",  # ... non-ASCII digits
        "00000000x0000-7000-8000-000000000000",  # no dash after the first group
        "00000000-0000-6000-8000-000000000000",  # version 6
        "00000000-0000-7000-7000-000000000000",  # variant 0xxx
        "00000000-0000-7000-X000-000000000000",  # no hex digit where the variant is
        "00000000-0000-7000-8000-0000000000000",  # 37 characters
        "00000000-0000-7000-8000-00000000000",  # 35
    ],
)
def test_an_id_that_only_looks_like_a_uuid7_gives_no_time(other):
    assert id_time(other) is None


def make(**kw) -> Envelope:
    fields = {"id": "e1", "source": "fw", "source_type": "cisco_asa", "format": "raw", "payload": "line",
              "attributes": {"index": "net", "time": 1.5, "host": "h"},
              "received_at": "2026-01-01T00:00:00.000Z"}
    return Envelope(**{**fields, **kw})


def test_an_envelope_as_a_dict_has_the_spec_members_in_order():
    assert list(make().to_dict().items()) == [
        ("id", "e1"), ("source", "fw"), ("source_type", "cisco_asa"), ("format", "raw"), ("payload", "line"),
        ("attributes", {"index": "net", "time": 1.5, "host": "h"}),
        ("received_at", "2026-01-01T00:00:00.000Z")]


def test_index_and_time_come_from_the_attributes_and_are_none_without_them():
    assert (make().index, make().time) == ("net", 1.5)
    bare = Envelope("e1", "fw", "cisco_asa", "raw", "line")  # neither attributes nor received_at given
    assert (bare.index, bare.time, bare.attributes, bare.received_at) == (None, None, {}, "")


def test_the_payload_is_read_from_text_once_and_may_be_replaced():
    calls: list[int] = []

    def text() -> str:
        calls.append(1)
        return "from the body"

    lazy = make(payload=None, text=text, decoded={"a": 1})
    assert (lazy.payload, lazy.payload) == ("from the body", "from the body")
    assert calls == [1]
    lazy.payload = "replaced"
    assert lazy.to_dict()["payload"] == "replaced"
    assert make(payload=None, decoded={"b": [1, "x"]}).payload == '{"b":[1,"x"]}'


def test_an_envelope_without_any_payload_is_refused():
    with pytest.raises(ValueError) as refused:
        make(payload=None)
    assert str(refused.value) == "an envelope needs its payload text, a way to get it, or its decoded value"


def test_the_repr_shows_every_member():
    assert repr(make()) == (
        "Envelope(id='e1', source='fw', source_type='cisco_asa', format='raw', payload='line', "
        "attributes={'index': 'net', 'time': 1.5, 'host': 'h'}, received_at='2026-01-01T00:00:00.000Z')")
