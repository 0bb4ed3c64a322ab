"""Event-triggered messages into a real OpenSearch node (SPEC §6, §12): a message delivered again
is kept once, in storage (`create` by `_id`, 409 counted as stored) and in the DLQ."""

from __future__ import annotations

import base64
import json

import pytest

from telhawk_ingest.config import TriggerScope, TriggerSettings
from telhawk_ingest.triggers import deliver, envelope_id, pubsub_message
from tests.opensearch.conftest import count, dlq_records, ocsf_event, search_ids

pytestmark = pytest.mark.opensearch

PUBLISHED_MS = 1_772_359_200_123


def push(data: bytes, message_id: str) -> dict:
    return {"message": {"data": base64.b64encode(data).decode(), "attributes": {"hec_format": "event"},
                        "messageId": message_id, "publishTime": "2026-03-01T10:00:00.123Z"},
            "subscription": "projects/demo/subscriptions/logs"}


def test_a_message_delivered_twice_is_one_document_per_event_and_one_dead_letter(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    service.settings.triggers = TriggerSettings(
        subscriptions={"logs": TriggerScope(token_name="pubsub", default_index="main")})
    objects = [{"event": ocsf_event(message=f"event {n}"), "sourcetype": "ocsf"} for n in range(3)]
    objects.append({"event": {"msg": "no normalizer"}, "sourcetype": "unknown_type"})
    data = "\n".join(json.dumps(obj) for obj in objects).encode()

    first = deliver(service, pubsub_message(push(data, "m-1")))
    again = deliver(service, pubsub_message(push(data, "m-1")))

    assert first.ok and again.ok
    assert (first.stored, first.dead_lettered) == (3, 1)
    assert count(opensearch, index_prefix) == 3
    assert sorted(search_ids(opensearch, index_prefix)) == sorted(
        envelope_id("pubsub", "logs", "m-1", PUBLISHED_MS, n) for n in range(3))
    [record] = dlq_records(service)
    assert record["envelope"]["id"] == envelope_id("pubsub", "logs", "m-1", PUBLISHED_MS, 3)
