"""HEC requests turned into envelopes (SPEC §3, §4): paths, bodies, JSON batches and raw lines.

Here: `HecRequest` (a framework-free view of one HTTP request), `endpoint_kind` (which HEC
endpoint a path names), `read_body` (Content-Encoding and the size limit, gzip decompressed
in bounded steps), `parse_events` (the JSON protocol) and `parse_raw` (one event per line).
Everything is pure: no Flask, no I/O, no settings lookups. Every malformed request raises a
`HecError` carrying Splunk's code, and nothing else.

Not here: authentication (auth.py), turning a HecError into an HTTP response (the service and
its adapter), or what happens to an envelope once parsed (service.py).

Choices where Splunk's documentation is silent, matched to observed Splunk behaviour:

- `invalid-event-number` is 0-based: the first object of a batch is event 0. A malformed
  object, a missing or blank `event`, a bad `time`, a non-object `fields` or a forbidden
  index rejects the whole request and names that event.
- `event` may be any non-blank JSON value. Objects become `format="json"`; strings become
  `format="raw"` with the string itself as payload; numbers, booleans and arrays become
  `format="raw"`. `null`, `""` and whitespace-only strings are blank (code 13).
- The payload of an object, number, boolean or array event is its text exactly as the client
  sent it (SPEC §4): whitespace, escapes, duplicate keys and integers beyond 64 bits included.
  The parser keeps where each object lies in the body (the whole body for a single object,
  the line for one object per line, else the boundaries the splitter found) and the `event`
  member's text is cut out of it only when first read (jsontext.member_span, one linear scan):
  only a DLQ record reads it, so a stored event never pays for the scan.
- Nesting: the parser takes what orjson parses (1,024 levels). An event too deep for storage
  to write (orjson writes 254 levels) is dead-lettered by the storage backend (storage.base.
  encode_document), which names the member; its DLQ record keeps the text, so it never needs
  serializing. Measuring every event here would cost more than parsing it.
- `fields` must be a flat object: values are scalars or arrays of scalars (Splunk's
  multi-value indexed fields). A nested object or array answers code 15, as Splunk does.
- `host`, `source`, `sourcetype` and `index` must be strings when given; `null` or `""`
  fall back to the defaults. Default sourcetype is the token's, else `httpevent` (Splunk's
  own default); default source is the token's, else `http:<token name>`.
- Index scope (SPEC §3): an index name follows Splunk's rule (config.INDEX_NAME: lower-case
  letters, digits, `_`, `-`, not starting with `_` or `-`, at most 80 characters); any other
  name answers code 7 and is never rewritten into one. A missing, null or empty index is the
  token's `default_index` on every path (events, raw lines, posted-back envelopes), and a
  token's `allowed_indexes` are checked against the index the storage will use (`main` when
  neither the event nor the token names one), so leaving the index out never leaves the scope.
- The raw endpoint reads metadata from query parameters first, then `X-Splunk-Request-*`
  headers, then the token's defaults. Blank and whitespace-only lines are skipped.
- Raw lines are decoded one by one only when the body as a whole is not valid UTF-8 (one
  decode of the whole body is the fast path). A line that is not valid UTF-8 is kept, never
  refused with its neighbours (SPEC §3, §4): its payload is decoded with U+FFFD replacements
  (Python's "replace", one U+FFFD per maximal invalid sequence, as Unicode recommends) and
  `attributes.payload_b64` holds the line's exact bytes, base64, without its line ending
  (`\n` or `\r\n`). It then goes through the pipeline like any other line.
- An object without `event` that is shaped like a DLQ envelope (`id`, `source_type`, `format`,
  `payload`, `attributes`) is a replay, as in the seed's workflow of posting
  `jq -c '.events[].envelope'` back to HEC: it keeps its id, so storage never holds a replayed
  event twice, and its payload, format, source and source type. It is checked exactly as a
  fresh event (SPEC §3): `attributes.host`, `source`, `source_type` and `attributes.index` as
  `host`, `source`, `sourcetype` and `index` (index scope included), `attributes.fields` as
  `fields` (nested: code 15), `attributes.time` as `time`, `attributes.payload_b64` must be
  base64. Its attributes are rebuilt from those members only (others are ignored, as unknown
  members of an event are); `token_name` is the replaying token's name and `received_at` the
  time of this request, whatever the envelope says. The token name the envelope claimed is
  kept as `attributes.original_token_name` (unverified: any token holder can write it).
- A DLQ listing entry too large for its page has no `envelope` (dlq.py): a client replaying a
  listing with `jq -c '.events[].envelope'` posts `null` for it, which answers code 6 with a
  detail saying so; a whole DLQ record posted instead of its envelope answers code 12 likewise.
- A body over the limit (before or after gzip) answers HTTP 413 with code 6 and a detail in
  Splunk's words: "Content-Length of N too large (maximum is M)".
- Caps besides the body limit (SPEC §3, §9), each checked while the body is read or parsed, so
  that memory and time stay in proportion to what the caps allow, never to what a body claims:
  a gzip body inflating to more than `hec.max_decompression_ratio` times its size (413 code 6),
  or holding more than MAX_GZIP_MEMBERS members (400 code 6); more than
  `hec.max_events_per_request` events (413 code 6), counted as objects and lines are found, so
  at most one envelope past the cap is ever built. Details name the setting.
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import islice, repeat
from typing import Any, AnyStr, Literal

import orjson

from .config import INDEX_RULE, HecToken, is_index_name
from .envelope import Envelope, Format, new_id
from .errors import HecError
from .jsontext import member_span
from .storage.base import DEFAULT_INDEX

EndpointKind = Literal["event", "raw", "health", "ack"]

_ENDPOINTS: dict[str, EndpointKind] = {
    "/services/collector": "event",
    "/services/collector/event": "event",
    "/services/collector/event/1.0": "event",
    "/services/collector/raw": "raw",
    "/services/collector/raw/1.0": "raw",
    "/services/collector/health": "health",
    "/services/collector/health/1.0": "health",
    "/services/collector/ack": "ack",
    "/services/collector/ack/1.0": "ack",
}

# The id of the event at a position of a request (`parse_events`, `parse_raw`).
Ids = Callable[[int], str]

# Splunk's default sourcetype for HEC data when neither the event nor the token names one.
DEFAULT_SOURCETYPE = "httpevent"

_METADATA = ("sourcetype", "source", "host", "index")

# Between two objects of a batch: a closing brace, JSON whitespace, an opening brace.
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*+\{")
# Between two objects of a newline-delimited batch whose objects span several lines.
_LINE_BOUNDARY = re.compile(rb"\}\r?\n\{")
# The exact splitter's tokens: a complete JSON string (skipped whole), a brace, or a quote
# that opens a string never closed.
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}]|"', re.DOTALL)
_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
# A run of lines holding only JSON whitespace (possessive: a line that is not blank costs only its
# leading whitespace), and a piece of JSON whitespace.
_BLANK_JSON_LINES = re.compile(rb"(?:[ \t\r]*+\n)*+")
_JSON_BLANK = re.compile(rb"[ \t\r]*+")
# A run of raw lines holding only whitespace (as str.isspace() sees it for text; ASCII only for
# bytes that are not UTF-8, whose other blank lines are dropped one at a time after decoding).
_BLANK_TEXT_LINES = re.compile(r"(?:[^\S\n]*+\n)*+")
_BLANK_BYTE_LINES = re.compile(rb"(?:[^\S\n]*+\n)*+")
# orjson refuses deeper nesting, so a piece past this depth is invalid whatever follows.
_MAX_DEPTH = 1024
# Epoch seconds as text: float() alone would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[ \t]*+[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?[ \t]*+")

_GZIP_MAGIC = b"\x1f\x8b"
# The most gzip members one body may hold (400 code 6 past it): clients send one, or one per
# batch they append; ten thousand leaves room for any of them.
MAX_GZIP_MEMBERS = 10_000
# Input fed to zlib per call for one member: small at first, so a member's end is found after
# copying little of what follows it, then doubling so a large member takes few calls.
GZIP_FIRST_STEP = 64
GZIP_MAX_STEP = 64 * 1024
# Tells an absent `event` key from `"event": null`.
_MISSING = object()


@dataclass(frozen=True)
class HecRequest:
    """One HTTP request as the HEC layer needs it; header names are matched case-insensitively."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        # Lower-case once so every lookup is a plain dict access.
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def endpoint_kind(path: str) -> EndpointKind | None:
    """Which HEC endpoint a path names, or None when it names none (the caller answers 404)."""
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return _ENDPOINTS.get(path)


