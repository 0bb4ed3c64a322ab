"""The remote auth service cannot be used as an amplifier, through the real ingest handler and a
real (slow) auth service on 127.0.0.1: bad tokens hold at most `hec.auth_max_in_flight` request
threads, the rest are answered 503 code 9 at once, and a configured token answers while the
remote calls are still held."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.auth_server import AuthServer
from tests.functional.conftest import HEC_TOKEN
from tests.functional.test_ingest import SSHD_EVENT, stored_docs

REMOTE = "remote-token-0000-1111-2222-3333"


def remote_settings(server: AuthServer, **hec: Any) -> dict[str, Any]:
    return {"tokens": [{"name": "local", "token": HEC_TOKEN}], "auth_url": server.url,
            "auth_allow_insecure_http": True, "auth_cache_seconds": 0, **hec}


def test_24_bad_tokens_against_a_slow_auth_service_never_delay_a_local_token(make_client):
    """Eight request threads, as a server has a few: 24 bad-token requests arrive first, then one
    with a configured token. Before, all eight threads sat in held auth calls and the local token
    waited for the auth service; now it answers while the calls are still held."""
    with AuthServer(expect=4) as server, ThreadPoolExecutor(max_workers=8) as threads:
        # Held calls stay held: no client timeout frees a thread before the test releases them.
        client = make_client(hec=remote_settings(server, auth_max_in_flight=4, auth_timeout_seconds=30,
                                                 auth_calls_per_second=1000, auth_burst=1000))
        tokens = [f"bad-token-{i:04d}-aaaaaaaaaaaa" for i in range(24)]
        bad = [threads.submit(client.hec, SSHD_EVENT, token=token) for token in tokens]
        local = threads.submit(client.hec, SSHD_EVENT)

        answer = local.result(timeout=10)  # raises TimeoutError when it waited for the held calls

        assert answer.status_code == 200 and answer.json()["code"] == 0
        assert server.arrived.is_set() and not server.release.is_set() and server.in_flight == 4
        busy = [f.result(timeout=10) for f in bad if f.done()]
        assert len(busy) == 20
        assert {(a.status_code, a.json()["code"]) for a in busy} == {(503, 9)}
        assert {a.json()["detail"] for a in busy} == {
            "too many token validations in flight (hec.auth_max_in_flight)"}
        assert all(a.headers.get("Retry-After") for a in busy)
        server.release.set()

    answers = [f.result() for f in bad]
    assert len(server.calls) == 4 and server.most_in_flight == 4
    assert sorted((a.status_code, a.json()["code"]) for a in answers) == [(403, 4)] * 4 + [(503, 9)] * 20
    assert len(stored_docs(client)) == 1


def test_a_remote_token_without_index_rules_writes_only_the_default_scope(make_client):
    with AuthServer(answers={REMOTE: {"valid": True, "token_name": "partner"}}) as server:
        server.release.set()
        client = make_client(hec=remote_settings(server))

        elsewhere = client.hec(json.dumps({"event": "x", "index": "secrets"}), token=REMOTE)
        default = client.hec(SSHD_EVENT, token=REMOTE)

    assert (elsewhere.status_code, elsewhere.json()["code"]) == (400, 7)
    assert default.status_code == 200
    assert [d["_index"] for d in stored_docs(client)] == ["main"]
