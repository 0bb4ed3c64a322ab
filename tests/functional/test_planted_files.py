"""Files planted on the DLQ volume, through the real handlers: `/healthz` (which needs no token)
and the operator listing return, report the names as corrupt, and return nothing from outside."""

from __future__ import annotations

import os

from tests.functional.test_ingest import CISCO
from tests.unit.test_volume_trust import ENTRY, SECRET, finishes, outside_record


def test_a_fifo_under_an_entry_name_does_not_hang_healthz(client):
    assert client.hec(CISCO).json()["code"] == 0  # one entry in the DLQ: no normalizer for it
    fifo = client.service.dlq.path / f"{ENTRY}.json"
    os.mkfifo(fifo, 0o600)

    answer = finishes(lambda: client.hec("", path="/healthz", method="GET", token=None), unblock=fifo)

    assert answer.status_code == 200
    stats = answer.json()["dlq_stats"]
    assert stats["corrupt_files"] == [fifo.name]
    assert stats["pending_files"] == 2


def test_a_fifo_under_a_counters_name_does_not_hang_healthz(client):
    assert client.hec(CISCO).json()["code"] == 0
    counters = client.service.settings.state_path / "counters"
    fifo = counters / "planted-1-abcdef01.counters"
    os.mkfifo(fifo, 0o600)

    answer = finishes(lambda: client.hec("", path="/healthz", method="GET", token=None), unblock=fifo)

    assert answer.status_code == 200
    assert answer.json()["dlq_written"] == 1


def test_a_symlinked_entry_never_shows_outside_content_in_a_listing(client, tmp_path):
    assert client.hec(CISCO).json()["code"] == 0
    target = outside_record(tmp_path)
    (client.service.dlq.path / f"{ENTRY}.json").symlink_to(target)

    listing = finishes(lambda: client.operator("GET", "/api/v1/dlq"))
    filtered = finishes(lambda: client.operator("GET", f"/api/v1/dlq?source_type={SECRET}"))
    health = client.hec("", path="/healthz", method="GET", token=None).json()

    assert listing.status_code == 200 and filtered.status_code == 200
    assert listing.json()["count"] == 1
    assert [e["envelope"]["source_type"] for e in listing.json()["events"]] == ["cisco_asa"]
    assert filtered.json()["events"] == []
    assert SECRET not in listing.text + filtered.text
    assert health["dlq_stats"]["corrupt_files"] == [f"{ENTRY}.json"]
