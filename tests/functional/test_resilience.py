"""A failing backend costs little, through the real handler: the storage circuit breaker, the
request deadline against a slow node on 127.0.0.1, and load shedding (README, "A failing backend")."""

from __future__ import annotations

import json
import re
import time

from freezegun import freeze_time

from telhawk_ingest.storage.base import retry
from telhawk_ingest.storage.local import LocalBackend
from tests.fakes import ScriptedBackend, every
from tests.functional.conftest import HEC_TOKEN
from tests.functional.test_ingest import SSHD_EVENT
from tests.storage_server import StorageServer

REFUSED = retry("transport error: [Errno 111] Connection refused", error_type="ConnectError")
BREAKER = {"breaker": {"failures": 5, "cooldown_seconds": 30}}
OTHER_TOKEN = "99999999-2222-4333-8444-555555555555"


def sshd(port: int) -> str:
    event = json.loads(SSHD_EVENT)
    event["event"] = event["event"].replace("52144", str(port))
    return json.dumps(event)


def dlq_by_port(client) -> list[dict]:
    """The DLQ records in the order of the ports in their sshd lines (entry names of one second
    do not sort by arrival)."""
    def port(record: dict) -> int:
        return int(re.search(r" port (\d+)", record["envelope"]["payload"]).group(1))

    return sorted(client.dlq_records(), key=port)


def health(client) -> dict:
    return client.hec("", path="/healthz", method="GET", token=None).json()


def test_breaker_opens_after_five_failed_tries_then_events_go_straight_to_the_dlq(make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 5)
    client = make_client(backend, storage=BREAKER)

    first = client.hec(sshd(1))  # tries 1-4 fail: the seed's schedule
    second = client.hec(sshd(2))  # try 5 fails: the breaker opens, no backoff after it
    calls = len(backend.calls)
    third = client.hec(sshd(3))  # not tried at all

    assert [a.json()["dead_lettered"] for a in (first, second, third)] == [1, 1, 1]
    assert [a.status_code for a in (first, second, third)] == [200] * 3
    assert calls == 5 and len(backend.calls) == 5  # the third request never reached storage
    assert waits == [0.1, 0.2, 0.4]  # the first request's backoff only
    records = dlq_by_port(client)
    assert [r["reason"] for r in records] == ["storage_failed"] * 3
    assert [r["attempts"] for r in records] == [4, 1, 1]
    assert records[0]["error"] == REFUSED.error
    for record in records[1:]:
        assert record["error"].startswith("storage circuit breaker open since 2026-01-02T03:04:05")
        assert record["error"].endswith("(5 consecutive failed tries); last error: " + REFUSED.error)
        assert record["details"] == {"breaker": "open"}
    breaker = health(client)["storage"]["breaker"]
    assert (breaker["state"], breaker["consecutive_failures"]) == ("open", 5)
    assert breaker["since"].startswith("2026-01-02T03:04:05")


def test_after_the_cooldown_one_probe_is_stored_and_closes_the_breaker(make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 5)
    # Self-healing (on by default) would replay the dead-lettered entries once the breaker closes;
    # here only the breaker is looked at (self-healing: test_healing.py).
    client = make_client(backend, storage=BREAKER, replay={"heal_on_recovery": False})
    closed: list[str] = []
    client.service.breaker.on_close(lambda: closed.append("replay storage_failed entries"))
    client.hec(sshd(1))
    client.hec(sshd(2))

    # It opened at 03:04:05.7, after the first request's 0.7 s of backoff.
    with freeze_time("2026-01-02T03:04:35.6Z"):  # still cooling down
        assert client.hec(sshd(3)).json()["dead_lettered"] == 1
    with freeze_time("2026-01-02T03:04:35.7Z"):
        probe = client.hec(sshd(4))
        after = client.hec(sshd(5))
        state = health(client)["storage"]["breaker"]

    assert probe.json() == {"text": "Success", "code": 0} and after.json() == {"text": "Success", "code": 0}
    assert len(backend.calls) == 7 and len(backend.stored) == 2  # the probe, then the next request
    assert (state["state"], state["consecutive_failures"]) == ("closed", 0)
    assert closed == ["replay storage_failed entries"]
    assert len(client.dlq_records()) == 3


