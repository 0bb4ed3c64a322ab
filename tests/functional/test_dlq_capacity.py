"""A DLQ at its limits through the real handlers: refused with 503 code 9 and Retry-After under
the default policy (health 18 while storage fails too), accepting again once room is made;
`drop_oldest` making room, counted and audited; health and ingest answering the same question
about free space and pending bytes."""

from __future__ import annotations

import os

import pytest

from telhawk_ingest.audit import AuditLog
from telhawk_ingest.dlq import MIN_ENTRY_BYTES
from telhawk_ingest.storage.base import permanent
from tests.fakes import ScriptedBackend, every
from tests.functional.test_ingest import CISCO, SSHD_EVENT

FAILED = permanent("mapper_parsing_exception", status=400)
BLOCK = 4096


def entry_ids(client) -> list[str]:
    return sorted(p.stem for p in client.service.settings.dlq.base_path.glob("failed_*.json"))


def health(client):
    return client.hec("", path="/services/collector/health", method="GET", token=None)


def healthz(client) -> dict:
    return client.app.get("/healthz").json()


def failing_storage() -> ScriptedBackend:
    backend = ScriptedBackend(*[every(FAILED)] * 1000)
    backend.is_healthy = False
    return backend


def test_a_full_dlq_refuses_with_503_code_9_and_health_18_then_takes_events_again_once_room_is_made(
        make_client):
    client = make_client(failing_storage(), dlq={"max_pending_files": 2})
    assert client.hec(CISCO).status_code == 200
    assert client.hec(SSHD_EVENT).status_code == 200  # storage fails: dead-lettered
    assert health(client).json()["code"] == 18

    refused = client.hec(CISCO)

    assert refused.status_code == 503 and refused.json()["code"] == 9
    assert int(refused.headers["Retry-After"]) > 0
    assert len(entry_ids(client)) == 2  # nothing of the refused request was kept
    assert healthz(client)["dlq_stats"]["accepting"] is False
    assert healthz(client)["hec_health_code"] == 18

    first = entry_ids(client)[0]
    assert client.operator("DELETE", f"/api/v1/dlq/{first}").status_code == 200

    assert health(client).json()["code"] == 17
    assert healthz(client)["dlq_stats"]["accepting"] is True
    again = client.hec(CISCO)
    assert again.status_code == 200 and again.json()["dead_lettered"] == 1
    assert len(entry_ids(client)) == 2


def test_a_full_dlq_still_takes_events_storage_keeps(make_client):
    client = make_client(dlq={"max_pending_files": 1})
    client.hec(CISCO)

    assert client.hec(CISCO).json()["code"] == 9
    assert client.hec(SSHD_EVENT).json() == {"text": "Success", "code": 0}
    assert health(client).json()["code"] == 17  # storage works: not 18


def test_drop_oldest_deletes_the_oldest_entries_to_make_room_counting_and_auditing_each(make_client):
    client = make_client(failing_storage(), dlq={"max_pending_files": 3, "full_policy": "drop_oldest"})
    for _ in range(3):
        client.hec(CISCO)
    oldest = entry_ids(client)[:2]

    answer = client.hec(CISCO + SSHD_EVENT)

    assert answer.status_code == 200 and answer.json()["dead_lettered"] == 2
    ids = entry_ids(client)
    assert len(ids) == 3 and not set(oldest) & set(ids)
    assert client.service.counters.totals()["dlq_dropped"] == 2
    dropped = [e for e in AuditLog(client.service.settings.state_path / "audit").entries()
               if e["action"] == "dlq_dropped"]
    # One drop for the failure known before storing, one for the storage failure after it.
    assert [(e["operator"], e["count"], e["params"]["ids"]) for e in dropped] == [
        ("dlq.full_policy", 1, oldest[:1]), ("dlq.full_policy", 1, oldest[1:])]
    stats = healthz(client)["dlq_stats"]
    assert (stats["accepting"], stats["full_policy"], stats["dropped"]) == (True, "drop_oldest", 2)
    assert health(client).json()["code"] == 17


def test_drop_oldest_still_refuses_a_request_larger_than_the_limit_itself(make_client):
    client = make_client(failing_storage(), dlq={"max_pending_files": 2, "full_policy": "drop_oldest"})
    client.hec(CISCO)

    answer = client.hec(CISCO * 3)

    assert answer.status_code == 503 and answer.json()["code"] == 9
    assert len(entry_ids(client)) == 1  # nothing dropped for a request that could never fit
    assert client.service.counters.totals()["dlq_dropped"] == 0


def test_drop_oldest_makes_room_by_bytes_too(make_client):
    client = make_client(failing_storage(), dlq={"max_pending_bytes": 5 * 1024, "full_policy": "drop_oldest"})
    for _ in range(8):
        client.hec(CISCO)

    files = list(client.service.settings.dlq.base_path.glob("failed_*.json"))
    assert sum(p.stat().st_size for p in files) <= 5 * 1024
    assert client.service.counters.totals()["dlq_dropped"] == 8 - len(files) > 0


# -- health and ingest ask one question ---------------------------------------------------------------

def fixed_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = os.statvfs

    def statvfs(path: os.PathLike | str) -> os.statvfs_result:
        got = real(path)
        blocks = free // BLOCK
        return os.statvfs_result((BLOCK, BLOCK, got.f_blocks, blocks, blocks, got.f_files, got.f_ffree,
                                  got.f_favail, got.f_flag, got.f_namemax))

    monkeypatch.setattr(os, "statvfs", statvfs)


def test_health_is_not_accepting_when_free_space_has_room_for_one_byte_but_no_entry(make_client, monkeypatch):
    free = 1000 * BLOCK
    # Room for a one-byte file and its block above dlq.min_free_bytes, not for the smallest entry.
    client = make_client(failing_storage(), dlq={"min_free_bytes": free - BLOCK - MIN_ENTRY_BYTES + 1})
    fixed_free_space(monkeypatch, free)

    refused = client.hec(SSHD_EVENT)

    assert refused.status_code == 503 and refused.json()["code"] == 9
    stats = healthz(client)["dlq_stats"]
    assert stats["accepting"] is False and "min_free_bytes" in stats["refusal"]
    assert health(client).json()["code"] == 18


def test_health_is_not_accepting_when_pending_bytes_have_room_for_one_byte_but_no_entry(make_client):
    client = make_client(failing_storage(), dlq={"max_pending_bytes": 10 * 1024})
    client.hec(CISCO)
    pending = healthz(client)["dlq_stats"]["pending_bytes"]
    client.service.dlq.max_pending_bytes = pending + MIN_ENTRY_BYTES - 1

    refused = client.hec(SSHD_EVENT)

    assert refused.status_code == 503 and refused.json()["code"] == 9
    assert healthz(client)["dlq_stats"]["accepting"] is False
    assert health(client).json()["code"] == 18


def test_health_accepts_while_the_smallest_entry_still_fits(make_client, monkeypatch):
    free = 1000 * BLOCK
    client = make_client(failing_storage(), dlq={"min_free_bytes": free - BLOCK - MIN_ENTRY_BYTES})
    fixed_free_space(monkeypatch, free)

    assert healthz(client)["dlq_stats"]["accepting"] is True
    assert health(client).json()["code"] == 17
