"""Generated HEC bodies through the real handler: whatever comes in, the answer keeps SPEC §2.

Bodies mix valid and broken objects, odd JSON values (integers past 64 bits, times in any unit,
deep nesting up to and past the parser's limit, escapes), DLQ envelopes posted back, gzip, and
raw lines in any encoding. For every body: no 5xx (the DLQ is healthy here, so not even 503);
a 200 means every event is stored once or dead-lettered once, with its text or its exact bytes;
a 4xx stores and dead-letters nothing.
"""

from __future__ import annotations

import base64
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from telhawk_ingest import service as service_module
from telhawk_ingest.service import Service
from telhawk_ingest.storage.local import LocalBackend
from tests.functional.conftest import Client, settings_for

ROOT = Path(__file__).resolve().parents[2]
OCSF = json.loads((ROOT / "tests" / "events" / "ocsf_authentication.json").read_text())
SSHD = [line.encode() for line in (ROOT / "tests" / "events" / "sshd.log").read_text().splitlines() if line]
SOURCETYPES = ["ocsf", "linux_secure", "httpevent", "cisco_asa", "aws:vpcflow", "ocsf:authentication"]

TIMES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1718905365392963, 1730682123456, 253402300800, -0.0, 0, "1700000000.5", "1e400",
                     "soon", True, None, [1]]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)
DEPTHS = st.sampled_from([1, 50, 200, 253, 254, 255, 300, 1020, 1024, 1025])


