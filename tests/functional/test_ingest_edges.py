"""Values at the edges of what each stage accepts: every one ends stored, dead-lettered or refused
with a 400, never a 500, and nothing of a refused request is stored (SPEC §2, §3, §4)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time

from telhawk_ingest.storage.base import Item, permanent
from telhawk_ingest.storage.local import LocalBackend
from telhawk_ingest.storage.opensearch import OpenSearchBackend
from tests.fakes import ScriptedBackend, every

ROOT = Path(__file__).resolve().parents[2]
OCSF = json.loads((ROOT / "tests" / "events" / "ocsf_authentication.json").read_text())
JSON_PATHS = ["/services/collector", "/services/collector/event", "/services/collector/event/1.0"]
NOW = "2026-01-02T03:04:05Z"
TODAY = "2026.01.02"


def stored_docs(client) -> list[dict]:
    return list(LocalBackend(client.service.settings.storage.data_dir).documents())


def ocsf(**changes: Any) -> dict[str, Any]:
    return {**OCSF, **changes}


def hec_object(event: Any, **meta: Any) -> str:
    return json.dumps({"event": event, "sourcetype": "ocsf", **meta})


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class IndexRecorder:
    """An OpenSearch node (MockTransport) that creates every document and remembers its index."""

    def __init__(self) -> None:
        self.indices: list[str] = []
        self.documents: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/_bulk":
            return httpx.Response(200, json={"acknowledged": True})
        lines = [json.loads(line) for line in request.content.splitlines() if line.strip()]
        items = []
        for action, document in zip(lines[::2], lines[1::2], strict=True):
            self.indices.append(action["create"]["_index"])
            self.documents.append(document)
            items.append({"create": {**action["create"], "status": 201}})
        return httpx.Response(200, json={"took": 1, "errors": False, "items": items})


@pytest.fixture
def opensearch(make_client):
    node = IndexRecorder()
    client = make_client(None, core={"url": "http://127.0.0.1:9"}, storage={"backend": "opensearch"})
    settings = client.service.settings
    client.service.backend = OpenSearchBackend(settings.core, settings.storage,
                                               transport=httpx.MockTransport(node))
    return client, node


# -- times in the wrong unit or out of range ------------------------------------------------------

@pytest.mark.parametrize("ocsf_time", [
    1718905365392963,        # microseconds: year 56439 when read as milliseconds
    253402300800000,         # 10000-01-01 in milliseconds
    -1,
    0,
    9223372036854775807,     # the largest 64-bit integer
])
def test_an_ocsf_time_out_of_range_is_stored_as_sent(client, ocsf_time):
    answer = client.hec(hec_object(ocsf(time=ocsf_time)))

    assert answer.status_code == 200
    [doc] = stored_docs(client)
    assert doc["_source"]["time"] == ocsf_time


@pytest.mark.parametrize("hec_time", [1730682123456, 1e300, -1, -0.0, "253402300800", 1e18, 0])
def test_a_batch_whose_second_event_has_a_hec_time_out_of_range_stores_both_once(client, hec_time):
    body = hec_object(ocsf()) + "\n" + hec_object(ocsf(message="second"), time=hec_time)

    first = client.hec(body)

    assert first.json() == {"text": "Success", "code": 0}
    docs = stored_docs(client)
    assert sorted(d["_source"]["message"] for d in docs) == sorted([OCSF["message"], "second"])
    assert client.dlq_records() == []
    assert client.hec(body).status_code == 200
    assert len({d["_id"] for d in stored_docs(client)}) == 4


@freeze_time(NOW)
@pytest.mark.parametrize(("hec_time", "day"), [
    (ms("2026-01-01T12:00:00") / 1000, "2026.01.01"),   # a day back: its own day
    (ms("2025-12-26T03:04:06") / 1000, "2025.12.26"),   # just inside 7 days back
    (ms("2025-12-26T03:04:04") / 1000, TODAY),          # just outside: arrival's day
    (ms("2026-01-03T03:04:05") / 1000, "2026.01.03"),   # one day ahead: its own day
    (ms("2026-01-03T03:04:06") / 1000, TODAY),          # more than a day ahead
    (1730682123456, TODAY),                             # milliseconds sent as seconds
    (-1, TODAY),
])
def test_event_time_picks_the_index_day_only_within_the_window_around_arrival(opensearch, hec_time, day):
    client, node = opensearch

    assert client.hec(hec_object(ocsf(), time=hec_time)).status_code == 200

    assert node.indices == [f"telhawk-main-{day}"]
    assert node.documents[0]["time"] == OCSF["time"]


@freeze_time(NOW)
@pytest.mark.parametrize(("ocsf_time", "day"), [
    (ms("2026-01-01T00:00:00"), "2026.01.01"),
    (ms("2025-12-01T00:00:00"), TODAY),
    (1718905365392963, TODAY),
])
def test_without_a_hec_time_the_ocsf_time_picks_the_day_within_the_window(opensearch, ocsf_time, day):
    client, node = opensearch

    assert client.hec(hec_object(ocsf(time=ocsf_time))).status_code == 200

    assert node.indices == [f"telhawk-main-{day}"]
    assert node.documents[0]["time"] == ocsf_time


@freeze_time(NOW)
def test_a_wider_configured_window_lets_an_older_event_pick_its_own_day(make_client):
    node = IndexRecorder()
    client = make_client(None, core={"url": "http://127.0.0.1:9"},
                         storage={"backend": "opensearch", "day_window": {"back_days": 60, "ahead_days": 0}})
    settings = client.service.settings
    client.service.backend = OpenSearchBackend(settings.core, settings.storage,
                                               transport=httpx.MockTransport(node))

    client.hec(hec_object(ocsf(), time=ms("2025-11-20T00:00:00") / 1000))
    client.hec(hec_object(ocsf(), time=ms("2026-01-02T12:00:00") / 1000))

    assert node.indices == ["telhawk-main-2025.11.20", f"telhawk-main-{TODAY}"]


def test_a_replay_days_later_goes_to_the_day_of_the_first_try(make_client):
    backend = ScriptedBackend(every(permanent("mapping conflict", status=400)))
    client = make_client(backend)
    with freeze_time("2026-01-02T23:59:59Z"):
        client.hec(hec_object(ocsf(), time=1730682123456))
    [record] = client.dlq_records()

    with freeze_time("2026-01-20T10:00:00Z"):
        answer = client.hec(json.dumps(record["envelope"]))

    assert answer.json() == {"text": "Success", "code": 0}
    first, replayed = backend.calls
    assert first == replayed == [record["envelope"]["id"]]
    days = {datetime.fromtimestamp(item.time, tz=UTC).date().isoformat() for item in backend.stored}
    assert days == {"2026-01-02"}


def test_an_envelope_whose_id_is_not_uuid7_is_stored_on_the_day_it_is_posted(make_client):
    backend = ScriptedBackend()
    client = make_client(backend)
    envelope = {"id": "00000000-0000-4000-8000-000000000000", "source": "s", "source_type": "ocsf",
                "format": "json", "payload": json.dumps(ocsf()), "received_at": "2025-03-04T05:06:07Z",
                "attributes": {"index": None, "fields": {}}}

    with freeze_time("2026-01-20T10:00:00Z"):
        assert client.hec(json.dumps(envelope)).status_code == 200

    # `received_at` is the server's, whatever the envelope said.
    [item] = backend.stored
    assert isinstance(item, Item)
    assert datetime.fromtimestamp(item.time, tz=UTC).date().isoformat() == "2026-01-20"


@pytest.mark.parametrize("envelope_id", [
    "ffffffff-ffff-7fff-bfff-ffffffffffff",   # UUIDv7 in year 10889
    "00000000-0000-7000-8000-000000000000",   # UUIDv7 at the epoch
])
def test_an_envelope_id_at_the_edge_of_uuid7_time_is_still_stored(client, envelope_id):
    envelope = {"id": envelope_id, "source": "s", "source_type": "ocsf", "format": "json",
                "payload": json.dumps(ocsf()), "attributes": {"index": None, "fields": {}}}

    assert client.hec(json.dumps(envelope)).json() == {"text": "Success", "code": 0}
    assert [d["_id"] for d in stored_docs(client)] == [envelope_id]


# -- nesting: what storage cannot write is dead-lettered with its text --------------------------

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize("path", JSON_PATHS)
@pytest.mark.parametrize("sourcetype", ["ocsf", "httpevent"])
def test_an_event_nested_300_levels_deep_is_dead_lettered_with_its_text_on_every_json_endpoint(
        client, path, sourcetype):
    event = nested(300)

    answer = client.hec('{"event": ' + event + ', "sourcetype": "' + sourcetype + '"}', path=path)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    [record] = client.dlq_records()
    assert record["reason"] == "normalization_failed"
    assert record["envelope"]["payload"] == event
    assert stored_docs(client) == []


def deep_event(unmapped: str, **changes: Any) -> str:
    """The text of an OCSF event whose `unmapped.x` is `unmapped`."""
    return json.dumps(ocsf(unmapped={"x": "DEEP"}, **changes)).replace('"DEEP"', unmapped)


def deep_ocsf(unmapped: str, **changes: Any) -> str:
    return '{"event": ' + deep_event(unmapped, **changes) + ', "sourcetype": "ocsf"}'


@pytest.mark.parametrize("deep", [nested(254), nested(300), deep_object(400), nested(1020)])
def test_an_ocsf_event_too_deep_to_store_is_dead_lettered_naming_the_member(client, deep, waits):
    body = hec_object(ocsf()) + "\n" + deep_ocsf(deep, message="deep")

    answer = client.hec(body)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 2, "dead_lettered": 1}
    assert [d["_source"]["message"] for d in stored_docs(client)] == [OCSF["message"]]
    [record] = client.dlq_records()
    assert record["reason"] == "storage_failed"
    assert record["error"] == "event cannot be encoded as JSON: unmapped: Recursion limit reached"
    assert record["details"] == {"error_type": "json_encode_error", "field": "unmapped"}
    assert record["attempts"] == 1 and waits == []
    assert record["envelope"]["payload"] == deep_event(deep, message="deep")
    assert client.hec(body).status_code == 200
    assert len(stored_docs(client)) == 2 and len(client.dlq_records()) == 2


def test_an_ocsf_event_as_deep_as_storage_can_write_is_stored(client):
    # The stored line wraps the document in one object: {"_id", "_index", "_source": {...}}.
    answer = client.hec(deep_ocsf(nested(251)))

    assert answer.json() == {"text": "Success", "code": 0}
    [doc] = stored_docs(client)
    assert doc["_source"]["unmapped"]["x"] == json.loads(nested(251))


def test_an_event_deeper_than_the_parser_takes_refuses_the_request_and_stores_nothing(client):
    answer = client.hec(hec_object(ocsf()) + "\n" + '{"event": ' + nested(1024) + "}")

    assert answer.status_code == 400
    assert answer.json()["code"] == 6 and answer.json()["invalid-event-number"] == 1
    assert stored_docs(client) == [] and client.dlq_records() == []


@pytest.mark.parametrize(("second", "code"), [
    ('{"event": "x", "fields": {"k": ' + nested(220) + "}}", 15),
    ('{"id": "018f0000-0000-7000-8000-000000000000", "source_type": "ocsf", "format": "json", '
     '"payload": "{}", "attributes": {"fields": {"k": ' + deep_object(230) + "}}}", 15),
])
def test_deep_metadata_refuses_the_whole_batch_and_stores_nothing(client, second, code):
    answer = client.hec(hec_object(ocsf()) + "\n" + second)

    assert answer.status_code == 400
    assert answer.json()["code"] == code and answer.json()["invalid-event-number"] == 1
    assert stored_docs(client) == [] and client.dlq_records() == []


# -- the DLQ keeps the event's text as sent -------------------------------------------------------

UNTOUCHED = '{"n": 18446744073709551616, "a": 1, "a": 2, "s": "caf\\u00e9 } {", "f": 1.0E+2}'


@pytest.mark.parametrize("separator", ["\n", "\r\n", " ", ""])
def test_a_dead_lettered_event_keeps_its_text_exactly_as_sent(client, separator):
    objects = ['{"event": ' + UNTOUCHED + ', "sourcetype": "cisco_asa"}',
               '{"sourcetype": "cisco_asa",\n "event":\t[1,  2.50]\n}',
               '{"event": ' + UNTOUCHED.replace('"n"', '"m"') + ', "sourcetype": "cisco_asa"}']

    answer = client.hec(separator.join(objects))

    assert answer.json()["dead_lettered"] == 3
    payloads = sorted(r["envelope"]["payload"] for r in client.dlq_records())
    assert payloads == sorted([UNTOUCHED, "[1,  2.50]", UNTOUCHED.replace('"n"', '"m"')])


def test_a_dead_lettered_event_posted_back_keeps_the_same_text(client):
    client.hec('{"event": ' + UNTOUCHED + ', "sourcetype": "cisco_asa"}')
    [first] = client.dlq_records()

    client.hec(json.dumps(first["envelope"]))

    assert [r["envelope"]["payload"] for r in client.dlq_records()] == [UNTOUCHED, UNTOUCHED]


# -- a fault in a stage costs one event, never the request -----------------------------------------

def test_an_unexpected_error_while_checking_one_event_dead_letters_it_and_stores_the_rest(client):
    real = client.service.validate

    def validate(event: dict[str, Any]) -> None:
        if event.get("message") == "bad":
            raise OverflowError("int too large to convert")
        real(event)

    client.service.validate = validate
    body = hec_object(ocsf()) + hec_object(ocsf(message="bad")) + hec_object(ocsf(message="last"))

    answer = client.hec(body)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 3, "dead_lettered": 1}
    assert sorted(d["_source"]["message"] for d in stored_docs(client)) == sorted([OCSF["message"], "last"])
    [record] = client.dlq_records()
    assert record["reason"] == "normalization_failed"
    assert record["error"] == "unexpected OverflowError: int too large to convert"
    assert json.loads(record["envelope"]["payload"])["message"] == "bad"


def test_a_storage_backend_that_raises_is_retried_then_dead_lettered_not_answered_500(make_client, waits):
    def broken(batch: Any) -> list:
        raise RuntimeError("disk driver bug")

    client = make_client(ScriptedBackend(*[broken] * 4))

    answer = client.hec(hec_object(ocsf()))

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    assert waits == [0.1, 0.2, 0.4]
    [record] = client.dlq_records()
    assert (record["reason"], record["attempts"]) == ("storage_failed", 4)
    assert record["error"] == "storage failed: RuntimeError: disk driver bug"


def test_a_storage_backend_that_raises_once_stores_on_the_retry(make_client, waits):
    def broken(batch: Any) -> list:
        raise OSError(5, "Input/output error")

    backend = ScriptedBackend(broken)
    client = make_client(backend)

    assert client.hec(hec_object(ocsf())).json() == {"text": "Success", "code": 0}
    assert len(backend.stored) == 1 and waits == [0.1]


# -- raw lines that are not valid UTF-8 ----------------------------------------------------------

SSHD_OK = b"Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SSHD_LATIN1 = b"Nov  4 01:02:04 web01 sshd[1235]: Failed password for jos\xe9 from 10.0.0.6 port 52145 ssh2"
RAW = "/services/collector/raw?sourcetype=linux_secure"


def test_one_latin_1_byte_no_longer_refuses_the_valid_line_beside_it(client):
    answer = client.hec(SSHD_OK + b"\n" + SSHD_LATIN1 + b"\n", path=RAW)

    assert answer.json() == {"text": "Success", "code": 0}
    users = sorted(d["_source"]["user"]["name"] for d in stored_docs(client))
    assert users == ["alice", "jos\ufffd"]
    assert client.dlq_records() == []


@pytest.mark.parametrize("bad", [
    b"garbage \xc0\xaf overlong",
    b"surrogate \xed\xa0\x80 half",
    b"caf\xe9",
])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_a_dead_lettered_invalid_line_keeps_its_exact_bytes_in_the_record(client, bad, ending):
    answer = client.hec(SSHD_OK + (ending or b"\n") + bad + ending, path=RAW, gzipped=True)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 2, "dead_lettered": 1}
    assert len(stored_docs(client)) == 1
    [record] = client.dlq_records()
    assert record["reason"] == "normalization_failed"
    assert base64.b64decode(record["envelope"]["attributes"]["payload_b64"]) == bad
    assert record["envelope"]["payload"] == bad.decode("utf-8", "replace")
