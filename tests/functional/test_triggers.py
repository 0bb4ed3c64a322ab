"""Event-driven ingest (SPEC §12): Pub/Sub CloudEvents through the function's route, and the SQS and
Kinesis Lambda entry points with AWS's published sample events (tests/events/aws: the Lambda
developer guide's sample SQS and Kinesis events and its CloudWatch Logs sample, whose `data` a
Kinesis subscription carries the same way). Real local storage, real DLQ files."""

from __future__ import annotations

import base64
import gzip
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from telhawk_ingest.envelope import id_time
from telhawk_ingest.service import Service
from telhawk_ingest.storage.local import LocalBackend
from telhawk_ingest.triggers import (
    PUBSUB_TYPE,
    cloud_event_message,
    deliver,
    envelope_id,
    handle_kinesis,
    handle_sqs,
)
from tests.conftest import examples
from tests.functional.conftest import settings_for

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "tests" / "events" / "aws"
SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SUBSCRIPTION = "projects/demo/subscriptions/logs"
PUBLISHED = "2026-03-01T10:00:00.123456789Z"
SCOPES = {"subscriptions": {
    "logs": {"token_name": "pubsub-logs", "default_index": "main", "allowed_indexes": ["main", "auth"]},
    "my-queue": {"token_name": "sqs-queue", "default_index": "main"},
    "lambda-stream": {"token_name": "kinesis", "default_index": "main"},
}}


@pytest.fixture
def client(make_client):
    return make_client(triggers=SCOPES)


def stored(client) -> list[dict[str, Any]]:
    return list(LocalBackend(client.service.settings.storage.data_dir).documents())


def push_body(data: bytes | str, message_id: str = "1001", **attributes: str) -> dict[str, Any]:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"message": {"data": encoded, "attributes": attributes, "messageId": message_id,
                        "publishTime": PUBLISHED},
            "subscription": SUBSCRIPTION}


def cloud_event(body: dict[str, Any], kind: str = PUBSUB_TYPE) -> CloudEvent:
    return CloudEvent({"type": kind, "source": "//pubsub.googleapis.com/projects/demo/topics/logs",
                       "id": body["message"]["messageId"], "time": PUBLISHED}, body)


def post_binary(client, event: CloudEvent):
    headers, data = to_binary(event)
    return client.app.post("/triggers/pubsub", content=data, headers=headers)


def totals(client) -> dict[str, int]:
    client.service.counters.flush()
    return client.service.counters.totals()


# -- Pub/Sub -----------------------------------------------------------------------------------


def test_a_binary_cloud_event_of_raw_lines_is_stored_under_ids_from_the_message(client):
    body = push_body(f"{SSHD}\n{SSHD}\n".encode(), sourcetype="linux_secure", host="web01")
    answer = post_binary(client, cloud_event(body))

    assert answer.status_code == 200
    docs = stored(client)
    published_ms = 1772359200123
    assert [d["_id"] for d in docs] == [
        envelope_id("pubsub", "logs", "1001", published_ms, n) for n in (0, 1)]
    assert id_time(docs[0]["_id"]) == published_ms / 1000
    assert docs[0]["_source"]["user"]["name"] == "alice"
    assert docs[0]["_source"]["hec"]["host"] == "web01"
    assert client.dlq_records() == []
    counts = totals(client)
    assert counts["stored_via_pubsub"] == 2 and counts["stored"] == 2


def test_a_structured_cloud_event_and_a_plain_push_body_are_taken_alike(client):
    structured = push_body(SSHD.encode(), message_id="1", sourcetype="linux_secure")
    headers, data = to_structured(cloud_event(structured))
    assert client.app.post("/triggers/pubsub", content=data, headers=headers).status_code == 200
    # The push subscription's own body, no CloudEvent headers: the adapter converts it.
    plain = push_body(SSHD.encode(), message_id="2", sourcetype="linux_secure")
    assert client.app.post("/triggers/pubsub", json=plain).status_code == 200

    assert len(stored(client)) == 2


