"""HEC request parsing: what a client sees for good and bad bodies (SPEC §3, §4)."""

from __future__ import annotations

import base64
import gzip
import tracemalloc
import zlib

import orjson
import pytest

from telhawk_ingest.config import HecToken
from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import HecError
from telhawk_ingest.hec import (
    HecRequest,
    endpoint_kind,
    parse_events,
    parse_raw,
    read_body,
)

RECEIVED = "2025-01-02T03:04:05.678Z"
LIMIT = 64 * 1024
TOKEN = HecToken(name="web", token="11111111-2222-3333-4444-555555555555")


def request(
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    path: str = "/services/collector/event",
) -> HecRequest:
    return HecRequest(method="POST", path=path, headers=headers or {}, query=query or {}, body=body)


def ingest(
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    kind: str = "event",
    token: HecToken = TOKEN,
    query: dict[str, str] | None = None,
    max_bytes: int = LIMIT,
):
    """What the service does after authentication: read the body, then parse it whole."""
    req = request(body, headers, query)
    data = read_body(req, max_bytes)
    if kind == "raw":
        return parse_raw(data, req, token, RECEIVED)
    return parse_events(data, token, RECEIVED)


def gzip_bomb(decompressed_size: int) -> bytes:
    """A small gzip body that inflates to `decompressed_size` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(decompressed_size // len(block))]
    return b"".join(parts) + packer.flush()


BAD_BODIES = [
    # (case, body, headers, kind, code, HTTP status, invalid-event-number)
    ("malformed JSON", b'{"event": "a",', {}, "event", 6, 400, 0),
    ("missing event", b'{"host": "h"}', {}, "event", 12, 400, 0),
    ("null event", b'{"event": null}', {}, "event", 13, 400, 0),
    ("empty string event", b'{"event": ""}', {}, "event", 13, 400, 0),
    ("whitespace-only event", b'{"event": " \\t "}', {}, "event", 13, 400, 0),
    ("number at top level", b"42", {}, "event", 6, 400, 0),
    ("string at top level", b'"hello"', {}, "event", 6, 400, 0),
    ("array at top level", b'[{"event": "a"}, {"event": "b"}]', {}, "event", 6, 400, 0),
    ("comma-separated objects", b'{"event": "a"}, {"event": "b"}', {}, "event", 6, 400, 1),
    ("time that is not a number", b'{"event": "a", "time": "yesterday"}', {}, "event", 6, 400, 0),
    ("time that is a boolean", b'{"event": "a", "time": true}', {}, "event", 6, 400, 0),
    ("time that is NaN text", b'{"event": "a", "time": "nan"}', {}, "event", 6, 400, 0),
    ("fields that is not an object", b'{"event": "a", "fields": ["x"]}', {}, "event", 6, 400, 0),
    ("fields with a nested object", b'{"event": "a", "fields": {"k": {"n": 1}}}', {}, "event", 15, 400, 0),
    ("host that is not a string", b'{"event": "a", "host": 7}', {}, "event", 6, 400, 0),
    ("binary garbage", bytes(range(256)), {}, "event", 6, 400, 0),
    ("invalid UTF-8 inside a string", b'{"event": "caf\xe9"}', {}, "event", 6, 400, 0),
    ("empty body", b"", {}, "event", 5, 400, None),
    ("whitespace-only body", b" \r\n\t ", {}, "event", 5, 400, None),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage-garbage", {"Content-Encoding": "gzip"}, "event", 6, 400, None),
    (
        "truncated gzip",
        gzip.compress(b'{"event": "a"}')[:-6],
        {"Content-Encoding": "gzip"},
        "event",
        6,
        400,
        None,
    ),
    ("plain body labelled gzip", b'{"event": "a"}', {"Content-Encoding": "gzip"}, "event", 6, 400, None),
    ("unsupported encoding", b'{"event": "a"}', {"Content-Encoding": "br"}, "event", 6, 400, None),
    ("oversized body", b'{"event": "' + b"x" * LIMIT + b'"}', {}, "event", 6, 413, None),
    (
        "gzip bomb over the limit",
        gzip_bomb(8 * 1024 * 1024),
        {"Content-Encoding": "gzip"},
        "event",
        6,
        413,
        None,
    ),
    ("raw body of blank lines", b"\n\r\n  \n", {}, "raw", 5, 400, None),
]


@pytest.mark.parametrize(
    ("body", "headers", "kind", "code", "status", "number"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_a_malformed_request_is_refused_with_splunks_code_and_status(
    body, headers, kind, code, status, number
):
    with pytest.raises(HecError) as caught:
        ingest(body, headers, kind=kind)
    error = caught.value
    assert (error.code, error.status) == (code, status)
    assert error.invalid_event_number == number
    answer = error.body()
    assert answer["code"] == code and isinstance(answer["text"], str)


def test_a_single_object_becomes_one_json_envelope_with_all_its_metadata():
    body = orjson.dumps(
        {
            "time": 1700000000.25,
            "host": "web-01",
            "source": "app.log",
            "sourcetype": "ocsf:authentication",
            "index": "security",
            "fields": {"env": "prod", "tags": ["a", "b"]},
            "event": {"user": "alice", "ok": True, "n": 3},
        }
    )
    [envelope] = ingest(body)
    assert envelope.format == "json"
    assert orjson.loads(envelope.payload) == {"user": "alice", "ok": True, "n": 3}
    assert envelope.source == "app.log"
    assert envelope.source_type == "ocsf:authentication"
    assert envelope.received_at == RECEIVED
    assert envelope.attributes == {
        "host": "web-01",
        "index": "security",
        "fields": {"env": "prod", "tags": ["a", "b"]},
        "time": 1700000000.25,
        "token_name": "web",
    }
    assert TOKEN.token not in orjson.dumps(envelope.to_dict()).decode()


def test_an_object_payload_is_the_events_text_as_sent():
    [envelope] = ingest(b'{"event": {"z": 1, "a": [1, 2.5, "x"],\n "m": {"k": null}} }')
    assert envelope.payload == '{"z": 1, "a": [1, 2.5, "x"],\n "m": {"k": null}}'


@pytest.mark.parametrize("event", [
    b'{"n": 18446744073709551616}',             # past 64 bits: orjson reads a float
    b'{"a": 1, "a": 2}',                        # duplicate keys: the parser keeps the last
    b'{"s": "caf\\u00e9 \\" } { \\\\"}',    # escapes, and braces inside a string
    b'{ }',
])
def test_what_a_parse_would_change_stays_as_sent_in_the_payload(event):
    [envelope] = ingest(b'{"host": "h", "event": ' + event + b', "sourcetype": "x"}')
    assert envelope.payload == event.decode()
    assert envelope.decoded == orjson.loads(event)


def test_an_object_payload_is_cut_from_the_body_only_when_read():
    [envelope] = ingest(b'{"event": {"b": "\\u00e9", "a": 1}}')
    assert envelope._payload is None  # a stored event never needs its text
    assert envelope.decoded == {"b": "\u00e9", "a": 1}
    assert envelope.to_dict()["payload"] == '{"b": "\\u00e9", "a": 1}'
    assert envelope.payload is envelope.payload  # cut once, then kept


def test_an_envelope_from_text_or_from_a_decoded_value_is_the_same_envelope():
    common = {"id": "1", "source": "s", "source_type": "ocsf", "format": "json", "received_at": "r"}
    lazy = Envelope(**common, payload=None, decoded={"k": [1, None]})
    eager = Envelope(**common, payload='{"k":[1,null]}')
    assert lazy.to_dict() == eager.to_dict()
    assert repr(lazy) == repr(eager)
    with pytest.raises(ValueError, match="payload"):
        Envelope(**common, payload=None)


def test_a_string_event_is_raw_and_its_payload_is_the_string_itself():
    [envelope] = ingest(b'{"event": "user=alice action=login"}')
    assert (envelope.format, envelope.payload) == ("raw", "user=alice action=login")


@pytest.mark.parametrize(("value", "payload"), [
    (b"42", "42"), (b"1.5", "1.5"), (b"true", "true"), (b"[1,2]", "[1,2]"),
    (b'[1, {"a": 2}]', '[1, {"a": 2}]'),
    (b"18446744073709551616", "18446744073709551616"), (b"1E+2", "1E+2"), (b"-0", "-0"),
])
def test_a_non_string_scalar_or_array_event_is_raw_json_text_as_sent(value, payload):
    [envelope] = ingest(b'{"event": ' + value + b"}")
    assert (envelope.format, envelope.payload) == ("raw", payload)


def test_metadata_falls_back_to_the_token_then_to_splunks_defaults():
    [plain] = ingest(b'{"event": "a", "index": null, "host": ""}')
    assert (plain.source, plain.source_type) == ("http:web", "httpevent")
    assert plain.attributes["index"] is None and plain.attributes["host"] is None
    assert plain.attributes["fields"] == {}
    assert "time" not in plain.attributes
    configured = HecToken(
        name="fw",
        token="t" * 8,
        default_index="netfw",
        default_sourcetype="cisco:asa",
        default_source="asa-01",
    )
    [event] = ingest(b'{"event": "a"}', token=configured)
    assert (event.source, event.source_type, event.index) == ("asa-01", "cisco:asa", "netfw")


def test_time_may_be_a_numeric_string():
    [envelope] = ingest(b'{"event": "a", "time": "1700000000.5"}')
    assert envelope.time == 1700000000.5


@pytest.mark.parametrize("separator", [b"", b" ", b"\n", b"\r\n", b"\n\n  \t"])
def test_a_batch_is_objects_concatenated_with_or_without_whitespace(separator):
    body = separator.join(orjson.dumps({"event": f"e{i}", "fields": {"i": i}}) for i in range(5))
    envelopes = ingest(body + b"\n")
    assert [e.payload for e in envelopes] == ["e0", "e1", "e2", "e3", "e4"]
    assert len({e.id for e in envelopes}) == 5


def test_braces_inside_strings_do_not_split_a_batch():
    body = b'{"event": "a}{b"}{"event": {"s": "} {"}} {"event": "c"}'
    assert [e.payload for e in ingest(body)] == ["a}{b", '{"s": "} {"}', "c"]


def test_a_missing_comma_inside_an_array_is_not_mended_by_batch_splitting():
    with pytest.raises(HecError) as caught:
        ingest(b'{"event": "a"}\n{"event": [{"b": 1}\n{"c": 2}]}')
    assert (caught.value.code, caught.value.invalid_event_number) == (6, 1)


def test_a_malformed_third_object_names_event_2_and_nothing_is_returned():
    body = b'{"event": "a"}\n{"event": "b"}\n{"event": "c", oops}\n{"event": "d"}'
    with pytest.raises(HecError) as caught:
        ingest(body)
    assert (caught.value.code, caught.value.invalid_event_number) == (6, 2)
    assert caught.value.body()["invalid-event-number"] == 2


@pytest.mark.parametrize(
    ("third", "code"),
    [(b'{"host": "h"}', 12), (b'{"event": "  "}', 13), (b'{"event": "c", "time": "soon"}', 6)],
)
def test_the_first_bad_event_of_a_batch_is_the_one_named(third, code):
    body = b'{"event": "a"}{"event": "b"}' + third + b'{"host": "h"}'
    with pytest.raises(HecError) as caught:
        ingest(body)
    assert (caught.value.code, caught.value.invalid_event_number) == (code, 2)


def test_an_index_outside_the_tokens_allowed_list_rejects_the_whole_request():
    token = HecToken(name="t", token="t" * 8, default_index="main", allowed_indexes=["main", "security"])
    assert ingest(b'{"event": "a", "index": "security"}', token=token)[0].index == "security"
    with pytest.raises(HecError) as caught:
        ingest(b'{"event": "a"}{"event": "b", "index": "finance"}', token=token)
    assert (caught.value.code, caught.value.status, caught.value.invalid_event_number) == (7, 400, 1)


def test_fields_may_hold_arrays_of_scalars():
    [envelope] = ingest(b'{"event": "a", "fields": {"tags": ["x", 1, true]}}')
    assert envelope.attributes["fields"] == {"tags": ["x", 1, True]}


def test_a_gzip_body_is_decompressed_including_multiple_members():
    body = gzip.compress(b'{"event": "a"}\n') + gzip.compress(b'{"event": "b"}')
    envelopes = ingest(body, {"content-encoding": "GZIP"})
    assert [e.payload for e in envelopes] == ["a", "b"]


def test_an_empty_gzip_body_is_no_data():
    with pytest.raises(HecError) as caught:
        ingest(gzip.compress(b""), {"Content-Encoding": "gzip"})
    assert caught.value.code == 5


def test_a_gzip_body_exactly_at_the_limit_is_accepted():
    payload = b'{"event": "' + b"x" * 100 + b'"}'
    req = request(gzip.compress(payload), {"Content-Encoding": "gzip"})
    assert read_body(req, len(payload)) == payload
    with pytest.raises(HecError) as caught:
        read_body(req, len(payload) - 1)
    assert caught.value.status == 413


def test_an_oversized_body_is_answered_in_splunks_words():
    with pytest.raises(HecError) as caught:
        read_body(request(b"x" * 101), 100)
    assert caught.value.body() == {
        "text": "Invalid data format",
        "code": 6,
        "detail": "Content-Length of 101 too large (maximum is 100)",
    }


def test_a_gzip_bomb_is_refused_without_inflating_it_in_memory():
    bomb = gzip_bomb(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(HecError) as caught:
            read_body(request(bomb, {"Content-Encoding": "gzip"}), 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 413
    assert peak < 4 * 1024 * 1024


def test_content_type_is_ignored():
    envelopes = ingest(b'{"event": "a"}', {"Content-Type": "application/x-www-form-urlencoded"})
    assert envelopes[0].payload == "a"


def test_raw_lines_become_one_envelope_each_without_blank_lines_or_carriage_returns():
    envelopes = ingest(b"first line\r\n\r\n  second  \n\n", kind="raw")
    assert [(e.format, e.payload) for e in envelopes] == [("raw", "first line"), ("raw", "  second  ")]
    assert envelopes[0].source_type == "httpevent"
    assert envelopes[0].attributes == {"host": None, "index": None, "fields": {}, "token_name": "web"}


@pytest.mark.parametrize(("body", "payloads"), [
    (b"a line\n \t ", ["a line"]),  # the last line, without a line feed, is only whitespace
    (b"a line\n\r", ["a line"]),  # a last line that is only the CR of a CRLF ending
    (b"a line\r\n\xc2\xa0\n\xe9\n", ["a line", "\ufffd"]),  # a no-break space, in a body not UTF-8
])
def test_every_blank_raw_line_is_skipped_however_it_ends_and_whatever_its_whitespace(body, payloads):
    assert [e.payload for e in ingest(body, kind="raw")] == payloads


def test_raw_metadata_comes_from_the_query_before_the_headers():
    headers = {
        "X-Splunk-Request-Sourcetype": "from-header",
        "x-splunk-request-host": "hdr-host",
        "X-Splunk-Request-Index": "hdr-index",
        "X-Splunk-Request-Source": "hdr-source",
    }
    [envelope] = ingest(b"line", headers, kind="raw", query={"sourcetype": "syslog", "index": "net"})
    assert (envelope.source_type, envelope.source) == ("syslog", "hdr-source")
    assert envelope.attributes["host"] == "hdr-host" and envelope.index == "net"


def test_a_raw_index_outside_the_allowed_list_is_refused():
    token = HecToken(name="t", token="t" * 8, default_index="main", allowed_indexes=["main"])
    with pytest.raises(HecError) as caught:
        ingest(b"line", kind="raw", token=token, query={"index": "other"})
    assert (caught.value.code, caught.value.status) == (7, 400)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/services/collector", "event"),
        ("/services/collector/event", "event"),
        ("/services/collector/event/1.0", "event"),
        ("/services/collector/event/", "event"),
        ("/services/collector/raw", "raw"),
        ("/services/collector/raw/1.0", "raw"),
        ("/services/collector/health", "health"),
        ("/services/collector/health/1.0", "health"),
        ("/services/collector/ack", "ack"),
        ("/services/collector/ack/1.0", "ack"),
        ("/services/collector/mint", None),
        ("/api/v1/dlq", None),
        ("/", None),
    ],
)
def test_each_hec_path_names_its_endpoint(path, kind):
    assert endpoint_kind(path) == kind


def test_request_headers_are_matched_case_insensitively():
    req = request(headers={"Content-ENCODING": "gzip", "authorization": "Splunk x"})
    assert req.header("content-encoding") == "gzip"
    assert req.header("Authorization") == "Splunk x"


def test_a_batch_with_one_object_per_line_is_split_by_lines():
    lines = [orjson.dumps({"event": {"n": i, "s": "} {\n"}}) for i in range(3)]
    body = b"\r\n".join(lines) + b"\n  \n\t\r\n"
    assert [e.decoded for e in ingest(body)] == [{"n": i, "s": "} {\n"} for i in range(3)]


def test_a_line_of_whitespace_json_does_not_allow_is_still_malformed():
    with pytest.raises(HecError) as caught:
        ingest(b'{"event": "a"}\n\x0c\n{"event": "b"}')
    assert caught.value.code == 6


def test_an_object_over_several_lines_after_one_line_objects_is_still_split_exactly():
    body = b'{"event": "a"}\n{"event":\n  {"b": 1}\n}\n{"event": "c"}'
    assert [e.payload for e in ingest(body)] == ["a", '{"b": 1}', "c"]
    pretty = b'{\n "event": "a"\n}\n{\n "event": "b"\n}'
    assert [e.payload for e in ingest(pretty)] == ["a", "b"]


EVENTS = [b'{"k": 1,  "s": "}{"}', b'{"n": 18446744073709551616, "n": [ ]}', b'{"e": "\\"}\\n{"}']


@pytest.mark.parametrize("layout", [
    "one object per line",
    "one object per CRLF line",
    "objects over several lines",
    "objects side by side",
    "objects side by side with braces between strings",
])
def test_every_way_a_batch_is_split_keeps_each_events_text(layout):
    pieces = [b'{"sourcetype": "x",\n "event": ' + e + b"}" if layout == "objects over several lines"
              else b'{"sourcetype": "x", "event": ' + e + b"}" for e in EVENTS]
    separator = {"one object per line": b"\n", "one object per CRLF line": b"\r\n",
                 "objects over several lines": b"\n", "objects side by side": b" ",
                 "objects side by side with braces between strings": b""}[layout]
    if layout.endswith("between strings"):
        pieces.insert(1, b'{"event": "x} {y"}')
    envelopes = ingest(separator.join(pieces) + b"\n")
    texts = [e.payload for e in envelopes if e.format == "json"]
    assert texts == [e.decode() for e in EVENTS]


def test_a_malformed_batch_split_exactly_still_keeps_each_events_text():
    body = b'{"event": {"a": "}{"}}{"event": {"b":  2}}{"event": "c", oops}'
    with pytest.raises(HecError) as caught:
        ingest(body)
    assert caught.value.invalid_event_number == 2
    envelopes = ingest(body[: body.rindex(b"{")])
    assert [e.payload for e in envelopes] == ['{"a": "}{"}', '{"b":  2}']


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A JSON value `depth` levels deep."""
    return opener * depth + closer * depth


