"""The whole HEC answer to a refused request: Splunk's code and text, the number of the event at
fault, and the detail that names the field and the rule (SPEC §5; Splunk's "Troubleshoot HTTP Event
Collector" status codes). The cases are those of test_hec.BAD_BODIES, plus some of the same kinds."""

from __future__ import annotations

import pytest

from telhawk_ingest.errors import HecError
from tests.unit.test_hec import BAD_BODIES, LIMIT, ingest

INVALID = "Invalid data format"
NESTED = "Error in handling indexed fields"
# Case name -> the detail of the answer; a tuple is a prefix (the rest is the JSON or zlib error).
DETAILS: dict[str, str | tuple[str] | None] = {
    "malformed JSON": ("event 0: unexpected end of data",),
    "missing event": None,
    "null event": None,
    "empty string event": None,
    "whitespace-only event": None,
    "number at top level": "each event must be a JSON object",
    "string at top level": "each event must be a JSON object",
    "array at top level": "each event must be a JSON object",
    "comma-separated objects": ("event 1: unexpected character",),
    "time that is not a number": "time must be epoch seconds",
    "time that is a boolean": "time must be epoch seconds",
    "time that is NaN text": "time must be epoch seconds",
    "fields that is not an object": "fields must be an object",
    "fields with a nested object": "fields.k is nested",
    "host that is not a string": "host must be a string",
    "binary garbage": "each event must be a JSON object",
    "invalid UTF-8 inside a string": ("event 0: str is not valid UTF-8",),
    "empty body": None,
    "whitespace-only body": None,
    "corrupt gzip": ("body is not valid gzip: Error -3 while decompressing data",),
    "truncated gzip": "body is not valid gzip: compressed data is truncated",
    "plain body labelled gzip": ("body is not valid gzip: Error -3 while decompressing data: "
                                 "incorrect header check"),
    "unsupported encoding": "unsupported Content-Encoding 'br'; expected gzip or none",
    "oversized body": f"Content-Length of {LIMIT + 13} too large (maximum is {LIMIT})",
    "gzip bomb over the limit": f"decompressed body is larger than the maximum of {LIMIT} bytes",
    "raw body of blank lines": None,
}
TEXTS = {5: "No data", 6: INVALID, 12: "Event field is required", 13: "Event field cannot be blank",
         15: NESTED}


def refused(body: bytes, headers: dict[str, str] | None = None, kind: str = "event") -> HecError:
    with pytest.raises(HecError) as caught:
        ingest(body, headers, kind=kind)
    return caught.value


def expected_body(code: int, number: int | None, detail: str | None) -> dict:
    out: dict = {"text": TEXTS[code], "code": code}
    if number is not None:
        out["invalid-event-number"] = number
    if detail is not None:
        out["detail"] = detail
    return out


@pytest.mark.parametrize("case", BAD_BODIES, ids=[case[0] for case in BAD_BODIES])
def test_every_refusal_answers_with_splunks_text_and_a_detail_naming_the_rule(case):
    name, body, headers, kind, code, status, number = case
    error = refused(body, headers, kind)

    detail = DETAILS[name]
    answer = error.body()
    if isinstance(detail, tuple):
        assert answer.pop("detail").startswith(detail[0])
        detail = None
    assert answer == expected_body(code, number, detail)
    assert error.status == status


@pytest.mark.parametrize(
    ("body", "code", "number", "detail"),
    [
        (b'{"event": "a"}{"event": "b", "time": "1e999"}', 6, 1, "time must be epoch seconds"),
        (b'{"event": "a"}\n{"event": "b", "time": "12:00"}', 6, 1, "time must be epoch seconds"),
        (b'{"event": "a", "time": "0x10"}', 6, 0, "time must be epoch seconds"),
        (b'{"event": "a", "time": ""}', 6, 0, "time must be epoch seconds"),
        (b'{"event": "a", "time": [1]}', 6, 0, "time must be epoch seconds"),
        (b'{"event": "a", "fields": {"k": [1, {"n": 1}]}}', 15, 0, "fields.k is nested"),
        (b'{"event": "a", "fields": {"k": [[1]]}}', 15, 0, "fields.k is nested"),
        (b'{"event": "a", "fields": {"' + b"k" * 100 + b'": {}}}', 15, 0,
         "fields." + "k" * 80 + " is nested"),  # a field name is cut to 80 characters
        (b'{"event": "a"}{"event": "b", "fields": "x"}', 6, 1, "fields must be an object"),
        (b'{"event": "a", "source": 1}', 6, 0, "source must be a string"),
        (b'{"event": "a", "sourcetype": []}', 6, 0, "sourcetype must be a string"),
        (b'{"event": "a", "index": 5}', 6, 0, "index must be a string"),
    ],
)
def test_a_bad_field_is_named_with_the_number_of_its_event(body, code, number, detail):
    assert refused(body).body() == expected_body(code, number, detail)


