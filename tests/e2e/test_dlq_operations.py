"""The DLQ's edges over real HTTP: its limit under concurrent clients and several worker processes,
operator calls that were not understood, and temp files a killed writer left behind."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from telhawk_ingest.dlq import STALE_TEMP_S
from tests.e2e.test_pipeline import CISCO, dlq_files, operator, post, sshd

pytestmark = pytest.mark.e2e

WORKERS, THREADS, CLIENTS, BATCH, LIMIT = 4, 2, 8, 3, 20


def test_concurrent_clients_against_several_workers_never_take_the_dlq_past_its_limit(start_emulator):
    emu = start_emulator(workers=WORKERS, threads=THREADS, INGEST_DLQ_MAX_PENDING_FILES=str(LIMIT))
    body = json.dumps(CISCO) * BATCH
    accepted: list[int] = []
    refusals: list[httpx.Response] = []
    others: list[httpx.Response] = []

    def client() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = post(emu, body)
            if answer.status_code == 200:
                accepted.append(answer.json()["dead_lettered"])
            elif answer.status_code == 503:
                refusals.append(answer)
                if len(dlq_files(emu)) + BATCH > LIMIT:
                    return
            else:
                others.append(answer)
                return

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    files = dlq_files(emu)
    print(f"{len(files)} files (limit {LIMIT}), {sum(accepted)} dead-lettered in 200s, "
          f"{len(refusals)} refusals")
    assert others == []
    assert LIMIT - BATCH < len(files) <= LIMIT
    assert len(files) == sum(accepted)  # every event of every 200 is in the DLQ, nothing else
    assert refusals and all(r.json()["code"] == 9 and int(r.headers["Retry-After"]) > 0 for r in refusals)
    # A worker's estimate errs high until its next listing, taken before it refuses once the last is
    # over a second old (README, "When the DLQ cannot take more"): it settles within that.
    expected = len(files) < LIMIT
    health = emu.healthz(lambda h: h["dlq_stats"]["accepting"] is expected)
    assert health["dlq_stats"]["accepting"] is expected
    # Storage still works, so HEC health stays 17 and good events are still taken.
    assert httpx.get(f"{emu.url}/services/collector/health", trust_env=False).json()["code"] == 17
    assert post(emu, sshd(52144)).json() == {"text": "Success", "code": 0}


@pytest.mark.parametrize("query", [{"limit": "1"}, {"id": "failed_1700000000_" + "0" * 32}, {"LIMIT": "1"}])
def test_a_purge_with_a_parameter_it_does_not_take_deletes_nothing(emulator, query):
    post(emulator, json.dumps(CISCO) * 2)
    before = len(dlq_files(emulator))

    answer = operator(emulator, "DELETE", "/api/v1/dlq/purge", **query)

    assert answer.status_code == 400 and repr(next(iter(query))) in answer.json()["error"]
    assert len(dlq_files(emulator)) == before >= 2


def test_start_up_removes_the_temp_files_a_killed_writer_left_and_health_counts_the_rest(
        start_emulator, tmp_path):
    dlq = tmp_path / "dlq"
    dlq.mkdir(mode=0o700)
    ages = {"old": STALE_TEMP_S * 3, "young": 5}
    paths = {name: dlq / f".tmp-failed_1700000000_{hexdigit * 32}" for name, hexdigit in (("old", "a"),
                                                                                           ("young", "b"))}
    for name, path in paths.items():
        path.write_bytes(b'{"timestamp": "2026-')
        when = time.time() - ages[name]
        os.utime(path, (when, when))

    emu = start_emulator(INGEST_DLQ_BASE_PATH=str(dlq))

    health = httpx.get(f"{emu.url}/healthz", timeout=10, trust_env=False).json()
    assert not paths["old"].exists() and paths["young"].exists()
    assert health["dlq_stats"]["temp_files"] == 1 and health["dlq_stats"]["pending_files"] == 0
    assert sorted(p.name for p in Path(dlq).iterdir() if p.name.startswith(".tmp")) == [paths["young"].name]
