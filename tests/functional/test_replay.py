"""`POST /api/v1/dlq/replay` through the real handlers (SPEC §11): entries stored again under
their own ids and removed, failures rewritten in place, dry runs, bounded calls, refusals."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from telhawk_ingest.audit import AuditLog
from telhawk_ingest.claims import CLAIMS_DIR
from telhawk_ingest.dlq import NO_FILTER
from telhawk_ingest.envelope import rfc3339
from telhawk_ingest.normalizers import Normalizer, builtin_registry
from telhawk_ingest.replay import Pacer, Replayer, ReplayRequest
from telhawk_ingest.storage import make_backend
from telhawk_ingest.storage.base import Item, Outcome, Status
from tests.functional.conftest import HEC_TOKEN, settings_for
from tests.functional.test_ingest import CISCO, SSHD_EVENT
from tests.readback import stored_documents
from tests.replay_worker import OCSF_EVENT

REPLAY = "/api/v1/dlq/replay"
READER_TOKEN = "reader-token-for-tests-0001"
UNRELATED = json.dumps({"event": {"x": 1}, "sourcetype": "unmapped_thing"})


def replay(client, body: Any = None, raw: bytes | None = None, token: str | None = None, **kw: Any):
    extra = {"token": token} if token else {}
    content = raw if raw is not None else json.dumps(body).encode()
    return client.operator("POST", REPLAY, content=content, **extra, **kw)


def fix_cisco(client, normalizer: Normalizer = lambda envelope: json.loads(OCSF_EVENT)) -> None:
    """What an operator's fix does: a normalizer for cisco_asa now exists (by default one that
    gives a valid OCSF event), in a registry of this service's own."""
    registry = builtin_registry()
    registry.register("json", "cisco_asa", normalizer)
    client.service.registry = registry


def entries(client) -> list[dict[str, Any]]:
    return client.dlq_records()


def files(client) -> dict[str, bytes]:
    base = client.service.settings.dlq.base_path
    return {p.name: p.read_bytes() for p in sorted(base.glob("failed_*.json"))}


def stored_ids(client) -> list[str]:
    return [d["_id"] for d in stored_documents(client.service.settings.storage.data_dir)]


def audit(client) -> list[dict[str, Any]]:
    return list(AuditLog(client.service.settings.state_path / "audit").entries())


def health(client) -> dict[str, Any]:
    client.service.counters.flush()
    return client.hec("", path="/healthz", method="GET", token=None).json()


class Switch:
    """The real embedded store behind a switch: while `down`, every item is a retryable failure."""

    name = "local"

    def __init__(self, tmp_path: Path) -> None:
        self.inner = make_backend(settings_for(tmp_path))
        self.down = False

    def store(self, batch: list[Item]) -> list[Outcome]:
        if self.down:
            return [Outcome(Status.RETRY, "storage failed: ConnectError: connection refused")] * len(batch)
        return self.inner.store(batch)

    def healthy(self) -> bool:
        return not self.down

    def close(self) -> None:
        self.inner.close()


def test_a_fixed_event_is_stored_once_under_its_id_its_entry_removed_and_others_untouched(client):
    client.hec(CISCO + CISCO + UNRELATED)
    cisco = [r for r in entries(client) if r["envelope"]["source_type"] == "cisco_asa"]
    unrelated = [r for r in entries(client) if r["envelope"]["source_type"] != "cisco_asa"]
    fix_cisco(client)

    answer = replay(client, {"filter": {"source_type": "cisco_asa"}})

    assert answer.status_code == 200
    assert answer.json() == {"matched": 2, "stored": 2, "failed": 0, "skipped": 0, "dry_run": False,
                             "next_cursor": None}
    assert entries(client) == unrelated
    assert Counter(stored_ids(client)) == Counter(r["envelope"]["id"] for r in cisco)
    # Replaying the same ids again finds nothing to do and stores nothing twice.
    again = replay(client, {"ids": [r["id"] for r in cisco]})
    assert again.json()["matched"] == 2 and again.json()["skipped"] == 2 and again.json()["stored"] == 0
    assert len(stored_ids(client)) == 2
    assert os.listdir(client.service.settings.dlq.base_path / CLAIMS_DIR) == []


def test_replayed_events_count_in_replayed_and_processed_still_counts_each_event_once(client):
    client.hec(SSHD_EVENT + CISCO + CISCO)
    fix_cisco(client)
    before = health(client)

    replay(client, {"filter": {"reason": "normalization_failed"}})

    after = health(client)
    assert (before["stored"], before["failed"], before["processed"]) == (1, 2, 3)
    assert (after["stored"], after["failed"], after["processed"]) == (1, 2, 3)
    assert after["replayed"] == {"stored": 2, "failed": 0}
    assert after["dlq_stats"]["pending_files"] == 0