@pytest.mark.parametrize(
    ("time", "seconds"),
    [("1700000000", 1700000000.0), (" 1700000000.5 ", 1700000000.5), ("+1.5e3", 1500.0), ("-.5", -0.5),
     ("17.", 17.0), (1700000000, 1700000000.0), (1.25, 1.25), (0, 0.0)],
)
def test_a_time_as_a_json_number_or_numeric_text_is_epoch_seconds(time, seconds):
    body = b'{"event": "a", "time": ' + (f'"{time}"' if isinstance(time, str) else str(time)).encode() + b"}"
    [envelope] = ingest(body)
    assert envelope.time == seconds
    assert type(envelope.time) is float


# --- posted-back envelopes, nulls and DLQ records, and a token's index scope -----------------------

ENVELOPE_ID = "018f0000-0000-7000-8000-000000000000"


def envelope_body(attributes: str = "{}", payload: str = '"p"', **members: str) -> bytes:
    fields = {"id": f'"{ENVELOPE_ID}"', "source_type": '"s"', "format": '"raw"', "payload": payload,
              "attributes": attributes, **members}
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


NO_ENVELOPE = ('a DLQ listing entry too large for its page is listed without its envelope '
               '("truncated": true) and cannot be replayed from the listing; nothing was stored')


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (envelope_body("[1]"), 6, "envelope attributes must be an object"),
        (envelope_body(payload='" \\t "'), 13, None),
        (envelope_body('{"payload_b64": 5}'), 6, "attributes.payload_b64 must be base64 text"),
        (envelope_body('{"payload_b64": "abc"}'), 6, "attributes.payload_b64 must be base64 text"),
        (envelope_body('{"payload_b64": "ab!d"}'), 6, "attributes.payload_b64 must be base64 text"),
        (envelope_body('{"host": 1}'), 6, "attributes.host must be a string"),
        (envelope_body('{"index": 1}'), 6, "attributes.index must be a string"),
        (envelope_body(source="1"), 6, "source must be a string"),
        (envelope_body('{"time": "soon"}'), 6, "attributes.time must be epoch seconds"),
        (envelope_body('{"fields": 1}'), 6, "attributes.fields must be an object"),
        (b'{"event": "a"}null', 6, f"event 1 is null; {NO_ENVELOPE}"),
        (b'{"event": "a"}{"envelope": {}, "reason": "x"}', 12,
         f"event 1 is a DLQ record, not an event or an envelope; {NO_ENVELOPE}"),
        (b'{"event": "a"}{"id": "x", "envelope_bytes": 10}', 12,
         f"event 1 is a DLQ record, not an event or an envelope; {NO_ENVELOPE}"),
    ],
)
def test_a_posted_back_envelope_or_record_that_cannot_be_replayed_is_named(body, code, detail):
    error = refused(body)
    number = 1 if body.startswith(b'{"event": "a"}') else 0
    assert error.body() == expected_body(code, number, detail)


def test_a_replayed_envelope_keeps_its_id_text_and_the_name_of_the_token_that_first_sent_it():
    long_name = "n" * 300
    [first, second] = ingest(envelope_body('{"token_name": "edge", "payload_b64": "cA==", "host": "h"}')
                             + envelope_body(f'{{"original_token_name": "{long_name}", "token_name": "x"}}'))

    assert (first.id, first.payload, first.format, first.source_type) == (ENVELOPE_ID, "p", "raw", "s")
    assert first.attributes == {"host": "h", "index": None, "fields": {}, "token_name": "web",
                                "payload_b64": "cA==", "original_token_name": "edge"}
    assert second.attributes["original_token_name"] == "n" * 200
    assert first.received_at == second.received_at == "2025-01-02T03:04:05.678Z"