def test_a_failed_probe_dead_letters_its_event_and_opens_the_breaker_for_another_cooldown(make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 6)
    client = make_client(backend, storage=BREAKER)
    client.hec(sshd(1))
    client.hec(sshd(2))

    with freeze_time("2026-01-02T03:04:36Z"):
        probe = client.hec(sshd(3))
        state = health(client)["storage"]["breaker"]
    with freeze_time("2026-01-02T03:05:05Z"):  # 29 s after the failed probe
        cooling = client.hec(sshd(4))

    assert probe.json()["dead_lettered"] == 1 and cooling.json()["dead_lettered"] == 1
    assert len(backend.calls) == 6  # the probe, and nothing after it
    assert state["state"] == "open" and state["since"].startswith("2026-01-02T03:04:36")
    assert [r["attempts"] for r in dlq_by_port(client)] == [4, 1, 1, 1]


def test_with_the_breaker_disabled_every_request_waits_out_the_whole_backoff(make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 12)
    client = make_client(backend, storage={"breaker": {"enabled": False}})

    for port in range(3):
        client.hec(sshd(port))

    assert len(backend.calls) == 12 and waits == [0.1, 0.2, 0.4] * 3
    assert health(client)["storage"]["breaker"] == {"state": "disabled"}


def test_a_slow_node_no_longer_holds_a_request_past_the_deadline(make_client):
    # Scaled down from a node answering after 12 s with a 10 s timeout (40.8 s per request before):
    # answers after 1.2 s, the client's timeout is 0.5 s, the deadline 0.8 s, no backoff waits.
    with StorageServer(default=503, answer_after=1.2) as node:
        client = make_client(None, core={"url": node.url, "timeout_seconds": 0.5, "retry_delay_ms": 0,
                                         "request_deadline_seconds": 0.8},
                             storage={"backend": "opensearch"})
        start = time.monotonic()
        answer = client.hec(SSHD_EVENT)
        took = time.monotonic() - start

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    assert took < 1.6  # 4 tries of 0.5 s, 2 s, without the deadline
    [record] = client.dlq_records()
    assert record["reason"] == "storage_failed" and record["attempts"] == 2
    assert record["error"].startswith("storage deadline of 0.8 s for the request "
                                      "(core.request_deadline_seconds) spent after 2 tries; last error: "
                                      "transport error: ReadTimeout")
    assert record["details"] == {"deadline_seconds": 0.8}


def test_past_max_in_flight_an_ingest_request_gets_503_code_9_at_once_and_nothing_of_it_is_kept(make_client):
    client = make_client(hec={"max_in_flight": 2})
    svc = client.service
    assert svc.in_flight.enter() and svc.in_flight.enter()  # two requests in flight

    try:
        shed = client.hec(sshd(1))
        raw = client.hec("a raw line", path="/services/collector/raw")
        # Health and operator calls are not ingest work: never shed.
        health_answer = client.hec("", path="/services/collector/health", method="GET", token=None)
    finally:
        svc.in_flight.leave()
        svc.in_flight.leave()
    accepted = client.hec(sshd(2))

    for answer in (shed, raw):
        body = answer.json()
        assert (answer.status_code, body["code"], body["text"]) == (503, 9, "Server is busy")
        assert int(answer.headers["retry-after"]) > 0 and answer.headers["connection"] == "close"
    assert health_answer.json()["code"] == 17
    assert accepted.status_code == 200
    docs = list(LocalBackend(svc.settings.storage.data_dir).documents())
    assert [d["_source"]["src_endpoint"]["port"] for d in docs] == [2]
    assert client.dlq_records() == []
    shedding = health(client)["shedding"]
    assert shedding["requests_shed"] == 2 and shedding["shed_here"] == 2
    assert (shedding["in_flight"], shedding["max_in_flight"]) == (0, 2)
    assert health(client)["requests_rejected"] == 0  # shed requests are counted apart


