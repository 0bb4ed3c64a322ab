"""GET /metrics through the real handler: the counters agree with healthz (every instance on the
volume, across restarts), the exposition parses, latencies are counted, triggers are labelled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import pytest
from freezegun import freeze_time
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from telhawk_ingest import metrics, stats
from telhawk_ingest.audit import AuditLog
from telhawk_ingest.envelope import rfc3339
from telhawk_ingest.hec import parse_events
from telhawk_ingest.service import Service
from tests.functional.conftest import HEC_TOKEN, settings_for
from tests.storage_server import StorageServer

SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SSHD_EVENT = json.dumps({"event": SSHD, "sourcetype": "linux_secure", "host": "web01"})
CISCO = json.dumps({"event": {"msg": "%ASA-6-302013: Built outbound TCP connection"},
                    "sourcetype": "cisco_asa"})
INVALID_OCSF = json.dumps({"event": {"class_uid": 3002, "activity_id": "not-a-number"}, "sourcetype": "ocsf"})
READ_TOKEN = "read-only-operator-token-0001"
# Per instance, or changing by themselves: left out when instances or restarts are compared.
NOT_VOLUME_WIDE = ("telhawk_http_request_duration_seconds", "telhawk_dlq_oldest_entry_age_seconds",
                   "telhawk_dlq_free_bytes")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def exposed(svc: Service) -> Samples:
    """The samples of `svc`'s exposition, without HTTP."""
    return parse(metrics.exposition(svc)[0].decode())


def scrape(client, **headers: str) -> Samples:
    answer = client.app.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there are none)."""
    return sum(v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have)


def envelopes_for(svc: Service, *events: str) -> list:
    """Envelopes as HEC's parser makes them from a body of concatenated events."""
    return parse_events("".join(events).encode(), svc.settings.hec.tokens[0], rfc3339(), 100)


def volume_wide(samples: Samples) -> Samples:
    return {key: v for key, v in samples.items() if not key[0].startswith(NOT_VOLUME_WIDE)}


def assert_agrees_with_healthz(samples: Samples, health: Mapping) -> None:
    assert value(samples, "telhawk_events_received_total") == health["processed"]
    assert value(samples, "telhawk_events_stored_total") == health["stored"]
    assert value(samples, "telhawk_dlq_written_total") == health["dlq_written"] == health["failed"]
    for reason, count in health["dlq_stats"]["by_reason"].items():
        assert value(samples, "telhawk_dlq_written_total", reason=reason) == count, reason
    assert value(samples, "telhawk_storage_retries_total") == health["storage"]["retries"]
    assert value(samples, "telhawk_requests_rejected_total") == health["requests_rejected"]
    assert value(samples, "telhawk_dlq_pending_files") == health["dlq_stats"]["pending_files"]
    assert value(samples, "telhawk_dlq_pending_bytes") == health["dlq_stats"]["pending_bytes"]
    assert value(samples, "telhawk_dlq_accepting") == int(health["dlq_stats"]["accepting"])
    assert value(samples, "telhawk_storage_healthy") == int(health["storage"]["healthy"])


