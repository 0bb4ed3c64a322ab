"""Byte-level reading of JSON text the parser has already accepted: where a member's value is.

Here: `member_span`, which finds the text of one top-level member's value inside an object, so
the event a client sent can be kept exactly as sent (SPEC §4: the payload is the event's own text,
sliced from the request body, not a re-serialization). Not here: parsing (orjson does that) or
deciding what a HEC object means (hec.py).

The scan is one left-to-right pass of a regular expression whose alternatives never overlap (a
string, or one structural character), so it runs in linear time whatever the input, and strings
are skipped whole: braces, brackets, commas, colons and escaped quotes inside them do not count.
It assumes valid JSON text (it is only given spans that orjson has parsed) and answers None for a
span it cannot make sense of.
"""

from __future__ import annotations

import re

import orjson

# A complete string (the unrolled form of "(?:[^"\\]|\\.)*", which cannot backtrack), or one
# structural character. Anything else (numbers, literals, whitespace) is stepped over.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]', re.DOTALL)
_WHITESPACE = b" \t\r\n"
_QUOTE, _OPEN_OBJECT, _OPEN_ARRAY, _CLOSE_OBJECT, _CLOSE_ARRAY, _COLON, _COMMA = b'"{[}]:,'


def member_span(text: bytes, start: int, end: int, key: str) -> tuple[int, int] | None:
    """Where the value of top-level member `key` is in the object `text[start:end]`: (start, end).

    Positions are indexes into `text`; leading and trailing whitespace is excluded. When the key
    occurs more than once, the last one counts, as it does for orjson (and Python's json). None
    when the span holds no object or the object has no such member.
    """
    raw_key = orjson.dumps(key)
    depth = 0
    is_key = False          # the next string at depth 1 is a member name
    matching = False        # the member being read is `key`
    value_start = -1
    found: tuple[int, int] | None = None
    for token in _TOKEN.finditer(text, start, end):
        char = text[token.start()]
        if char == _QUOTE:
            if is_key:
                name = token.group()
                matching = name == raw_key or (b"\\" in name and orjson.loads(name) == key)
                is_key = False
        elif char in (_OPEN_OBJECT, _OPEN_ARRAY):
            depth += 1
            if depth == 1:
                if char != _OPEN_OBJECT:
                    return None
                is_key = True
        elif char in (_CLOSE_OBJECT, _CLOSE_ARRAY):
            depth -= 1
            if depth == 0:
                if matching and value_start >= 0:
                    found = _strip(text, value_start, token.start())
                return found
        elif depth == 1:
            if char == _COLON:
                value_start = token.end()
            else:  # a comma between members
                if matching:
                    found = _strip(text, value_start, token.start())
                is_key = True
                matching = False
                value_start = -1
    return None


def _strip(text: bytes, start: int, end: int) -> tuple[int, int]:
    """The span without JSON whitespace at either end (bytes methods: no Python loop per byte)."""
    value = text[start:end]
    lead = len(value) - len(value.lstrip(_WHITESPACE))
    if lead == len(value):
        return start, start
    return start + lead, end - (len(value) - len(value.rstrip(_WHITESPACE)))
