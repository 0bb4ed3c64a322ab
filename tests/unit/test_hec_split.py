"""Where the objects of a JSON batch lie (hec._split_fast, hec._split_exact), which way finds them,
and what a body past `hec.max_events_per_request` costs.

The fast splitter's contract (its docstring): a body of one object per line is split on line
feeds, one line at a time; a batch of objects spread over several lines and separated by
brace-newline-brace is decoded at once as one array; objects separated by `}{` (spaces allowed)
are split there. Each way yields every object with its exact (start, end) in the body and never
hands the body to the exact splitter when the body is well formed, whatever `} {` the strings
hold. The exact splitter decides only malformed bodies, and those with `} {` inside a string of a
batch written on one line.
"""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from telhawk_ingest import hec
from telhawk_ingest.config import HecToken
from telhawk_ingest.errors import HecError
from telhawk_ingest.hec import HecRequest, _split_fast, parse_events, parse_raw
from telhawk_ingest.normalizers.common import payload_value

RECEIVED = "2025-01-02T03:04:05.678Z"
TOKEN = HecToken(name="web", token="11111111-2222-3333-4444-555555555555")

# Event texts that trip a splitter looking for `}{` or `} {`, or for quotes and braces.
_TRICKY = st.sampled_from(["} {", "}{", "}\t{", '\\"} {', "{", "}", "a", "", "\\\\"])
_EVENT = st.lists(st.one_of(_TRICKY, st.text(max_size=5)), max_size=4).map("".join)
_OBJECTS = st.lists(_EVENT.map(lambda text: {"event": text}), min_size=2, max_size=6)
# What separates two lines of a one-object-per-line body: blank lines may come between.
_LINE_BREAK = st.sampled_from(["\n", "\r\n", "\n\n", "\n \t\n", "\r\n\r\n"])
_AFTER_LAST = st.sampled_from(["", "\n", "\r\n", "\n\n", "\n  "])


def _split(body: bytes, limit: int | None = None) -> list[tuple[Any, int, int]]:
    """Everything the fast splitter yields; raises _SplitFailed if it hands the body over."""
    return list(_split_fast(body, len(body) if limit is None else limit))


def _line_body(objects: list[dict[str, Any]], breaks: list[str], after_last: str) -> tuple[bytes, list]:
    """A one-object-per-line body and what the fast splitter must yield for it: each object
    with the span of its line, up to the line feed that ends it."""
    body, expected = b"", []
    for obj, line_break in zip(objects, [*breaks, after_last], strict=False):
        line = orjson.dumps(obj)
        start = len(body)
        body += line + line_break.encode()
        end = start + len(line) + (1 if line_break.startswith("\r") else 0)
        expected.append((obj, start, end))
    return body, expected


@given(objects=_OBJECTS, breaks=st.lists(_LINE_BREAK, min_size=5, max_size=5), after_last=_AFTER_LAST)
@example(objects=[{"event": "} {"}, {"event": "b"}], breaks=["\n\n"] * 5, after_last="")
@example(objects=[{"event": "a"}, {"event": "b"}, {"event": "c"}], breaks=["\r\n"] * 5, after_last="\n")
def test_one_object_per_line_is_split_at_each_line_feed(objects, breaks, after_last):
    body, expected = _line_body(objects, breaks, after_last)

    assert _split(body) == expected

@pytest.mark.parametrize("body", [
    b'{"event": "} {", "host": "h"}',
    b'{"event": "} {", "host": "h"}\r\n\n',
    b'{\n  "event": "} {",\n  "host": "h"\n}\n',
])
def test_a_single_object_is_one_value_spanning_the_whole_body_whatever_its_strings_and_lines(body):
    # Neither cut at the `} {` of its string nor at its line feeds: the whole body is the span.
    assert _split(body) == [({"event": "} {", "host": "h"}, 0, len(body))]



def test_the_lines_are_split_one_at_a_time_so_a_caller_that_stops_early_never_reads_the_rest():
    body = b'{"event": "a"}\n{"event": "} {"}\n\n{"event": "b"} {"event": '

    pieces = _split_fast(body, len(body))

    assert [next(pieces), next(pieces)] == [({"event": "a"}, 0, 14), ({"event": "} {"}, 15, 31)]


