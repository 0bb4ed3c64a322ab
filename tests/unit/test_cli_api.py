"""`telhawk-dlq` against the operator API: exit codes, the replay loop and export's fetches, with
httpx's MockTransport standing in for the service (the real service: tests/e2e/test_cli.py)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from click.testing import CliRunner

from telhawk_ingest.cli import cli
from telhawk_ingest.cli.commands import State

TOKEN = "operator-secret-token-0123456789"


def invoke(handler, *args: str, token: str | None = TOKEN, input: str | None = None):
    """Run the CLI against `handler(request) -> httpx.Response`; the requests made are kept in
    `result.requests`."""
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    env = {"TELHAWK_OPERATOR_TOKEN": token} if token else {}
    result = CliRunner(env=env).invoke(cli, list(args), obj=State(transport=httpx.MockTransport(record)),
                                       input=input)
    result.requests = requests  # type: ignore[attr-defined]
    assert TOKEN not in result.output  # never printed, whatever happened
    return result


def answer(status: int, body: object, **headers: str):
    return lambda request: httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(("status", "body", "code", "said"), [
    (401, {"error": "unknown operator token", "status": 401}, 3, "401 unknown operator token"),
    (403, {"error": "purge needs an operator token with the admin role", "status": 403}, 3, "admin role"),
    (400, {"error": "unknown query parameter 'x'", "status": 400}, 2, "unknown query parameter"),
    (404, {"error": "no DLQ entry", "status": 404}, 1, "no DLQ entry"),
    (500, {"error": "internal error; see the service log", "status": 500}, 4, "internal error"),
])
def test_service_refusals_map_to_documented_exit_codes(status, body, code, said):
    result = invoke(answer(status, body), "list")

    assert result.exit_code == code
    assert said in result.stderr and result.stdout == ""


def test_a_busy_service_exits_4_and_says_when_to_come_back():
    result = invoke(answer(503, {"text": "Server is busy", "code": 9}, **{"Retry-After": "5"}), "stats")

    assert result.exit_code == 4 and "503 Server is busy (retry after 5 s)" in result.stderr


def test_no_token_exits_3_without_asking_the_service():
    result = invoke(answer(200, {"events": [], "count": 0, "next_cursor": None}), "list", token=None)

    assert result.exit_code == 3 and "TELHAWK_OPERATOR_TOKEN" in result.stderr
    assert result.requests == []


def test_the_token_goes_in_the_authorization_header_only():
    result = invoke(answer(200, {"events": [], "count": 0, "next_cursor": None}), "list", "--reason",
                    "storage_failed")

    [request] = result.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)
    assert request.url.params["reason"] == "storage_failed"


def test_a_service_that_is_not_listening_exits_4():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the CLI connects
    result = CliRunner(env={"TELHAWK_OPERATOR_TOKEN": TOKEN}).invoke(
        cli, ["--url", f"http://127.0.0.1:{port}", "list"])

    assert result.exit_code == 4 and "cannot reach" in result.stderr and TOKEN not in result.output


def test_an_id_with_slashes_stays_one_path_segment():
    result = invoke(answer(400, {"error": "not a DLQ entry id", "status": 400}), "show", "../../etc/passwd")

    assert result.exit_code == 2
    assert result.requests[0].url.raw_path == b"/api/v1/dlq/..%2F..%2Fetc%2Fpasswd"


def replay_service(pages: list[dict], count: int = 5):
    """Answers the listing's count, then the replay calls from `pages` in order."""
    bodies: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/dlq":
            return httpx.Response(200, json={"events": [], "count": count, "next_cursor": None})
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=pages[len(bodies) - 1])

    return handle, bodies


def page(matched: int, stored: int, failed: int, cursor: str | None, dry_run: bool = False) -> dict:
    return {"matched": matched, "stored": stored, "failed": failed, "skipped": 0, "dry_run": dry_run,
            "next_cursor": cursor}