def deep_object(depth: int) -> bytes:
    return b'{"a": ' * (depth - 1) + b"{}" + b"}" * (depth - 1)


@pytest.mark.parametrize("event", [nested(300), deep_object(300), nested(1023)])
def test_an_event_deeper_than_storage_can_write_is_taken_with_its_text(event):
    [envelope] = ingest(b'{"event": ' + event + b"}")
    assert envelope.payload == event.decode()


def test_an_object_deeper_than_the_parser_takes_is_refused_naming_it_in_the_batch():
    body = b'{"event": "a"}\n{"event": ' + nested(1024) + b"}\n{host: broken}"
    with pytest.raises(HecError) as caught:
        ingest(body)
    assert (caught.value.code, caught.value.invalid_event_number) == (6, 1)
    assert "depth limit exceeded" in caught.value.detail


def replayed(attributes: bytes) -> bytes:
    return (b'{"id": "018f0000-0000-7000-8000-000000000000", "source_type": "s", "format": "raw", '
            b'"payload": "p", "attributes": ' + attributes + b"}")


def test_a_posted_back_envelope_with_nested_fields_is_refused_with_code_15_as_an_event_is():
    with pytest.raises(HecError) as caught:
        ingest(b'{"event": "a"}' + replayed(b'{"fields": {"k": ' + deep_object(198) + b"}}"))
    error = caught.value
    assert (error.code, error.status, error.invalid_event_number) == (15, 400, 1)
    assert error.detail == "attributes.fields.k is nested"


