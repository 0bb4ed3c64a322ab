"""Ingest through the real handler: what a HEC client sees, what lands in storage and the DLQ."""

from __future__ import annotations

import json

import httpx
import pytest

from telhawk_ingest.normalizers import builtin_registry
from telhawk_ingest.storage.base import permanent, retry
from telhawk_ingest.storage.local import LocalBackend
from telhawk_ingest.storage.opensearch import OpenSearchBackend
from tests.fakes import ScriptedBackend, every
from tests.functional.conftest import HEC_TOKEN

SEED_FIELDS = ["timestamp", "envelope", "error", "reason", "attempts", "last_attempt"]
SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SSHD_EVENT = json.dumps({"event": SSHD, "sourcetype": "linux_secure", "host": "web01"})
CISCO = '{"event": {"msg": "%ASA-6-302013: Built outbound TCP connection"}, "sourcetype": "cisco_asa", ' \
        '"source": "firewall", "host": "fw01.example.com"}'


def stored_docs(client) -> list[dict]:
    return list(LocalBackend(client.service.settings.storage.data_dir).documents())


def test_a_good_event_is_stored_under_its_envelope_id(client):
    answer = client.hec(SSHD_EVENT)

    assert answer.status_code == 200
    assert answer.json() == {"text": "Success", "code": 0}
    docs = stored_docs(client)
    assert len(docs) == 1
    assert docs[0]["_source"]["class_uid"] == 3002
    assert docs[0]["_source"]["user"]["name"] == "alice"
    assert client.dlq_records() == []


def test_the_seeds_cisco_asa_event_lands_in_the_dlq_with_the_seeds_fields_and_error(client):
    answer = client.hec(CISCO)

    assert answer.status_code == 200
    assert answer.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    [record] = client.dlq_records()
    assert list(record)[:6] == SEED_FIELDS
    assert record["error"] == "no normalizer registered for format=json source_type=cisco_asa"
    assert record["reason"] == "normalization_failed"
    assert record["stage"] == "normalize"
    assert record["attempts"] == 1
    envelope = record["envelope"]
    assert envelope["source"] == "firewall"
    assert envelope["source_type"] == "cisco_asa"
    assert envelope["format"] == "json"
    assert json.loads(envelope["payload"]) == {"msg": "%ASA-6-302013: Built outbound TCP connection"}
    assert envelope["attributes"]["host"] == "fw01.example.com"
    assert envelope["attributes"]["token_name"] == "test"
    assert HEC_TOKEN not in json.dumps(record)
    assert stored_docs(client) == []


def test_an_invalid_ocsf_event_lands_in_the_dlq_naming_the_failing_attribute(client):
    bad = {"class_uid": 3002, "activity_id": "not-a-number", "category_uid": 3, "severity_id": 1,
           "time": 1_700_000_000_000, "type_uid": 300201, "metadata": {"version": "1.5.0", "product": {}}}
    client.hec(json.dumps({"event": bad, "sourcetype": "ocsf"}))

    [record] = client.dlq_records()
    assert list(record)[:6] == SEED_FIELDS
    assert record["reason"] == "validation_failed"
    assert record["stage"] == "validate"
    assert "activity_id" in record["error"]


def test_a_permanent_storage_failure_lands_in_the_dlq_after_one_attempt(make_client, waits):
    backend = ScriptedBackend(every(permanent("opensearch rejected the event: 400 mapper_parsing_exception",
                                              status=400, error_type="mapper_parsing_exception")))
    client = make_client(backend)

    answer = client.hec(SSHD_EVENT)

    assert answer.status_code == 200 and answer.json()["dead_lettered"] == 1
    [record] = client.dlq_records()
    assert list(record)[:6] == SEED_FIELDS
    assert record["reason"] == "storage_failed" and record["stage"] == "store"
    assert record["attempts"] == 1
    assert record["details"] == {"status": 400, "error_type": "mapper_parsing_exception"}
    assert waits == []


def test_storage_that_keeps_failing_is_retried_100_200_400_ms_then_dead_lettered(make_client, waits):
    backend = ScriptedBackend(*[every(retry("503 Service Unavailable", status=503))] * 4)
    client = make_client(backend)

    client.hec(SSHD_EVENT)

    assert waits == [0.1, 0.2, 0.4]
    [record] = client.dlq_records()
    assert record["reason"] == "storage_failed"
    assert record["attempts"] == 4
    assert record["error"] == "503 Service Unavailable"


