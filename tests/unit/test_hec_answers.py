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