def test_members_of_posted_back_attributes_the_service_never_writes_are_not_kept():
    [envelope] = ingest(replayed(b'{"host": "h", "extra": ' + deep_object(300) + b', "replayed_by": "x"}'))
    assert envelope.attributes == {"host": "h", "index": None, "fields": {}, "token_name": "web"}


SSHD_OK = b"Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SSHD_LATIN1 = b"Nov  4 01:02:04 web01 sshd[1235]: Failed password for jos\xe9 from 10.0.0.6 port 52145 ssh2"


def test_a_raw_line_in_latin_1_is_kept_with_its_bytes_and_its_neighbour_is_untouched():
    ok, bad = ingest(SSHD_OK + b"\n" + SSHD_LATIN1 + b"\n", kind="raw")

    assert ok.payload == SSHD_OK.decode() and "payload_b64" not in ok.attributes
    assert bad.payload == SSHD_LATIN1.decode("latin-1").replace("\u00e9", "\ufffd")
    assert base64.b64decode(bad.attributes["payload_b64"]) == SSHD_LATIN1
    assert bad.format == "raw" and bad.attributes["token_name"] == "web"


@pytest.mark.parametrize(("line", "text"), [
    (b"overlong slash \xc0\xaf end", "overlong slash \ufffd\ufffd end"),
    (b"surrogate \xed\xa0\x80 end", "surrogate \ufffd\ufffd\ufffd end"),
    (b"truncated \xe2\x82", "truncated \ufffd"),
    (b"\xff\xfe", "\ufffd\ufffd"),
    (b"  \xa0  ", "  \ufffd  "),          # a no-break space in Latin-1: not blank once decoded
])
def test_each_kind_of_invalid_utf_8_line_keeps_its_exact_bytes(line, text):
    for ending in (b"\n", b"\r\n", b""):   # the bad line last, with and without a line ending
        envelopes = ingest(SSHD_OK + (ending or b"\n") + line + ending, kind="raw")
        assert [e.payload for e in envelopes] == [SSHD_OK.decode(), text]
        assert base64.b64decode(envelopes[1].attributes["payload_b64"]) == line


def test_crlf_lines_lose_their_line_ending_and_nothing_else():
    body = b"caf\xc3\xa9 ok\r\ncaf\xe9 bad\r\n\r\nlast \xe9\r"
    envelopes = ingest(body, kind="raw")
    assert [e.payload for e in envelopes] == ["caf\u00e9 ok", "caf\ufffd bad", "last \ufffd"]
    assert [e.attributes.get("payload_b64") for e in envelopes] == [
        None, base64.b64encode(b"caf\xe9 bad").decode(), base64.b64encode(b"last \xe9").decode()]


def test_a_raw_body_of_only_invalid_lines_is_still_ingested_and_blank_lines_still_skipped():
    envelopes = ingest(b"\n\xe9\n   \n\xe9\xe9\n", kind="raw")
    assert [base64.b64decode(e.attributes["payload_b64"]) for e in envelopes] == [b"\xe9", b"\xe9\xe9"]
