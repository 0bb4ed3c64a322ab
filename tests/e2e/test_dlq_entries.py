"""One DLQ entry over real HTTP through the emulator (uvicorn decodes %2F into '/' before routing):
ids that are not entry names reach the handler and get its 400, never the router's 404; a real
entry is shown and deleted; retention answers over the wire."""

from __future__ import annotations

import json

import pytest

from tests.e2e.rawhttp import connect, head, read_answer
from tests.e2e.test_pipeline import CISCO, operator, post

pytestmark = pytest.mark.e2e


def raw(emu, method: str, target: str) -> tuple[int, dict]:
    """Send `target` exactly as written (no client-side normalization of '..' or escapes)."""
    with connect(emu.port) as sock:
        sock.sendall(head(method, target, emu.port, {"Authorization": f"Bearer {emu.operator_token}",
                                                     "Connection": "close"}))
        answer = read_answer(sock)
    return answer.status, answer.json()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("target", ["/api/v1/dlq/..%2F..%2Fetc%2Fpasswd", "/api/v1/dlq/%2Fetc%2Fpasswd",
                                    "/api/v1/dlq/../../etc/passwd", "/api/v1/dlq/%2E%2E",
                                    "/api/v1/dlq/failed_1_2%2F..%2F..%2Fhealthz"])
def test_ids_the_router_decodes_into_paths_get_the_handlers_400(emulator, method, target):
    status, body = raw(emulator, method, target)

    assert status == 400, body
    assert body["status"] == 400 and "not a DLQ entry id" in body["error"]


def test_an_entry_is_shown_then_deleted_then_gone(emulator):
    assert post(emulator, json.dumps(CISCO)).status_code == 200
    entry_id = operator(emulator, "GET", "/api/v1/dlq").json()["events"][-1]["id"]

    shown = operator(emulator, "GET", f"/api/v1/dlq/{entry_id}")
    assert shown.status_code == 200 and shown.json()["id"] == entry_id
    assert shown.json()["envelope"]["source_type"] == "cisco_asa"
    deleted = operator(emulator, "DELETE", f"/api/v1/dlq/{entry_id}")
    assert deleted.json() == {"status": "deleted", "id": entry_id}
    assert not (emulator.dlq_path / f"{entry_id}.json").exists()
    assert operator(emulator, "GET", f"/api/v1/dlq/{entry_id}").status_code == 404


def test_retention_dry_run_over_http(emulator):
    answer = operator(emulator, "POST", "/api/v1/dlq/retention", dry_run="true")

    assert answer.status_code == 200
    assert answer.json()["dry_run"] is True and answer.json()["full_policy"] == "refuse"
