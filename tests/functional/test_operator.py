"""Operator calls through the real handlers: credentials, the seed's shapes, the audit log, health."""

from __future__ import annotations

import os
import stat
import time

import pytest

from telhawk_ingest.audit import AuditLog
from telhawk_ingest.dlq import STALE_TEMP_S
from telhawk_ingest.service import Service
from tests.functional.conftest import HEC_TOKEN, settings_for
from tests.functional.test_ingest import CISCO, SSHD_EVENT

HEALTH_KEYS = {"uptime_seconds", "processed", "failed", "stored", "dlq_written", "dlq_stats"}
DLQ_STATS_KEYS = {"enabled", "written", "pending_files", "base_path"}


def audit(client) -> list[dict]:
    return list(AuditLog(client.service.settings.state_path / "audit").entries())


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/dlq"), ("DELETE", "/api/v1/dlq/purge")])
def test_dlq_calls_without_a_credential_get_401(client, method, path):
    answer = client.operator(method, path, token=None)
    assert answer.status_code == 401 and "Bearer" in answer.json()["error"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/dlq"), ("DELETE", "/api/v1/dlq/purge")])
def test_dlq_calls_with_a_hec_token_get_403_and_the_attempt_is_audited(client, method, path):
    assert client.operator(method, path, token=HEC_TOKEN).status_code == 403
    [entry] = audit(client)
    assert entry["operator"] is None and entry["action"] == "denied"
    assert entry["params"] == {"method": method, "path": path, "status": 403}
    assert HEC_TOKEN not in str(entry)


def test_an_unknown_operator_token_gets_401(client):
    assert client.operator("GET", "/api/v1/dlq", token="x" * 32).status_code == 401


def test_listing_has_the_seeds_shape_and_is_audited(client):
    client.hec(CISCO + CISCO)

    answer = client.operator("GET", "/api/v1/dlq")

    body = answer.json()
    assert answer.status_code == 200
    assert body["count"] == 2 and len(body["events"]) == 2
    assert body["events"][0]["reason"] == "normalization_failed"
    assert body["next_cursor"] is None
    [entry] = audit(client)
    assert entry["operator"] == "ops" and entry["action"] == "list_dlq" and entry["count"] == 2


def test_purge_empties_the_dlq_says_how_many_and_is_audited(client):
    client.hec(CISCO + CISCO + CISCO)

    answer = client.operator("DELETE", "/api/v1/dlq/purge")

    assert answer.json() == {"status": "purged", "purged": 3}
    assert client.dlq_records() == []
    entry = audit(client)[-1]
    assert (entry["operator"], entry["action"], entry["count"]) == ("ops", "purge_dlq", 3)


def test_list_with_a_bad_limit_gets_400(client):
    assert client.operator("GET", "/api/v1/dlq", params={"limit": "0"}).status_code == 400


def test_a_wrong_method_on_purge_gets_405(client):
    assert client.operator("GET", "/api/v1/dlq/purge").status_code == 405


def test_healthz_has_every_seed_key_and_counts_what_happened(client):
    client.hec(SSHD_EVENT + SSHD_EVENT + CISCO)

    answer = client.hec("", path="/healthz", method="GET", token=None)

    health = answer.json()
    assert answer.status_code == 200
    assert set(health) >= HEALTH_KEYS and set(health["dlq_stats"]) >= DLQ_STATS_KEYS
    assert (health["processed"], health["stored"], health["failed"], health["dlq_written"]) == (3, 2, 1, 1)
    assert health["dlq_stats"]["pending_files"] == 1
    assert health["dlq_stats"]["written"] == 1
    assert health["dlq_stats"]["enabled"] is True
    assert health["dlq_stats"]["base_path"] == str(client.service.settings.dlq.base_path)


def test_healthz_reports_a_corrupt_file_and_ignores_foreign_ones(client):
    client.hec(CISCO)
    base = client.service.settings.dlq.base_path
    corrupt = f"failed_1700000000_{'0' * 32}.json"
    (base / corrupt).write_text('{"timestamp": ')
    (base / "notes.md").write_text("# not ours")

    health = client.hec("", path="/healthz", method="GET", token=None).json()
    listing = client.operator("GET", "/api/v1/dlq").json()

    assert health["dlq_stats"]["pending_files"] == 2
    assert health["dlq_stats"]["corrupt_files"] == [corrupt]
    assert listing["count"] == 1 and len(listing["events"]) == 1
    assert (base / corrupt).exists()


def test_counters_cover_every_instance_on_the_volume_and_survive_a_restart(client, tmp_path):
    client.hec(SSHD_EVENT + CISCO)
    other = Service(settings_for(tmp_path))  # a second instance on the same volume
    other.ingest([])
    other.counters.add(stored=5)

    assert client.service.healthz()["stored"] == 6

    client.service.counters.retire()
    other.counters.retire()
    restarted = Service(settings_for(tmp_path))
    health = restarted.healthz()
    assert (health["stored"], health["failed"]) == (6, 1)


def test_everything_on_the_dlq_volume_is_private_to_the_service(client):
    client.hec(CISCO + SSHD_EVENT)
    client.operator("GET", "/api/v1/dlq")
    base = client.service.settings.dlq.base_path

    paths = [base, *base.rglob("*")]
    assert {p.relative_to(base).parts[0] for p in paths[1:]} >= {".state"}
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


# -- a request that was not understood changes nothing (SPEC §8) -----------------------------------

def pending(client) -> int:
    return len(client.dlq_records())


@pytest.mark.parametrize("query", [
    {"limit": "1"},                              # list's parameter, not purge's
    {"id": "failed_1700000000_" + "0" * 32},     # no such parameter: one-entry delete is not a purge
    {"LIMIT": "1"},
    {"Reason": "normalization_failed"},          # names are case-sensitive
    {"reason": "normalization_failed", "dryrun": "1"},  # a misspelt dry run must not purge for real
    {"all": ""},
])
def test_purge_with_a_parameter_it_does_not_know_deletes_nothing_and_names_it(client, query):
    client.hec(CISCO + CISCO + CISCO)

    answer = client.operator("DELETE", "/api/v1/dlq/purge", params=query)

    unknown = next(k for k in query if k not in {"reason"})
    assert answer.status_code == 400
    assert f"'{unknown}'" in answer.json()["error"]
    assert pending(client) == 3


@pytest.mark.parametrize("query", [{"bogus": "1"}, {"LIMIT": "1"}, {"offset": "10"}, {"id": "x"}])
def test_listing_with_a_parameter_it_does_not_know_gets_400_naming_it(client, query):
    client.hec(CISCO)

    answer = client.operator("GET", "/api/v1/dlq", params=query)

    [name] = query
    assert answer.status_code == 400 and f"'{name}'" in answer.json()["error"]
    assert "events" not in answer.json()


def test_every_unknown_parameter_is_named_in_one_answer(client):
    answer = client.operator("GET", "/api/v1/dlq", params="zeta=1&alpha=2&limit=5")

    error = answer.json()["error"]
    assert answer.status_code == 400
    assert "'alpha'" in error and "'zeta'" in error and "'limit'" not in error.split("takes")[0]


@pytest.mark.parametrize(("method", "path", "query"), [
    ("DELETE", "/api/v1/dlq/purge", "reason=normalization_failed&reason=storage_failed"),
    ("DELETE", "/api/v1/dlq/purge", "source_type=cisco_asa&source_type=linux_secure"),
    ("GET", "/api/v1/dlq", "limit=1&limit=1000"),
])
def test_a_parameter_given_twice_gets_400_and_changes_nothing(client, method, path, query):
    client.hec(CISCO + CISCO)

    answer = client.operator(method, path, params=query)

    assert answer.status_code == 400 and "more than once" in answer.json()["error"]
    assert pending(client) == 2


def test_purge_with_a_json_body_deletes_nothing(client):
    client.hec(CISCO + CISCO)
    [first, _] = client.dlq_records()

    answer = client.operator("DELETE", "/api/v1/dlq/purge", json={"id": first["id"]})

    assert answer.status_code == 400 and "body" in answer.json()["error"]
    assert pending(client) == 2


def test_known_parameters_still_work(client):
    client.hec(CISCO + SSHD_EVENT.replace("linux_secure", "cisco_asa"))

    listing = client.operator("GET", "/api/v1/dlq", params="limit=1&source_type=cisco_asa")
    purged = client.operator("DELETE", "/api/v1/dlq/purge",
                             params="reason=normalization_failed&since=0&error=no+normalizer")

    assert listing.status_code == 200 and listing.json()["count"] == 2
    assert len(listing.json()["events"]) == 1
    assert purged.json() == {"status": "purged", "purged": 2}


def test_a_refused_operator_call_is_audited_with_the_operator_name(client):
    client.operator("DELETE", "/api/v1/dlq/purge", params={"limit": "1"})

    [entry] = audit(client)
    assert (entry["operator"], entry["action"], entry["count"]) == ("ops", "refused", 0)
    assert entry["params"]["status"] == 400 and "'limit'" in entry["params"]["error"]


@pytest.mark.parametrize("query", ["verbose=1", "dlq_stats=0"])
def test_healthz_refuses_parameters_it_does_not_take(client, query):
    answer = client.hec("", path="/healthz", method="GET", token=None, params=query)

    assert answer.status_code == 400 and query.split("=")[0] in answer.json()["error"]


def test_healthz_counts_temp_files_a_kill_left_and_the_next_start_removes_the_old_ones(client, tmp_path):
    base = client.service.settings.dlq.base_path
    old, young = (base / f".tmp-failed_1700000000_{c * 32}" for c in "ab")
    for path, age in ((old, STALE_TEMP_S + 1), (young, 1)):
        path.write_bytes(b'{"timestamp": "2026-')
        os.utime(path, (time.time() - age, time.time() - age))

    before = client.hec("", path="/healthz", method="GET", token=None).json()["dlq_stats"]
    restarted = Service(settings_for(tmp_path)).healthz()["dlq_stats"]

    assert (before["temp_files"], before["pending_files"]) == (2, 0)
    assert (restarted["temp_files"], restarted["pending_files"]) == (1, 0)
    assert not old.exists() and young.exists()


@pytest.mark.parametrize("name", ["reason", "source_type", "since", "until", "error"])
def test_an_empty_filter_value_gets_400_and_a_purge_deletes_nothing(client, name):
    # A script's `?reason=$REASON` with the variable unset must not purge the whole DLQ.
    client.hec('{"event": {"msg": "x"}, "sourcetype": "cisco_asa"}')
    assert len(client.dlq_records()) == 1

    purge = client.operator("DELETE", "/api/v1/dlq/purge", params={name: ""})
    listing = client.operator("GET", "/api/v1/dlq", params={name: " "})

    assert purge.status_code == 400 and f"'{name}' is empty" in purge.json()["error"]
    assert listing.status_code == 400
    assert len(client.dlq_records()) == 1


READ_TOKEN = "read-only-operator-token-01"


def test_a_read_token_lists_but_gets_403_on_purge_and_nothing_is_deleted(make_client):
    client = make_client(operator={"tokens": [{"name": "ops", "token": "operator-token-for-tests-0001"},
                                              {"name": "viewer", "token": READ_TOKEN, "role": "read"}]})
    client.hec(CISCO + CISCO)

    listed = client.operator("GET", "/api/v1/dlq", token=READ_TOKEN)
    refused = client.operator("DELETE", "/api/v1/dlq/purge", token=READ_TOKEN)

    assert listed.status_code == 200 and listed.json()["count"] == 2
    assert refused.status_code == 403 and "admin role" in refused.json()["error"]
    assert len(client.dlq_records()) == 2
    entry = audit(client)[-1]
    assert (entry["operator"], entry["action"], entry["params"]["status"]) == ("viewer", "refused", 403)


def test_the_roles_table_holds_a_read_token_reads_normalizers_and_only_admin_replays(make_client):
    client = make_client(operator={"tokens": [{"name": "ops", "token": "operator-token-for-tests-0001"},
                                              {"name": "viewer", "token": READ_TOKEN, "role": "read"}]})
    client.hec(CISCO)

    normalizers = client.operator("GET", "/api/v1/normalizers", token=READ_TOKEN)
    replay = client.operator("POST", "/api/v1/dlq/replay", token=READ_TOKEN, json={"filter": {}})
    by_admin = client.operator("POST", "/api/v1/dlq/replay", token="operator-token-for-tests-0001",
                               json={"filter": {}, "dry_run": True})

    assert normalizers.status_code == 200 and normalizers.json()["count"] > 0
    assert replay.status_code == 403 and "admin role" in replay.json()["error"]
    assert by_admin.status_code == 200 and by_admin.json()["matched"] == 1
    assert len(client.dlq_records()) == 1


def test_an_operator_token_with_an_unknown_role_fails_at_start_up(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="role"):
        settings_for(tmp_path, operator={"tokens": [{"name": "x", "token": READ_TOKEN, "role": "root"}]})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity", "1e999",
                                   "1e308", "-1e308", "253402300800"])
@pytest.mark.parametrize("key", ["since", "until"])
def test_a_time_bound_that_is_no_time_gets_400_on_list_purge_and_replay_and_changes_nothing(
        client, key, value):
    # float() reads these: `nan` matched nothing and `until=inf` every entry, purge included.
    client.hec('{"event": {"msg": "x"}, "sourcetype": "cisco_asa"}')
    before = client.dlq_records()

    listing = client.operator("GET", "/api/v1/dlq", params={key: value})
    purge = client.operator("DELETE", "/api/v1/dlq/purge", params={key: value})
    replay = client.operator("POST", "/api/v1/dlq/replay", json={"filter": {key: value}})

    for answer in (listing, purge, replay):
        assert answer.status_code == 400, answer.text
        assert key in answer.json()["error"] and "RFC 3339 or unix seconds" in answer.json()["error"]
    assert client.dlq_records() == before


def test_finite_unix_seconds_and_rfc_3339_still_bound_a_listing(client):
    client.hec('{"event": {"msg": "x"}, "sourcetype": "cisco_asa"}')

    def count(**params: str) -> int:
        return client.operator("GET", "/api/v1/dlq", params=params).json()["count"]

    assert count(until="1e3") == 0 and count(since="1970-01-01T00:00:00Z") == 1
