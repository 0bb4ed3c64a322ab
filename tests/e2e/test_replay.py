"""Server-side replay over real HTTP against the emulator's worker processes (SPEC §11)."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest

from tests.e2e.test_pipeline import dlq_files, post, sshd
from tests.storage_server import StorageServer

pytestmark = pytest.mark.e2e


def replay(emu, body: bytes) -> httpx.Response:
    def chunks():  # sent chunked, as a streaming client would
        yield body[:7]
        yield body[7:]

    return httpx.post(f"{emu.url}/api/v1/dlq/replay", content=chunks(), timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {emu.operator_token}"})


def test_two_replays_at_once_over_http_store_each_dead_lettered_event_once_and_drain_the_dlq(start_emulator):
    with StorageServer(default=503) as storage:
        # Without the breaker and self-healing: a worker whose breaker the outage opened would turn
        # a replay away (503, to be retried), and healing would replay beside the two calls.
        emu = start_emulator(workers=2, threads=2, INGEST_OPENSEARCH_URL=storage.url,
                             INGEST_CORE_RETRY_DELAY_MS="1", INGEST_STORAGE_BULK_MAX_EVENTS="5",
                             INGEST_STORAGE_BREAKER="{enabled: false}", INGEST_REPLAY_HEAL_ON_RECOVERY="false")
        assert post(emu, "".join(sshd(port) for port in range(40))).json()["dead_lettered"] == 40
        envelopes = sorted(r["envelope"]["id"] for r in dlq_files(emu))
        assert {r["reason"] for r in dlq_files(emu)} == {"storage_failed"}
        storage.default = "ok"  # storage is back
        storage.requests.clear()
        answers: list[httpx.Response] = []
        body = b'{"filter": {"reason": "storage_failed"}}'
        threads = [threading.Thread(target=lambda: answers.append(replay(emu, body))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert sum(a.json()["stored"] for a in answers) == 40
    assert sum(a.json()["matched"] for a in answers) == 40 + sum(a.json()["skipped"] for a in answers)
    assert dlq_files(emu) == []
    # Every event was sent to storage in exactly one bulk request: no entry was replayed twice.
    assert Counter(i for request in storage.requests for i in request) == Counter(envelopes)
    assert sorted(storage.docs) == envelopes
    health = emu.healthz(lambda h: h["replayed"]["stored"] == 40)
    assert (health["stored"], health["failed"], health["processed"]) == (0, 40, 40)


def test_a_replay_that_fails_again_over_http_keeps_one_entry_with_attempts_plus_one(start_emulator):
    emu = start_emulator()
    post(emu, '{"event": {"msg": "x"}, "sourcetype": "cisco_asa"}')
    [first] = dlq_files(emu)

    answer = replay(emu, b'{"ids": ["' + first["id"].encode() + b'"]}')

    assert answer.json() == {"matched": 1, "stored": 0, "failed": 1, "skipped": 0, "dry_run": False,
                             "next_cursor": None}
    [again] = dlq_files(emu)
    assert (again["id"], again["attempts"], again["error"]) == (first["id"], 2, first["error"])
