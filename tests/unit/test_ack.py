"""Indexer acknowledgement pieces: channels, ack id counters and the ack query (SPEC §3)."""

from __future__ import annotations

import threading

import orjson
import pytest

from telhawk_ingest.ack import (
    MAX_ACKS_PER_QUERY,
    MAX_CHANNELS,
    AckIds,
    ack_answer,
    channel,
    parse_ack_query,
)
from telhawk_ingest.errors import HEC_CODES, HecError
from telhawk_ingest.hec import HecRequest

GUID = "fe0ecfad-13d5-401b-847d-77833bd77131"
OTHER = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928"


def request(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> HecRequest:
    return HecRequest("POST", "/services/collector/event", headers or {}, query or {})


def refusal(call, *args) -> tuple[int, int, str]:
    with pytest.raises(HecError) as caught:
        call(*args)
    return caught.value.code, caught.value.status, caught.value.body()["text"]


def test_the_code_table_has_splunks_channel_and_ack_texts():
    assert HEC_CODES[10] == (400, "Data channel is missing")
    assert HEC_CODES[11] == (400, "Invalid data channel")
    assert HEC_CODES[14] == (400, "ACK is disabled")


def test_the_channel_comes_from_the_header_in_any_header_case():
    assert channel(request({"X-Splunk-Request-Channel": GUID})) == GUID
    assert channel(request({"x-splunk-request-channel": GUID})) == GUID


def test_the_channel_comes_from_the_query_parameter():
    assert channel(request(query={"channel": GUID})) == GUID


def test_a_header_wins_over_the_query_parameter_and_a_blank_one_counts_as_absent():
    assert channel(request({"X-Splunk-Request-Channel": GUID}, {"channel": OTHER})) == GUID
    assert channel(request({"X-Splunk-Request-Channel": "  "}, {"channel": OTHER})) == OTHER


def test_an_upper_case_guid_is_the_same_channel_as_its_lower_case_form():
    # Firehose and Splunk's own examples write channels in upper case.
    assert channel(request({"X-Splunk-Request-Channel": GUID.upper()})) == GUID


@pytest.mark.parametrize("headers, query", [({}, {}), ({"X-Splunk-Request-Channel": ""}, {"channel": ""}),
                                            ({"X-Splunk-Request-Channel": " \t"}, {})])
def test_no_channel_is_code_10(headers, query):
    assert refusal(channel, request(headers, query)) == (10, 400, "Data channel is missing")


@pytest.mark.parametrize("value", [
    "my-channel",
    GUID.replace("-", ""),                   # the 32-digit form without hyphens
    "{" + GUID + "}",                        # braces
    "urn:uuid:" + GUID,
    GUID + "0",
    GUID[:-1] + "g",                         # not hexadecimal
    GUID + "\n" + OTHER,
])
def test_a_channel_that_is_not_a_guid_is_code_11(value):
    assert refusal(channel, request({"X-Splunk-Request-Channel": value})) == (11, 400, "Invalid data channel")
    assert refusal(channel, request(query={"channel": value}))[0] == 11


def test_ack_ids_count_from_zero_per_channel_and_channels_are_independent():
    ids = AckIds()
    assert [ids.next_id(GUID) for _ in range(3)] == [0, 1, 2]
    assert ids.next_id(OTHER) == 0
    assert ids.next_id(GUID) == 3
    assert ids.next_id(OTHER) == 1


def test_the_channel_map_is_bounded_and_forgets_the_least_recently_used_channel():
    ids = AckIds(max_channels=2)
    ids.next_id("a")
    ids.next_id("b")
    ids.next_id("a")            # "b" is now the least recently used
    ids.next_id("c")            # over the cap: "b" is forgotten
    assert len(ids) == 2
    assert ids.next_id("a") == 2
    assert ids.next_id("b") == 0    # forgotten: starts again, as after a restart


def test_the_default_cap_holds_under_many_client_chosen_channels():
    ids = AckIds()
    for n in range(MAX_CHANNELS + 50):
        ids.next_id(f"{n:08x}-0000-4000-8000-000000000000")
    assert len(ids) == MAX_CHANNELS
    assert MAX_CHANNELS == 10_000


def test_a_cap_below_one_is_refused():
    with pytest.raises(ValueError):
        AckIds(max_channels=0)


def test_concurrent_requests_on_one_channel_get_distinct_consecutive_ids():
    ids, got = AckIds(), []
    lock = threading.Lock()

    def take() -> None:
        mine = [ids.next_id(GUID) for _ in range(200)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1600))


def test_an_ack_query_gives_its_ids_and_the_answer_says_true_for_each_once():
    ack_ids = parse_ack_query(b'{"acks": [0, 1, 2, 1]}')
    assert ack_ids == [0, 1, 2, 1]
    assert ack_answer(ack_ids) == {"acks": {"0": True, "1": True, "2": True}}
    assert orjson.dumps(ack_answer([7])) == b'{"acks":{"7":true}}'


def test_an_empty_ack_list_and_extra_keys_are_fine():
    assert parse_ack_query(b'{"acks": [], "other": 1}') == []
    assert ack_answer([]) == {"acks": {}}


def test_an_ack_query_may_hold_the_maximum_number_of_ids():
    ack_ids = list(range(MAX_ACKS_PER_QUERY))
    assert parse_ack_query(orjson.dumps({"acks": ack_ids})) == ack_ids


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"[0, 1]",
    b'{"ack": [0]}',
    b'{"acks": 0}',
    b'{"acks": "0,1"}',
    b'{"acks": null}',
    b'{"acks": [-1]}',
    b'{"acks": [1.0]}',
    b'{"acks": [true]}',
    b'{"acks": ["1"]}',
    b'{"acks": [[1]]}',
    b'{"acks": [18446744073709551616]}',     # past 64 bits: decoded as a float
    orjson.dumps({"acks": list(range(MAX_ACKS_PER_QUERY + 1))}),
])
def test_a_malformed_ack_query_is_code_6(body):
    code, status, text = refusal(parse_ack_query, body)
    assert (code, status, text) == (6, 400, "Invalid data format")