def test_replay_follows_next_cursor_until_null_and_sums_the_answers():
    handle, bodies = replay_service([page(2, 2, 0, "c1"), page(2, 2, 0, "c2"), page(1, 1, 0, None)])

    result = invoke(handle, "replay", "--reason", "normalization_failed", "--rate-limit", "50", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"matched": 5, "stored": 5, "failed": 0, "skipped": 0,
                                         "dry_run": False, "calls": 3}
    assert bodies[0] == {"filter": {"reason": "normalization_failed"}, "rate_limit": 50.0}
    assert [b.get("cursor") for b in bodies] == [None, "c1", "c2"]


def test_replay_exits_1_when_an_entry_failed_again():
    handle, _ = replay_service([page(3, 2, 1, None)], count=3)

    result = invoke(handle, "replay")

    assert result.exit_code == 1
    assert "1 entries failed again and stay in the DLQ" in result.stderr
    assert "stored" in result.stdout


def test_replay_by_ids_sends_the_ids_and_exits_1_for_ids_it_skipped():
    ids = ["failed_1700000000_" + "a" * 32, "failed_1700000001_" + "b" * 32]
    handle, bodies = replay_service([{**page(2, 1, 0, None), "skipped": 1}])

    result = invoke(handle, "replay", *ids)

    assert bodies == [{"ids": ids}]
    assert result.exit_code == 1 and "1 of the 2 ids given were not replayed" in result.stderr


def test_a_dry_run_by_ids_lists_what_it_would_replay_and_exits_1_for_the_rest():
    ids = ["failed_1700000000_" + "a" * 32, "failed_1700000001_" + "b" * 32]
    handle, bodies = replay_service([{**page(2, 0, 0, None, dry_run=True), "skipped": 1, "ids": ids[1:]}])

    result = invoke(handle, "replay", *ids, "--dry-run", "--json")

    assert bodies == [{"ids": ids, "dry_run": True}]
    assert json.loads(result.stdout)["ids"] == ids[1:]
    assert result.exit_code == 1 and "1 of the 2 ids given were not replayed" in result.stderr


def test_a_filter_replay_that_skipped_entries_held_elsewhere_exits_0():
    handle, _ = replay_service([{**page(3, 2, 0, None), "skipped": 1}], count=3)

    result = invoke(handle, "replay", "--reason", "storage_failed", "--json")

    assert result.exit_code == 0 and json.loads(result.stdout)["skipped"] == 1


def test_replay_stops_when_the_service_repeats_a_cursor():
    handle, bodies = replay_service([page(1, 0, 0, "same"), page(1, 0, 0, "same"), page(1, 0, 0, None)])

    result = invoke(handle, "replay")

    assert result.exit_code == 4 and "cursor same twice" in result.stderr and len(bodies) == 2


def test_replay_refuses_ids_and_filters_together():
    result = invoke(answer(200, {}), "replay", "failed_1700000000_" + "a" * 32, "--reason", "storage_failed")

    assert result.exit_code == 2 and result.requests == []


def test_export_fetches_truncated_entries_one_by_one_and_warns_about_vanished_ones():
    whole = {"id": "failed_1700000001_" + "b" * 32, "envelope": {"payload": "x" * 100}, "reason": "r"}
    listing = {"events": [{"id": "failed_1700000000_" + "a" * 32, "envelope": {"payload": "small"}},
                          {"id": whole["id"], "truncated": True, "envelope_bytes": 120},
                          {"id": "failed_1700000002_" + "c" * 32, "truncated": True, "envelope_bytes": 99}],
               "count": 3, "next_cursor": None}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/dlq":
            return httpx.Response(200, json=listing)
        if request.url.path.endswith(whole["id"]):
            return httpx.Response(200, json=whole)
        return httpx.Response(404, json={"error": "no DLQ entry", "status": 404})

    result = invoke(handle, "export")

    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [listing["events"][0], whole]
    assert "1 listed entries were gone when fetched" in result.stderr


def test_purge_dry_run_sends_dry_run_and_asks_nothing():
    result = invoke(answer(200, {"status": "dry_run", "purged": 0, "matched": 4}), "purge", "--dry-run",
                    "--reason", "storage_failed", "--json")

    [request] = result.requests
    assert request.method == "DELETE" and dict(request.url.params) == {"reason": "storage_failed",
                                                                        "dry_run": "true"}
    assert result.exit_code == 0 and json.loads(result.stdout)["matched"] == 4