def test_an_entry_that_fails_again_stays_one_file_with_attempts_plus_one_and_the_new_failure(client):
    client.hec(CISCO)
    [first] = entries(client)
    client.service.clock = lambda: 1_800_000_000.0

    answer = replay(client, {"ids": [first["id"]]})

    assert answer.json() == {"matched": 1, "stored": 0, "failed": 1, "skipped": 0, "dry_run": False,
                             "next_cursor": None}
    [again] = entries(client)
    assert again["id"] == first["id"] and list(files(client)) == [f"{first['id']}.json"]
    assert again["attempts"] == 2
    assert again["last_attempt"] == rfc3339(1_800_000_000.0)
    assert again["timestamp"] == first["timestamp"] and again["envelope"] == first["envelope"]
    assert again["reason"] == "normalization_failed" and again["error"] == first["error"]

    # A "fix" that yields an invalid event: the same entry now says validation_failed, attempt 3.
    fix_cisco(client, lambda envelope: {"class_uid": 3002})
    replay(client, {"ids": [first["id"]]})
    [third] = entries(client)
    assert (third["id"], third["attempts"], third["reason"], third["stage"]) == \
        (first["id"], 3, "validation_failed", "validate")
    listed = client.operator("GET", "/api/v1/dlq", params={"reason": "validation_failed"}).json()
    assert [e["id"] for e in listed["events"]] == [first["id"]]
    assert health(client)["replayed"] == {"stored": 0, "failed": 2}
    assert health(client)["failed"] == 1  # still one dead-lettered event


def test_a_storage_failure_again_rewrites_the_entry_and_a_recovered_store_takes_it(make_client, tmp_path):
    switch = Switch(tmp_path)
    client = make_client(backend=switch, core={"max_retries": 0})
    switch.down = True
    client.hec(SSHD_EVENT)
    [first] = entries(client)
    assert first["reason"] == "storage_failed"

    assert replay(client, {"filter": {"reason": "storage_failed"}}).json()["failed"] == 1
    [again] = entries(client)
    assert (again["attempts"], again["stage"]) == (first["attempts"] + 1, "store")
    assert "connection refused" in again["error"]

    switch.down = False
    assert replay(client, {"filter": {"reason": "storage_failed"}}).json()["stored"] == 1
    assert entries(client) == []
    assert stored_ids(client) == [first["envelope"]["id"]]


def test_a_dry_run_changes_nothing_is_not_an_attempt_and_says_what_it_would_replay(client):
    client.hec(CISCO + CISCO + UNRELATED)
    fix_cisco(client)
    before = files(client)
    cisco = sorted(r["id"] for r in entries(client) if r["envelope"]["source_type"] == "cisco_asa")

    answer = replay(client, {"filter": {"source_type": "cisco_asa"}, "dry_run": True})

    assert answer.json() == {"matched": 2, "stored": 0, "failed": 0, "skipped": 0, "dry_run": True,
                             "next_cursor": None, "ids": cisco}
    assert files(client) == before
    assert stored_ids(client) == []
    assert not (client.service.settings.dlq.base_path / CLAIMS_DIR).exists()
    assert health(client)["replayed"] == {"stored": 0, "failed": 0}
    assert audit(client)[-1]["params"]["dry_run"] is True


def test_every_replay_is_audited_with_who_what_and_the_counts(client):
    client.hec(CISCO + CISCO)
    fix_cisco(client)

    replay(client, {"filter": {"reason": "normalization_failed"}, "rate_limit": 1000})

    entry = audit(client)[-1]
    assert (entry["operator"], entry["action"], entry["count"]) == ("ops", "replay_dlq", 2)
    assert entry["params"] == {"filter": {"reason": "normalization_failed"}, "rate_limit": 1000,
                               "matched": 2, "stored": 2, "failed": 0, "skipped": 0, "dry_run": False,
                               "next_cursor": None}


def test_a_call_does_bounded_work_and_the_cursor_continues_it(make_client):
    client = make_client(replay={"max_entries_per_call": 2})
    for _ in range(5):
        client.hec(CISCO)
    names = sorted(r["id"] for r in entries(client))
    fix_cisco(client)

    answers = []
    cursor = None
    while True:
        answer = replay(client, {"filter": {}, **({"cursor": cursor} if cursor else {})}).json()
        answers.append(answer)
        cursor = answer["next_cursor"]
        if cursor is None:
            break

    assert [a["stored"] for a in answers] == [2, 2, 1]
    assert [a["next_cursor"] for a in answers] == [names[1], names[3], None]
    assert entries(client) == []


