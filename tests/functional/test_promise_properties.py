"""The durability promise under generated input: HEC bodies built by Hypothesis, sent in-process.

Every body goes through the real handler into a Service with the real `local` store and a real DLQ
in a fresh temporary folder, and what the answer says is checked against what was kept (SPEC §2,
§3, §4):

- no answer is a 5xx other than 503 code 9;
- a 200 means every event of the request is either stored exactly once or has exactly one DLQ
  record (never both, never twice), and a dead-lettered event keeps its text as sent: an object
  event's payload is its own slice of the request body, a raw line's bytes are recoverable;
- any other answer stores nothing and dead-letters nothing;
- an envelope-shaped record (a replay) posted again after a 200 stores nothing twice.

Bodies mix valid and broken envelopes (missing or blank `event`, wrong types for the metadata,
nested `fields`), odd JSON values (integers past 64 bits, 1e308, -0.0, escaped lone surrogates,
NUL, duplicate keys), nesting up to 400 levels, event times in seconds, milliseconds,
microseconds, negative, huge and as numeric strings, OCSF events, sshd and Cisco ASA lines,
batches with and without whitespace between objects, raw lines with invalid UTF-8, and gzip.

Profiles (tests/conftest.py): `ci`, the default, is derandomized so every run tries the same
bodies; `HYPOTHESIS_PROFILE=explore` draws new ones and tries many more.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import examples
from tests.functional.conftest import Client, fresh_client
from tests.readback import dlq_records, stored_documents

EVENTS = Path(__file__).resolve().parents[1] / "events"
SSHD_LINES = [line for line in (EVENTS / "sshd.log").read_text().splitlines() if line.strip()]
UNMAPPED_LINES = [line for line in (EVENTS / "sshd_unmapped.log").read_text().splitlines() if line.strip()]
ASA_LINES = [line for line in (EVENTS / "cisco_asa.log").read_text().splitlines() if line.strip()]
OCSF_AUTH: dict[str, Any] = json.loads((EVENTS / "ocsf_authentication.json").read_text())
JSON_PATHS = ("/services/collector", "/services/collector/event", "/services/collector/event/1.0")
RAW_PATHS = ("/services/collector/raw", "/services/collector/raw/1.0")


# -- what a request did -------------------------------------------------------------------------


@dataclass
class Kept:
    """What the service holds after a request: stored `_id`s (one per copy) and DLQ records."""

    stored: list[str]
    dead: list[dict[str, Any]]

    @property
    def dead_ids(self) -> list[str]:
        return [record["envelope"]["id"] for record in self.dead]


def kept(client: Client) -> Kept:
    settings_ = client.service.settings
    return Kept(
        stored=[doc["_id"] for doc in stored_documents(settings_.storage.data_dir)],
        dead=dlq_records(settings_.dlq.base_path),
    )


def json_or_none(answer: Any) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def check_answer(answer: Any) -> None:
    """No 5xx but 503 code 9, and every answer HEC-shaped."""
    body = json_or_none(answer)
    assert isinstance(body, dict) and "code" in body, f"not HEC-shaped: {answer.status_code} {answer.text!r}"
    event(f"HTTP {answer.status_code} code {body['code']}")  # pytest --hypothesis-show-statistics
    if answer.status_code >= 500:
        assert (answer.status_code, body["code"]) == (503, 9), f"5xx for input: {body}"
        assert answer.headers.get("Retry-After"), "503 without Retry-After"


def check_kept(answer: Any, after: Kept, events: int | None) -> None:
    """A 200 keeps each of `events` once (stored xor dead-lettered); anything else keeps nothing.

    `events` is None for a body that must be refused (malformed JSON).
    """
    if answer.status_code != 200:
        assert after.stored == [] and after.dead == [], (
            f"answered {answer.status_code} {json_or_none(answer)} but kept "
            f"{len(after.stored)} stored and {len(after.dead)} dead-lettered"
        )
        return
    assert events is not None, f"a malformed body was accepted: {answer.json()}"
    copies = Counter(after.stored + after.dead_ids)
    twice = {event_id: n for event_id, n in copies.items() if n > 1}
    assert not twice, f"kept more than once (stored and/or dead-lettered): {twice}"
    assert len(copies) == events, (
        f"200 for {events} events but {len(after.stored)} stored and {len(after.dead)} dead-lettered"
    )


# -- JSON text with values Python's json module would not write ----------------------------------

ODD_NUMBERS = (
    "18446744073709551616", "-18446744073709551617", "340282366920938463463374607431768211456",
    "1e308", "-1e308", "1e309", "1e-400", "-0.0", "-0", "0.0", "1E+2", "5e-324", "123456789.123456789e3",
)
ODD_STRINGS = (
    r'"\ud800"', r'"\udfff\ud800"', r'"x\udc00y"', r'"\ud83d\ude00"', r'"\u0000"', r'"nul\u0000in"',
    r'"\u2028\u2029"', r'"\/\b\f\n\r\t\"\\"', '"héllo wörld ✓ 漢字"', '"\U0001f600"',
)
# Keys as JSON text, so an escaped lone surrogate can be one.
KEYS = ('"a"', '"msg"', '"event"', '"time"', '"user"', '"é"', r'"\ud800"', '""', '"a b"')

scalars = st.one_of(
    st.sampled_from(ODD_NUMBERS + ODD_STRINGS + ("true", "false", "null")),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(lambda s: json.dumps(s, ensure_ascii=False)),
)


def json_object(pairs: list[tuple[str, str]], pad: str = "") -> str:
    """`{"k": v, ...}` from (key text, value text) pairs, duplicates kept, `pad` between tokens."""
    members = [f"{key}{pad}:{pad}{value}" for key, value in pairs]
    return "{" + pad + f"{pad},{pad}".join(members) + pad + "}"


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=4).map(json_object),
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """A value nested up to 400 levels, of arrays or of objects."""
    depth = draw(st.integers(min_value=1, max_value=400))
    if draw(st.booleans()):
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# -- envelopes ------------------------------------------------------------------------------

# Values each key accepts, then values of a wrong type or shape: an envelope takes the first kind,
# and a broken one (about one in eight) takes one value of the second kind.
TIMES = (
    "1730682123", "1730682123.456", "1730682123456", "1718905365392963", "1718905365392963000",
    "-1", "-1730682123", "0", "1e308", "18446744073709551616", "253402300800", "-62135596801",
    '"1730682123"', '"1730682123.5"', '" 1730682123 "', '"1730682123456"', "null",
)
BAD_TIMES = ('"abc"', '""', '"nan"', '"1_000"', "true", "[]", "{}")
OCSF_TIMES = ("1730682123000", "1730682123", "1718905365392963", "-1", "0", "1e308",
              "18446744073709551616", '"1730682123000"', "null")
SOURCETYPES = ('"linux_secure"', '"ocsf"', '"ocsf:authentication"', '"cisco_asa"', '""', "null")
METADATA = ('"web01"', '"main"', '"security"', '"../etc"', '"Ünïcode"', '""', "null")
BAD_METADATA = ("7", "1.5", "[]", '["main"]', "{}", "false")
FIELDS = ("{}", '{"cluster_name":"prod-eu"}', '{"a":[1,"b",null]}', "null",
          '{"n":18446744073709551616,"n":1}')
BAD_FIELDS = ('{"a":{"b":1}}', '{"a":[[1]]}', "[]", '"x"')
BLANK_EVENTS = ('""', '"   "', '"\\t\\n"', "null")


@st.composite
def ocsf_event(draw: st.DrawFn) -> str:
    """The OCSF authentication fixture as text, its `time` sometimes in another unit or range."""
    event = dict(OCSF_AUTH)
    text_time = draw(st.sampled_from(OCSF_TIMES))
    event.pop("time")
    body = json.dumps(event)
    return body[:-1] + f', "time": {text_time}}}'


@st.composite
def event_value(draw: st.DrawFn) -> tuple[str, str]:
    """(an `event` value as text, the sourcetype text that suits it)."""
    kind = draw(st.sampled_from(("sshd", "unmapped", "ocsf", "value", "deep", "asa")))
    if kind == "sshd":
        return json.dumps(draw(st.sampled_from(SSHD_LINES))), '"linux_secure"'
    if kind == "asa":
        return json.dumps(draw(st.sampled_from(ASA_LINES))), '"cisco:asa"'
    if kind == "unmapped":
        return json.dumps(draw(st.sampled_from(UNMAPPED_LINES))), '"linux_secure"'
    if kind == "ocsf":
        return draw(ocsf_event()), draw(st.sampled_from(('"ocsf"', '"ocsf:authentication"')))
    if kind == "value":
        return draw(values), draw(st.sampled_from(SOURCETYPES))
    return draw(deep()), draw(st.sampled_from(('"ocsf"', '"cisco_asa"', '"linux_secure"')))


def _with(pairs: list[tuple[str, str]], key: str, value: str | None) -> list[tuple[str, str]]:
    """`pairs` with `key` set to `value` (removed when None)."""
    kept_ = [pair for pair in pairs if pair[0] != key]
    return kept_ if value is None else [*kept_, (key, value)]


@st.composite
def envelope(draw: st.DrawFn) -> str:
    """One HEC event object as text; a broken one has one key missing, blank or of a wrong type."""
    event, sourcetype = draw(event_value())
    pairs: list[tuple[str, str]] = [('"event"', event)]
    if draw(st.integers(0, 3)) > 0:  # most events name the sourcetype that fits them
        pairs.append(('"sourcetype"', sourcetype))
    elif draw(st.booleans()):
        pairs.append(('"sourcetype"', draw(st.sampled_from(SOURCETYPES))))
    for key in ('"host"', '"source"', '"index"'):
        if draw(st.integers(0, 2)) == 0:
            pairs.append((key, draw(st.sampled_from(METADATA))))
    if draw(st.booleans()):
        pairs.append(('"time"', draw(st.sampled_from(TIMES))))
    if draw(st.integers(0, 2)) == 0:
        pairs.append(('"fields"', draw(st.sampled_from(FIELDS))))
    if draw(st.integers(0, 7)) == 0:
        broken = draw(st.sampled_from(("missing", "blank", "metadata", "time", "fields")))
        if broken == "missing":
            pairs = _with(pairs, '"event"', None)
        elif broken == "blank":
            pairs = _with(pairs, '"event"', draw(st.sampled_from(BLANK_EVENTS)))
        elif broken == "metadata":
            key = draw(st.sampled_from(('"host"', '"source"', '"sourcetype"', '"index"')))
            pairs = _with(pairs, key, draw(st.sampled_from(BAD_METADATA)))
        elif broken == "time":
            pairs = _with(pairs, '"time"', draw(st.sampled_from(BAD_TIMES)))
        else:
            pairs = _with(pairs, '"fields"', draw(st.sampled_from(BAD_FIELDS)))
    if pairs and draw(st.integers(0, 5)) == 0:  # a duplicate key: most parsers keep the later value
        key, _ = draw(st.sampled_from(pairs))
        pairs.append((key, draw(scalars)))
    pairs = draw(st.permutations(pairs))
    return json_object(pairs, draw(st.sampled_from(("", " ", "\n  "))))


@dataclass
class JsonBody:
    text: str
    events: int | None  # None: malformed, must be refused


@st.composite
def json_body(draw: st.DrawFn) -> JsonBody:
    """Several envelopes concatenated; sometimes broken so that no JSON reading can accept it."""
    objects = draw(st.lists(envelope(), min_size=1, max_size=4))
    separators = st.sampled_from(("", "\n", " ", "\r\n", "\n\n", "\t "))
    text = draw(separators) + "".join(obj + draw(separators) for obj in objects)
    breakage = draw(st.sampled_from(("none",) * 12 + ("truncated", "array", "garbage")))
    if breakage == "truncated":  # cut inside the last object: an unfinished object never parses
        end = len(text.rstrip())
        start = end - len(objects[-1])
        text = text[: draw(st.integers(start + 1, end - 1))]
    elif breakage == "array":
        text = "[" + ",".join(objects) + "]"
    elif breakage == "garbage":
        text = text + draw(st.sampled_from(("x", "]", ",", '"', "{", "}")))
    return JsonBody(text, len(objects) if breakage == "none" else None)


def dead_payload_is_as_sent(record: dict[str, Any], body: bytes, raw_lines: list[bytes] | None) -> None:
    """SPEC §4: an object's payload is its slice of the body; a raw line's bytes are recoverable."""
    envelope_ = record["envelope"]
    payload: str = envelope_["payload"]
    if raw_lines is not None:
        b64 = envelope_["attributes"].get("payload_b64")
        sent = base64.b64decode(b64) if b64 is not None else payload.encode()
        assert sent in raw_lines, f"dead-lettered line {sent!r} is not a line that was sent"
    elif envelope_["format"] == "json":
        assert payload.encode() in body, f"DLQ payload is not the event's text as sent: {payload[:200]!r}"


# -- the properties ---------------------------------------------------------------------------


def send_and_check(app: TestClient, body: bytes, path: str, events: int | None, gzipped: bool,
                   raw_lines: list[bytes] | None = None) -> None:
    """Post `body` to a fresh service and check the answer against what it kept.

    `raw_lines`: the non-blank lines of a raw body, none of which may be refused.
    """
    with fresh_client(app) as client:
        answer = client.hec(body, path, gzipped=gzipped)
        check_answer(answer)
        if raw_lines is not None:
            # The token allows any index and every line counts: nothing here may be refused (SPEC
            # §3: a line that is not valid UTF-8 is kept, never its neighbours' reason for a 400).
            assert answer.status_code in (200, 503), f"raw body refused: {answer.json()} for {body!r}"
        after = kept(client)
        check_kept(answer, after, events)
        for record in after.dead:
            dead_payload_is_as_sent(record, body, raw_lines)


@settings(max_examples=examples(120))
@given(body=json_body(), path=st.sampled_from(JSON_PATHS), gzipped=st.booleans())
def test_every_json_body_is_kept_whole_or_refused_whole(app, body: JsonBody, path: str, gzipped: bool):
    send_and_check(app, body.text.encode(), path, body.events, gzipped)


BAD_BYTES = (b"\xe9", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80abc", b"\xc0\xaf")
line_text = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1,
                    max_size=40).filter(lambda s: bool(s.strip()))


@st.composite
def raw_line(draw: st.DrawFn) -> bytes:
    """One non-blank raw line: sshd, Cisco ASA, OCSF JSON or any text, maybe with bytes that are not
    UTF-8."""
    text = draw(st.one_of(st.sampled_from(SSHD_LINES + UNMAPPED_LINES + ASA_LINES),
                          st.just(json.dumps(OCSF_AUTH)), line_text))
    line = text.encode()
    if draw(st.integers(0, 2)) == 0:
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(BAD_BYTES)) + line[at:]
    return line


@st.composite
def raw_body(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """(a raw body, its non-blank lines): lines in any order with blank ones, LF or CRLF endings."""
    lines = draw(st.lists(raw_line(), min_size=1, max_size=5))
    blanks = draw(st.lists(st.sampled_from((b"", b" ", b"\t ")), max_size=3))
    ending = draw(st.sampled_from((b"\n", b"\r\n")))
    return ending.join(draw(st.permutations(lines + blanks))), lines


@settings(max_examples=examples(60))
@given(
    body=raw_body(),
    sourcetype=st.sampled_from(("linux_secure", "ocsf", "cisco_asa", "cisco:asa")),
    path=st.sampled_from(RAW_PATHS),
    gzipped=st.booleans(),
)
def test_every_raw_line_is_kept_and_never_refused_for_a_neighbour(
    app, body: tuple[bytes, list[bytes]], sourcetype: str, path: str, gzipped: bool
):
    data, lines = body
    send_and_check(app, data, f"{path}?sourcetype={sourcetype}", len(lines), gzipped, lines)


# An envelope's `attributes.time` as a DLQ record holds it, and as a client could change it.
REPLAYED_TIMES = (1730682123, 1730682123.5, 1730682123456, 1718905365392963, -1, 1e308, "1730682123", "abc",
                  None, [])


@st.composite
def replayed_envelope(draw: st.DrawFn, event_id: str) -> str:
    """A DLQ envelope posted back to HEC: stored (sshd, OCSF) or dead-lettered again (cisco_asa)."""
    kind = draw(st.sampled_from(("sshd", "ocsf", "cisco")))
    fmt, source_type, payload = {
        "sshd": ("raw", "linux_secure", draw(st.sampled_from(SSHD_LINES))),
        "ocsf": ("json", "ocsf", json.dumps(OCSF_AUTH)),
        "cisco": ("json", "cisco_asa", '{"msg": "%ASA-6-302013: Built outbound TCP connection"}'),
    }[kind]
    attributes: dict[str, Any] = {"host": "web01", "index": "main", "fields": {}, "token_name": "test"}
    if draw(st.booleans()):
        attributes["time"] = draw(st.sampled_from(REPLAYED_TIMES))
    return json.dumps({"id": event_id, "source": "replay", "source_type": source_type, "format": fmt,
                       "payload": payload, "attributes": attributes,
                       "received_at": "2024-11-04T01:02:03.000Z"})


@st.composite
def replay_body(draw: st.DrawFn) -> tuple[str, int]:
    ids = draw(st.lists(st.uuids().map(str), min_size=1, max_size=4, unique=True))
    return "\n".join(draw(replayed_envelope(event_id)) for event_id in ids), len(ids)


@settings(max_examples=examples(30))
@given(body=replay_body(), path=st.sampled_from(JSON_PATHS))
def test_a_replayed_envelope_sent_again_is_not_stored_twice(app, body: tuple[str, int], path: str):
    text, events = body
    with fresh_client(app) as client:
        first = client.hec(text, path)
        check_answer(first)
        check_kept(first, kept(client), events)
        if first.status_code != 200:
            return
        before = kept(client)
        again = client.hec(text, path)
        check_answer(again)
        after = kept(client)
        if again.status_code != 200:
            assert after == before, f"answered {again.status_code} but kept more"
            return
        twice = {i: n for i, n in Counter(after.stored).items() if n > 1}
        assert not twice, f"a replayed envelope sent again was stored twice: {twice}"
        both = set(after.stored) & set(after.dead_ids)
        assert not both, f"stored and dead-lettered: {both}"
