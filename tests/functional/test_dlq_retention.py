"""Retention through the real handler and as a library call: expiry by the entry's first failure
(its record's `timestamp`, not the file's mtime) under an injected clock or frozen time, caps under
drop_oldest, dry runs, counters and audit lines."""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

from freezegun import freeze_time

from telhawk_ingest.audit import AuditLog
from telhawk_ingest.envelope import rfc3339
from telhawk_ingest.retention import RetentionParts, run_retention
from tests.functional.test_ingest import CISCO

DAY = 86400.0
T0 = 1_790_000_000.0


def entry_ids(client) -> list[str]:
    return sorted(p.stem for p in client.service.settings.dlq.base_path.glob("failed_*.json"))


def audit(client, action: str) -> list[dict]:
    lines = AuditLog(client.service.settings.state_path / "audit").entries()
    return [e for e in lines if e["action"] == action]


def at(client, when: float) -> None:
    client.service.clock = lambda: when


def test_entries_older_than_max_age_expire_counted_and_audited_the_rest_stay(make_client):
    client = make_client(dlq={"max_age": "1d"})
    at(client, T0)
    client.hec(CISCO + CISCO)
    old = entry_ids(client)
    at(client, T0 + DAY - 60)
    client.hec(CISCO)
    young = sorted(set(entry_ids(client)) - set(old))
    at(client, T0 + DAY + 1)

    answer = client.operator("POST", "/api/v1/dlq/retention")

    assert answer.status_code == 200
    assert answer.json() == {"dry_run": False, "expired": 2, "dropped": 0, "expired_ids": old,
                             "dropped_ids": [], "more": False, "max_age_seconds": DAY,
                             "full_policy": "refuse"}
    assert entry_ids(client) == young
    assert client.service.counters.totals()["dlq_expired"] == 2
    [line] = audit(client, "dlq_retention")
    assert line["operator"] == "ops" and line["count"] == 2 and line["params"]["expired_ids"] == old


def test_a_dry_run_says_what_would_expire_and_deletes_nothing(make_client):
    client = make_client(dlq={"max_age": "12h"})
    at(client, T0)
    client.hec(CISCO)
    at(client, T0 + DAY)

    answer = client.operator("POST", "/api/v1/dlq/retention?dry_run=true").json()

    assert answer["dry_run"] is True and answer["expired"] == 1 and answer["expired_ids"] == entry_ids(client)
    assert len(entry_ids(client)) == 1
    assert client.service.counters.totals()["dlq_expired"] == 0
    [line] = audit(client, "dlq_retention")
    assert line["params"]["dry_run"] is True and line["count"] == 1


def test_age_is_the_records_first_failure_not_the_files_mtime(make_client):
    client = make_client(dlq={"max_age": "1d"})
    at(client, T0)
    client.hec(CISCO + CISCO)
    rewritten, touched = (client.service.settings.dlq.base_path / f"{i}.json" for i in entry_ids(client))
    # A file copied or restored today keeps its old first failure: it expires.
    os.utime(rewritten, (T0 + 2 * DAY, T0 + 2 * DAY))
    # A file whose mtime is old but whose record says it first failed recently stays.
    record = json.loads(touched.read_bytes())
    record["timestamp"] = rfc3339(T0 + 2 * DAY - 3600)
    touched.write_bytes(json.dumps(record).encode())
    os.utime(touched, (T0 - 10 * DAY, T0 - 10 * DAY))
    at(client, T0 + 2 * DAY)

    answer = client.operator("POST", "/api/v1/dlq/retention").json()

    assert answer["expired_ids"] == [rewritten.stem]
    assert entry_ids(client) == [touched.stem]


def test_without_max_age_nothing_expires(make_client):
    client = make_client()
    at(client, T0)
    client.hec(CISCO)
    at(client, T0 + 3650 * DAY)

    answer = client.operator("POST", "/api/v1/dlq/retention").json()

    assert (answer["expired"], answer["dropped"], answer["max_age_seconds"]) == (0, 0, None)
    assert len(entry_ids(client)) == 1


def test_under_drop_oldest_retention_brings_the_dlq_back_within_its_limits(make_client):
    client = make_client()
    for _ in range(5):
        client.hec(CISCO)
    ids = entry_ids(client)
    # The limit lowered under entries already there (a restart with a new setting does this).
    client.service.settings.dlq.full_policy = "drop_oldest"
    client.service.dlq.max_pending_files = 3

    dry = client.operator("POST", "/api/v1/dlq/retention?dry_run=true").json()
    assert (dry["dropped"], dry["dropped_ids"]) == (2, ids[:2]) and entry_ids(client) == ids

    answer = client.operator("POST", "/api/v1/dlq/retention").json()

    assert (answer["dropped"], answer["dropped_ids"]) == (2, ids[:2])
    assert entry_ids(client) == ids[2:]
    assert client.service.counters.totals()["dlq_dropped"] == 2


def test_under_refuse_retention_never_drops_entries_over_the_limit(make_client):
    client = make_client()
    for _ in range(3):
        client.hec(CISCO)
    client.service.dlq.max_pending_files = 1

    answer = client.operator("POST", "/api/v1/dlq/retention").json()

    assert answer["dropped"] == 0 and len(entry_ids(client)) == 3


def test_retention_takes_only_dry_run(client):
    answer = client.operator("POST", "/api/v1/dlq/retention?max_age=1s")

    assert answer.status_code == 400 and "max_age" in answer.json()["error"]


def test_run_retention_as_a_library_call_reads_frozen_time_and_its_settings(make_client):
    client = make_client(dlq={"max_age": timedelta(hours=1)})
    with freeze_time("2026-01-01 00:00:00") as frozen:
        client.service.clock = time.time  # read under freezegun at each call
        client.hec(CISCO)
        frozen.tick(timedelta(minutes=59))
        parts = RetentionParts.from_settings(client.service.settings)
        assert run_retention(parts)["expired"] == 0
        frozen.tick(timedelta(minutes=2))

        answer = run_retention(parts, who="schedule")

    assert answer["expired"] == 1 and entry_ids(client) == []
    assert [line["operator"] for line in audit(client, "dlq_retention")] == ["retention", "schedule"]
    assert parts.counters.totals()["dlq_expired"] == 1