def test_entries_that_fail_again_are_passed_by_the_cursor_not_replayed_twice_in_one_sweep(make_client):
    client = make_client(replay={"max_entries_per_call": 1})
    client.hec(CISCO + CISCO)

    first = replay(client, {"filter": {}}).json()
    second = replay(client, {"filter": {}, "cursor": first["next_cursor"]}).json()

    assert (first["failed"], second["failed"], second["next_cursor"]) == (1, 1, None)
    assert [r["attempts"] for r in entries(client)] == [2, 2]


@pytest.mark.parametrize(("body", "named"), [
    ({"ids": ["failed_1_" + "0" * 32], "bogus": 1}, "'bogus'"),
    ({"filter": {"reason": "storage_failed", "sourcetype": "x"}}, "'sourcetype'"),
    ({"filter": {"reasn": "x"}, "dryrun": True}, "'dryrun'"),
    ({"ids": "failed_1_" + "0" * 32}, "ids"),
    ({"ids": []}, "ids"),
    ({"ids": [7]}, "ids"),
    ({"ids": ["../../etc/passwd"]}, "not a DLQ entry id"),
    ({"filter": {"reason": "storage_failed"}, "ids": ["failed_1_" + "0" * 32]}, "either"),
    ({}, "either"),
    ({"filter": "reason=storage_failed"}, "filter"),
    ({"filter": {"reason": "bogus"}}, "reason"),
    ({"filter": {"reason": ""}}, "filter.reason"),
    ({"filter": {"since": "yesterday"}}, "since"),
    ({"filter": {}, "dry_run": "yes"}, "dry_run"),
    ({"filter": {}, "rate_limit": 0}, "rate_limit"),
    ({"filter": {}, "rate_limit": True}, "rate_limit"),
    ({"filter": {}, "rate_limit": "10"}, "rate_limit"),
    ({"filter": {}, "cursor": 5}, "cursor"),
    ({"filter": {}, "cursor": "../x"}, "not a DLQ entry id"),
    ([{"filter": {}}], "JSON object"),
])
def test_a_body_that_is_not_understood_gets_400_naming_the_problem_and_nothing_is_done(client, body, named):
    client.hec(CISCO + CISCO)
    fix_cisco(client)
    before = files(client)

    answer = replay(client, body)

    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"] and "nothing was done" in answer.json()["error"]
    assert files(client) == before and stored_ids(client) == []
    assert audit(client)[-1]["action"] == "refused"


@pytest.mark.parametrize("raw", [b"", b"{not json", b"null"])
def test_an_empty_or_broken_body_gets_400_and_nothing_is_done(client, raw):
    client.hec(CISCO)
    fix_cisco(client)

    answer = replay(client, raw=raw)

    assert answer.status_code == 400 and "nothing was done" in answer.json()["error"]
    assert len(entries(client)) == 1


