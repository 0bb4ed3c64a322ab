"""State on the DLQ volume stays bounded through the real handlers (README "State on the volume")."""

from __future__ import annotations

import time

from telhawk_ingest.audit import REFUSED_LINES_PER_WINDOW, REFUSED_WINDOW_S, AuditLog
from tests.functional.conftest import HEC_TOKEN


def audit_bytes(client) -> int:
    return sum(p.stat().st_size for p in (client.service.settings.state_path / "audit").iterdir())


def test_300_tokenless_operator_calls_write_a_bounded_audit_and_one_summary(client):
    for _ in range(300):
        assert client.operator("GET", "/api/v1/dlq", token=None).status_code == 401
    assert audit_bytes(client) < 4096  # was one fsync'd line each: 42 KB

    client.service.audit.flush_suppressed(time.time() + REFUSED_WINDOW_S)
    entries = list(AuditLog(client.service.settings.state_path / "audit").entries())
    assert len(entries) == REFUSED_LINES_PER_WINDOW + 1
    assert entries[-1]["action"] == "refused_suppressed"
    assert entries[-1]["count"] == 300 - REFUSED_LINES_PER_WINDOW


def test_operator_calls_are_audited_while_refusals_are_suppressed(client):
    for _ in range(50):
        client.operator("DELETE", "/api/v1/dlq/purge", token=HEC_TOKEN)  # 403s
    assert client.operator("DELETE", "/api/v1/dlq/purge").json() == {"status": "purged", "purged": 0}

    entries = list(AuditLog(client.service.settings.state_path / "audit").entries())
    assert entries[-1]["operator"] == "ops" and entries[-1]["action"] == "purge_dlq"
    assert sum(e["action"] == "denied" for e in entries) == REFUSED_LINES_PER_WINDOW
