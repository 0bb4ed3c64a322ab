"""Byte-level reading of JSON text the parser has already accepted: where a member's value is.

Here: `member_span`, which finds the text of one top-level member's value inside an object, so
the event a client sent can be kept exactly as sent (SPEC §4: the payload is the event's own text,
sliced from the request body, not a re-serialization). Not here: parsing (orjson does that) or
deciding what a HEC object means (hec.py).

The scan walks the object's members left to right, stepping over each value whole: a string in
one regular-expression match, an array or object from bracket to bracket, every string between
them skipped whole, so braces, brackets, commas and escaped quotes inside strings do not count.
Every pattern uses possessive quantifiers (Python 3.11+): they never backtrack, so the scan is
linear in the text whatever it holds, and Python code runs once per bracket, not per byte. It
assumes valid JSON text (it is only given spans that orjson has parsed) and answers None for a
span it cannot make sense of.
"""

from __future__ import annotations

import re

import orjson

_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
# Everything up to and including the next bracket that is not inside a string.
_TO_BRACKET = re.compile(rb'(?:[^"\[\]{}]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+[\[\]{}]', re.DOTALL)
# A number, true, false or null.
_SCALAR = re.compile(rb"[-+.0-9a-zA-Z]++")
_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
_OPENERS = b"[{"


def member_span(text: bytes, start: int, end: int, key: str) -> tuple[int, int] | None:
    """Where the value of top-level member `key` is in the object `text[start:end]`: (start, end).

    Positions are indexes into `text`, without surrounding whitespace. When the key occurs more
    than once, the last one counts, as it does for orjson (and Python's json). None when the span
    holds no object or the object has no such member.
    """
    raw_key = orjson.dumps(key)
    pos = _skip(text, start, end)
    if pos >= end or text[pos] != ord("{"):
        return None
    pos = _skip(text, pos + 1, end)
    found: tuple[int, int] | None = None
    while pos < end and text[pos] != ord("}"):
        name = _STRING.match(text, pos, end)
        if name is None:
            return None
        pos = _skip(text, name.end(), end)
        if pos >= end or text[pos] != ord(":"):
            return None
        value_start = _skip(text, pos + 1, end)
        value_end = _value_end(text, value_start, end)
        if value_end is None:
            return None
        token = name.group()
        if token == raw_key or (b"\\" in token and orjson.loads(token) == key):
            found = (value_start, value_end)
        pos = _skip(text, value_end, end)
        if pos < end and text[pos] == ord(","):
            pos = _skip(text, pos + 1, end)
    return found if pos < end else None


def _skip(text: bytes, pos: int, end: int) -> int:
    match = _WHITESPACE.match(text, pos, end)
    return match.end() if match else pos


def _value_end(text: bytes, pos: int, end: int) -> int | None:
    """The index just past the JSON value that starts at `pos`."""
    if pos >= end:
        return None
    first = text[pos]
    if first == ord('"'):
        match = _STRING.match(text, pos, end)
        return match.end() if match else None
    if first not in _OPENERS:
        match = _SCALAR.match(text, pos, end)
        return match.end() if match else None
    depth = 1
    pos += 1
    while depth:
        match = _TO_BRACKET.match(text, pos, end)
        if match is None:
            return None
        pos = match.end()
        depth += 1 if text[pos - 1] in _OPENERS else -1
    return pos
