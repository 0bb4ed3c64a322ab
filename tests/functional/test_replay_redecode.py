"""Replaying a message dead-lettered whole (`decode_failed`, SPEC §7): once its cause is fixed the
replay decodes it again as its delivery does (scope, attributes, hec_format, CloudWatch Logs gzip),
under the envelope ids that delivery gives, through the real handlers, the real embedded store and
real DLQ files."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telhawk_ingest.envelope import Envelope
from telhawk_ingest.service import Prepared, Service
from telhawk_ingest.triggers import (
    PUBSUB_TYPE,
    Message,
    Undecodable,
    cloud_event_message,
    envelope_id,
    handle_kinesis,
    redecode,
    sqs_message,
    stage,
)
from tests.conftest import examples
from tests.functional.conftest import settings_for
from tests.functional.test_replay import files, replay, stored_ids
from tests.functional.test_triggers import (
    _ATTRIBUTES,
    _DATA,
    SCOPES,
    SSHD,
    cloud_event,
    cloudwatch_record,
    post_binary,
    push_body,
    sample,
    totals,
)

PUBLISHED_MS = 1772359200123  # test_triggers.PUBLISHED
LATE = {"late": {"token_name": "late-logs", "default_index": "main"}}
SCOPED = {"subscriptions": {**SCOPES["subscriptions"], **LATE}}
DECODE_FAILED = {"filter": {"reason": "decode_failed"}}


def late_body(data: bytes, message_id: str = "1001", **attributes: str) -> dict[str, Any]:
    """A push to subscription `late`, which has no scope until the operator configures one."""
    body = push_body(data, message_id, **attributes)
    body["subscription"] = "projects/demo/subscriptions/late"
    return body


def late_ids(count: int, message_id: str = "1001") -> list[str]:
    return [envelope_id("pubsub", "late", message_id, PUBLISHED_MS, i) for i in range(count)]


def stem(eid: str) -> str:
    return f"failed_{PUBLISHED_MS // 1000}_{eid}"  # named after the envelope id, dashes kept (dlq.named_stem)


def only_entry(client) -> dict[str, Any]:
    [record] = client.dlq_records()
    return record


MIXED = "\n".join(json.dumps(e) for e in [
    {"event": SSHD, "sourcetype": "linux_secure"},
    {"event": "no normalizer takes this", "sourcetype": "unmapped_thing"},
    {"event": SSHD, "sourcetype": "linux_secure", "index": "main"},
]).encode()


def test_a_message_of_an_unscoped_subscription_is_stored_under_its_delivery_ids_once_the_scope_exists(
        make_client):
    first = make_client(triggers=SCOPES)
    assert first.app.post("/triggers/pubsub", json=late_body(f"{SSHD}\n{SSHD}\n".encode(),
                                                             sourcetype="linux_secure")).status_code == 200
    entry = only_entry(first)
    assert entry["reason"] == "decode_failed" and "'late'" in entry["error"]

    fixed = make_client(triggers=SCOPED)
    answer = replay(fixed, DECODE_FAILED).json()

    assert answer["stored"] == 1 and answer["failed"] == 0 and answer["matched"] == 1
    assert answer["decoded"] == {"entries": 1, "events": 2, "stored": 2, "dead_lettered": 0}
    assert sorted(stored_ids(fixed)) == sorted(late_ids(2))
    assert fixed.dlq_records() == []
    counts = totals(fixed)
    assert counts["replay_stored"] == 2 and counts["replay_failed"] == 0

    # The platform delivers the message again after the replay: nothing is stored twice.
    assert fixed.app.post("/triggers/pubsub", json=late_body(f"{SSHD}\n{SSHD}\n".encode(),
                                                             sourcetype="linux_secure")).status_code == 200
    assert sorted(stored_ids(fixed)) == sorted(late_ids(2)) and fixed.dlq_records() == []


def test_an_index_outside_the_scope_is_stored_once_the_scope_allows_it(make_client):
    first = make_client(triggers=SCOPES)
    post_binary(first, cloud_event(push_body(SSHD.encode(), sourcetype="linux_secure", index="secret")))
    assert only_entry(first)["details"]["hec_code"] == 7

    allowing = {"logs": {"token_name": "pubsub-logs", "default_index": "main",
                         "allowed_indexes": ["main", "auth", "secret"]}}
    fixed = make_client(triggers={"subscriptions": {**SCOPES["subscriptions"], **allowing}})
    assert replay(fixed, DECODE_FAILED).json()["stored"] == 1

    assert stored_ids(fixed) == [envelope_id("pubsub", "logs", "1001", PUBLISHED_MS, 0)]
    assert fixed.dlq_records() == []


def test_data_that_is_still_not_utf8_stays_one_entry_with_one_more_attempt(make_client):
    client = make_client(triggers=SCOPES)
    post_binary(client, cloud_event(push_body(b"caf\xe9 au lait")))
    before = only_entry(client)

    answer = replay(client, DECODE_FAILED).json()

    assert (answer["stored"], answer["failed"], answer["matched"]) == (0, 1, 1)
    after = only_entry(client)
    assert after["id"] == before["id"] and after["attempts"] == 2
    assert after["reason"] == "decode_failed" and after["stage"] == "decode"
    assert after["error"] == "data is not valid UTF-8"
    assert after["envelope"] == before["envelope"]  # the original bytes are still there to decode
    assert base64.b64decode(after["envelope"]["attributes"]["payload_b64"]) == b"caf\xe9 au lait"
    assert stored_ids(client) == []
    assert totals(client)["replay_failed"] == 1

    replay(client, DECODE_FAILED)
    assert only_entry(client)["attempts"] == 3


def test_data_that_was_not_base64_fails_again_even_once_its_subscription_has_a_scope(make_client):
    first = make_client(triggers=SCOPES)
    body = late_body(b"")
    body["message"]["data"] = "not base64 !!!"
    first.app.post("/triggers/pubsub", json=body)
    # The message's own problem is named before its subscription's missing scope: the more specific.
    assert only_entry(first)["error"] == "data is not base64"

    fixed = make_client(triggers=SCOPED)
    answer = replay(fixed, DECODE_FAILED).json()

    assert answer["failed"] == 1
    entry = only_entry(fixed)
    assert entry["attempts"] == 2 and entry["error"] == "data is not base64"
    assert entry["envelope"]["payload"] == "not base64 !!!"  # never taken for the data itself
    assert stored_ids(fixed) == []


def test_events_that_do_not_normalize_get_entries_of_their_own_and_the_message_entry_goes(make_client):
    first = make_client(triggers=SCOPES)
    first.app.post("/triggers/pubsub", json=late_body(MIXED, hec_format="event"))
    assert only_entry(first)["reason"] == "decode_failed"

    fixed = make_client(triggers=SCOPED)
    before = totals(fixed)
    answer = replay(fixed, DECODE_FAILED).json()

    ids = late_ids(3)
    assert answer["stored"] == 1 and answer["failed"] == 0
    assert answer["decoded"] == {"entries": 1, "events": 3, "stored": 2, "dead_lettered": 1}
    assert sorted(stored_ids(fixed)) == sorted([ids[0], ids[2]])
    entry = only_entry(fixed)
    assert entry["id"] == stem(ids[1]) and entry["envelope"]["id"] == ids[1]
    assert entry["reason"] == "normalization_failed" and entry["attempts"] == 1
    assert entry["envelope"]["attributes"]["token_name"] == "late-logs"
    assert entry["envelope"]["attributes"]["trigger"] == "pubsub"
    after = totals(fixed)
    assert after["replay_stored"] - before["replay_stored"] == 2
    assert after["dlq_normalization_failed"] - before["dlq_normalization_failed"] == 1
    assert after["replay_failed"] == before["replay_failed"]


def test_replaying_twice_and_a_redelivery_around_it_store_and_dead_letter_nothing_twice(make_client):
    first = make_client(triggers=SCOPES)
    first.app.post("/triggers/pubsub", json=late_body(MIXED, hec_format="event"))
    fixed = make_client(triggers=SCOPED)
    # The platform delivers the message again once the scope exists, before any replay: it is
    # decoded, two events stored, one dead-lettered.
    assert fixed.app.post("/triggers/pubsub", json=late_body(MIXED, hec_format="event")).status_code == 200
    before = totals(fixed)
    assert len(files(fixed)) == 2  # the whole message's entry and the event's

    answer = replay(fixed, DECODE_FAILED).json()

    ids = late_ids(3)
    assert answer["decoded"] == {"entries": 1, "events": 3, "stored": 2, "dead_lettered": 0}
    assert sorted(stored_ids(fixed)) == sorted([ids[0], ids[2]])
    assert list(files(fixed)) == [stem(ids[1]) + ".json"]
    again = replay(fixed, DECODE_FAILED).json()
    assert again["matched"] == 0
    fixed.app.post("/triggers/pubsub", json=late_body(MIXED, hec_format="event"))

    assert sorted(stored_ids(fixed)) == sorted([ids[0], ids[2]])
    assert list(files(fixed)) == [stem(ids[1]) + ".json"]
    after = totals(fixed)
    assert after["dlq_normalization_failed"] == before["dlq_normalization_failed"]


def test_a_cloudwatch_logs_record_is_gunzipped_again_and_its_events_get_the_delivery_ids(make_client):
    unscoped = {"subscriptions": {k: v for k, v in SCOPES["subscriptions"].items() if k != "lambda-stream"}}
    first = make_client(triggers=unscoped)
    record = cloudwatch_record(sample("cloudwatch_logs_event.json")["awslogs"]["data"])
    assert handle_kinesis({"Records": [record]}, first.service) == {"batchItemFailures": []}
    whole = only_entry(first)
    assert whole["reason"] == "decode_failed"
    assert base64.b64decode(whole["envelope"]["attributes"]["payload_b64"])[:2] == b"\x1f\x8b"

    fixed = make_client(triggers=SCOPES)
    answer = replay(fixed, DECODE_FAILED).json()

    # No normalizer takes these CloudWatch lines: each becomes its own entry, as on delivery.
    assert answer["decoded"] == {"entries": 1, "events": 2, "stored": 0, "dead_lettered": 2}
    ids = [envelope_id("kinesis", "lambda-stream", record["eventID"], 1545084650987, i) for i in range(2)]
    records = fixed.dlq_records()
    assert sorted(r["envelope"]["id"] for r in records) == sorted(ids)
    assert sorted(r["envelope"]["payload"] for r in records) == ["[ERROR] First test message",
                                                                 "[ERROR] Second test message"]
    assert {r["envelope"]["source"] for r in records} == {"testLogGroup"}
    # Delivered again: the same entries, none added.
    names = list(files(fixed))
    assert handle_kinesis({"Records": [record]}, fixed.service) == {"batchItemFailures": []}
    assert list(files(fixed)) == names


def test_a_dry_run_says_what_decoding_again_gives_and_changes_nothing(make_client):
    first = make_client(triggers=SCOPES)
    first.app.post("/triggers/pubsub", json=late_body(MIXED, "m1", hec_format="event"))
    post_binary(first, cloud_event(push_body(b"caf\xe9", "m2")))
    fixed = make_client(triggers=SCOPED)
    before = files(fixed)

    answer = replay(fixed, {**DECODE_FAILED, "dry_run": True}).json()

    by_message = {r["envelope"]["attributes"]["message_id"]: r["id"] for r in fixed.dlq_records()}
    assert answer["decode"] == {by_message["m1"]: {"events": 3},
                                by_message["m2"]: {"error": "data is not valid UTF-8"}}
    assert sorted(answer["ids"]) == sorted(by_message.values())
    assert files(fixed) == before and stored_ids(fixed) == []


def test_an_entry_that_does_not_record_its_message_fails_again_and_stays(make_client):
    client = make_client(triggers=SCOPES)
    client.app.post("/triggers/pubsub", json=late_body(SSHD.encode()))
    [(name, content)] = files(client).items()
    record = json.loads(content)
    del record["envelope"]["attributes"]["redecode"]  # as an entry written before it was kept
    path = client.service.settings.dlq.base_path / name
    path.write_text(json.dumps(record))

    assert replay(client, DECODE_FAILED).json()["failed"] == 1
    entry = only_entry(client)
    assert entry["attempts"] == 2 and "cannot be decoded again" in entry["error"]
    assert stored_ids(client) == []


def test_when_the_dlq_cannot_take_an_events_entry_the_message_entry_stays_as_it_was(make_client):
    first = make_client(triggers=SCOPES)
    first.app.post("/triggers/pubsub", json=late_body(MIXED, hec_format="event"))
    [(name, content)] = files(first).items()

    full = make_client(triggers=SCOPED, dlq={"max_pending_files": 1})  # the message's entry fills it
    answer = replay(full, DECODE_FAILED).json()

    assert (answer["stored"], answer["failed"]) == (0, 1)
    assert files(full) == {name: content}  # not rewritten: the events are decoded again next time
    assert sorted(stored_ids(full)) == sorted([late_ids(3)[0], late_ids(3)[2]])  # idempotent by _id

    fixed = make_client(triggers=SCOPED)
    assert replay(fixed, DECODE_FAILED).json()["decoded"]["dead_lettered"] == 1
    assert list(files(fixed)) == [stem(late_ids(3)[1]) + ".json"]
    assert len(stored_ids(fixed)) == 2


def _whole_and_fresh(unscoped: Service, scoped: Service, message_of: Callable[[], Message]
                     ) -> tuple[Envelope, Prepared]:
    """A message dead-lettered whole by a service without its scope (what its entry holds), and
    what a delivery to a service with the scope stages."""
    whole = stage(unscoped, message_of())
    assert whole.failed[0]["reason"] == "decode_failed"
    [envelope] = whole.envelopes
    return Envelope(**envelope.to_dict()), stage(scoped, message_of())


@settings(max_examples=examples(60), deadline=None)
@given(data=_DATA, attributes=_ATTRIBUTES, garble=st.booleans(), kind=st.sampled_from([PUBSUB_TYPE, "other"]),
       sqs=st.booleans())
def test_decoding_again_gives_exactly_what_a_delivery_gives(data, attributes, garble, kind, sqs):
    body = push_body(data, message_id="p1", **attributes)
    if garble:
        body["message"]["data"] = body["message"]["data"][:-1] + "!"
    record = {"messageId": "s1", "body": data.decode("utf-8", "replace"),
              "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
              "attributes": {"SentTimestamp": "1772359200123"},
              "messageAttributes": {k: {"stringValue": v} for k, v in attributes.items()}}
    with TemporaryDirectory() as home:
        unscoped = Service(settings_for(Path(home) / "a", triggers={"subscriptions": {}}))
        scoped = Service(settings_for(Path(home) / "b", triggers=SCOPES))
        try:
            def message_of() -> Message:
                return sqs_message(record) if sqs else cloud_event_message({"type": kind, "id": "p1"}, body)

            whole, fresh = _whole_and_fresh(unscoped, scoped, message_of)
            if fresh.failed and fresh.failed[0]["reason"] == "decode_failed":
                with pytest.raises(Undecodable) as caught:
                    redecode(scoped, whole)
                assert str(caught.value) == fresh.failed[0]["error"]
            else:
                again = redecode(scoped, whole)
                assert [e.to_dict() | {"received_at": ""} for e in again] == \
                    [e.to_dict() | {"received_at": ""} for e in fresh.envelopes]
                assert {e.received_at for e in again} <= {whole.received_at}
        finally:
            for svc in (unscoped, scoped):
                svc.backend.close()
                svc.counters.retire()