def _pretty_body(objects: list[dict[str, Any]], separators: list[str]) -> tuple[bytes, list]:
    body, expected = b"", []
    for obj, separator in zip(objects, ["", *separators], strict=False):
        body += separator.encode()
        text = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
        expected.append((obj, len(body), len(body) + len(text)))
        body += text
    return body, expected


@given(objects=_OBJECTS, separators=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=5, max_size=5))
@example(objects=[{"event": "} {"}, {"event": "b"}], separators=["\n"] * 5)
@example(objects=[{"event": "} {"}, {"event": "b"}], separators=["\r\n"] * 5)
@example(objects=[{"event": "a"}, {"event": "} {"}, {"event": "c"}], separators=["\n", "\r\n"] * 3)
def test_objects_spread_over_lines_are_split_at_brace_newline_brace_in_one_decode(objects, separators):
    body, expected = _pretty_body(objects, separators)

    assert _split(body) == expected


@pytest.mark.parametrize("separator", [b"", b" ", b"\t \t"])
def test_objects_on_one_line_are_split_at_brace_brace(separator):
    first, second, third = b'{"event": "a"}', b'{"event": {"b": [1]}}', b'{"event": 3}'
    body = separator.join([first, second, third])
    starts = [0, len(first) + len(separator), len(first) + len(second) + 2 * len(separator)]

    assert _split(body) == [
        ({"event": "a"}, starts[0], starts[0] + len(first)),
        ({"event": {"b": [1]}}, starts[1], starts[1] + len(second)),
        ({"event": 3}, starts[2], len(body)),
    ]


def parse(body: bytes, max_events: int | None = None, token: HecToken = TOKEN):
    return parse_events(body, token, RECEIVED, max_events)


def test_a_missing_comma_inside_an_array_spread_over_lines_names_event_0():
    with pytest.raises(HecError) as caught:
        parse(b'{"event": [{"b": 1}\n{"c": 2}]}')
    assert (caught.value.code, caught.value.invalid_event_number) == (6, 0)