def test_hec_events_keep_their_own_metadata_and_a_failing_one_is_dead_lettered_under_its_envelope_id(client):
    good = {"event": SSHD, "sourcetype": "linux_secure", "index": "auth"}
    bad = {"event": {"msg": "%ASA-6-302013"}, "sourcetype": "cisco_asa"}
    data = (json.dumps(good) + "\n" + json.dumps(bad)).encode()
    answer = post_binary(client, cloud_event(push_body(data, hec_format="event")))

    assert answer.status_code == 200
    [doc] = stored(client)
    assert doc["_source"]["hec"]["index"] == "auth"
    [record] = client.dlq_records()
    eid = envelope_id("pubsub", "logs", "1001", 1772359200123, 1)
    assert record["envelope"]["id"] == eid
    assert record["id"] == f"failed_1772359200_{eid}"
    assert record["reason"] == "normalization_failed"
    assert record["envelope"]["attributes"]["token_name"] == "pubsub-logs"
    assert record["envelope"]["attributes"]["trigger"] == "pubsub"


def test_the_same_message_delivered_twice_is_stored_once_and_dead_lettered_once(client):
    data = (json.dumps({"event": SSHD, "sourcetype": "linux_secure"}) + "\n"
            + json.dumps({"event": "no normalizer", "sourcetype": "unknown"})).encode()
    event = cloud_event(push_body(data, hec_format="event"))
    for _ in range(2):
        assert post_binary(client, event).status_code == 200

    assert len(stored(client)) == 1
    assert len(client.dlq_records()) == 1
    # The second delivery's dead letter was already there: it is not counted again.
    assert totals(client)["dlq_normalization_failed"] == 1
    assert client.service.healthz()["dlq_stats"]["pending_files"] == 1


BAD_MESSAGES = {
    "data is not base64": push_body("not base64 !!!"),
    "data is not valid UTF-8": push_body(b"caf\xe9 au lait"),
    "data is empty": push_body(b"   \n"),
    "no Pub/Sub message": {"subscription": SUBSCRIPTION, "something": "else"},
    "not a HEC event body": push_body(b"{not json", hec_format="event"),
    "hec_format 'xml'": push_body(b"<event/>", hec_format="xml"),
}


@pytest.mark.parametrize("problem", sorted(BAD_MESSAGES))
def test_a_message_that_cannot_be_decoded_is_dead_lettered_whole(client, problem):
    body = BAD_MESSAGES[problem]
    answer = post_binary(client, CloudEvent({"type": PUBSUB_TYPE, "source": "//pubsub.googleapis.com/x",
                                             "id": "77", "time": PUBLISHED}, body))

    assert answer.status_code == 200  # kept: nothing to deliver again
    [record] = client.dlq_records()
    assert record["reason"] == "decode_failed"
    assert record["stage"] == "decode"
    assert problem in record["error"]
    envelope = record["envelope"]
    message = body.get("message") or {}
    if problem == "data is not valid UTF-8":
        assert base64.b64decode(envelope["attributes"]["payload_b64"]) == b"caf\xe9 au lait"
    elif problem == "no Pub/Sub message":
        assert json.loads(envelope["payload"]) == body
    elif problem != "data is not base64":
        assert envelope["payload"] == base64.b64decode(message["data"]).decode()
    else:
        assert envelope["payload"] == "not base64 !!!"
    assert stored(client) == []
    assert client.service.healthz()["dlq_stats"]["by_reason"]["decode_failed"] == 1


def test_a_cloud_event_of_another_type_is_dead_lettered_whole(client):
    event = cloud_event(push_body(SSHD.encode()), kind="google.cloud.storage.object.v1.finalized")
    assert post_binary(client, event).status_code == 200

    [record] = client.dlq_records()
    assert record["reason"] == "decode_failed"
    assert "google.cloud.storage.object.v1.finalized" in record["error"]
    kept = json.loads(record["envelope"]["payload"])
    assert kept["attributes"]["type"] == "google.cloud.storage.object.v1.finalized"
    assert kept["data"] == push_body(SSHD.encode())


def test_an_eventarc_subscription_without_a_scope_of_its_own_takes_its_topics(make_client):
    client = make_client(triggers={"subscriptions": {"audit-topic": {"token_name": "eventarc"}}})
    body = push_body(SSHD.encode(), sourcetype="linux_secure")
    body["subscription"] = "projects/demo/subscriptions/eventarc-us-central1-trigger-sub-042"
    source = "//pubsub.googleapis.com/projects/demo/topics/audit-topic"
    event = CloudEvent({"type": PUBSUB_TYPE, "source": source, "id": "1001", "time": PUBLISHED}, body)
    assert post_binary(client, event).status_code == 200

    [doc] = stored(client)
    assert doc["_source"]["hec"]["source"] == "http:eventarc"


