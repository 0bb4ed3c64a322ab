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
  serializing. Measuring every event here would cost more than parsing it. A DLQ envelope
  posted back is the exception: its `attributes` go into the DLQ record and the stored
  document as objects, so one nested more than MAX_REPLAY_DEPTH (200) levels is refused with code 6.
- `fields` must be a flat object: values are scalars or arrays of scalars (Splunk's
  multi-value indexed fields). A nested object or array answers code 15, as Splunk does.
- `host`, `source`, `sourcetype` and `index` must be strings when given; `null` or `""`
  fall back to the defaults. Default sourcetype is the token's, else `httpevent` (Splunk's
  own default); default source is the token's, else `http:<token name>`.
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
  `jq -c '.events[].envelope'` back to HEC: it keeps its id and metadata, so storage never
  holds a replayed event twice.
- A body over the limit (before or after gzip) answers HTTP 413 with code 6 and a detail in
  Splunk's words: "Content-Length of N too large (maximum is M)".
"""

from __future__ import annotations

import base64
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any, Literal

import orjson

from .config import HecToken
from .envelope import Envelope, Format, new_id
from .errors import HecError
from .jsontext import member_span

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
# orjson refuses deeper nesting, so a piece past this depth is invalid whatever follows.
_MAX_DEPTH = 1024
# The deepest nesting of a posted-back envelope's attributes, counting the envelope (module
# docstring); and the deepest orjson serializes (tests pin it against the installed orjson).
MAX_REPLAY_DEPTH = 200
ORJSON_MAX_DEPTH = 254
# Epoch seconds as text: float() alone would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[ \t]*+[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?[ \t]*+")

_GZIP_MAGIC = b"\x1f\x8b"
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


def read_body(req: HecRequest, max_bytes: int) -> bytes:
    """The request body as sent by the client, decompressed, and never more than `max_bytes`."""
    body = req.body
    if len(body) > max_bytes:
        raise _too_large(f"Content-Length of {len(body)} too large (maximum is {max_bytes})")
    encoding = (req.header("content-encoding") or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, max_bytes)
    raise HecError(6, detail=f"unsupported Content-Encoding {encoding[:40]!r}; expected gzip or none")


def _too_large(detail: str) -> HecError:
    return HecError(6, status=413, detail=detail)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress every gzip member of `data`, stopping as soon as the output passes `limit`.

    Output is produced in steps capped by `max_length`, so a small body that inflates to
    gigabytes (a gzip bomb) costs at most `limit` bytes of memory before it is refused.
    """
    if not data:
        return b""
    chunks: list[bytes] = []
    size = 0
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                chunk = inflater.decompress(pending, limit + 1 - size)
                pending = inflater.unconsumed_tail
                size += len(chunk)
                if size > limit:
                    raise _too_large(f"decompressed body is larger than the maximum of {limit} bytes")
                chunks.append(chunk)
                if not chunk and not pending:
                    break
        except zlib.error as exc:
            raise HecError(6, detail=f"body is not valid gzip: {exc}") from None
        if not inflater.eof:
            raise HecError(6, detail="body is not valid gzip: compressed data is truncated")
        pending = inflater.unused_data
        # Some writers pad the last member with zeros; anything else must be another member.
        if pending and not pending.startswith(_GZIP_MAGIC):
            if pending.strip(b"\x00"):
                raise HecError(6, detail="body is not valid gzip: unexpected bytes after the compressed data")
            pending = b""
    return b"".join(chunks)


def parse_events(body: bytes, token: HecToken, received_at: str) -> list[Envelope]:
    """The JSON protocol: one or more concatenated objects, all validated before any is returned.

    Each object is checked as soon as it is decoded, so a bad batch is refused at its first
    bad event without decoding the rest.
    """
    if not body or body.isspace():
        raise HecError(5)
    build = _EventBuilder(token, received_at, body)
    try:
        return [build(number, *piece) for number, piece in enumerate(_split_fast(body))]
    except _SplitFailed:
        return [build(number, *piece) for number, piece in enumerate(_split_exact(body))]


class _SplitFailed(Exception):
    """The fast splitter met a piece that does not parse; the exact splitter must decide."""


