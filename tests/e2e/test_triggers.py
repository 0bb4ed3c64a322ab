"""Triggers through the real emulator (SPEC §12): a Pub/Sub CloudEvent on the function's route, the
local queue endpoint with Lambda's partial-batch and redelivery semantics, the Lambda Invoke API
path with AWS's sample event, and schedules fired on demand with the time of the request."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from prometheus_client.parser import text_string_to_metric_families

from telhawk_ingest.storage.local import LocalBackend

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


def stored(emu) -> list[dict[str, Any]]:
    return list(LocalBackend(emu.data_dir).documents())


def dlq_files(emu) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(emu.dlq_path).glob("failed_*.json"))]


def post(emu, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{emu.url}{path}", timeout=60, trust_env=False, **kw)


def pubsub_event(message_id: str, data: bytes, **attributes: str) -> CloudEvent:
    body = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes,
                        "messageId": message_id, "publishTime": "2026-03-01T10:00:00.5Z"},
            "subscription": "projects/demo/subscriptions/local-logs"}
    return CloudEvent({"type": PUBSUB_TYPE, "source": "//pubsub.googleapis.com/projects/demo/topics/logs",
                       "id": message_id}, body)


def test_a_pubsub_cloud_event_ends_stored_or_in_the_dlq_and_a_redelivery_changes_nothing(emulator):
    data = (json.dumps({"event": SSHD, "sourcetype": "linux_secure"}) + "\n"
            + json.dumps({"event": {"msg": "%ASA-6-302013"}, "sourcetype": "cisco_asa"})).encode()
    headers, body = to_binary(pubsub_event("e2e-1", data, hec_format="event"))

    for _ in range(2):  # Pub/Sub delivers at least once
        answer = post(emulator, "/triggers/pubsub", content=body, headers=headers)
        assert answer.status_code == 200, answer.text

    [doc] = stored(emulator)
    assert doc["_source"]["user"]["name"] == "alice"
    [record] = dlq_files(emulator)
    assert record["reason"] == "normalization_failed"
    assert record["envelope"]["attributes"]["token_name"] == "local-pubsub"
    assert record["id"].startswith("failed_1772359200_")
    health = emulator.healthz(lambda h: h["stored"] >= 2)
    assert health["dlq_stats"]["by_reason"]["normalization_failed"] == 1
    assert health["dlq_stats"]["pending_files"] == 1

    # Structured mode, and a message that is not base64: dead-lettered whole, the answer 200.
    headers, body = to_structured(CloudEvent({"type": PUBSUB_TYPE, "source": "//pubsub.googleapis.com/x",
                                              "id": "e2e-2"},
                                             {"message": {"data": "%%%", "messageId": "e2e-2",
                                                          "publishTime": "2026-03-01T10:00:01Z"},
                                              "subscription": "projects/demo/subscriptions/local-logs"}))
    assert post(emulator, "/triggers/pubsub", content=body, headers=headers).status_code == 200
    decode = [r for r in dlq_files(emulator) if r["reason"] == "decode_failed"]
    assert [r["envelope"]["payload"] for r in decode] == ["%%%"]


def test_an_sqs_batch_reports_only_the_record_the_dlq_cannot_take_until_it_is_redriven(start_emulator):
    emu = start_emulator(INGEST_DLQ_ENABLED="false")
    answer = post(emu, "/_local/queues/IngestQueue", json={"messages": [
        {"id": "kept", "body": SSHD, "attributes": {"sourcetype": "linux_secure"}},
        {"id": "not-kept", "body": "a line no normalizer takes"},
    ]}).json()

    assert answer["invocations"][0] == {"batchItemFailures": [{"itemIdentifier": "not-kept"}]}
    # Delivered again alone, up to the queue's maxReceiveCount (template.yaml), then redriven.
    assert answer["deliveries"] == 5
    assert answer["invocations"][1:] == [{"batchItemFailures": [{"itemIdentifier": "not-kept"}]}] * 4
    assert answer["failed"] == ["not-kept"]
    [moved] = answer["moved_to_dead_letters"]
    assert json.loads(Path(moved).read_text())["body"] == "a line no normalizer takes"
    [doc] = stored(emu)
    assert doc["_source"]["user"]["name"] == "alice"


def test_the_lambda_invoke_path_takes_the_published_sample_sqs_event(emulator):
    event = json.loads((ROOT / "tests" / "events" / "aws" / "sqs_event.json").read_text())
    for record in event["Records"]:
        record["eventSourceARN"] = "arn:aws:sqs:local:000000000000:local-ingest"

    answer = post(emulator, "/2015-03-31/functions/SqsIngest/invocations", json=event)

    assert answer.json() == {"batchItemFailures": []}
    ids = {r["envelope"]["attributes"].get("message_id") for r in dlq_files(emulator)}
    assert {"059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"} <= ids


def test_the_trigger_endpoints_are_listed_and_a_schedule_fires_with_the_time_it_is_given(emulator):
    listed = httpx.get(f"{emulator.url}/_local/triggers", timeout=30, trust_env=False).json()["triggers"]
    endpoints = {t["endpoint"]: t for t in listed}
    assert endpoints["/_local/queues/IngestQueue"]["source"] == "local-ingest"
    assert endpoints["/_local/schedules/ScheduledRetention"]["rate_seconds"] == 3600
    assert "/_local/streams/KinesisIngest" in endpoints

    # No replay filter is configured: the scheduled replay runs and does nothing, at the given time.
    answer = post(emulator, "/_local/schedules/ScheduledReplay", params={"time": "2031-01-02T03:04:05Z"})
    assert answer.json() == {"schedule": "replay", "time": "2031-01-02T03:04:05.000Z",
                             "result": {"skipped": "triggers.replay_filter is not set"}}


def test_a_file_dropped_into_the_queues_spool_is_delivered_and_removed(emulator):
    incoming = Path(emulator.dlq_path).parent / "queues" / "local-ingest" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    staged = incoming.parent / "staging.json"
    message = {"id": "spooled", "body": SSHD.replace("alice", "spooler"),
               "attributes": {"sourcetype": "linux_secure"}}
    staged.write_text(json.dumps({"messages": [message]}))
    staged.rename(incoming / "0001.json")  # appears whole

    deadline = time.monotonic() + 15
    while (incoming / "0001.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (incoming / "0001.json").exists()
    names = [d["_source"]["user"]["name"] for d in stored(emulator)]
    assert "spooler" in names


def test_retention_fired_on_demand_runs_at_the_time_it_is_given(start_emulator):
    emu = start_emulator(INGEST_DLQ_MAX_AGE="1d")
    event = json.dumps({"event": "no normalizer takes this", "sourcetype": "unknown_type"})
    answer = post(emu, "/services/collector/event", content=event,
                  headers={"Authorization": f"Splunk {emu.hec_token}"})
    assert answer.json()["dead_lettered"] == 1
    [record] = dlq_files(emu)
    failed_at = time.time()

    # The retention schedule, its clock an hour after the failure: nothing is old enough yet.
    fire = "/_local/schedules/ScheduledRetention"
    early = post(emu, fire, params={"time": str(failed_at + 3600)}).json()
    assert early["schedule"] == "retention"
    assert early["result"]["expired"] == 0
    assert len(dlq_files(emu)) == 1

    # Two days later (the processes' own clock has not moved): the entry is past dlq.max_age.
    late = post(emu, fire, params={"time": str(failed_at + 2 * 86400)}).json()
    assert late["result"]["expired"] == 1
    assert late["result"]["expired_ids"] == [record["id"]]
    assert dlq_files(emu) == []
    health = emu.healthz(lambda h: h["dlq_stats"]["pending_files"] == 0)
    assert health["dlq_stats"]["pending_files"] == 0


def test_deliveries_of_one_undecodable_message_racing_are_all_answered_200_with_one_entry(start_emulator):
    # Pub/Sub pushes one message to several workers at once (a redelivery while the first is
    # still being handled): each must find the entry kept, never report an unwritable DLQ.
    emu = start_emulator(workers=2)
    body = {"message": {"data": "@@@bad", "messageId": "race-1", "publishTime": "2026-11-30T10:00:00Z"},
            "subscription": "projects/local/subscriptions/local-logs"}
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: post(emu, "/triggers/pubsub", json=body).status_code, range(10)))

    assert codes == [200] * 10
    [record] = dlq_files(emu)
    assert record["reason"] == "decode_failed" and "-" in record["id"]
    assert not [p for p in Path(emu.dlq_path).iterdir() if p.name.startswith(".tmp-")]
    answer = httpx.get(f"{emu.url}/metrics", timeout=10, trust_env=False)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(answer.text) for s in family.samples}
    assert samples[("telhawk_trigger_failures_total", (("trigger", "pubsub"),))] == 0
    written = sum(value for (name, labels), value in samples.items()
                  if name == "telhawk_dlq_written_total" and ("reason", "decode_failed") in labels)
    assert written == 1  # counted once, by the delivery that wrote it