def test_an_index_outside_the_subscriptions_scope_is_refused_as_hec_refuses_it(client):
    body = push_body(SSHD.encode(), sourcetype="linux_secure", index="secret")
    assert post_binary(client, cloud_event(body)).status_code == 200

    assert stored(client) == []
    [record] = client.dlq_records()
    assert record["reason"] == "decode_failed"
    assert record["details"]["hec_code"] == 7
    assert "'secret' is not allowed" in record["error"]


def test_a_subscription_without_a_configured_scope_is_dead_lettered_not_ingested(client):
    body = push_body(SSHD.encode(), sourcetype="linux_secure")
    body["subscription"] = "projects/demo/subscriptions/unknown"
    assert client.app.post("/triggers/pubsub", json=body).status_code == 200  # a push: no topic

    [record] = client.dlq_records()
    assert "'unknown'" in record["error"] and "triggers.subscriptions" in record["error"]
    assert stored(client) == []


def test_when_an_event_can_be_neither_stored_nor_dead_lettered_the_function_fails(make_client):
    client = make_client(triggers=SCOPES, dlq={"enabled": False})
    answer = post_binary(client, cloud_event(push_body(b"no normalizer for this line")))

    assert answer.status_code == 503  # Pub/Sub delivers the message again
    assert answer.headers["Retry-After"] == "5"
    assert totals(client)["trigger_pubsub_failures"] == 1


def test_a_request_that_is_no_cloud_event_is_refused_by_the_framework(client):
    answer = client.app.post("/triggers/pubsub", content=b'{"hello": 1}',
                             headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert client.dlq_records() == []


# -- SQS ---------------------------------------------------------------------------------------


def sample(name: str) -> dict[str, Any]:
    return json.loads((AWS / name).read_text())


def test_the_sample_sqs_event_is_kept_whole_and_reports_no_failures(client):
    from functions.sqs_ingest import handler

    assert handler(sample("sqs_event.json"), None) == {"batchItemFailures": []}

    records = client.dlq_records()  # "Test message." has no normalizer (sourcetype httpevent)
    assert sorted(r["envelope"]["attributes"]["message_id"] for r in records) == [
        "059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"]
    assert {r["envelope"]["attributes"]["token_name"] for r in records} == {"sqs-queue"}
    assert {r["envelope"]["payload"] for r in records} == {"Test message."}
    assert [r["id"].split("_")[1] for r in records] == ["1545082649", "1545082650"]


def test_only_the_record_that_cannot_be_kept_is_in_batch_item_failures(make_client):
    client = make_client(triggers=SCOPES, dlq={"enabled": False})
    event = sample("sqs_event.json")
    good, bad = event["Records"]
    good["body"] = SSHD
    good["messageAttributes"] = {"sourcetype": {"stringValue": "linux_secure", "dataType": "String"}}

    assert handle_sqs(event, client.service) == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
    assert len(stored(client)) == 1
    assert totals(client)["trigger_sqs_failures"] == 1


def test_an_sqs_record_without_a_body_is_dead_lettered_not_retried(client):
    event = sample("sqs_event.json")
    del event["Records"][0]["body"]

    assert handle_sqs(event, client.service) == {"batchItemFailures": []}
    reasons = sorted(r["reason"] for r in client.dlq_records())
    assert reasons == ["decode_failed", "normalization_failed"]
    [decode] = [r for r in client.dlq_records() if r["reason"] == "decode_failed"]
    assert decode["error"] == "the record has no body"


# -- Kinesis and CloudWatch Logs -----------------------------------------------------------------


def test_the_sample_kinesis_event_is_kept_whole(client):
    from functions.kinesis_ingest import handler

    assert handler(sample("kinesis_event.json"), None) == {"batchItemFailures": []}
    payloads = sorted(r["envelope"]["payload"] for r in client.dlq_records())
    assert payloads == ["Hello, this is a test.", "This is only a test."]


def cloudwatch_record(data: str, sequence: str = "49590338271490256608559692538361571095921575989136588898"
                      ) -> dict[str, Any]:
    record = sample("kinesis_event.json")["Records"][0]
    record["kinesis"]["data"] = data
    record["kinesis"]["sequenceNumber"] = sequence
    record["eventID"] = f"shardId-000000000006:{sequence}"
    return record


def test_cloudwatch_logs_records_become_one_event_per_log_event_with_group_and_stream(client):
    data = sample("cloudwatch_logs_event.json")["awslogs"]["data"]
    assert handle_kinesis({"Records": [cloudwatch_record(data)]}, client.service) == {"batchItemFailures": []}

    records = sorted(client.dlq_records(), key=lambda r: r["envelope"]["payload"])
    assert [r["envelope"]["payload"] for r in records] == ["[ERROR] First test message",
                                                           "[ERROR] Second test message"]
    envelope = records[0]["envelope"]
    assert envelope["source"] == "testLogGroup"
    assert envelope["source_type"] == "aws:cloudwatchlogs"
    assert envelope["attributes"]["host"] == "testLogStream"
    assert envelope["attributes"]["time"] == 1440442987.0
    assert envelope["attributes"]["fields"]["log_group"] == "testLogGroup"
    assert envelope["attributes"]["fields"]["log_event_id"] == "eventId1"


def test_a_cloudwatch_control_message_is_skipped(client):
    control = {"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "",
               "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 1432826855000,
                                                         "message": "CWL CONTROL MESSAGE: Checking health"}]}
    data = base64.b64encode(gzip.compress(json.dumps(control).encode())).decode()

    assert handle_kinesis({"Records": [cloudwatch_record(data)]}, client.service) == {"batchItemFailures": []}
    assert client.dlq_records() == [] and stored(client) == []