def test_counters_equal_healthz_after_a_scripted_run_and_after_a_restart(make_client):
    # Bulk answers in order: the first request's three events stored; the next event stored at the
    # second try; the one after refused four times (three retries), then dead-lettered.
    with StorageServer("ok", 503, "ok", 503, 503, 503, 503) as storage:
        opensearch = {"core": {"url": storage.url, "retry_delay_ms": 0}, "storage": {"backend": "opensearch"}}
        client = make_client(**opensearch)
        assert client.hec(SSHD_EVENT * 3).json() == {"text": "Success", "code": 0}
        assert client.hec(SSHD_EVENT).json() == {"text": "Success", "code": 0}
        assert client.hec(SSHD_EVENT).json()["dead_lettered"] == 1
        assert client.hec(CISCO).json()["dead_lettered"] == 1
        assert client.hec(INVALID_OCSF).json()["dead_lettered"] == 1
        assert client.hec(SSHD_EVENT, token="0" * 36).status_code in (401, 403)
        purged = client.operator("DELETE", "/api/v1/dlq/purge?reason=normalization_failed").json()
        assert purged["purged"] == 1

        samples = scrape(client)
        health = client.app.get("/healthz").json()

        assert_agrees_with_healthz(samples, health)
        assert value(samples, "telhawk_events_received_total", trigger="http") == 7
        assert value(samples, "telhawk_events_stored_total", trigger="http") == 4
        assert value(samples, "telhawk_events_stored_first_try_total", trigger="http") == 3
        assert value(samples, "telhawk_storage_retries_total") == 4
        for reason in ("normalization_failed", "validation_failed", "storage_failed"):
            assert value(samples, "telhawk_dlq_written_total", reason=reason, trigger="http") == 1
        assert value(samples, "telhawk_requests_rejected_total") == 1
        assert value(samples, "telhawk_dlq_purged_total") == 1
        assert value(samples, "telhawk_dlq_pending_files") == 2
        assert value(samples, "telhawk_dlq_replayed_total", outcome="stored") == 0
        for trigger in ("pubsub", "sqs", "kinesis", "schedule"):
            assert value(samples, "telhawk_events_received_total", trigger=trigger) == 0

        # A second instance on the same volume, running at the same time, reports the same values.
        other = Service(client.service.settings)
        try:
            assert volume_wide(exposed(other)) == volume_wide(samples)
        finally:
            other.backend.close()
            other.counters.retire()

        # A restart: the process's counters are handed over, a new Service starts on the volume.
        client.service.counters.retire()
        restarted = make_client(**opensearch)
        after = scrape(restarted)

        assert volume_wide(after) == volume_wide(samples)
        assert_agrees_with_healthz(after, restarted.app.get("/healthz").json())


def test_the_latency_histogram_counts_each_request_by_route_and_status_class(client):
    before = scrape(client)
    for _ in range(3):
        client.hec(SSHD_EVENT)
    client.hec(SSHD_EVENT, token=None)
    client.operator("GET", "/api/v1/dlq")

    after = scrape(client)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "telhawk_http_request_duration_seconds_count"
    event = {"function": "ingest_event", "route": "POST /services/collector/event"}
    assert added(count, **event, status_class="2xx") == 3
    assert added(count, **event, status_class="4xx") == 1
    assert added(count, function="list_dlq", route="GET /api/v1/dlq", status_class="2xx") == 1
    assert added(count, function="metrics", route="GET /metrics", status_class="2xx") == 1  # the first scrape
    assert added("telhawk_http_request_duration_seconds_bucket", **event, le="+Inf") == 4
    assert added("telhawk_http_request_duration_seconds_sum", **event) > 0
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in after.items()
                     if name == "telhawk_http_request_duration_seconds_bucket"
                     and set(event.items()) | {("status_class", "2xx")} <= labels)
    assert [le for le, _ in buckets] == [*metrics.LATENCY_BUCKETS, float("inf")]
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative


def test_metrics_take_no_credential_by_default_and_any_operator_role_when_required(make_client):
    open_client = make_client()
    assert open_client.app.get("/metrics").status_code == 200

    client = make_client(operator={"metrics_require_auth": True,
                                   "tokens": [{"name": "viewer", "token": READ_TOKEN, "role": "read"}]})

    without = client.app.get("/metrics")
    assert without.status_code == 401 and "Bearer" in without.json()["error"]
    assert client.operator("GET", "/metrics", token=HEC_TOKEN).status_code == 403
    assert client.operator("GET", "/metrics", token="x" * 32).status_code == 401
    answer = client.operator("GET", "/metrics", token=READ_TOKEN)
    assert answer.status_code == 200
    assert value(parse(answer.text), "telhawk_events_received_total") == 0
    denied = list(AuditLog(client.service.settings.state_path / "audit").entries())
    assert [(e["action"], e["params"]["status"]) for e in denied] == [("denied", 401), ("denied", 403),
                                                                     ("denied", 401)]
    assert HEC_TOKEN not in str(denied) and READ_TOKEN not in str(denied)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/metrics?format=json", 400),
    ("POST", "/metrics", 405),
])
def test_a_metrics_request_that_is_not_understood_gets_an_operator_error(client, method, path, status):
    answer = client.app.request(method, path)

    assert answer.status_code == status
    assert answer.json()["status"] == status


def test_openmetrics_is_served_when_asked_for(client):
    client.hec(CISCO)

    answer = client.app.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(answer.text)}
    [sample] = [s for s in families["telhawk_dlq_written"].samples
                if s.labels == {"reason": "normalization_failed", "trigger": "http"}]
    assert sample.value == 1


