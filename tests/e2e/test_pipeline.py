"""The whole pipeline over real HTTP: the emulator as `make run` starts it, curl-like clients."""

from __future__ import annotations

import gzip
import json
import re
import threading
from pathlib import Path

import httpx
import pytest

from tests.storage_server import StorageServer

pytestmark = pytest.mark.e2e

SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port {port} ssh2"
CISCO = {"event": {"msg": "Built outbound TCP connection"}, "sourcetype": "cisco_asa", "source": "firewall",
         "host": "fw01.example.com"}


def sshd(port: int) -> str:
    return json.dumps({"event": SSHD.format(port=port), "sourcetype": "linux_secure"})


def post(emu, body: bytes | str, path: str = "/services/collector/event", **headers: str) -> httpx.Response:
    headers.setdefault("Authorization", f"Splunk {emu.hec_token}")
    return httpx.post(f"{emu.url}{path}", content=body, headers=headers, timeout=30, trust_env=False)


def operator(emu, method: str, path: str, **params: str) -> httpx.Response:
    return httpx.request(method, f"{emu.url}{path}", params=params, timeout=30, trust_env=False,
                         headers={"Authorization": f"Bearer {emu.operator_token}"})


def dlq_files(emu) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(emu.dlq_path).glob("failed_*.json"))]


def test_the_seed_workflow_send_fail_list_replay_purge_health(start_emulator):
    emu = start_emulator()

    assert post(emu, sshd(52144)).json() == {"text": "Success", "code": 0}
    failed = post(emu, json.dumps(CISCO), Authorization=f"Telhawk {emu.hec_token}")
    assert failed.status_code == 200 and failed.json()["dead_lettered"] == 1

    [record] = dlq_files(emu)
    assert list(record)[:6] == ["timestamp", "envelope", "error", "reason", "attempts", "last_attempt"]
    assert record["error"] == "no normalizer registered for format=json source_type=cisco_asa"

    listing = operator(emu, "GET", "/api/v1/dlq").json()
    assert listing["count"] == 1
    assert listing["events"][0]["reason"] == "normalization_failed"

    # Replay as the README shows (one compact envelope per request): still no normalizer, so the
    # event fails again; the envelope keeps its id.
    envelope = listing["events"][0]["envelope"]
    compact = json.dumps(envelope, separators=(",", ":"))
    replayed = post(emu, compact, Authorization=f"Telhawk {emu.hec_token}")
    assert replayed.status_code == 200
    assert {r["envelope"]["id"] for r in dlq_files(emu)} == {envelope["id"]}

    assert operator(emu, "DELETE", "/api/v1/dlq/purge").json() == {"status": "purged", "purged": 2}
    assert dlq_files(emu) == []

    health = emu.healthz(lambda h: h["processed"] >= 3)
    assert (health["processed"], health["stored"], health["failed"], health["dlq_written"]) == (3, 1, 2, 2)
    assert health["dlq_stats"]["pending_files"] == 0
    assert httpx.get(f"{emu.url}/services/collector/health", trust_env=False).json() == {
        "text": "HEC is healthy", "code": 17}


BAD = [
    ("malformed json", b'{"event": "x"', {}, 400, 6),
    ("missing event", b'{"host": "h"}', {}, 400, 12),
    ("blank event", b'{"event": ""}', {}, 400, 13),
    ("array top level", b'[{"event": "x"}]', {}, 400, 6),
    ("binary garbage", bytes(range(256)), {}, 400, 6),
    ("corrupt gzip", b"\x1f\x8b\x08\x00\x00garbage", {"Content-Encoding": "gzip"}, 400, 6),
    ("unknown token", b'{"event": "x"}', {"Authorization": "Splunk nope"}, 403, 4),
    ("wrong scheme", b'{"event": "x"}', {"Authorization": "Token x"}, 401, 3),
    ("form content type is ignored", b'{"event": ""}',
     {"Content-Type": "application/x-www-form-urlencoded"}, 400, 13),
]


@pytest.mark.parametrize(("case", "body", "headers", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_over_http_gets_its_hec_code_never_a_500(emulator, case, body, headers, status, code):
    answer = post(emulator, body, **headers)

    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


def test_an_oversized_gzip_body_gets_413(start_emulator):
    emu = start_emulator(INGEST_HEC_MAX_BODY_BYTES="100000")

    answer = post(emu, gzip.compress(b'{"event": "x"}' + b" " * 200_000), **{"Content-Encoding": "gzip"})

    assert answer.status_code == 413 and "code" in answer.json()


def test_a_wrong_method_gets_a_hec_shaped_405(emulator):
    answer = httpx.get(f"{emulator.url}/services/collector/event", trust_env=False)

    assert answer.status_code == 405 and "code" in answer.json()


def test_dlq_disabled_and_storage_down_answers_503_code_9_and_writes_nothing(start_emulator):
    with StorageServer(default=503) as storage:
        emu = start_emulator(INGEST_OPENSEARCH_URL=storage.url, INGEST_DLQ_ENABLED="false",
                             INGEST_CORE_RETRY_DELAY_MS="10")

        answer = post(emu, sshd(1))

    assert answer.status_code == 503
    assert (answer.json()["text"], answer.json()["code"]) == ("Server is busy", 9)
    assert int(answer.headers["Retry-After"]) > 0
    assert dlq_files(emu) == []


def test_storage_killed_mid_stream_leaves_every_event_stored_or_dead_lettered(start_emulator):
    """The storage dies without answering in the middle of a stream of concurrent requests."""
    storage = StorageServer(*["ok"] * 6, "die").__enter__()
    emu = start_emulator(INGEST_OPENSEARCH_URL=storage.url, INGEST_CORE_TIMEOUT_SECONDS="5")
    ports = iter(range(10_000, 10_400))
    lock = threading.Lock()
    answers: list[int] = []

    def client() -> None:
        for _ in range(10):
            with lock:
                batch = [next(ports) for _ in range(10)]
            answers.append(post(emu, "".join(sshd(p) for p in batch)).status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert answers == [200] * 40
    stored = [doc["src_endpoint"]["port"] for doc in storage.docs.values()]
    records = dlq_files(emu)
    # A string event's payload is the line itself.
    dead = [int(re.search(r"port (\d+)", r["envelope"]["payload"]).group(1)) for r in records]
    assert sorted(stored + dead) == list(range(10_000, 10_400))
    assert records, "the storage died, so some events must have been dead-lettered"
    assert all(r["reason"] == "storage_failed" for r in records)
    # Until a worker's storage breaker opened, an event waited out all four tries; from then on
    # events went straight to the DLQ, with an error naming the open breaker.
    assert all(r["attempts"] == 4 or r["error"].startswith("storage circuit breaker open since")
               for r in records)
    assert len(storage.docs) >= 6 * 10


def test_counters_add_up_across_workers_and_survive_a_restart(start_emulator):
    emu = start_emulator(workers=2, threads=2)
    for n in range(12):
        assert post(emu, sshd(n)).status_code == 200
    post(emu, json.dumps(CISCO))

    emu.restart()
    health = httpx.get(f"{emu.url}/healthz", trust_env=False).json()

    assert (health["stored"], health["failed"], health["processed"]) == (12, 1, 13)
    assert health["uptime_seconds"] < 30