def test_a_kinesis_batch_stops_at_the_first_record_that_cannot_be_kept(make_client):
    client = make_client(triggers=SCOPES, dlq={"enabled": False})
    event = sample("kinesis_event.json")
    first, second = event["Records"]
    second["kinesis"]["data"] = base64.b64encode(SSHD.encode()).decode()

    answer = handle_kinesis(event, client.service)

    # Lambda retries the shard from this sequence number: the second record is not delivered now.
    assert answer == {"batchItemFailures": [{"itemIdentifier": first["kinesis"]["sequenceNumber"]}]}
    assert stored(client) == []


def test_a_fifo_queue_reports_the_failed_record_and_every_later_one_undelivered(make_client):
    client = make_client(triggers={"subscriptions": {"my-queue.fifo": {"token_name": "fifo"}}},
                         dlq={"enabled": False})
    event = sample("sqs_event.json")
    for record in event["Records"]:
        record["eventSourceARN"] += ".fifo"
    good = json.loads(json.dumps(event["Records"][0]))
    good["messageId"], good["body"] = "m0", SSHD
    good["messageAttributes"] = {"sourcetype": {"stringValue": "linux_secure", "dataType": "String"}}
    event["Records"].insert(0, good)
    later = event["Records"][2]  # would be stored, but comes after a failure: not delivered now
    later["body"], later["messageAttributes"] = SSHD, good["messageAttributes"]

    answer = handle_sqs(event, client.service)

    assert answer == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"][1:]]}
    assert len(stored(client)) == 1


def test_data_over_the_body_limit_is_dead_lettered_whole(make_client):
    client = make_client(triggers=SCOPES, hec={"max_body_bytes": 64})
    assert post_binary(client, cloud_event(push_body(SSHD.encode()))).status_code == 200

    [record] = client.dlq_records()
    assert record["reason"] == "decode_failed"
    assert "hec.max_body_bytes" in record["error"]
    assert record["envelope"]["payload"] == SSHD


# -- schedules -----------------------------------------------------------------------------------


def schedule_app(name: str):
    from functions_framework.aio import create_asgi_app
    from starlette.testclient import TestClient

    return TestClient(create_asgi_app(target=name, source=str(ROOT / "functions" / f"{name}.py")))


def test_the_scheduled_replay_does_nothing_without_a_filter_and_runs_at_the_time_given(client):
    from functions.scheduled_replay import handler

    event = {"detail-type": "Scheduled Event", "source": "aws.events", "time": "2030-05-06T07:08:09Z"}
    assert handler(event, None) == {"schedule": "replay", "time": "2030-05-06T07:08:09.000Z",
                                    "result": {"skipped": "triggers.replay_filter is not set"}}
    # The same function as a Cloud Scheduler HTTP target.
    http = schedule_app("scheduled_replay")
    answer = http.post("/", json={"time": 1_900_000_000})
    assert answer.status_code == 200
    assert answer.json()["time"] == "2030-03-17T17:46:40.000Z"
    assert http.post("/", content=b"[1]").status_code == 400
    assert http.get("/").status_code == 405
    assert totals(client)["trigger_schedule_runs"] == 2