@pytest.mark.parametrize(
    ("token", "index", "stored_as", "detail"),
    [
        ({"default_index": "net"}, None, "net", None),
        ({"default_index": "net"}, "web", "web", None),
        ({"allowed_indexes": ["web", "net"], "default_index": "web"}, None, "web", None),
        ({"allowed_indexes": ["web", "net"], "default_index": "web"}, "net", "net", None),
        ({"allowed_indexes": ["web"], "default_index": "web"}, "net", None,
         "index 'net' is not allowed for this token"),
        ({}, "_internal", None, "index '_internal' is not an index name"),
    ],
)
def test_a_tokens_index_scope_picks_the_index_or_names_the_one_refused(token, index, stored_as, detail):
    from telhawk_ingest.config import HecToken

    scoped = HecToken(name="web", token="11111111-2222-3333-4444-555555555555", **token)
    second = b'{"event": "b", "index": "%s"}' % index.encode() if index else b'{"event": "b"}'
    body = b'{"event": "a"}' + second
    if detail is None:
        assert [e.index for e in ingest(body, token=scoped)] == [token.get("default_index"), stored_as]
        return
    with pytest.raises(HecError) as caught:
        ingest(body, token=scoped)
    answer = caught.value.body()
    assert answer.pop("detail").startswith(detail)
    assert answer == {"text": "Incorrect index", "code": 7, "invalid-event-number": 1 if index else 0}


# --- batches: every event's text exactly as sent, however the objects are separated ------------------

EVENTS = [b'{"k":  "v0"}', b'{"k": "}{", "n": [1,  2]}', b'{"k": "a\\"}\\n{b"}',
          b'{ "deep": {"x": {"y": 1}} }']


def obj(event: bytes, extra: bytes = b"") -> bytes:
    return b'{"event": ' + event + extra + b"}"


@pytest.mark.parametrize(
    "separators",
    [
        [b"\n", b"\n", b"\n", b"\n"],  # one object a line
        [b"\r\n", b"\r\n\r\n", b"\n  \n", b""],  # CRLF, blank lines, no final newline
        [b"", b"", b"", b"  \t"],  # concatenated
        [b" ", b"\n", b"\t\r\n", b"\n\n"],  # mixed
    ],
    ids=["ndjson", "crlf-and-blank-lines", "concatenated", "mixed"],
)
def test_every_event_of_a_batch_keeps_the_text_it_was_sent_with(separators):
    body = b"".join(obj(event) + sep for event, sep in zip(EVENTS, separators, strict=True))

    envelopes = ingest(body)

    assert [e.payload.encode() for e in envelopes] == EVENTS
    assert [e.format for e in envelopes] == ["json"] * 4


def test_an_object_spread_over_lines_and_a_split_inside_a_string_still_give_each_events_text():
    body = b'{"event":\n {"a": "}\\n{"}}\n{"event": {"b": 1}}{"event": "}{"}'
    assert [e.payload for e in ingest(body)] == ['{"a": "}\\n{"}', '{"b": 1}', "}{"]


@pytest.mark.parametrize(("count", "refused"), [(3, False), (4, True)])
def test_a_batch_of_more_events_than_the_limit_is_refused_with_the_setting_named(count, refused):
    from telhawk_ingest.hec import parse_events
    from tests.unit.test_hec import RECEIVED, TOKEN

    for sep in (b"\n", b""):
        body = sep.join(obj(b'"e%d"' % n) for n in range(count))
        if not refused:
            assert len(parse_events(body, TOKEN, RECEIVED, max_events=3)) == count
            continue
        with pytest.raises(HecError) as caught:
            parse_events(body, TOKEN, RECEIVED, max_events=3)
        assert caught.value.status == 413
        detail = "more than 3 events in one request (hec.max_events_per_request)"
        assert caught.value.body() == {"text": INVALID, "code": 6, "detail": detail}


def test_a_bad_event_after_good_lines_is_named_by_its_number():
    body = b'{"event": "a"}\n{"event": "b"}\n{"event": "c",\n'
    error = refused(body)
    assert error.invalid_event_number == 2
    assert error.detail.startswith("event 2: ")


@pytest.mark.parametrize(
    "members",
    [
        {"id": f'"{ENVELOPE_ID.upper()}"'},  # not an id this service makes
        {"id": '"018f0000-0000-7000-8000-00000000000"'},
        {"id": "1"},
        {"payload": "1"},
        {"format": '"xml"'},
        {"source_type": '""'},
        {"source_type": "1"},
    ],
)
def test_an_object_without_event_that_is_not_quite_an_envelope_is_missing_its_event(members):
    assert refused(envelope_body(**members)).body() == expected_body(12, 0, None)


def test_an_envelope_in_json_format_is_replayed_as_json():
    [replay] = ingest(envelope_body(format='"json"', payload='"{\\"a\\": 1}"'))
    assert (replay.format, replay.payload, replay.id) == ("json", '{"a": 1}', ENVELOPE_ID)