@pytest.mark.parametrize(("raw", "named"), [
    (b'{"filter":{},"filter":{"reason":"storage_failed"},"dry_run":true}', "'filter'"),
    (b'{"filter":{"reason":"validation_failed","reason":"normalization_failed"}}', "'reason'"),
    (b'{"filter":{},"dry_run":true,"dry_run":false}', "'dry_run'"),
    (b'{"filter":{},"cursor":' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
])
def test_a_body_giving_a_key_twice_gets_400_naming_it_and_nothing_is_done(client, raw, named):
    client.hec(CISCO + CISCO)
    fix_cisco(client)
    before = files(client)

    answer = replay(client, raw=raw)

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert named in error and "nothing was done" in error
    assert files(client) == before and stored_ids(client) == []


def test_a_query_parameter_gets_400(client):
    client.hec(CISCO)
    fix_cisco(client)
    answer = replay(client, {"filter": {}}, params={"dry_run": "true"})
    assert answer.status_code == 400 and "'dry_run'" in answer.json()["error"]
    assert len(entries(client)) == 1


def test_a_body_over_the_limit_gets_413_and_nothing_is_done(client):
    client.hec(CISCO)
    fix_cisco(client)
    answer = replay(client, raw=b'{"filter": {}, "cursor": "' + b"x" * 300_000 + b'"}')
    assert answer.status_code == 413 and "error" in answer.json()
    assert len(entries(client)) == 1


def test_a_read_token_gets_403_and_a_hec_token_403_and_no_credential_401(make_client):
    client = make_client(operator={"tokens": [{"name": "ops", "token": "operator-token-for-tests-0001"},
                                              {"name": "viewer", "token": READER_TOKEN, "role": "read"}]})
    client.hec(CISCO)
    fix_cisco(client)

    assert replay(client, {"filter": {}}, token=READER_TOKEN).status_code == 403
    assert replay(client, {"filter": {}}, token=HEC_TOKEN).status_code == 403
    assert client.app.post(REPLAY, content=b'{"filter": {}}').status_code == 401
    assert len(entries(client)) == 1 and stored_ids(client) == []


def test_the_other_operator_calls_still_refuse_a_body(client):
    client.hec(CISCO)
    answer = client.operator("DELETE", "/api/v1/dlq/purge", content=b'{"filter": {}}')
    assert answer.status_code == 400 and "no request body" in answer.json()["error"]
    assert len(entries(client)) == 1


def test_a_wrong_method_on_replay_gets_405(client):
    assert client.operator("GET", REPLAY).status_code == 405


def test_a_rate_limit_paces_batches_with_the_injected_clock(make_client):
    client = make_client()
    for _ in range(25):
        client.hec(CISCO)
    fix_cisco(client)
    now = [1000.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    replayer = Replayer(client.service, monotonic=lambda: now[0], sleep=sleep)
    result = replayer.run(ReplayRequest(filter=NO_FILTER, rate_limit=10))

    assert (result.stored, result.next_cursor) == (25, None)
    assert sleeps == [1.0, 1.0]  # batches of 10, 10, 5: one second apart
    assert entries(client) == []


def test_the_time_budget_ends_a_call_between_batches_with_a_cursor(make_client):
    client = make_client(replay={"time_budget_seconds": 1.5})
    for _ in range(25):
        client.hec(CISCO)
    fix_cisco(client)
    names = sorted(r["id"] for r in entries(client))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = Replayer(client.service, monotonic=lambda: now[0], sleep=sleep).run(
        ReplayRequest(filter=NO_FILTER, rate_limit=10))

    assert result.stored == 20  # batches at 0 s and 1 s; the third would start at 2 s, past 1.5 s
    assert result.next_cursor == names[19]
    assert [r["id"] for r in entries(client)] == names[20:]


def test_the_pacer_refuses_to_wait_past_the_deadline() -> None:
    now = [0.0]
    pacer = Pacer(2.0, lambda: now[0], lambda s: None)
    pacer.sent = 4
    assert pacer.wait(deadline=1.5) is False
    assert pacer.wait(deadline=2.0) is True


def test_corrupt_and_planted_entries_are_skipped_and_left_in_place(client, tmp_path):
    client.hec(CISCO)
    fix_cisco(client)
    base = client.service.settings.dlq.base_path
    broken = base / "failed_1700000000_00000000000000000000000000000001.json"
    broken.write_text("{not json")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"envelope": {"id": "x"}, "reason": "storage_failed"}))
    planted = base / "failed_1700000001_00000000000000000000000000000002.json"
    planted.symlink_to(outside)
    odd = base / "failed_1700000002_00000000000000000000000000000003.json"
    odd.write_text(json.dumps({"envelope": {"id": 7, "payload": None}, "reason": "storage_failed"}))

    answer = replay(client, {"filter": {}}).json()

    assert (answer["matched"], answer["stored"], answer["skipped"]) == (4, 1, 3)
    assert broken.read_text() == "{not json" and planted.is_symlink() and odd.exists()
    assert outside.exists() and len(stored_ids(client)) == 1


def test_a_dlq_folder_that_fails_gets_503_not_500_and_loses_nothing(client, monkeypatch):
    client.hec(CISCO)
    fix_cisco(client)

    def refused(*_args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("telhawk_ingest.claims.os.link", refused)
    answer = replay(client, {"filter": {}})

    assert answer.status_code == 503 and "Permission denied" in answer.json()["error"]
    assert answer.headers["Retry-After"] == "5"  # as HEC's 503 code 9 (errors.DEFAULT_RETRY_AFTER)
    assert len(entries(client)) == 1 and stored_ids(client) == []


def test_a_folder_failure_after_some_batches_ends_the_call_with_a_cursor_before_the_failed_batch(
        make_client, monkeypatch):
    client = make_client(storage={"bulk_max_events": 2})
    for _ in range(5):
        client.hec(CISCO)
    fix_cisco(client)
    names = sorted(r["id"] for r in entries(client))
    real_link = os.link
    links = []

    def third_batch_fails(src, dst):
        links.append(dst)
        if len(links) > 4:
            raise OSError(5, "Input/output error")
        real_link(src, dst)

    monkeypatch.setattr("telhawk_ingest.claims.os.link", third_batch_fails)
    answer = replay(client, {"filter": {}}).json()

    assert (answer["matched"], answer["stored"], answer["next_cursor"]) == (4, 4, names[3])
    monkeypatch.setattr("telhawk_ingest.claims.os.link", real_link)
    rest = replay(client, {"filter": {}, "cursor": answer["next_cursor"]}).json()
    assert (rest["stored"], rest["next_cursor"]) == (1, None)
    assert entries(client) == []
