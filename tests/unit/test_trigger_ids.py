"""Envelope ids and DLQ entry names of event-triggered events (SPEC §4, §7, §12)."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, is_named, make_record, named_stem
from telhawk_ingest.envelope import id_time
from telhawk_ingest.stats import COUNTERS
from telhawk_ingest.triggers import envelope_id, push_to_cloud_event


def test_ids_are_uuidv7_shaped_with_the_publish_time_and_the_same_on_every_delivery():
    first = envelope_id("pubsub", "logs", "m-1", 1_772_359_200_123, 0)

    parsed = uuid.UUID(first)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert id_time(first) == 1_772_359_200.123
    assert envelope_id("pubsub", "logs", "m-1", 1_772_359_200_123, 0) == first
    others = {envelope_id("pubsub", "logs", "m-1", 1_772_359_200_123, 1),
              envelope_id("pubsub", "logs", "m-2", 1_772_359_200_123, 0),
              envelope_id("pubsub", "other", "m-1", 1_772_359_200_123, 0),
              envelope_id("sqs", "logs", "m-1", 1_772_359_200_123, 0),
              envelope_id("pubsub", "logs", "m-1", 1_772_359_200_123, "message")}
    assert first not in others and len(others) == 5


def test_ids_sort_by_publish_time_whatever_the_message_id():
    ids = [envelope_id("sqs", "q", f"id-{n}", 1_700_000_000_000 + n * 7, 0) for n in range(50)]
    assert sorted(ids) == ids


def triggered_record(eid: str) -> dict:
    attributes = {"host": None, "index": None, "fields": {}, "token_name": "t", "trigger": "sqs"}
    envelope = {"id": eid, "source": "s", "source_type": "x", "format": "raw", "payload": "p",
                "attributes": attributes, "received_at": "2026-03-01T10:00:05.000Z"}
    return make_record(envelope, "normalization_failed", "no normalizer", 1, None, 1_772_359_300.0)


def test_a_triggered_events_entry_is_named_after_its_envelope_id_and_time():
    eid = envelope_id("sqs", "q", "m", 1_772_359_200_123, 3)
    assert named_stem(triggered_record(eid)) == f"failed_1772359200_{eid}"  # dashes kept: is_named
    assert named_stem(triggered_record(str(uuid.uuid4()))) is None  # not a UUIDv7


def test_a_record_that_cannot_name_its_entry_gets_no_stem():
    """Such a record's entry gets an ordinary name: never an error, never a name that breaks the
    entry-id rule (hex digits and dashes only: no `/` or `..`)."""
    eid = envelope_id("sqs", "q", "m", 1_772_359_200_123, 3)
    assert named_stem({"envelope": eid}) is None  # the envelope is not an object
    assert named_stem(triggered_record(1_772_359_200)) is None  # the id is not a string
    # A UUIDv7's time with a tail that is no hex: its time reads, the name would not be an entry id.
    assert named_stem(triggered_record(eid[:-4] + "zz/.")) is None


def test_writing_a_triggered_entry_twice_keeps_the_first_file_and_counts_it_once(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    eid = envelope_id("pubsub", "logs", "m", 1_772_359_200_123, 0)
    with dlq.reserve([triggered_record(eid)], named=True) as held:
        [first] = held.write()
    before = (tmp_path / "dlq" / f"{first}.json").stat()

    with dlq.reserve([triggered_record(eid)], named=True) as held:
        assert held.write() == [first]
        assert held.existing == {first}

    names = [n for n in os.listdir(tmp_path / "dlq") if n.startswith("failed_")]
    assert names == [f"{first}.json"]
    after = (tmp_path / "dlq" / f"{first}.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert json.loads((tmp_path / "dlq" / f"{first}.json").read_text())["id"] == first
    ledger = dict(zip(COUNTERS, next(iter(dlq._ledger.snapshot().values()))[1], strict=True))
    assert ledger["dlq_files_written"] == 1 and ledger["dlq_files_returned"] == 1
    assert dlq.stats()["pending_files"] == 1


def test_other_entries_still_get_fresh_names_whatever_their_envelope(tmp_path):
    # HTTP ingest, and a replay of a triggered event that fails again: a new name each time.
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    eid = envelope_id("pubsub", "logs", "m", 1_772_359_200_123, 0)
    names = {dlq.write(triggered_record(eid)) for _ in range(2)}
    assert len(names) == 2 and all(not is_named(n) for n in names)


@pytest.mark.parametrize("headers", [
    {"ce-specversion": "1.0", "content-type": "application/json"},
    {"content-type": "application/cloudevents+json"},
])
def test_cloud_events_pass_the_push_conversion_untouched(headers):
    body = b'{"message": {"data": "eA=="}}'
    assert push_to_cloud_event(headers, body) == (headers, body)


def test_a_push_body_becomes_a_binary_message_published_cloud_event_with_the_body_as_its_data():
    push = {"message": {"data": "eA==", "messageId": "9", "publishTime": "2026-03-01T10:00:00Z"},
            "subscription": "projects/p/subscriptions/s"}
    body = json.dumps(push).encode()
    headers, data = push_to_cloud_event({"content-type": "text/plain", "user-agent": "APIs-Google"}, body)

    assert data is body
    assert headers == {"user-agent": "APIs-Google", "content-type": "application/json",
                       "ce-specversion": "1.0", "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                       "ce-source": "//pubsub.googleapis.com/projects/p/subscriptions/s", "ce-id": "9",
                       "ce-time": "2026-03-01T10:00:00Z"}


def test_scopes_and_the_replay_filter_come_from_the_environment_too():
    from telhawk_ingest.config import load_settings

    settings = load_settings(env={
        "INGEST_TRIGGERS_SUBSCRIPTIONS":
            "{logs: {token_name: pubsub, default_index: main, allowed_indexes: [main]}}",
        "INGEST_TRIGGERS_REPLAY_FILTER": "{reason: storage_failed}",
        "INGEST_TRIGGERS_REPLAY_RATE_LIMIT": "50"})

    assert settings.triggers.subscriptions["logs"].token().allowed_indexes == ["main"]
    assert settings.triggers.replay_filter == {"reason": "storage_failed"}
    assert settings.triggers.replay_rate_limit == 50


def test_a_scope_is_checked_like_a_hec_tokens():
    from telhawk_ingest.config import load_settings
    from telhawk_ingest.errors import ConfigError

    with pytest.raises(ConfigError, match="default_index must be set to one of them"):
        load_settings(env={"INGEST_TRIGGERS_SUBSCRIPTIONS": "{q: {token_name: t, allowed_indexes: [a]}}"})