def test_a_mixed_bulk_answer_stores_the_good_retries_the_429_and_dead_letters_the_mapping_error(
        make_client, waits):
    bulks: list[list[str]] = []

    def opensearch(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/_bulk":
            return httpx.Response(200, json={"acknowledged": True})
        lines = [json.loads(x) for x in request.content.splitlines() if x.strip()]
        ids = [a["create"]["_id"] for a in lines[::2]]
        bulks.append(ids)
        if len(bulks) == 1:
            statuses = [(201, None), (429, "es_rejected_execution_exception"),
                        (400, "mapper_parsing_exception")]
        else:
            statuses = [(201, None)] * len(ids)
        items = [{"create": {"_id": i, "status": s, **({"error": {"type": e, "reason": "x"}} if e else {})}}
                 for i, (s, e) in zip(ids, statuses, strict=True)]
        return httpx.Response(200, json={"took": 1, "errors": True, "items": items})

    settings_core = {"url": "http://127.0.0.1:9"}
    client = make_client(None, core=settings_core, storage={"backend": "opensearch"})
    client.service.backend = OpenSearchBackend(client.service.settings.core, client.service.settings.storage,
                                               transport=httpx.MockTransport(opensearch))

    answer = client.hec(SSHD_EVENT * 3)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 3, "dead_lettered": 1}
    assert len(bulks) == 2 and bulks[1] == [bulks[0][1]]
    assert waits == [0.1]
    [record] = client.dlq_records()
    assert record["envelope"]["id"] == bulks[0][2]
    assert record["details"]["error_type"] == "mapper_parsing_exception"
    assert record["details"]["status"] == 400


def test_one_request_with_good_and_bad_events_stores_the_good_and_dead_letters_the_bad(client):
    answer = client.hec(SSHD_EVENT + "\n" + CISCO + "  " + SSHD_EVENT)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 3, "dead_lettered": 1}
    assert len(stored_docs(client)) == 2
    assert len(client.dlq_records()) == 1


# -- the durability rule ------------------------------------------------------------------------

def test_dlq_disabled_and_storage_failing_answers_503_code_9_with_retry_after(make_client, waits):
    client = make_client(ScriptedBackend(*[every(retry("refused"))] * 4), dlq={"enabled": False})

    answer = client.hec(SSHD_EVENT)

    assert answer.status_code == 503
    assert answer.json()["code"] == 9 and answer.json()["text"] == "Server is busy"
    assert int(answer.headers["Retry-After"]) > 0


def test_dlq_disabled_and_a_normalization_failure_answers_503_before_storing_anything(make_client):
    backend = ScriptedBackend()
    client = make_client(backend, dlq={"enabled": False})

    answer = client.hec(SSHD_EVENT + CISCO)

    assert answer.status_code == 503 and answer.json()["code"] == 9
    assert backend.calls == []


def test_dlq_disabled_with_healthy_storage_still_answers_200(make_client):
    client = make_client(dlq={"enabled": False})

    assert client.hec(SSHD_EVENT).status_code == 200
    assert len(stored_docs(client)) == 1


def test_an_unwritable_dlq_answers_503_and_leaves_no_file(make_client, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    client = make_client(dlq={"base_path": str(blocker / "dlq")})

    answer = client.hec(CISCO)

    assert answer.status_code == 503 and answer.json()["code"] == 9


def test_a_full_dlq_answers_503(make_client):
    client = make_client(dlq={"min_free_bytes": 2**62})

    assert client.hec(CISCO).json()["code"] == 9


# -- HEC protocol ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/services/collector", "/services/collector/event",
                                  "/services/collector/event/1.0"])
def test_every_json_endpoint_ingests(client, path):
    assert client.hec(SSHD_EVENT, path=path).json() == {"text": "Success", "code": 0}


@pytest.mark.parametrize("path", ["/services/collector/raw", "/services/collector/raw/1.0"])
def test_raw_endpoints_take_one_event_per_line_with_query_metadata(client, path):
    answer = client.hec(SSHD + "\n\n" + SSHD + "\n", path=path,
                        params={"sourcetype": "linux_secure", "host": "web01", "index": "auth"})

    assert answer.json() == {"text": "Success", "code": 0}
    docs = stored_docs(client)
    assert len(docs) == 2 and {d["_index"] for d in docs} == {"auth"}


def test_gzip_bodies_are_accepted(client):
    assert client.hec(SSHD_EVENT, gzipped=True).json()["code"] == 0


@pytest.mark.parametrize(("scheme", "token"), [("Splunk", HEC_TOKEN), ("Telhawk", HEC_TOKEN),
                                               ("splunk", HEC_TOKEN), ("TELHAWK", HEC_TOKEN)])
def test_splunk_and_telhawk_schemes_are_accepted_in_any_case(client, scheme, token):
    assert client.hec(SSHD_EVENT, scheme=scheme, token=token).status_code == 200


def test_basic_auth_takes_the_token_as_password_with_any_user(client):
    import base64

    basic = base64.b64encode(f"anyone:{HEC_TOKEN}".encode()).decode()
    answer = client.hec(SSHD_EVENT, token=None, headers={"Authorization": f"Basic {basic}"})
    assert answer.status_code == 200