def _split_fast(body: bytes) -> Iterator[tuple[Any, int, int]]:
    """Top-level values of a well-formed body with their (start, end) in it, found cheaply;
    _SplitFailed when unsure.

    A single object, the most common request, needs one call. A line feed cannot occur inside
    a JSON string, so when every non-blank line of a body parses, each line is one value: that
    is how most batching clients write (one object per line), and splitting on a single byte
    is several times cheaper than searching for multi-byte boundaries. An object spread over
    several lines breaks this on its first line (which cannot parse alone); when that is the
    body's first line nothing has been yielded and the two ways below are tried instead.

    In newline-delimited batches every brace-newline-brace between objects is a boundary:
    replacing each with `},{` makes one JSON array. Other batches separate objects with `}{`
    plus spaces, which may also occur inside a string; but a split there leaves the piece
    before it with an unterminated string, which cannot parse. So while every piece parses,
    every split so far was a true boundary.
    """
    try:
        single = orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    else:
        yield single, 0, len(body)
        return
    if b"\n" in body:
        yielded = False
        end = -1
        for line in body.split(b"\n"):
            start, end = end + 1, end + 1 + len(line)
            if not line.strip(b" \t\r"):  # JSON's whitespace only; bytes.isspace() takes more
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                if yielded:
                    raise _SplitFailed from None
                break
            yield value, start, end
            yielded = True
        else:
            return
    boundaries = [(match.start() + 1, match.end() - 1) for match in _LINE_BOUNDARY.finditer(body)]
    if boundaries:
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
    view = memoryview(body)
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

    def __init__(self, token: HecToken, received_at: str, body: bytes) -> None:
        self.body = body
        self.token_name = token.name
        self.default_index = token.default_index
        self.received_at = received_at
        self.source = token.default_source or f"http:{token.name}"
        self.source_type = token.default_sourcetype or DEFAULT_SOURCETYPE
        self.allowed = set(token.allowed_indexes) if token.allowed_indexes is not None else None

    def __call__(self, number: int, obj: Any, start: int, end: int) -> Envelope:
        """The envelope of the object `obj`, which lies at `body[start:end]`."""
        # The hot path of ingest: plain dict lookups and isinstance checks, no helpers
        # unless a value needs more than a type check.
        if type(obj) is not dict:
            raise HecError(6, invalid_event_number=number, detail="each event must be a JSON object")
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
            raise HecError(12, invalid_event_number=number)
        elif event is None:
            raise HecError(13, invalid_event_number=number)
        else:
            fmt, text = "raw", partial(_event_text, self.body, start, end, event)
        host = obj.get("host")
        source = obj.get("source")
        source_type = obj.get("sourcetype")
        index = obj.get("index")
        fields = obj.get("fields")
        when = obj.get("time")
        if not (
            (host is None or type(host) is str)
            and (source is None or type(source) is str)
            and (source_type is None or type(source_type) is str)
            and (index is None or type(index) is str)
        ):
            key = next(k for k in _METADATA if not _is_text(obj.get(k)))
            raise HecError(6, invalid_event_number=number, detail=f"{key} must be a string")
        index = index or self.default_index
        if self.allowed is not None and index is not None and index not in self.allowed:
            raise HecError(7, invalid_event_number=number, detail=f"index {index[:80]!r} is not allowed")
        attributes: dict[str, Any] = {
            "host": host or None,
            "index": index,
            "fields": {} if fields is None else _check_fields(fields, number),
            "token_name": self.token_name,
        }
        if when is not None:
            attributes["time"] = _epoch(when, number)
        return Envelope(
            id=new_id(),
            source=source or self.source,
            source_type=source_type or self.source_type,
            format=fmt,
            payload=payload,
            attributes=attributes,
            received_at=self.received_at,
            decoded=decoded,
            text=text,
        )


    def _replayed(self, number: int, obj: dict[str, Any]) -> Envelope:
        """A DLQ envelope sent back as it was listed (the seed's replay workflow).

        It keeps its id, so storage's create-by-`_id` never stores a replayed event twice, and its
        original metadata; the replaying token is recorded beside the original one.
        """
        attributes = obj.get("attributes")
        if attributes is None:
            attributes = {}
        if type(attributes) is not dict:
            raise HecError(6, invalid_event_number=number, detail="envelope attributes must be an object")
        index = attributes.get("index")
        if index is not None and type(index) is not str:
            raise HecError(6, invalid_event_number=number, detail="index must be a string")
        if self.allowed is not None and index is not None and index not in self.allowed:
            raise HecError(7, invalid_event_number=number, detail=f"index {index[:80]!r} is not allowed")
        if not obj["payload"].strip():
            raise HecError(13, invalid_event_number=number)
        if _deeper_than(attributes, MAX_REPLAY_DEPTH - 1):
            raise HecError(6, invalid_event_number=number,
                           detail=f"attributes is nested more than {MAX_REPLAY_DEPTH} levels deep")
        return Envelope(
            id=obj["id"],
            source=obj.get("source") if type(obj.get("source")) is str else self.source,
            source_type=obj["source_type"],
            format=obj["format"],
            payload=obj["payload"],
            attributes={**attributes, "replayed_by": self.token_name},
            received_at=obj.get("received_at") if type(obj.get("received_at")) is str else self.received_at,
        )