def test_events_ingested_under_a_trigger_carry_its_label_and_still_add_up_to_healthz(client):
    client.hec(SSHD_EVENT)
    with stats.trigger("sqs"):
        client.service.ingest(envelopes_for(client.service, SSHD_EVENT, CISCO))

    async def from_a_worker_thread() -> None:  # the trigger follows the call into to_thread
        batch = envelopes_for(client.service, INVALID_OCSF, SSHD_EVENT)
        with stats.trigger("kinesis"):
            await asyncio.to_thread(client.service.ingest, batch)

    asyncio.run(from_a_worker_thread())

    samples = scrape(client)
    assert value(samples, "telhawk_events_received_total", trigger="http") == 1
    assert value(samples, "telhawk_events_received_total", trigger="sqs") == 2
    assert value(samples, "telhawk_events_stored_total", trigger="sqs") == 1
    assert value(samples, "telhawk_events_stored_first_try_total", trigger="sqs") == 1
    assert value(samples, "telhawk_dlq_written_total", trigger="sqs", reason="normalization_failed") == 1
    assert value(samples, "telhawk_events_received_total", trigger="kinesis") == 2
    assert value(samples, "telhawk_dlq_written_total", trigger="kinesis", reason="validation_failed") == 1
    assert value(samples, "telhawk_events_received_total", trigger="pubsub") == 0
    assert_agrees_with_healthz(samples, client.app.get("/healthz").json())


def test_a_trigger_must_be_known_and_ends_with_its_block():
    with pytest.raises(ValueError, match=r"'kafka'; expected one of http, pubsub, sqs, kinesis, schedule"), \
            stats.trigger("kafka"):
        pass
    with stats.trigger("pubsub"):
        assert stats.current_trigger() == "pubsub"
        with stats.trigger("http"):
            assert stats.current_trigger() == "http"
        assert stats.current_trigger() == "pubsub"
    assert stats.current_trigger() == "http"


def test_the_oldest_entry_age_counts_from_its_first_failure(tmp_path):
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        svc = Service(settings_for(tmp_path))
        try:
            assert value(exposed(svc), "telhawk_dlq_oldest_entry_age_seconds") == 0
            svc.ingest(envelopes_for(svc, CISCO))
            frozen.tick(120)
            svc.ingest(envelopes_for(svc, CISCO))
            frozen.tick(180)

            samples = exposed(svc)
        finally:
            svc.backend.close()
            svc.counters.retire()

    assert value(samples, "telhawk_dlq_oldest_entry_age_seconds") == 300
    assert value(samples, "telhawk_dlq_pending_files") == 2


@pytest.mark.parametrize(("breaker", "state"), [("open", "open"), ({"state": "half-open"}, "half_open"),
                                                ({"state": "closed", "failures": 0}, "closed")])
def test_the_breaker_state_in_healthz_is_one_hot(client, monkeypatch, breaker, state):
    healthz = client.service.healthz

    def with_breaker() -> dict:
        health = healthz()
        return {**health, "storage": {**health["storage"], "breaker": breaker}}

    monkeypatch.setattr(client.service, "healthz", with_breaker)

    samples = scrape(client)

    for name in metrics.BREAKER_STATES:
        assert value(samples, "telhawk_storage_breaker_state", state=name) == int(name == state)


def test_the_real_breaker_reports_closed_and_a_disabled_one_says_so(make_client):
    closed = scrape(make_client())
    disabled = scrape(make_client(storage={"breaker": {"enabled": False}}))

    assert [value(closed, "telhawk_storage_breaker_state", state=name) for name in metrics.BREAKER_STATES] \
        == [1, 0, 0]
    assert value(disabled, "telhawk_storage_breaker_state", state="disabled") == 1
    assert all(value(disabled, "telhawk_storage_breaker_state", state=name) == 0
               for name in metrics.BREAKER_STATES)


def test_counters_map_by_name_so_a_missing_one_is_left_out_and_a_new_one_shows(client, monkeypatch):
    totals = client.service.counters.totals

    def changed() -> dict[str, int]:
        found = {**totals(), "dlq_dropped": 5, "requests_shed": 2}
        del found["dlq_purged"]
        return found

    monkeypatch.setattr(client.service.counters, "totals", changed)

    samples = scrape(client)

    assert value(samples, "telhawk_dlq_dropped_total") == 5
    assert value(samples, "telhawk_requests_shed_total") == 2
    assert not any(name.startswith("telhawk_dlq_purged") for name, _ in samples)
