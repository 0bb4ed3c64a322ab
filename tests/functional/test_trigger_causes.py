"""A triggered message dead-lettered whole names its most specific cause (SPEC §12): what is wrong
with the message itself comes before a subscription or topic without a token scope."""

from __future__ import annotations

import base64

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from telhawk_ingest.triggers import PUBSUB_TYPE

SCOPES = {"subscriptions": {"logs": {"token_name": "pubsub-logs", "default_index": "main"}}}


def post(client, kind: str, topic: str, body: dict) -> None:
    event = CloudEvent({"type": kind, "source": f"//pubsub.googleapis.com/projects/demo/topics/{topic}",
                        "id": "m-1"}, body)
    headers, data = to_binary(event)
    assert client.app.post("/triggers/pubsub", content=data, headers=headers).status_code == 200


def message(data: str) -> dict:
    return {"message": {"data": data, "messageId": "m-1", "publishTime": "2026-11-30T10:00:00Z"}}


def test_a_cloud_event_of_another_type_on_an_unscoped_topic_is_reported_by_its_type(make_client):
    client = make_client(triggers=SCOPES)
    post(client, "com.example.other", "unscoped", message(base64.b64encode(b"line").decode()))

    [record] = client.dlq_records()
    assert record["reason"] == "decode_failed"
    assert record["error"] == f"CloudEvent type 'com.example.other' is not {PUBSUB_TYPE}"


def test_undecodable_data_on_an_unscoped_subscription_is_reported_as_such(make_client):
    client = make_client(triggers=SCOPES)
    body = {**message("@@@bad"), "subscription": "projects/demo/subscriptions/unknown"}
    post(client, PUBSUB_TYPE, "unscoped", body)

    [record] = client.dlq_records()
    assert "data is not base64" in record["error"] and "token scope" not in record["error"]


def test_a_readable_message_without_a_scope_still_names_the_missing_scope(make_client):
    client = make_client(triggers=SCOPES)
    body = {**message(base64.b64encode(b"line").decode()), "subscription": "projects/demo/subscriptions/x"}
    post(client, PUBSUB_TYPE, "unscoped", body)

    [record] = client.dlq_records()
    assert record["error"] == ("no token scope is configured for pubsub subscription 'x' "
                               "(triggers.subscriptions)")