def test_a_shed_request_gives_its_place_back_and_places_are_never_leaked(make_client):
    client = make_client(hec={"max_in_flight": 1})

    answers = [client.hec(sshd(port)).status_code for port in range(5)]
    answers.append(client.hec("{", path="/services/collector/event").status_code)  # refused: 400
    answers.append(client.hec(sshd(9), token="wrong-token-000000000000").status_code)  # refused: 403

    assert answers == [200] * 5 + [400, 403]
    assert client.service.in_flight.count == 0 and client.service.in_flight.peak == 1
    assert client.hec(sshd(10)).status_code == 200


def test_with_a_retry_budget_retries_stop_once_it_is_spent_and_healthz_says_so(make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 8)
    client = make_client(backend, storage={"breaker": {"enabled": False}},
                         core={"retry_budget": {"enabled": True, "ratio": 0.5, "min_per_second": 0,
                                                "window_seconds": 10}})

    for port in range(2):  # after one first try, no retry (0.5); after two, one retry
        client.hec(sshd(port))

    assert waits == [0.1] and len(backend.calls) == 3
    records = dlq_by_port(client)
    assert [r["attempts"] for r in records] == [1, 2]
    assert all(r["error"].startswith("retry budget spent (core.retry_budget: at most 50% of first tries")
               for r in records)
    budget = health(client)["storage"]["retry_budget"]
    assert (budget["first_tries"], budget["retries"], budget["refused"]) == (2, 1, 2)


def test_without_a_retry_budget_configured_healthz_says_none(client):
    assert health(client)["storage"]["retry_budget"] is None


def test_a_token_over_its_rate_limit_gets_503_code_9_and_nothing_of_the_request_is_kept(make_client, waits):
    limited = {"name": "test", "token": HEC_TOKEN, "rate_limit": {"events_per_second": 1, "burst": 2}}
    other = {"name": "other", "token": OTHER_TOKEN}
    client = make_client(hec={"tokens": [limited, other]})

    first = client.hec(sshd(1) + sshd(2))  # the burst
    refused = client.hec(sshd(3))
    unlimited = client.hec(sshd(4), token=OTHER_TOKEN)
    waits_for = int(refused.headers["retry-after"])
    with freeze_time("2026-01-02T03:04:06Z"):
        later = client.hec(sshd(5))

    assert first.status_code == 200 and unlimited.status_code == 200 and later.status_code == 200
    body = refused.json()
    assert (refused.status_code, body["code"], body["text"]) == (503, 9, "Server is busy")
    assert waits_for == 1
    docs = list(LocalBackend(client.service.settings.storage.data_dir).documents())
    assert sorted(d["_source"]["src_endpoint"]["port"] for d in docs) == [1, 2, 4, 5]
    assert client.dlq_records() == []
    shedding = health(client)["shedding"]
    assert (shedding["requests_rate_limited"], shedding["rate_limited_here"]) == (1, 1)


def test_with_the_breaker_open_and_no_dlq_the_answer_is_503_code_9_so_the_client_keeps_the_events(
        make_client, waits):
    backend = ScriptedBackend(*[every(REFUSED)] * 5)
    client = make_client(backend, storage=BREAKER, dlq={"enabled": False})
    client.hec(sshd(1))
    client.hec(sshd(2))  # the breaker opens

    answer = client.hec(sshd(3))

    assert len(backend.calls) == 5  # not tried
    body = answer.json()
    assert (answer.status_code, body["code"], body["text"]) == (503, 9, "Server is busy")
    assert int(answer.headers["retry-after"]) > 0
    assert backend.stored == []