# -- the Pub/Sub function on Lambda (a push subscription to API Gateway) ---------------------------


def test_a_push_through_api_gateway_reaches_the_same_function(client):
    from tests.functional.test_lambda import function_module, http_api_event

    handler = function_module("pubsub_ingest").handler
    body = json.dumps(push_body(SSHD.encode(), sourcetype="linux_secure")).encode()

    json_type = {"Content-Type": "application/json"}
    answer = handler(http_api_event("POST", "/triggers/pubsub", body, json_type), None)
    assert answer["statusCode"] == 200
    assert len(stored(client)) == 1
    refused = handler(http_api_event("POST", "/triggers/pubsub", b"[]", json_type), None)
    assert refused["statusCode"] == 400


def test_through_api_gateway_a_message_not_kept_is_answered_503_too(make_client):
    from tests.functional.test_lambda import function_module, http_api_event

    make_client(triggers=SCOPES, dlq={"enabled": False})
    handler = function_module("pubsub_ingest").handler
    body = json.dumps(push_body(b"no normalizer for this line")).encode()

    event = http_api_event("POST", "/triggers/pubsub", body, {"Content-Type": "application/json"})
    answer = handler(event, None)
    assert answer["statusCode"] == 503
    assert answer["headers"]["retry-after"] == "5"


# -- any message: kept, never an exception ---------------------------------------------------------

_TEXT = st.text(max_size=40)
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["sourcetype", "source", "host", "index", "hec_format", "x"]),
    st.one_of(_TEXT, st.sampled_from(["event", "raw", "linux_secure", "main", "auth"])), max_size=5)
_DATA = st.one_of(st.binary(max_size=200), st.sampled_from([SSHD.encode(), b'{"event": "x"}', b"{}"]))


@contextmanager
def scoped_service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="telhawk-triggers-") as home:
        svc = Service(settings_for(Path(home), triggers=SCOPES))
        try:
            yield svc
        finally:
            svc.backend.close()
            svc.counters.retire()


def kept(svc: Service) -> int:
    files = list(svc.settings.dlq.base_path.glob("failed_*.json"))
    return len(list(LocalBackend(svc.settings.storage.data_dir).documents())) + len(files)


@settings(max_examples=examples(60))
@given(data=_DATA, attributes=_ATTRIBUTES, garble=st.booleans(), kind=st.sampled_from([PUBSUB_TYPE, "other"]))
def test_every_message_is_kept_once_and_nothing_raises(data, attributes, garble, kind):
    body = push_body(data, message_id="p1", **attributes)
    if garble:
        body["message"]["data"] = body["message"]["data"][:-1] + "!"
    with scoped_service() as svc:
        delivery = deliver(svc, cloud_event_message({"type": kind, "id": "p1"}, body))

        assert delivery.ok
        assert kept(svc) == delivery.stored + delivery.dead_lettered >= 1
        # Delivered again: nothing more is kept.
        assert deliver(svc, cloud_event_message({"type": kind, "id": "p1"}, body)).ok
        assert kept(svc) == delivery.stored + delivery.dead_lettered


def test_a_mixed_kinesis_batch_is_kept_whole_in_one_go(client):
    data = sample("cloudwatch_logs_event.json")["awslogs"]["data"]
    control = base64.b64encode(gzip.compress(b'{"messageType": "CONTROL_MESSAGE"}')).decode()
    event = {"Records": [cloudwatch_record(data, "1"), cloudwatch_record(control, "2"),
                         cloudwatch_record("%%% not base64", "3"), *sample("kinesis_event.json")["Records"]]}

    assert handle_kinesis(event, client.service) == {"batchItemFailures": []}
    reasons = sorted(r["reason"] for r in client.dlq_records())
    # Two CloudWatch log events and the two sample lines have no normalizer; one record is not base64.
    assert reasons == ["decode_failed"] + ["normalization_failed"] * 4
    counts = totals(client)
    assert counts["dlq_normalization_failed_via_kinesis"] == 4
    assert counts["dlq_decode_failed_via_kinesis"] == 1 and counts["dlq_decode_failed"] == 1


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_carry_the_trigger_of_each_event_and_the_hand_backs(make_client):
    client = make_client(triggers=SCOPES)
    post_binary(client, cloud_event(push_body(SSHD.encode(), message_id="m1", sourcetype="linux_secure")))
    post_binary(client, cloud_event(push_body("%%%", message_id="m2")))
    handle_sqs(sample("sqs_event.json"), client.service)
    client.service.counters.flush()

    text = client.app.get("/metrics").text
    assert 'telhawk_events_stored_total{trigger="pubsub"} 1.0' in text
    assert 'telhawk_dlq_written_total{reason="decode_failed",trigger="pubsub"} 1.0' in text
    assert 'telhawk_dlq_written_total{reason="normalization_failed",trigger="sqs"} 2.0' in text
    assert 'telhawk_events_received_total{trigger="http"} 0.0' in text
    assert 'telhawk_trigger_failures_total{trigger="sqs"} 0.0' in text


