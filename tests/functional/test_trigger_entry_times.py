"""Entries of event-triggered events are named after their message's publish time (SPEC §7, §12),
which may be months old or unreadable; every time-based DLQ feature reads when they first failed
(their record's `timestamp`) instead: the oldest-entry age, `since`/`until` on lists, purges and
replays, drop_oldest, and dlq.max_age. Real DLQ files, an injected clock."""

from __future__ import annotations

import base64

from telhawk_ingest.envelope import parse_time
from telhawk_ingest.metrics import oldest_entry_age
from telhawk_ingest.retention import RetentionParts, run_retention
from tests.functional.test_ingest import CISCO

SCOPES = {"subscriptions": {"local-logs": {"token_name": "pubsub-logs", "default_index": "main"}}}
NOW = parse_time("2026-11-30T09:59:41.490Z")
NEW_YEAR = parse_time("2026-01-01T00:00:00Z")


def push(client, message_id: str, published: str) -> None:
    """A Pub/Sub push of one line no normalizer of its sourcetype takes: dead-lettered."""
    body = {"message": {"data": base64.b64encode(b"unparseable line").decode(), "messageId": message_id,
                        "publishTime": published, "attributes": {"sourcetype": "linux_secure"}},
            "subscription": "projects/local/subscriptions/local-logs"}
    assert client.app.post("/triggers/pubsub", json=body).status_code == 200


def at(client, when: float) -> None:
    client.service.clock = lambda: when


def ids(client) -> list[str]:
    return [record["id"] for record in client.dlq_records()]


def listed(client, query: str) -> list[str]:
    answer = client.operator("GET", f"/api/v1/dlq?{query}")
    assert answer.status_code == 200, answer.text
    return [event["id"] for event in answer.json()["events"]]


def two_fresh_entries(client) -> dict[str, str]:
    """The tester's two messages, both failing at NOW: published on New Year's Day, and with a
    publish time that cannot be read ("yesterday": the name's seconds are 0)."""
    at(client, NOW)
    push(client, "old-1", "2026-01-01T00:00:00Z")
    push(client, "vague-1", "yesterday")
    found = ids(client)
    assert len(found) == 2
    return {"old": next(i for i in found if i.startswith(f"failed_{int(NEW_YEAR)}_")),
            "vague": next(i for i in found if i.startswith("failed_0_"))}


def test_the_oldest_entry_age_counts_from_the_first_failure_not_the_publish_time(make_client):
    client = make_client(triggers=SCOPES)
    entries = two_fresh_entries(client)

    assert all(r["timestamp"] == "2026-11-30T09:59:41.490Z" for r in client.dlq_records())
    assert client.service.dlq.oldest_entry_time() == int(NOW)
    assert oldest_entry_age(client.service, NOW + 2) < 3  # not 333 days, nor 56 years
    # An ordinary entry that failed an hour earlier is the oldest one.
    at(client, NOW - 3600)
    client.hec(CISCO)
    assert client.service.dlq.oldest_entry_time() == int(NOW - 3600)
    assert len(entries) == 2


def test_since_and_until_select_triggered_entries_by_their_first_failure(make_client):
    client = make_client(triggers=SCOPES)
    entries = two_fresh_entries(client)
    both = sorted(entries.values())

    assert sorted(listed(client, "source_type=linux_secure&since=2026-11-30T09:59:00Z")) == both
    assert sorted(listed(client, "since=2026-11-30T09:59:00Z")) == both
    assert listed(client, "until=2026-06-01T00:00:00Z") == []
    assert listed(client, "reason=normalization_failed&until=2026-06-01T00:00:00Z") == []
    assert listed(client, f"since={int(NOW) + 1}") == []

    purge = client.operator("DELETE", "/api/v1/dlq/purge?until=2026-06-01T00:00:00Z&dry_run=true").json()
    assert purge["would_purge"] == 0
    replay = client.operator("POST", "/api/v1/dlq/replay",
                             json={"filter": {"until": "2026-06-01T00:00:00Z"}, "dry_run": True}).json()
    assert replay["matched"] == 0
    purged = client.operator("DELETE", "/api/v1/dlq/purge?since=2026-11-30T09:59:00Z").json()
    assert purged["purged"] == 2 and ids(client) == []


def test_drop_oldest_drops_the_entry_that_failed_first(make_client):
    client = make_client(triggers=SCOPES, dlq={"max_pending_files": 2, "full_policy": "drop_oldest"})
    at(client, NOW - 3600)
    client.hec(CISCO)  # an ordinary entry, an hour before the others
    [ordinary] = ids(client)
    at(client, NOW - 60)
    push(client, "old-1", "2026-01-01T00:00:00Z")  # named for January, failed a minute ago
    at(client, NOW)
    push(client, "vague-1", "yesterday")  # the third entry: one must go

    left = ids(client)
    assert ordinary not in left and len(left) == 2
    assert any(i.startswith(f"failed_{int(NEW_YEAR)}_") for i in left)
    assert client.service.counters.totals()["dlq_dropped"] == 1


def test_max_age_expires_triggered_entries_by_their_first_failure(make_client):
    client = make_client(triggers=SCOPES, dlq={"max_age": "1d"})
    entries = two_fresh_entries(client)
    # A publisher whose clock runs a month ahead: named for December, failed at NOW all the same.
    push(client, "ahead-1", "2026-12-30T00:00:00Z")
    assert len(ids(client)) == 3
    parts = RetentionParts.of(client.service)

    assert run_retention(parts, NOW + 3600)["expired"] == 0
    assert len(ids(client)) == 3 and set(entries.values()) <= set(ids(client))
    late = run_retention(parts, NOW + 2 * 86400)
    assert late["expired"] == 3 and ids(client) == []
