"""GET /metrics from the real emulator: every worker answers with the volume's counters, equal to
healthz's, and a restarted emulator goes on from them."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_pipeline import CISCO, post, sshd

pytestmark = pytest.mark.e2e


def scrape(emu) -> dict[str, float]:
    """Each counter of /metrics summed over its labels, by sample name."""
    answer = httpx.get(f"{emu.url}/metrics", timeout=10, trust_env=False)
    assert answer.status_code == 200
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name.endswith("_total") or sample.name == "telhawk_dlq_pending_files":
                sums[sample.name] = sums.get(sample.name, 0) + sample.value
    return sums


def test_every_worker_reports_the_volumes_counters_and_a_restart_keeps_them(start_emulator):
    emu = start_emulator(workers=2)
    for port in range(6):  # new connections: both workers take some
        assert post(emu, sshd(port)).status_code == 200
    assert post(emu, json.dumps(CISCO)).json()["dead_lettered"] == 1
    health = emu.healthz(lambda h: h["processed"] == 7)
    assert (health["processed"], health["stored"], health["failed"]) == (7, 6, 1)

    answers = [scrape(emu) for _ in range(6)]  # new connections: both workers answer

    for counters in answers:
        assert counters["telhawk_events_received_total"] == health["processed"]
        assert counters["telhawk_events_stored_total"] == health["stored"]
        assert counters["telhawk_events_stored_first_try_total"] == 6
        assert counters["telhawk_dlq_written_total"] == health["dlq_written"]
        assert counters["telhawk_dlq_pending_files"] == health["dlq_stats"]["pending_files"] == 1

    emu.restart()

    assert scrape(emu) == answers[0]
