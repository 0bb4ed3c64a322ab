"""GET /api/v1/normalizers through the real handler, and aliases and plugins at work in ingest."""

from __future__ import annotations

import json

import pytest

from telhawk_ingest.audit import AuditLog
from tests.functional.conftest import HEC_TOKEN, OPERATOR_TOKEN
from tests.functional.test_ingest import stored_docs
from tests.plugins import on_path, write_distribution

PATH = "/api/v1/normalizers"
READ_TOKEN = "read-only-operator-token-01"
ASA_LINE = ("%ASA-6-302013: Built inbound TCP connection 8 for outside:198.51.100.7/51234 "
            "(198.51.100.7/51234) to inside:192.168.10.20/443 (203.0.113.20/443)")
ASA_EVENT = json.dumps({"event": ASA_LINE, "sourcetype": "cisco_asa", "host": "fw"})


def audit(client) -> list[dict]:
    return list(AuditLog(client.service.settings.state_path / "audit").entries())


def routes(answer) -> list[tuple[str, str, str, str]]:
    return [(n["match"], n["format"], n["source_type"], n["origin"]["type"])
            for n in answer.json()["normalizers"]]


def test_the_built_ins_are_listed_in_match_order_with_their_classes_and_the_call_is_audited(client):
    answer = client.operator("GET", PATH)

    assert answer.status_code == 200
    body = answer.json()
    listed = body["normalizers"]
    assert body["count"] == len(listed) == 18
    assert body["plugin_failures"] == [] and body["alias_failures"] == []
    assert [n["position"] for n in listed] == list(range(1, 19))
    assert {n["match"] for n in listed[:16]} == {"exact"} and {n["match"] for n in listed[16:]} == {"pattern"}
    asa = next(n for n in listed if n["source_type"] == "cisco:asa" and n["format"] == "raw")
    assert asa == {"position": asa["position"], "match": "exact", "format": "raw", "source_type": "cisco:asa",
                   "ocsf_classes": [{"class_uid": 4001, "class_name": "Network Activity"},
                                    {"class_uid": 3002, "class_name": "Authentication"}],
                   "normalizer": "telhawk_ingest.normalizers.cisco_asa.normalize",
                   "origin": {"type": "builtin"}}
    assert listed[-1]["source_type"] == "ocsf:*" and listed[-1]["ocsf_classes"] is None
    [entry] = audit(client)
    assert (entry["operator"], entry["action"], entry["count"]) == ("ops", "list_normalizers", 18)


def test_a_read_token_may_list_normalizers(make_client):
    client = make_client(operator={"tokens": [{"name": "ops", "token": OPERATOR_TOKEN},
                                              {"name": "viewer", "token": READ_TOKEN, "role": "read"}]})

    answer = client.operator("GET", PATH, token=READ_TOKEN)

    assert answer.status_code == 200 and answer.json()["count"] == 18
    assert audit(client)[-1]["operator"] == "viewer"


@pytest.mark.parametrize(("token", "status"), [(None, 401), (HEC_TOKEN, 403), ("x" * 32, 401)])
def test_listing_needs_an_operator_credential(client, token, status):
    assert client.operator("GET", PATH, token=token).status_code == status


def test_a_parameter_or_another_method_is_refused(client):
    refused = client.operator("GET", PATH, params={"format": "raw"})
    posted = client.operator("POST", PATH)

    assert refused.status_code == 400 and "'format'" in refused.json()["error"]
    assert posted.status_code == 405
    assert audit(client)[0]["action"] == "refused"


def test_an_alias_routes_the_seeds_cisco_asa_events_and_is_listed_as_an_alias(make_client):
    client = make_client(normalizers={"aliases": {"cisco_asa": "cisco:asa"}})

    ingest = client.hec(ASA_EVENT)
    listed = client.operator("GET", PATH)

    assert ingest.json() == {"text": "Success", "code": 0}
    [doc] = (d["_source"] for d in stored_docs(client))
    assert doc["class_uid"] == 4001 and doc["metadata"]["event_code"] == "302013"
    assert client.dlq_records() == []
    assert ("exact", "raw", "cisco_asa", "alias") in routes(listed)
    alias = next(n for n in listed.json()["normalizers"] if n["source_type"] == "cisco_asa")
    assert alias["origin"] == {"type": "alias", "alias_of": "cisco:asa"}
    assert alias["normalizer"] == "telhawk_ingest.normalizers.cisco_asa.normalize"


def test_without_the_alias_the_same_event_is_dead_lettered_with_the_seed_error(client):
    assert client.hec(ASA_EVENT).json()["code"] == 0

    [record] = client.dlq_records()
    # A string event is a raw line (SPEC §4), kept as sent.
    assert record["error"] == "no normalizer registered for format=raw source_type=cisco_asa"
    assert record["envelope"]["payload"] == ASA_LINE


PLUGIN = '''
from telhawk_ingest.normalizers import NormalizerPlugin, common

def normalize(envelope):
    text, _ = common.event_line(envelope)
    event = common.network_activity(6, "Traffic")
    event.update(time=common.to_ms(common.reference_time(envelope)), src_endpoint={"ip": text.split()[0]},
                 metadata=common.metadata(envelope, {"name": "Acme"}), raw_data=envelope.payload)
    return event

PLUGIN = NormalizerPlugin(normalize=normalize, source_types=["acme:flow"], ocsf_classes=[4001])
'''


def test_plugins_are_listed_with_their_distribution_and_refused_ones_reported(make_client, tmp_path):
    site = tmp_path / "site"
    write_distribution(site, "acme-normalizers", {"flow": "acme_flow:PLUGIN"}, {"acme_flow": PLUGIN},
                       version="2.1")
    write_distribution(site, "broken-normalizers", {"bad": "broken_mod:PLUGIN"}, {"broken_mod": "1/0\n"})
    with on_path(site):
        client = make_client()

    stored = client.hec("203.0.113.9 whatever\n", path="/services/collector/raw",
                        params={"sourcetype": "acme:flow"})
    body = client.operator("GET", PATH).json()

    assert stored.json()["code"] == 0
    assert stored_docs(client)[0]["_source"]["src_endpoint"] == {"ip": "203.0.113.9"}
    plugin = [n for n in body["normalizers"] if n["origin"]["type"] == "plugin"]
    assert [(n["format"], n["source_type"]) for n in plugin] == [("json", "acme:flow"), ("raw", "acme:flow")]
    assert plugin[0]["origin"] == {"type": "plugin", "entry_point": "flow",
                                   "distribution": "acme-normalizers", "version": "2.1"}
    assert plugin[0]["ocsf_classes"] == [{"class_uid": 4001, "class_name": "Network Activity"}]
    assert body["plugin_failures"] == [{"entry_point": "bad", "distribution": "broken-normalizers",
                                        "error": "cannot load broken_mod:PLUGIN: ZeroDivisionError: "
                                                 "division by zero"}]
