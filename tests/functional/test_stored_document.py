"""What a stored document holds: the OCSF event as validated plus the HEC metadata under `hec`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from telhawk_ingest.envelope import new_id
from telhawk_ingest.normalizers import builtin_registry
from telhawk_ingest.storage.local import DB_NAME, LocalBackend

EVENTS = Path(__file__).resolve().parents[1] / "events"
SSHD = (EVENTS / "sshd.log").read_text().splitlines()[0]
VPC = (EVENTS / "vpc_flow.log").read_text().splitlines()[0]
OCSF = json.loads((EVENTS / "ocsf_authentication.json").read_text())


def sources(client) -> list[dict[str, Any]]:
    return [doc["_source"] for doc in LocalBackend(client.service.settings.storage.data_dir).documents()]


def hec_object(**given: Any) -> str:
    return json.dumps(given)


@pytest.mark.parametrize(
    ("sourcetype", "event"),
    [("linux_secure", SSHD), ("aws:vpcflow", VPC), ("ocsf", OCSF), ("ocsf:authentication", OCSF)],
)
def test_every_normalizer_stores_the_hec_metadata_beside_the_ocsf_attributes(client, sourcetype, event):
    fields = {"cluster_name": "prod-eu", "rack": 7, "tags": ["a", "b"]}
    answer = client.hec(hec_object(event=event, sourcetype=sourcetype, host="web01", source="/var/log/x",
                                   index="auth", fields=fields, time=1730682123.5))

    assert answer.json() == {"text": "Success", "code": 0}
    [doc] = sources(client)
    assert doc["hec"] == {"host": "web01", "source": "/var/log/x", "sourcetype": sourcetype, "index": "auth",
                          "fields": fields, "time": 1730682123.5}
    assert "class_uid" in doc and "metadata" in doc


def test_an_ocsf_event_passes_through_unchanged_beside_its_hec_object(client):
    client.hec(hec_object(event=OCSF, sourcetype="ocsf", host="idp01"))

    [doc] = sources(client)
    hec = doc.pop("hec")
    assert doc == OCSF  # the OCSF part exactly as sent
    assert hec["host"] == "idp01"


def test_metadata_not_given_is_null_fields_empty_and_source_the_token_default(client):
    client.hec(hec_object(event=SSHD, sourcetype="linux_secure"))

    [doc] = sources(client)
    assert doc["hec"] == {"host": None, "source": "http:test", "sourcetype": "linux_secure", "index": None,
                          "fields": {}, "time": None}


def test_raw_lines_carry_the_query_metadata(client):
    client.hec(f"{SSHD}\n{SSHD}\n", path="/services/collector/raw?sourcetype=linux_secure&host=h1&index=auth"
                                         "&source=syslog")

    docs = sources(client)
    assert [d["hec"] for d in docs] == [{"host": "h1", "source": "syslog", "sourcetype": "linux_secure",
                                         "index": "auth", "fields": {}, "time": None}] * 2


def test_a_replayed_envelope_keeps_its_original_metadata_and_raw_bytes(client):
    envelope = {"id": new_id(), "source": "edge", "source_type": "linux_secure", "format": "raw",
                "payload": SSHD.replace("alice", "al\ufffdce"),
                "attributes": {"host": "web09", "index": None, "fields": {"k": "v"}, "time": 1730682123,
                               "token_name": "old", "payload_b64": "bm90IHJlYWxseQ=="},
                "received_at": "2024-11-04T01:02:03.000Z"}

    client.hec(json.dumps(envelope))

    [doc] = sources(client)
    assert doc["hec"] == {"host": "web09", "source": "edge", "sourcetype": "linux_secure", "index": None,
                          "fields": {"k": "v"}, "time": 1730682123, "payload_b64": "bm90IHJlYWxseQ=="}


def test_the_embedded_store_finds_an_event_by_its_fields_with_plain_sql(client):
    client.hec(hec_object(event=SSHD, sourcetype="linux_secure", fields={"cluster_name": "prod-eu"}) +
               hec_object(event=SSHD, sourcetype="linux_secure", fields={"cluster_name": "dev", "port": 22}) +
               hec_object(event=SSHD, sourcetype="linux_secure", fields={"port": "ssh"}))
    database = client.service.settings.storage.data_dir / DB_NAME

    with sqlite3.connect(database) as conn:
        found = conn.execute(
            "SELECT json_extract(document, '$.hec.fields') FROM events "
            "WHERE json_extract(document, '$.hec.fields.cluster_name') = 'prod-eu'").fetchall()
        ports = conn.execute(
            "SELECT json_extract(document, '$.hec.fields.port') FROM events "
            "WHERE json_extract(document, '$.hec.fields.port') IS NOT NULL ORDER BY rowid").fetchall()

    assert [json.loads(row[0]) for row in found] == [{"cluster_name": "prod-eu"}]
    assert ports == [(22,), ("ssh",)]  # client-chosen keys and types: nothing to map, nothing refused


def test_an_ocsf_event_with_its_own_hec_attribute_is_dead_lettered_not_overwritten(client):
    event = dict(OCSF, hec={"mine": True})

    answer = client.hec(hec_object(event=event, sourcetype="ocsf"))

    assert answer.json()["dead_lettered"] == 1
    assert sources(client) == []
    [record] = client.dlq_records()
    assert record["reason"] == "validation_failed"
    assert json.loads(record["envelope"]["payload"])["hec"] == {"mine": True}


SHARED = dict(OCSF)


def test_the_normalizers_result_is_never_changed_so_a_shared_object_stays_as_it_was(make_client):
    registry = builtin_registry()
    registry.register("json", "cached", lambda envelope: SHARED)
    client = make_client()
    client.service.registry = registry

    client.hec(hec_object(event={"x": 1}, sourcetype="cached", host="a") +
               hec_object(event={"x": 2}, sourcetype="cached", host="b"))

    assert "hec" not in SHARED
    assert [doc["hec"]["host"] for doc in sources(client)] == ["a", "b"]