@st.composite
def uuid7s(draw: st.DrawFn) -> str:
    """UUIDv7 text with any millisecond time, as a DLQ envelope posted back may carry."""
    value = draw(st.integers(min_value=0, max_value=2**128 - 1))
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0b11 << 62) | 0b10 << 62
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def nested_text(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


@st.composite
def events(draw: st.DrawFn) -> str:
    """The text of an `event` value: an OCSF event (maybe changed), any JSON value, or deep nesting."""
    kind = draw(st.sampled_from(["ocsf", "ocsf", "value", "string", "deep", "deep_ocsf"]))
    if kind == "ocsf":
        event = dict(OCSF)
        if draw(st.booleans()):
            event["time"] = draw(TIMES)
        return json.dumps(event, indent=draw(st.sampled_from([None, 1])))
    if kind == "value":
        return json.dumps(draw(VALUES))
    if kind == "string":
        return json.dumps(draw(st.sampled_from([line.decode() for line in SSHD]) | st.text(max_size=30)))
    deep = nested_text(draw(DEPTHS), draw(st.sampled_from(["array", "object"])))
    if kind == "deep":
        return deep
    return json.dumps({**OCSF, "unmapped": {"x": "DEEP"}}).replace('"DEEP"', deep)


@st.composite
def hec_objects(draw: st.DrawFn) -> tuple[str, bool]:
    """(text of one object, whether a well-behaved parser must take it)."""
    kind = draw(st.sampled_from(["event", "event", "event", "replay", "broken"]))
    if kind == "broken":
        return draw(st.sampled_from(['{"event": }', '{"host": "h"}', '{"event": null}', "[1]",
                                     '{"event": "x", "host": 7}', '{"event": "x", "fields": {"k": {}}}',
                                     '{"event": "x", "time": "soon"}', "{"])), False
    if kind == "replay":
        envelope = {"id": draw(uuid7s()), "source": "s", "source_type": draw(st.sampled_from(SOURCETYPES)),
                    "format": draw(st.sampled_from(["json", "raw"])),
                    "payload": draw(st.sampled_from([json.dumps(OCSF), SSHD[0].decode(), "{}", "x"])),
                    "attributes": {"time": draw(TIMES), "index": None, "fields": {}}}
        # Checked as a fresh event's `time` is: a posted-back envelope is no way around the rules.
        return json.dumps(envelope), _epoch_seconds(envelope["attributes"]["time"])
    meta: dict[str, Any] = {"sourcetype": draw(st.sampled_from(SOURCETYPES))}
    if draw(st.booleans()):
        meta["time"] = draw(st.integers(min_value=-(2**63), max_value=2**64 - 1)
                            | st.floats(allow_nan=False, allow_infinity=False))
    if draw(st.booleans()):
        meta["fields"] = draw(st.dictionaries(st.text(max_size=5), SCALARS, max_size=3))
    text = '{"event": ' + draw(events()) + ", " + json.dumps(meta)[1:]
    return text, _takes(text)


def _epoch_seconds(value: Any) -> bool:
    """Whether HEC takes `value` as a `time`: absent, or a finite JSON number or numeric string."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _takes(text: str) -> bool:
    """Whether the parser must take this object: orjson parses it (1,024 levels at most) and its
    event is not blank."""
    try:
        event = orjson.loads(text)["event"]
    except orjson.JSONDecodeError:
        return False
    return event is not None and not (isinstance(event, str) and (not event or event.isspace()))


@contextmanager
def fresh_client(app: TestClient) -> Iterator[Client]:
    """A service of its own on empty directories, served by the real handlers."""
    with tempfile.TemporaryDirectory(prefix="telhawk-prop-") as home:
        svc = Service(settings_for(Path(home)))
        saved, service_module._service = service_module._service, svc
        try:
            yield Client(app, svc)
        finally:
            service_module._service = saved
            svc.backend.close()
            # The counters flusher writes on its own thread: hand the file over before the folder goes.
            svc.counters.retire()


def check(app: TestClient, body: bytes, expected_events: int | None, **kw: Any) -> None:
    """Send `body`; `expected_events` is the event count when the body must be taken, else None."""
    with fresh_client(app) as client:
        answer = client.hec(body, **kw)
        stored = [doc["_id"] for doc in LocalBackend(client.service.settings.storage.data_dir).documents()]
        dead = client.dlq_records()
    assert answer.status_code < 500, answer.json()
    if answer.status_code != 200:
        assert answer.status_code == 400 and expected_events is None, answer.json()
        assert stored == [] and dead == []
        return
    assert expected_events is not None
    ids = stored + [r["envelope"]["id"] for r in dead]
    assert len(ids) == len(set(ids)) == expected_events
    for record in dead:
        envelope = record["envelope"]
        if "payload_b64" in envelope["attributes"]:
            exact = base64.b64decode(envelope["attributes"]["payload_b64"])
            assert envelope["payload"] == exact.decode("utf-8", "replace")


@given(st.lists(hec_objects(), min_size=1, max_size=4), st.sampled_from(["", " ", "\n", "\r\n"]),
       st.booleans())
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_any_json_body_is_answered_without_a_5xx_and_every_taken_event_ends_once(app, objects, sep, gz):
    replayed = [text[8:44] for text, _ in objects if text.startswith('{"id": ')]
    assume(len(replayed) == len(set(replayed)))  # one envelope posted twice is another matter
    body = sep.join(text for text, _ in objects)
    taken = all(ok for _, ok in objects)
    check(app, body.encode(), len(objects) if taken else None, gzipped=gz)


LINES = st.one_of(st.sampled_from(SSHD), st.binary(max_size=40),
                  st.sampled_from([b"\xe9", b"\xc0\xaf", b"\xed\xa0\x80", b"caf\xc3\xa9", b"  ", b""]))


@given(st.lists(LINES, min_size=1, max_size=6), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
def test_any_raw_body_keeps_every_non_blank_line_once(app, lines, ending, last_ending):
    body = ending.join(lines) + (ending if last_ending else b"")
    texts = [raw.decode("utf-8", "replace").removesuffix("\r") for raw in body.split(b"\n")]
    count = sum(1 for text in texts if text and not text.isspace())
    check(app, body, count or None, path="/services/collector/raw?sourcetype=linux_secure")