def test_replay_of_more_ids_than_one_call_takes_is_sent_in_calls_of_1000():
    ids = [f"failed_1700000000_{n:032x}" for n in range(2500)]
    handle, bodies = replay_service([page(1000, 1000, 0, None), page(1000, 1000, 0, None),
                                     page(500, 500, 0, None)])

    result = invoke(handle, "replay", *ids, *ids[:10], "--json")  # repeated ids are sent once

    assert result.exit_code == 0, result.stderr
    assert [len(b["ids"]) for b in bodies] == [1000, 1000, 500]
    assert sorted(i for b in bodies for i in b["ids"]) == ids
    assert json.loads(result.stdout)["stored"] == 2500


def retention_service(answers: list[dict]):
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=answers[len(requests) - 1])

    return handle, requests


def retention_answer(expired: int, more: bool, dry_run: bool = False) -> dict:
    return {"dry_run": dry_run, "expired": expired, "dropped": 0, "expired_ids": [], "dropped_ids": [],
            "more": more, "max_age_seconds": 86400, "full_policy": "refuse"}


def test_retention_calls_again_while_the_service_says_more():
    handle, requests = retention_service([retention_answer(10000, True), retention_answer(42, False)])

    result = invoke(handle, "retention", "--json")

    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert (answer["expired"], answer["calls"], answer["more"]) == (10042, 2, False)
    assert all(r.method == "POST" and r.url.path == "/api/v1/dlq/retention" and not r.content
               for r in requests)


def test_a_retention_dry_run_asks_once_with_dry_run_in_the_query():
    handle, requests = retention_service([retention_answer(10000, True, dry_run=True)])

    result = invoke(handle, "retention", "--dry-run")

    [request] = requests
    assert request.url.params["dry_run"] == "true"
    assert result.exit_code == 0 and "10000" in result.stdout


def test_delete_goes_on_past_an_id_that_is_gone_and_exits_1():
    ids = ["failed_1700000000_" + "a" * 32, "failed_1700000001_" + "b" * 32]

    def handle(request: httpx.Request) -> httpx.Response:
        entry_id = request.url.path.rsplit("/", 1)[1]
        if entry_id == ids[0]:
            return httpx.Response(404, json={"error": f"no DLQ entry {entry_id}", "status": 404})
        return httpx.Response(200, json={"status": "deleted", "id": entry_id})

    result = invoke(handle, "delete", *ids, "--json")

    assert [r.method for r in result.requests] == ["DELETE", "DELETE"]
    assert json.loads(result.stdout) == {"deleted": [ids[1]], "missing": [ids[0]]}
    assert result.exit_code == 1


def test_normalizers_table_names_classes_and_origins():
    listed = {"normalizers": [
        {"position": 1, "match": "exact", "format": "raw", "source_type": "cisco:asa",
         "ocsf_classes": [{"class_uid": 4001, "class_name": "Network Activity"}],
         "normalizer": "telhawk_ingest.normalizers.cisco_asa.normalize", "origin": {"type": "builtin"}},
        {"position": 2, "match": "exact", "format": "raw", "source_type": "cisco_asa",
         "ocsf_classes": [{"class_uid": 4001, "class_name": "Network Activity"}],
         "normalizer": "telhawk_ingest.normalizers.cisco_asa.normalize",
         "origin": {"type": "alias", "alias_of": "cisco:asa"}}],
        "count": 2, "plugin_failures": [{"entry_point": "broken", "distribution": "acme", "error": "boom"}],
        "alias_failures": []}

    result = invoke(answer(200, listed), "normalizers")

    assert result.exit_code == 0
    [row] = [line for line in result.stdout.splitlines() if "cisco_asa " in line]
    assert "alias of cisco:asa" in row and "4001 Network Activity" in row
    assert "plugin not loaded: broken (acme): boom" in result.stderr