def read_body(req: HecRequest, max_bytes: int, max_ratio: int | None = None,
              max_members: int = MAX_GZIP_MEMBERS) -> bytes:
    """The request body as sent by the client, decompressed, and never more than `max_bytes`.

    A gzip body inflates to at most `max_ratio` times its own size (`hec.max_decompression_ratio`,
    SPEC §9) and holds at most `max_members` gzip members. Raises HecError: 413 code 6 past a size
    limit, 400 code 6 for a body that is not gzip as labelled, has too many members, or an
    encoding other than gzip.
    """
    body = req.body
    if len(body) > max_bytes:
        raise _too_large(f"Content-Length of {len(body)} too large (maximum is {max_bytes})")
    encoding = (req.header("content-encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, max_bytes, max_ratio, max_members)
    raise HecError(6, detail=f"unsupported Content-Encoding {encoding[:40]!r}; expected gzip or none")


def _too_large(detail: str) -> HecError:
    return HecError(6, status=413, detail=detail)


def _gunzip(data: bytes, max_bytes: int, max_ratio: int | None, max_members: int) -> bytes:
    """Decompress every gzip member of `data`, stopping as soon as the output passes its limit.

    Linear in the input: each member is fed from a memoryview of the body in steps that start at
    GZIP_FIRST_STEP bytes and double up to GZIP_MAX_STEP, so finding where a member ends copies at
    most one step of input (zlib's `unused_data`), and a body of tiny members costs no more than
    a body of one. Output is produced in steps capped by `max_length`, so a small body that inflates
    to gigabytes (a gzip bomb) costs at most the limit in memory before it is refused.
    """
    if not data:
        return b""
    limit = max_bytes if max_ratio is None else min(max_bytes, max_ratio * len(data))
    view = memoryview(data)
    size = len(data)
    chunks: list[bytes] = []
    total = 0
    pos = 0
    members = 0
    while pos < size:
        if members:
            # Some writers pad the last member with zeros; anything else must be another member.
            if data[pos:pos + 2] != _GZIP_MAGIC:
                if data.count(0, pos) == size - pos:
                    break
                raise HecError(6, detail="body is not valid gzip: unexpected bytes after the compressed data")
            if members == max_members:
                raise HecError(6, detail=f"gzip body has more than {max_members} members (the maximum)")
        members += 1
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        step = GZIP_FIRST_STEP
        while not inflater.eof:
            if pos >= size:
                raise HecError(6, detail="body is not valid gzip: compressed data is truncated")
            piece = view[pos:pos + step]
            try:
                chunk = inflater.decompress(piece, limit + 1 - total)
            except zlib.error as exc:
                raise HecError(6, detail=f"body is not valid gzip: {exc}") from None
            pos += len(piece) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
            total += len(chunk)
            if total > limit:
                raise _too_large(_over_limit(limit, max_bytes, max_ratio, size))
            chunks.append(chunk)
            step = min(step * 2, GZIP_MAX_STEP)
    return b"".join(chunks)


def _over_limit(limit: int, max_bytes: int, max_ratio: int | None, size: int) -> str:
    if limit < max_bytes and max_ratio is not None:
        return (f"decompressed body is more than {max_ratio} times its compressed size of {size} bytes "
                "(hec.max_decompression_ratio)")
    return f"decompressed body is larger than the maximum of {max_bytes} bytes"


def parse_events(body: bytes, token: HecToken, received_at: str,
                 max_events: int | None = None, ids: Ids | None = None) -> list[Envelope]:
    """The JSON protocol: one or more concatenated objects, all validated before any is returned.

    `ids`: the envelope id of the event at each position (0-based), for events whose id derives
    from where they came from (triggers.py); by default a fresh UUIDv7 each. A posted-back
    envelope keeps its own id either way.

    Each object is checked as soon as it is decoded, so a bad batch is refused at its first
    bad event without decoding the rest; and objects are counted as they are decoded, so a
    body of more than `max_events` (`hec.max_events_per_request`) is refused with 413 code 6
    after decoding at most one more, never all of them. A body whose first value is not an
    object is refused with code 6 without decoding it.
    """
    if not body or body.isspace():
        raise HecError(5)
    first = _skip_whitespace(body, 0)
    if body[first] != 0x7B:  # "{"
        null = body.startswith(b"null", first)
        raise HecError(6, invalid_event_number=0,
                       detail=f"event 0 is null; {_NO_ENVELOPE}" if null else _NOT_AN_OBJECT)
    limit = max_events if max_events is not None else len(body)
    build = _EventBuilder(token, received_at, body, ids)
    try:
        return _counted(build, _split_fast(body, limit), limit)
    except _SplitFailed:
        return _counted(build, _split_exact(body), limit)


def _counted(build: _EventBuilder, pieces: Iterator[tuple[Any, int, int]], limit: int) -> list[Envelope]:
    """The envelopes of the pieces, or 413 once there are more than `limit` (taking one more)."""
    envelopes = [build(number, *piece) for number, piece in islice(enumerate(pieces), limit + 1)]
    if len(envelopes) > limit:
        raise _too_many(limit)
    return envelopes


def _too_many(limit: int) -> HecError:
    return _too_large(f"more than {limit} events in one request (hec.max_events_per_request)")


class _SplitFailed(Exception):
    """The fast splitter met a piece that does not parse; the exact splitter must decide."""


def _split_fast(body: bytes, limit: int) -> Iterator[tuple[Any, int, int]]:
    """Top-level values of a well-formed body with their (start, end) in it, found cheaply;
    _SplitFailed when unsure.

    A single object, the most common request, needs one call. A line feed cannot occur inside
    a JSON string, so when every non-blank line of a body parses, each line is one value: that
    is how most batching clients write (one object per line), and splitting on a single byte
    is several times cheaper than searching for multi-byte boundaries. Lines are found one at a
    time (runs of blank lines skipped by one match), so a caller that stops early has not paid
    for the rest. An object spread over several lines breaks this on its first line (which
    cannot parse alone); when that is the body's first line nothing has been yielded and the
    two ways below are tried instead.

    In newline-delimited batches every brace-newline-brace between objects is a boundary:
    replacing each with `},{` makes one JSON array, decoded at once; only when there are fewer
    than `limit` boundaries, so that a body of too many objects is never decoded whole. Other
    batches separate objects with `}{` plus spaces, which may also occur inside a string; but a
    split there leaves the piece before it with an unterminated string, which cannot parse. So
    while every piece parses, every split so far was a true boundary.
    """
    try:
        single = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        yield single, 0, len(body)
        return
    view = memoryview(body)
    size = len(body)
    if b"\n" in body:
        yielded = False
        pos = 0
        while True:
            pos = _skip(_BLANK_JSON_LINES, body, pos)
            if pos >= size:
                return
            end = body.find(b"\n", pos)
            end = size if end < 0 else end
            if _JSON_BLANK.fullmatch(body, pos, end):  # the last line, without a line feed
                return
            try:
                value = orjson.loads(view[pos:end])
            except orjson.JSONDecodeError:
                if yielded:
                    raise _SplitFailed from None
                break
            yield value, pos, end
            yielded = True
            pos = end + 1
    boundaries = [(match.start() + 1, match.end() - 1)
                  for match in islice(_LINE_BOUNDARY.finditer(body), limit)]
    if boundaries and len(boundaries) < limit:
        joined = body.replace(b"}\r\n{", b"},{").replace(b"}\n{", b"},{")
        try:
            batch = orjson.loads(b"[" + joined + b"]")
        except orjson.JSONDecodeError:
            batch = None
        # Fewer values than boundaries means a comma landed inside an array the client
        # left one out of: that body is malformed, and the exact splitter will say so. As
        # many means every boundary is between two top-level objects.
        if isinstance(batch, list) and len(batch) == len(boundaries) + 1:
            starts = [0, *(after for _, after in boundaries)]
            ends = [*(before for before, _ in boundaries), len(body)]
            yield from zip(batch, starts, ends, strict=True)
            return
    start = 0
    for match in _BOUNDARY.finditer(body):
        yield _loads_or_resplit(view[start : match.start() + 1]), start, match.start() + 1
        start = match.end() - 1
    yield _loads_or_resplit(view[start:]), start, len(body)


def _loads_or_resplit(piece: memoryview) -> Any:
    try:
        return orjson.loads(piece)
    except orjson.JSONDecodeError:
        raise _SplitFailed from None


def _split_exact(body: bytes) -> Iterator[tuple[Any, int, int]]:
    """Top-level values and their (start, end), found by tracking string and brace state;
    HecError(6) names a bad one.

    Only malformed bodies and the rare batch with `}{` inside a string come here. Anything
    that does not start like an object runs to the end of the body as one (invalid) piece.
    """
    view = memoryview(body)
    size = len(body)
    pos = _skip_whitespace(body, 0)
    number = 0
    while pos < size:
        end = size
        if body[pos] == 0x7B:  # "{"
            depth = 0
            for token in _TOKEN.finditer(body, pos):
                char = body[token.start()]
                if char == 0x22:  # '"'
                    if token.end() - token.start() == 1:
                        # A string never closed: rescanning from each later quote would be
                        # quadratic, and the piece is invalid whatever follows.
                        break
                elif char == 0x7B:
                    depth += 1
                    if depth > _MAX_DEPTH:
                        break
                else:
                    depth -= 1
                    if depth == 0:
                        end = token.end()
                        break
        try:
            value = orjson.loads(view[pos:end])
        except orjson.JSONDecodeError as exc:
            raise HecError(6, invalid_event_number=number, detail=f"event {number}: {exc}") from None
        yield value, pos, end
        number += 1
        pos = _skip_whitespace(body, end)


class _EventBuilder:
    """Validates one decoded object of a batch and turns it into an envelope."""

    def __init__(self, token: HecToken, received_at: str, body: bytes, ids: Ids | None = None) -> None:
        self.body = body
        self.ids = ids
        self.token_name = token.name
        self.received_at = received_at
        self.source = token.default_source or f"http:{token.name}"
        self.source_type = token.default_sourcetype or DEFAULT_SOURCETYPE
        self.index = _Scope(token)

    def __call__(self, number: int, obj: Any, start: int, end: int) -> Envelope:
        """The envelope of the object `obj`, which lies at `body[start:end]`."""
        # The hot path of ingest: plain dict lookups and isinstance checks, no helpers
        # unless a value needs more than a type check.
        if type(obj) is not dict:
            raise HecError(6, invalid_event_number=number, detail=_NOT_AN_OBJECT if obj is not None
                           else f"event {number} is null; {_NO_ENVELOPE}")
        event = obj.get("event", _MISSING)
        fmt: Format
        payload: str | None = None
        decoded = None
        text = None
        if type(event) is str:
            if not event or event.isspace():
                raise HecError(13, invalid_event_number=number)
            fmt, payload = "raw", event
        elif type(event) is dict:
            # The text is cut out of the body only if something reads it (a DLQ record).
            fmt, decoded, text = "json", event, partial(_event_text, self.body, start, end, event)
        elif event is _MISSING:
            if _is_envelope(obj):
                return self._replayed(number, obj)
            if "envelope" in obj or "envelope_bytes" in obj:
                # A DLQ record, or a listing entry too large for its page, posted as it was listed.
                raise HecError(12, invalid_event_number=number, detail=f"event {number} is a DLQ record, "
                               f"not an event or an envelope; {_NO_ENVELOPE}")
            raise HecError(12, invalid_event_number=number)
        elif event is None:
            raise HecError(13, invalid_event_number=number)
        else:
            fmt, text = "raw", partial(_event_text, self.body, start, end, event)
        source, source_type, attributes = self._metadata(
            number, _EVENT_KEYS, obj.get("host"), obj.get("source"), obj.get("sourcetype"),
            obj.get("index"), obj.get("fields"), obj.get("time"))
        return Envelope(
            id=new_id() if self.ids is None else self.ids(number),
            source=source,
            source_type=source_type,
            format=fmt,
            payload=payload,
            attributes=attributes,
            received_at=self.received_at,
            decoded=decoded,
            text=text,
        )

    def _metadata(self, number: int, keys: tuple[str, ...], host: Any, source: Any, source_type: Any,
                  index: Any, fields: Any, when: Any) -> tuple[str, str, dict[str, Any]]:
        """(source, source type, attributes) of an event or a posted-back envelope, checked the
        same way for both (module docstring); `keys` name the members in error details."""
        if not (
            (host is None or type(host) is str)
            and (source is None or type(source) is str)
            and (source_type is None or type(source_type) is str)
            and (index is None or type(index) is str)
        ):
            key = next(k for k, v in zip(keys, (host, source, source_type, index), strict=False)
                       if not _is_text(v))
            raise HecError(6, invalid_event_number=number, detail=f"{key} must be a string")
        attributes: dict[str, Any] = {
            "host": host or None,
            "index": self.index(index, number),
            "fields": {} if fields is None else _check_fields(fields, number, keys[4]),
            "token_name": self.token_name,
        }
        if when is not None:
            attributes["time"] = _epoch(when, number, keys[5])
        return source or self.source, source_type or self.source_type, attributes

    def _replayed(self, number: int, obj: dict[str, Any]) -> Envelope:
        """A DLQ envelope sent back as it was listed (the seed's replay workflow).

        It keeps its id, so storage's create-by-`_id` never stores a replayed event twice, and its
        payload, format, source and source type; everything else is checked as for a fresh event
        (module docstring): its attributes are rebuilt from the members the service itself writes
        there, `token_name` is the replaying token's and `received_at` the time of this request.
        """
        attributes = obj.get("attributes")
        if attributes is None:
            attributes = {}
        if type(attributes) is not dict:
            raise HecError(6, invalid_event_number=number, detail="envelope attributes must be an object")
        if not obj["payload"].strip():
            raise HecError(13, invalid_event_number=number)
        source, source_type, checked = self._metadata(
            number, _ENVELOPE_KEYS, attributes.get("host"), obj.get("source"), obj["source_type"],
            attributes.get("index"), attributes.get("fields"), attributes.get("time"))
        exact = attributes.get("payload_b64")
        if exact is not None:
            if type(exact) is not str or not _is_base64(exact):
                raise HecError(6, invalid_event_number=number,
                               detail="attributes.payload_b64 must be base64 text")
            checked["payload_b64"] = exact
        original = attributes.get("original_token_name") or attributes.get("token_name")
        if type(original) is str:
            checked["original_token_name"] = original[:MAX_TOKEN_NAME]
        return Envelope(
            id=obj["id"],
            source=source,
            source_type=source_type,
            format=obj["format"],
            payload=obj["payload"],
            attributes=checked,
            received_at=self.received_at,
        )


class _Scope:
    """A token's index scope (SPEC §3): which index an event lands in, or HecError(7)."""

    def __init__(self, token: HecToken) -> None:
        self.default = token.default_index
        self.allowed = frozenset(token.allowed_indexes) if token.allowed_indexes is not None else None

    def __call__(self, index: str | None, number: int | None = None) -> str | None:
        """The index of an event that names `index` (None or "" for none): its own when it follows
        Splunk's naming rule, else the token's default. The allowed check runs on the name the
        storage uses, so an event without any index is checked as the storage's default one."""
        index = index or self.default
        if index is not None and not is_index_name(index):
            raise HecError(7, invalid_event_number=number,
                           detail=f"index {index[:100]!r} is not an index name ({INDEX_RULE})")
        if self.allowed is not None and (index or DEFAULT_INDEX) not in self.allowed:
            raise HecError(7, invalid_event_number=number,
                           detail=f"index {(index or DEFAULT_INDEX)!r} is not allowed for this token")
        return index


# Member names in error details: of an event object, and of a posted-back envelope.
_EVENT_KEYS = ("host", "source", "sourcetype", "index", "fields", "time")
_ENVELOPE_KEYS = ("attributes.host", "source", "source_type", "attributes.index", "attributes.fields",
                  "attributes.time")
# A posted-back envelope's claimed token name is kept (as `original_token_name`) at most this long.
MAX_TOKEN_NAME = 200
_NOT_AN_OBJECT = "each event must be a JSON object"
# What a client replaying a DLQ listing with `jq -c '.events[].envelope'` is told when it posts an
# entry listed without its envelope (too large for a page): jq prints `null` for it.
_NO_ENVELOPE = ("a DLQ listing entry too large for its page is listed without its envelope "
                "(\"truncated\": true) and cannot be replayed from the listing; nothing was stored")
_ENVELOPE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*+={0,2}")


def _is_base64(text: str) -> bool:
    return len(text) % 4 == 0 and _BASE64.fullmatch(text) is not None


def _event_text(body: bytes, start: int, end: int, event: Any) -> str:
    """The `event` member's text as the client sent it, from the object at `body[start:end]`."""
    span = member_span(body, start, end, "event")
    if span is None:  # not for a body orjson parsed; an event is never lost over it
        return orjson.dumps(event).decode()
    return body[span[0] : span[1]].decode()


def _is_envelope(obj: dict[str, Any]) -> bool:
    """An object shaped like a DLQ record's envelope (SPEC §4), with an id we could have made."""
    return (
        type(obj.get("id")) is str
        and _ENVELOPE_ID.fullmatch(obj["id"]) is not None
        and type(obj.get("payload")) is str
        and obj.get("format") in ("json", "raw")
        and type(obj.get("source_type")) is str
        and bool(obj["source_type"])
    )


def _is_text(value: Any) -> bool:
    return value is None or type(value) is str


def _skip_whitespace(body: bytes, pos: int) -> int:
    return _skip(_WHITESPACE, body, pos)


def _skip(run: re.Pattern[AnyStr], data: AnyStr, pos: int) -> int:
    """Where the run `run` (a pattern that also matches nothing) starting at `pos` ends."""
    match = run.match(data, pos)
    return match.end() if match else pos


def _check_fields(value: Any, number: int, key: str = "fields") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HecError(6, invalid_event_number=number, detail=f"{key} must be an object")
    for name, item in value.items():
        if isinstance(item, dict) or (
            isinstance(item, list) and any(isinstance(part, dict | list) for part in item)
        ):
            raise HecError(15, invalid_event_number=number, detail=f"{key}.{name[:80]} is nested")
    return value


def _epoch(value: Any, number: int, key: str = "time") -> float:
    """Event time as float seconds from a JSON number or numeric string."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        seconds = float(value)
        if math.isfinite(seconds):
            return seconds
    raise HecError(6, invalid_event_number=number, detail=f"{key} must be epoch seconds")


def parse_raw(body: bytes, req: HecRequest, token: HecToken, received_at: str,
              max_events: int | None = None, ids: Ids | None = None) -> list[Envelope]:
    """The raw protocol: one event per non-blank line, metadata from the query or headers.

    Lines are taken one at a time, so a body of more than `max_events` lines
    (`hec.max_events_per_request`) is refused with 413 code 6 having built at most one more.
    `ids`: as for `parse_events`, by position among the non-blank lines.
    """
    meta: dict[str, str | None] = {}
    for key in _METADATA:
        meta[key] = req.query.get(key) or req.header(f"x-splunk-request-{key}") or None
    index = _Scope(token)(meta["index"])
    source = meta["source"] or token.default_source or f"http:{token.name}"
    source_type = meta["sourcetype"] or token.default_sourcetype or DEFAULT_SOURCETYPE
    limit = max_events if max_events is not None else len(body)
    envelopes = []
    for number, (line, exact) in enumerate(islice(_raw_lines(body), limit + 1)):
        attributes = {"host": meta["host"], "index": index, "fields": {}, "token_name": token.name}
        if exact is not None:
            attributes["payload_b64"] = exact
        envelopes.append(
            Envelope(
                id=new_id() if ids is None else ids(number),
                source=source,
                source_type=source_type,
                format="raw",
                payload=line,
                attributes=attributes,
                received_at=received_at,
            )
        )
    if not envelopes:
        raise HecError(5)
    if len(envelopes) > limit:
        raise _too_many(limit)
    return envelopes


def _raw_lines(body: bytes) -> Iterator[tuple[str, str | None]]:
    """(text, exact bytes as base64 or None) of each non-blank line of a raw body, in order,
    without its `\n` or `\r\n` (module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        lines: Iterator[tuple[str, str | None]] = map(_decode_line, _lines(body, _BLANK_BYTE_LINES, b"\n"))
    else:
        lines = zip(_lines(text, _BLANK_TEXT_LINES, "\n"), repeat(None))
    for line, exact in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if line and not line.isspace():
            yield line, exact


def _lines(data: AnyStr, blank_run: re.Pattern[AnyStr], newline: AnyStr) -> Iterator[AnyStr]:
    """The lines of `data` one at a time, without their `newline`, skipping each run of lines of
    whitespace with one match (C speed); a line that is only whitespace may still come out (the
    last one, or one of non-ASCII whitespace from bytes)."""
    pos = 0
    size = len(data)
    while pos < size:
        pos = _skip(blank_run, data, pos)
        if pos >= size:
            return
        end = data.find(newline, pos)
        end = size if end < 0 else end
        yield data[pos:end]
        pos = end + 1


def _decode_line(raw: bytes) -> tuple[str, str | None]:
    """A raw line's text, and when it is not valid UTF-8 its exact bytes (base64, without the
    `\r` of a CRLF ending, which the caller drops from the text) (module docstring)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        exact = raw[:-1] if raw.endswith(b"\r") else raw
        return raw.decode("utf-8", "replace"), base64.b64encode(exact).decode("ascii")
