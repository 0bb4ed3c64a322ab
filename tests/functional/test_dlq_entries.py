"""One DLQ entry by id through the real handlers and the emulator's route table: the record, its
deletion, ids that are not entry names (refused by the handler before any filesystem call, also
when the router decoded them from %2F), roles, and purge's dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telhawk_ingest.audit import AuditLog
from tests.fsmonitor import filesystem_calls
from tests.functional.conftest import OPERATOR_TOKEN
from tests.functional.test_ingest import CISCO, SSHD_EVENT

READ_TOKEN = "read-only-operator-token-0001"
TOKENS = {"tokens": [{"name": "ops", "token": OPERATOR_TOKEN},
                     {"name": "viewer", "token": READ_TOKEN, "role": "read"}]}
# A syntactically valid id that names no entry.
UNKNOWN = "failed_1700000000_0123456789abcdef0123456789abcdef"
# Ids that are not entry names, as sent on the wire: the router decodes %2F into '/'.
NOT_IDS = ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "..%2F.state%2Faudit",
           "failed_1700000000_0123456789abcdef0123456789abcdef.json", "failed_1_xyz",
           f"{UNKNOWN}%2F..", "%2E%2E", "failed_1700000000_0123456789ABCDEF0123456789ABCDEF"]


def audit(client) -> list[dict]:
    return list(AuditLog(client.service.settings.state_path / "audit").entries())


def entry_files(client) -> list[Path]:
    return sorted(client.service.settings.dlq.base_path.glob("failed_*.json"))


@pytest.fixture
def roles(make_client):
    return make_client(operator=TOKENS)


def test_get_answers_the_record_exactly_as_stored_and_is_audited(client):
    client.hec(CISCO)
    [path] = entry_files(client)

    answer = client.operator("GET", f"/api/v1/dlq/{path.stem}")

    assert answer.status_code == 200
    assert answer.json() == json.loads(path.read_bytes())
    assert answer.json()["id"] == path.stem and answer.json()["reason"] == "normalization_failed"
    [entry] = audit(client)
    assert (entry["operator"], entry["action"], entry["count"], entry["params"]) == (
        "ops", "show_dlq_entry", 1, {"id": path.stem})


def test_delete_removes_only_that_entry_counts_and_audits_it(client):
    client.hec(CISCO + CISCO)
    first, second = entry_files(client)

    answer = client.operator("DELETE", f"/api/v1/dlq/{first.stem}")

    assert answer.status_code == 200 and answer.json() == {"status": "deleted", "id": first.stem}
    assert entry_files(client) == [second]
    assert client.service.counters.totals()["dlq_deleted"] == 1
    assert [(e["action"], e["params"]) for e in audit(client)] == [("delete_dlq_entry", {"id": first.stem})]
    again = client.operator("DELETE", f"/api/v1/dlq/{first.stem}")
    assert again.status_code == 404 and first.stem in again.json()["error"]
    assert client.service.counters.totals()["dlq_deleted"] == 1


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_an_unknown_id_is_404_in_the_operator_shape(client, monkeypatch, method):
    with filesystem_calls(monkeypatch) as calls:
        answer = client.operator(method, f"/api/v1/dlq/{UNKNOWN}")

    assert answer.status_code == 404
    assert answer.json() == {"error": f"no DLQ entry {UNKNOWN}", "status": 404}
    # The recorder sees the lookup a valid id makes (what the 400 cases below must never make).
    looked_up = str(client.service.settings.dlq.base_path / f"{UNKNOWN}.json")
    assert any(path == looked_up for _call, path in calls)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("sent", NOT_IDS)
def test_an_id_that_is_not_an_entry_name_is_400_from_the_handler_before_any_filesystem_call(
        client, monkeypatch, tmp_path, method, sent):
    client.hec(CISCO)
    dlq = client.service.settings.dlq.base_path
    before = sorted(p.name for p in dlq.iterdir())
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")

    with filesystem_calls(monkeypatch) as calls:
        answer = client.operator(method, f"/api/v1/dlq/{sent}")

    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["status"] == 400 and "not a DLQ entry id" in body["error"]  # the handler's, not the router's
    # Only the audit log of the refusal, and counters files that flushers write (this service's
    # or an earlier test's), all under a `.state` folder; never the DLQ folder or what the id names.
    touched = [(call, path) for call, path in calls
               if "/.state/" not in path and not path.endswith("/.state")]
    assert touched == []
    audit_dir = str(dlq / ".state" / "audit")
    assert any(call == "open" and path.startswith(audit_dir) for call, path in calls)
    assert sorted(p.name for p in dlq.iterdir()) == before
    assert (outside / "passwd").read_text() == "root:x:0:0"
    [entry] = audit(client)
    assert entry["action"] == "refused" and entry["params"]["status"] == 400


def test_the_literal_purge_route_still_wins_over_the_id_route(client):
    client.hec(CISCO)

    answer = client.operator("DELETE", "/api/v1/dlq/purge")

    assert answer.json() == {"status": "purged", "purged": 1}


def test_entry_calls_take_no_parameters_and_no_body(client):
    client.hec(CISCO)
    [path] = entry_files(client)

    assert client.operator("DELETE", f"/api/v1/dlq/{path.stem}?dry_run=true").status_code == 400
    assert client.operator("DELETE", f"/api/v1/dlq/{path.stem}", content=b'{"x": 1}').status_code == 400
    assert entry_files(client) == [path]
    assert client.operator("POST", f"/api/v1/dlq/{path.stem}").status_code == 405


# -- roles -----------------------------------------------------------------------------------------

def test_a_read_token_shows_lists_and_reads_health_but_gets_403_on_every_change(roles):
    roles.hec(CISCO)
    [path] = entry_files(roles)

    assert roles.operator("GET", f"/api/v1/dlq/{path.stem}", token=READ_TOKEN).status_code == 200
    assert roles.operator("GET", "/api/v1/dlq", token=READ_TOKEN).json()["count"] == 1
    for method, url in [("DELETE", f"/api/v1/dlq/{path.stem}"), ("DELETE", "/api/v1/dlq/purge"),
                        ("DELETE", "/api/v1/dlq/purge?dry_run=true"), ("POST", "/api/v1/dlq/retention"),
                        ("DELETE", "/api/v1/dlq/..%2F..%2Fetc%2Fpasswd")]:
        answer = roles.operator(method, url, token=READ_TOKEN)
        assert answer.status_code == 403, url
        assert "admin" in answer.json()["error"]
    assert entry_files(roles) == [path]
    refused = [e for e in audit(roles) if e["action"] == "refused"]
    assert len(refused) == 5 and {e["operator"] for e in refused} == {"viewer"}


def test_an_admin_token_deletes(roles):
    roles.hec(CISCO)
    [path] = entry_files(roles)

    assert roles.operator("DELETE", f"/api/v1/dlq/{path.stem}").status_code == 200
    assert entry_files(roles) == []


# -- purge dry run ---------------------------------------------------------------------------------

def test_a_purge_dry_run_counts_and_names_what_it_would_delete_and_deletes_nothing(client):
    client.hec(CISCO * 3)
    client.hec(SSHD_EVENT)
    files = entry_files(client)

    answer = client.operator("DELETE", "/api/v1/dlq/purge?reason=normalization_failed&dry_run=true")

    assert answer.status_code == 200
    assert answer.json() == {"status": "dry_run", "dry_run": True, "purged": 0, "would_purge": 3,
                             "ids": [p.stem for p in files]}
    assert entry_files(client) == files
    assert client.service.counters.totals()["dlq_purged"] == 0
    [entry] = audit(client)
    assert entry["action"] == "purge_dlq" and entry["count"] == 0
    assert entry["params"] == {"reason": "normalization_failed", "dry_run": "true", "would_purge": 3}


def test_a_purge_dry_run_names_at_most_a_hundred_ids_but_counts_them_all(client):
    client.hec(CISCO * 120)

    body = client.operator("DELETE", "/api/v1/dlq/purge?dry_run=1").json()

    assert body["would_purge"] == 120 and len(body["ids"]) == 100
    assert body["ids"] == [p.stem for p in entry_files(client)][:100]


@pytest.mark.parametrize("value", ["yes", "TRUE!", "2"])
def test_a_dry_run_flag_that_is_not_true_or_false_is_400_and_deletes_nothing(client, value):
    client.hec(CISCO)

    answer = client.operator("DELETE", f"/api/v1/dlq/purge?dry_run={value}")

    assert answer.status_code == 400 and "dry_run" in answer.json()["error"]
    assert len(entry_files(client)) == 1


def test_dry_run_false_purges_for_real(client):
    client.hec(CISCO)

    assert client.operator("DELETE", "/api/v1/dlq/purge?dry_run=false").json() == {
        "status": "purged", "purged": 1}