BAD_INPUT = [
    ("malformed json", '{"event": "x"', {}, 400, 6),
    ("missing event", '{"host": "a"}', {}, 400, 12),
    ("blank event", '{"event": "  "}', {}, 400, 13),
    ("top level array", '[{"event": "x"}]', {}, 400, 6),
    ("top level number", "42", {}, 400, 6),
    ("binary garbage", b"\xff\xfe\x00\x01garbage\x80", {}, 400, 6),
    ("empty body", "", {}, 400, 5),
    ("no token", SSHD_EVENT, {"token": None}, 401, 2),
    ("unknown token", SSHD_EVENT, {"token": "nope"}, 403, 4),
    ("wrong scheme", SSHD_EVENT, {"scheme": "Token"}, 401, 3),
    ("query token not allowed", SSHD_EVENT, {"token": None, "params": {"token": HEC_TOKEN}}, 400, 16),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage", {"headers": {"Content-Encoding": "gzip"}}, 400, 6),
]


@pytest.mark.parametrize(("case", "body", "kw", "status", "code"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_its_hec_code_and_ingests_nothing(client, case, body, kw, status, code):
    answer = client.hec(body, **kw)

    assert answer.status_code == status
    assert answer.json()["code"] == code
    assert set(answer.json()) >= {"text", "code"}
    assert stored_docs(client) == [] and client.dlq_records() == []


def test_an_oversized_body_gets_413_with_a_hec_body(make_client):
    client = make_client(hec={"max_body_bytes": 1000})

    answer = client.hec(SSHD_EVENT * 50)

    assert answer.status_code == 413
    assert set(answer.json()) >= {"text", "code"}


def test_a_malformed_third_event_rejects_the_whole_request(client):
    answer = client.hec(SSHD_EVENT + SSHD_EVENT + '{"event": }')

    assert answer.status_code == 400
    assert answer.json()["code"] == 6 and "invalid-event-number" in answer.json()
    assert stored_docs(client) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_wrong_method_gets_405_with_a_hec_body(client, method):
    answer = client.hec("", method=method)

    assert answer.status_code == 405
    assert set(answer.json()) >= {"text", "code"}


def test_the_health_endpoint_needs_no_token_and_says_healthy(client):
    answer = client.hec("", path="/services/collector/health", method="GET", token=None)

    assert answer.status_code == 200 and answer.json() == {"text": "HEC is healthy", "code": 17}


def test_the_health_endpoint_says_unhealthy_when_the_dlq_is_full_and_storage_fails(make_client):
    backend = ScriptedBackend()
    backend.is_healthy = False
    client = make_client(backend, dlq={"min_free_bytes": 2**62})

    answer = client.hec("", path="/services/collector/health", method="GET", token=None)

    assert answer.status_code == 503 and answer.json()["code"] == 18


# -- replay through HEC (the seed's workflow) ------------------------------------------------------

def test_a_dlq_envelope_posted_back_after_the_fix_is_stored_under_its_original_id(client):
    client.hec(CISCO)
    [record] = client.dlq_records()
    client.service.registry = builtin_registry()  # a registry of this test's own, then the fix
    client.service.registry.register("json", "cisco_asa", lambda env: {
        "class_uid": 4001, "category_uid": 4, "activity_id": 0, "severity_id": 1, "type_uid": 400100,
        "time": 1_700_000_000_000, "metadata": {"version": "1.5.0", "product": {"name": "ASA"}},
        "src_endpoint": {"hostname": "fw01.example.com"}, "raw_data": env.payload})

    answer = client.hec(json.dumps(record["envelope"], separators=(",", ":")), scheme="Telhawk")

    assert answer.json() == {"text": "Success", "code": 0}
    [doc] = stored_docs(client)
    assert doc["_id"] == record["envelope"]["id"]
    assert doc["_source"]["raw_data"] == record["envelope"]["payload"]


def test_a_replayed_envelope_that_fails_again_keeps_its_id(client):
    client.hec(CISCO)
    [first] = client.dlq_records()

    client.hec(json.dumps(first["envelope"]))

    ids = [r["envelope"]["id"] for r in client.dlq_records()]
    assert ids == [first["envelope"]["id"]] * 2
    replayed = client.dlq_records()[1]["envelope"]["attributes"]
    assert (replayed["token_name"], replayed["original_token_name"]) == ("test", "test")


def test_an_object_without_event_that_is_not_an_envelope_still_gets_code_12(client):
    answer = client.hec('{"id": "not-a-uuid", "payload": "x", "format": "raw", "source_type": "s"}')

    assert answer.status_code == 400 and answer.json()["code"] == 12