def _peak_bytes(body: bytes, max_events: int) -> tuple[HecError, int]:
    """The error parsing `body` raises, and the most memory it held meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(HecError) as caught:
            parse(body, max_events)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value, peak


def _objects(member: bytes, separator: bytes, count: int, size: int) -> bytes:
    """`count` objects, each over three lines, joined by `separator`: about `size` bytes in all
    (padded with whitespace inside each object), and no fewer than it takes."""
    padding = b" " * max(0, size // count - len(member) - 5)
    return separator.join([b"{\n" + member + padding + b"\n}"] * count)


# Objects over several lines (brace-newline-brace): past the cap, or refused at the first; and
# objects separated by commas (malformed).
@pytest.mark.parametrize(("member", "separator", "code", "status"), [
    (b'"event": 1', b"\n", 6, 413),
    (b"", b"\n", 12, 400),
    (b'"event": 1', b",", 6, 400),
])
def test_a_body_of_many_objects_costs_memory_for_its_size_never_for_its_count(member, separator, code,
                                                                              status, monkeypatch):
    # Envelope ids come from a pool refilled now and then (megabytes at once): not what is measured.
    monkeypatch.setattr(hec, "new_id", lambda: "018f0000-0000-7000-8000-000000000000")
    many = _objects(member, separator, 150_000, 0)
    few = _objects(member, separator, 11, len(many))  # as many bytes, one object past the cap
    assert abs(len(many) - len(few)) < 1000

    many_error, many_peak = _peak_bytes(many, max_events=10)
    few_error, few_peak = _peak_bytes(few, max_events=10)

    assert (many_error.code, many_error.status) == (few_error.code, few_error.status) == (code, status)
    # Decoding all 150,000 objects, or listing where each one ends, takes 10 MB more or over.
    assert many_peak < few_peak + 5 * 1024 * 1024


def test_events_past_the_cap_are_refused_before_one_past_the_next_is_read():
    body = b'{"event": 1}\n{"event": 2}\n{"event": 3}\n{"no event": 4}'

    with pytest.raises(HecError) as caught:
        parse(body, max_events=2)

    assert (caught.value.code, caught.value.status, caught.value.detail) == (
        6, 413, "more than 2 events in one request (hec.max_events_per_request)")


def test_a_body_of_null_after_whitespace_is_named_null():
    with pytest.raises(HecError) as caught:
        parse(b" \r\n null")
    assert caught.value.code == 6
    assert caught.value.detail.startswith("event 0 is null; ")


def test_an_array_in_a_batch_is_named_as_not_an_object():
    with pytest.raises(HecError) as caught:
        parse(b'{"event": 1}\n[{"event": 2}]')
    assert (caught.value.code, caught.value.invalid_event_number, caught.value.detail) == (
        6, 1, "each event must be a JSON object")


def _nested(depth: int) -> bytes:
    """An event object whose `event` is nested so that the whole object is `depth` levels deep."""
    return b'{"event": ' + b'{"a": ' * (depth - 2) + b"{}" + b"}" * (depth - 2) + b"}"


def test_an_object_exactly_as_deep_as_the_parser_allows_is_split_from_the_next_one():
    # `} {` in a string of a batch on one line sends the body to the exact splitter.
    body = _nested(1024) + b' {"event": "} {"}'

    envelopes = parse(body)

    assert [e.format for e in envelopes] == ["json", "raw"]
    assert envelopes[1].payload == "} {"


def test_an_object_deeper_than_the_parser_allows_is_refused_and_named():
    body = b'{"event": "} {"} ' + _nested(1025) + b' {"event": "b"}'

    with pytest.raises(HecError) as caught:
        parse(body)

    assert (caught.value.code, caught.value.invalid_event_number) == (6, 1)


def test_a_string_never_closed_runs_to_the_end_of_the_body_in_the_error():
    second = b'{"event": "b} x}'
    body = b'{"event": "} {"} ' + second

    with pytest.raises(HecError) as caught:
        parse(body)

    assert (caught.value.code, caught.value.invalid_event_number) == (6, 1)
    # orjson counts from the start of the piece: the data ran out at the end of the body.
    assert re.search(r"\(char (\d+)\)", caught.value.detail).group(1) == str(len(second))


@pytest.mark.parametrize(("event", "value"), [
    (b'"{\\"user\\": \\"alice\\"}"', {"user": "alice"}),
    (b"42", 42),
    (b"[1, 2]", [1, 2]),
])
def test_a_raw_events_value_for_normalizers_is_its_text_decoded(event, value):
    (envelope,) = parse(b'{"event": ' + event + b"}")

    assert envelope.format == "raw"
    assert payload_value(envelope) == value


@pytest.mark.parametrize("attributes", [b"", b', "attributes": null'])
def test_a_posted_back_envelope_without_attributes_is_replayed_with_the_tokens_defaults(attributes):
    body = (b'{"id": "018f0000-0000-7000-8000-000000000000", "source": "s", "source_type": "st", '
            b'"format": "raw", "payload": "a line"' + attributes + b"}")

    (envelope,) = parse(body)

    assert (envelope.id, envelope.payload, envelope.source_type) == (
        "018f0000-0000-7000-8000-000000000000", "a line", "st")
    assert envelope.attributes == {"host": None, "index": None, "fields": {}, "token_name": "web"}


def test_raw_lines_come_from_the_tokens_source_else_from_http_and_its_name_at_the_time_received():
    named = HecToken(name="fw", token="f" * 36, default_source="syslog:fw")
    req = HecRequest(method="POST", path="/services/collector/raw")

    for token, source in [(TOKEN, "http:web"), (named, "syslog:fw")]:
        (envelope,) = parse_raw(b"a line\n", req, token, RECEIVED)
        assert (envelope.source, envelope.received_at) == (source, RECEIVED)


def test_an_index_name_refused_is_quoted_in_the_detail_up_to_100_characters():
    name = "Bad" + "x" * 297

    with pytest.raises(HecError) as caught:
        parse(b'{"event": "a"}\n{"event": "b", "index": "' + name.encode() + b'"}')

    assert (caught.value.code, caught.value.invalid_event_number) == (7, 1)
    assert caught.value.detail.startswith(f"index {name[:100]!r} is not an index name (")