def test_metrics_count_messages_handed_back(make_client):
    client = make_client(triggers=SCOPES, dlq={"enabled": False})
    handle_sqs(sample("sqs_event.json"), client.service)
    client.service.counters.flush()

    assert 'telhawk_trigger_failures_total{trigger="sqs"} 2.0' in client.app.get("/metrics").text


def test_the_retention_schedule_expires_entries_as_of_the_scheduled_events_time(make_client):
    from functions.scheduled_retention import handler

    client = make_client(triggers=SCOPES, dlq={"max_age": "1h", "min_free_bytes": 0})
    post_binary(client, cloud_event(push_body(b"no normalizer for this line")))
    [record] = client.dlq_records()
    failed = id_time(record["envelope"]["id"])  # published 2026-03-01T10:00:00.123Z, failed just now

    now = client.service.clock()
    kept = handler({"detail-type": "Scheduled Event", "time": now + 60}, None)
    assert kept["result"]["expired"] == 0 and len(client.dlq_records()) == 1
    gone = handler({"detail-type": "Scheduled Event", "time": now + 7200}, None)
    assert gone["result"]["expired_ids"] == [record["id"]] and client.dlq_records() == []
    assert failed < now
    counts = totals(client)
    assert counts["dlq_expired"] == 1 and counts["trigger_schedule_runs"] == 2


def test_the_replay_schedule_replays_the_entries_its_filter_matches_once_their_cause_is_fixed(make_client):
    from functions.scheduled_replay import handler

    asa = (ROOT / "tests" / "events" / "cisco_asa.log").read_text().splitlines()[1]
    first = make_client(triggers=SCOPES)
    post_binary(first, cloud_event(push_body(asa.encode(), message_id="a1", sourcetype="cisco_asa")))
    post_binary(first, cloud_event(push_body(b"another line", message_id="a2", sourcetype="other")))
    assert sorted(r["envelope"]["source_type"] for r in first.dlq_records()) == ["cisco_asa", "other"]

    # The fix (an alias to the Cisco ASA normalizer), and a replay schedule for those entries.
    fixed = make_client(triggers={**SCOPES, "replay_filter": {"source_type": "cisco_asa"}},
                        normalizers={"aliases": {"cisco_asa": "cisco:asa"}})
    answer = handler({"detail-type": "Scheduled Event", "time": "2026-03-02T00:00:00Z"}, None)

    assert answer["result"]["matched"] == 1 and answer["result"]["stored"] == 1
    [doc] = stored(fixed)
    assert doc["_id"] == envelope_id("pubsub", "logs", "a1", 1772359200123, 0)  # the same id
    assert [r["envelope"]["source_type"] for r in fixed.dlq_records()] == ["other"]
    counts = totals(fixed)
    assert counts["replay_stored"] == 1 and counts["trigger_schedule_runs"] == 1


def test_logs_name_the_trigger_and_the_message_never_its_data(client, caplog):
    import logging

    caplog.set_level(logging.INFO)
    secret_line = "caf\xe9 secret-looking data"
    post_binary(client, cloud_event(push_body(secret_line.encode("latin-1"), message_id="L1")))

    [record] = [r for r in caplog.records if getattr(r, "event", None) == "trigger_decode_failed"]
    assert (record.trigger, record.message_id, record.subscription) == ("pubsub", "L1", "logs")
    assert record.reason == "data is not valid UTF-8"
    assert all("secret-looking" not in r.getMessage() and "secret-looking" not in str(vars(r))
               for r in caplog.records)
