"""Finding a member's value in JSON text: the slice parses to the very value the parser saw."""

from __future__ import annotations

import json
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telhawk_ingest.jsontext import member_span

WHITESPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \n\t"])
# Keys drawn from a small set, so members repeat and the last one must win; "event" among them.
KEYS = st.sampled_from(["event", "time", "host", "a", "é", "{", '"', "\\", "even", "events"])
SCALARS = (
    st.none() | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)   # past 64 bits orjson reads a float
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
)


def encode_string(draw: st.DrawFn, text: str) -> str:
    """A JSON string spelled in any valid way: each character literal or as a \\u escape."""
    out = []
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or draw(st.booleans()):
            if ord(char) > 0xFFFF:
                high, low = divmod(ord(char) - 0x10000, 0x400)
                out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04X}")
            else:
                out.append(draw(st.sampled_from([f"\\u{ord(char):04x}", json.dumps(char)[1:-1]])))
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> str:
    """JSON text of any value, with any whitespace, escapes and repeated object keys."""
    kind = draw(st.sampled_from(["scalar", "scalar", "array", "object"] if depth < 4 else ["scalar"]))
    ws = lambda: draw(WHITESPACE)  # noqa: E731
    if kind == "scalar":
        value = draw(SCALARS)
        return encode_string(draw, value) if isinstance(value, str) else json.dumps(value)
    if kind == "array":
        items = draw(st.lists(json_text(depth + 1), max_size=4))
        return "[" + ws() + ("," + ws()).join(items) + ws() + "]"
    members = draw(st.lists(st.tuples(KEYS, json_text(depth + 1)), max_size=4))
    return "{" + ws() + ("," + ws()).join(
        encode_string(draw, key) + ws() + ":" + ws() + value for key, value in members) + ws() + "}"


@st.composite
def objects_with_event(draw: st.DrawFn) -> str:
    """A HEC-like object with at least one `event` member, somewhere among other members."""
    ws = lambda: draw(WHITESPACE)  # noqa: E731
    members = draw(st.lists(st.tuples(KEYS, json_text()), max_size=4))
    members.insert(draw(st.integers(0, len(members))), ("event", draw(json_text())))
    return ws() + "{" + ws() + ("," + ws()).join(
        encode_string(draw, key) + ws() + ":" + ws() + value for key, value in members) + ws() + "}" + ws()


@given(objects_with_event(), st.text(max_size=3), st.text(max_size=3))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_event_slice_parses_to_the_value_the_parser_gives_for_event(text, before, after):
    body = (before + text + after).encode()
    start, end = len(before.encode()), len(before.encode()) + len(text.encode())

    span = member_span(body, start, end, "event")

    assert span is not None
    assert orjson.loads(body[span[0]:span[1]]) == orjson.loads(body[start:end])["event"]
    assert body[span[0]:span[1]] == body[span[0]:span[1]].strip(b" \t\r\n")


@pytest.mark.parametrize(("text", "value"), [
    (b'{"event": 18446744073709551616}', b"18446744073709551616"),
    (b'{"event": {"a": 1, "a": 2}}', b'{"a": 1, "a": 2}'),
    (b'{"event": 1, "event": "last"}', b'"last"'),
    (b'{"\\u0065vent": [1,\n 2]}', b"[1,\n 2]"),
    (b'{"x": "\\"}{,:", "event": "a\\\\"}', b'"a\\\\"'),
    (b'{"x": {"event": 1}, "event" :\t-0.0\n}', b"-0.0"),
])
def test_the_slice_is_the_text_as_sent(text, value):
    start, end = member_span(text, 0, len(text), "event")
    assert text[start:end] == value


@pytest.mark.parametrize("text", [b'{"x": {"event": 1}}', b"{}", b'["event", 1]', b'"event"', b""])
def test_no_top_level_member_means_no_span(text):
    assert member_span(text, 0, len(text), "event") is None


def test_the_scan_is_linear_in_the_text():
    """Doubling a pathological text (escapes, nesting, no key) about doubles the time, no more."""
    def took(n: int) -> float:
        text = b'{"k": "' + b'\\"{' * n + b'", "n": ' + b"[" * 200 + b"]" * 200 + b', "event": 1}'
        started = time.perf_counter()
        for _ in range(3):
            assert member_span(text, 0, len(text), "event") is not None
        return time.perf_counter() - started

    small, large = took(100_000), took(400_000)
    assert large < small * 4 * 3  # 4x the text; quadratic would be 16x


def test_deeply_nested_values_are_found_without_recursion():
    deep = b"[" * 5000 + b"]" * 5000
    text = b'{"event": ' + deep + b"}"
    assert member_span(text, 0, len(text), "event") == (10, 10 + len(deep))
