"""Envelope-shaped bodies (a DLQ envelope posted back, the seed's replay workflow) get no more than a
fresh event: the same checks, the server's token name and arrival time (SPEC §3), and the same
bounded storage days, as does any batch with client times far from now."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from telhawk_ingest.envelope import new_id

EVENTS = Path(__file__).resolve().parents[1] / "events"
OCSF = json.loads((EVENTS / "ocsf_authentication.json").read_text())
NOW = "2026-01-02T03:04:05Z"
DAY = 86_400


def envelope(event_id: str | None = None, source_type: str = "cisco_asa", payload: str = '{"msg": "x"}',
             **attributes: Any) -> dict[str, Any]:
    return {"id": event_id or new_id(), "source": "fw", "source_type": source_type, "format": "json",
            "payload": payload, "attributes": {"host": "fw01", "index": None, "fields": {}, **attributes},
            "received_at": "2026-01-02T03:04:05.000Z"}


def post(client, *objects: dict[str, Any]) -> Any:
    return client.hec("\n".join(json.dumps(obj) for obj in objects))


def rows(client) -> list[tuple[str, float, dict[str, Any]]]:
    """(day, time, document) of every stored row, in commit order."""
    database = client.service.settings.storage.data_dir / "events.sqlite3"
    with sqlite3.connect(database) as conn:
        found = conn.execute("SELECT day, time, document FROM events ORDER BY rowid").fetchall()
    return [(day, when, json.loads(document)) for day, when, document in found]


def uuid7_at(seconds: float, n: int) -> str:
    """A UUIDv7 whose time is `seconds`, unique by `n`: what a client can make up."""
    return new_id(now_ns=int(seconds * 1e9))[:24] + f"{n:012x}"


# -- token_name and received_at are the server's ------------------------------------------------


@freeze_time(NOW)
def test_a_posted_envelope_cannot_set_its_token_name_or_arrival(client):
    forged = envelope(token_name="admin-pipeline")
    forged["received_at"] = "1999-01-01T00:00:00.000Z"

    assert post(client, forged).json()["code"] == 0

    [record] = client.dlq_records()  # cisco_asa has no normalizer: the record shows what was kept
    kept = record["envelope"]
    assert kept["id"] == forged["id"]
    assert kept["attributes"]["token_name"] == "test"
    assert kept["attributes"]["original_token_name"] == "admin-pipeline"
    assert kept["received_at"] == "2026-01-02T03:04:05.000Z"


# -- the same checks as a fresh event -----------------------------------------------------------


@pytest.mark.parametrize(("attributes", "top", "code", "detail"), [
    ({"time": "abc"}, {}, 6, "attributes.time must be epoch seconds"),
    ({"time": True}, {}, 6, "attributes.time must be epoch seconds"),
    ({"time": "1e400"}, {}, 6, "attributes.time must be epoch seconds"),
    ({"fields": {"k": {"nested": 1}}}, {}, 15, "attributes.fields.k is nested"),
    ({"fields": {"k": [[1]]}}, {}, 15, "attributes.fields.k is nested"),
    ({"fields": ["k"]}, {}, 6, "attributes.fields must be an object"),
    ({"host": 7}, {}, 6, "attributes.host must be a string"),
    ({"index": ["main"]}, {}, 6, "attributes.index must be a string"),
    ({}, {"source": {"x": 1}}, 6, "source must be a string"),
    ({"index": "Main"}, {}, 7, "index 'Main' is not an index name"),
    ({"payload_b64": "not base64!"}, {}, 6, "attributes.payload_b64 must be base64 text"),
])
def test_a_posted_envelope_is_refused_where_a_fresh_event_would_be(client, attributes, top, code, detail):
    bad = {**envelope(**attributes), **top}

    answer = post(client, envelope(), bad)

    assert answer.status_code == 400
    assert answer.json() == {"text": answer.json()["text"], "code": code, "invalid-event-number": 1,
                                 "detail": answer.json()["detail"]}
    assert detail in answer.json()["detail"]
    assert client.dlq_records() == []


def test_a_posted_envelope_with_a_numeric_string_time_is_taken_as_a_fresh_event_would_be(client):
    assert post(client, envelope(time="1767323045.5")).json()["code"] == 0
    [record] = client.dlq_records()
    assert record["envelope"]["attributes"]["time"] == 1767323045.5


# -- client times never create storage days of their own (SPEC §3's window, every path) -----------


def ocsf_event(seconds: int) -> dict[str, Any]:
    return {"event": OCSF, "sourcetype": "ocsf", "time": seconds}


@freeze_time(NOW)
def test_a_thousand_client_times_in_one_request_make_one_storage_day(client):
    answer = post(client, *(ocsf_event(DAY * i) for i in range(1000)))

    assert answer.json() == {"text": "Success", "code": 0}
    stored = rows(client)
    assert len(stored) == 1000
    assert {day for day, _, _ in stored} == {"2026-01-02"}
    # The documents keep their own times.
    assert sorted(doc["hec"]["time"] for _, _, doc in stored) == [DAY * i for i in range(1000)]
    assert {doc["time"] for _, _, doc in stored} == {OCSF["time"]}


@freeze_time(NOW)
def test_a_thousand_posted_envelopes_with_client_times_make_one_storage_day(client):
    envelopes = [envelope(source_type="ocsf", payload=json.dumps(OCSF), time=DAY * i) for i in range(1000)]

    assert post(client, *envelopes).json() == {"text": "Success", "code": 0}

    stored = rows(client)
    assert len(stored) == 1000 and {day for day, _, _ in stored} == {"2026-01-02"}
    assert sorted(doc["hec"]["time"] for _, _, doc in stored) == [DAY * i for i in range(1000)]


@freeze_time(NOW)
def test_made_up_envelope_ids_cannot_pick_storage_days_either(client):
    # The id's time is an envelope's arrival, which a replay keeps; a client can write any id.
    envelopes = [envelope(uuid7_at(DAY * i, i), source_type="ocsf", payload=json.dumps(OCSF))
                 for i in range(1000)]

    assert post(client, *envelopes).json() == {"text": "Success", "code": 0}

    stored = rows(client)
    assert len(stored) == 1000 and {day for day, _, _ in stored} == {"2026-01-02"}


@freeze_time(NOW)
def test_ids_made_up_within_the_replay_horizon_reach_at_most_its_days(client):
    # A genuine replay of a 20-day-old entry goes to its first day; made-up ids can reach no more
    # than the days of storage.day_window.replay_back_days (30) and ahead_days (1).
    now = 1_767_323_045
    envelopes = [envelope(uuid7_at(now - 3 * 3600 * i, i), source_type="ocsf", payload=json.dumps(OCSF))
                 for i in range(1000)]

    assert post(client, *envelopes).json() == {"text": "Success", "code": 0}

    days = {day for day, _, _ in rows(client)}
    assert len(days) <= 32
    assert min(days) >= "2025-12-03"