_ENVELOPE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _event_text(body: bytes, start: int, end: int, event: Any) -> str:
    """The `event` member's text as the client sent it, from the object at `body[start:end]`."""
    span = member_span(body, start, end, "event")
    if span is None:  # not for a body orjson parsed; an event is never lost over it
        return orjson.dumps(event).decode()
    return body[span[0] : span[1]].decode()


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests more than `levels` arrays or objects deep (a scalar is 0 deep).

    orjson (in C) serializes at most ORJSON_MAX_DEPTH levels: wrapped in enough lists to leave
    exactly `levels` for it, `value` serializes only if it is no deeper than that.
    """
    for _ in range(ORJSON_MAX_DEPTH - levels):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


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
    match = _WHITESPACE.match(body, pos)
    return match.end() if match else pos


def _check_fields(value: Any, number: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HecError(6, invalid_event_number=number, detail="fields must be an object")
    for name, item in value.items():
        if isinstance(item, dict) or (
            isinstance(item, list) and any(isinstance(part, dict | list) for part in item)
        ):
            raise HecError(15, invalid_event_number=number, detail=f"fields.{name[:80]} is nested")
    return value


def _epoch(value: Any, number: int) -> float:
    """Event time as float seconds from a JSON number or numeric string."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        seconds = float(value)
        if math.isfinite(seconds):
            return seconds
    raise HecError(6, invalid_event_number=number, detail="time must be epoch seconds")


def parse_raw(body: bytes, req: HecRequest, token: HecToken, received_at: str) -> list[Envelope]:
    """The raw protocol: one event per non-blank line, metadata from the query or headers."""
    lines: Iterable[tuple[str, str | None]]
    try:
        lines = zip(body.decode("utf-8").split("\n"), repeat(None))
    except UnicodeDecodeError:
        lines = map(_decode_line, body.split(b"\n"))
    meta: dict[str, str | None] = {}
    for key in _METADATA:
        meta[key] = req.query.get(key) or req.header(f"x-splunk-request-{key}") or None
    index = meta["index"] or token.default_index
    if token.allowed_indexes is not None and index is not None and index not in token.allowed_indexes:
        raise HecError(7, detail=f"index {index[:80]!r} is not allowed")
    source = meta["source"] or token.default_source or f"http:{token.name}"
    source_type = meta["sourcetype"] or token.default_sourcetype or DEFAULT_SOURCETYPE
    envelopes = []
    for line, exact in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        attributes = {"host": meta["host"], "index": index, "fields": {}, "token_name": token.name}
        if exact is not None:
            attributes["payload_b64"] = exact
        envelopes.append(
            Envelope(
                id=new_id(),
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
    return envelopes


def _decode_line(raw: bytes) -> tuple[str, str | None]:
    """A raw line's text, and when it is not valid UTF-8 its exact bytes (base64, without the
    `\r` of a CRLF ending, which the caller drops from the text) (module docstring)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        exact = raw[:-1] if raw.endswith(b"\r") else raw
        return raw.decode("utf-8", "replace"), base64.b64encode(exact).decode("ascii")
