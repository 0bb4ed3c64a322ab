"""What never reaches the remote auth service, how often the rest may, and what a remote token
may write when the service names no index rules (auth.py's docstring)."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from telhawk_ingest.auth import REMOTE_TOKEN_CHARS, Authenticator, TokenBucket
from telhawk_ingest.config import AuthScope, HecSettings, load_settings
from telhawk_ingest.errors import ConfigError, HecError
from tests.unit.test_auth import (
    OPERATOR_SECRET,
    REMOTE_SECRET,
    SECRET,
    AuthService,
    Clock,
    remote_authenticator,
    request,
)


def refused(auth: Authenticator, headers: dict | None = None, query: dict | None = None) -> HecError:
    with pytest.raises(HecError) as caught:
        auth.authenticate(request(headers, query))
    return caught.value


def test_an_operator_token_is_never_sent_to_the_auth_service():
    service = AuthService()

    err = refused(remote_authenticator(service, Clock()), {"Authorization": f"Splunk {OPERATOR_SECRET}"})

    assert (err.status, err.code) == (403, 4)
    assert service.calls == []


@pytest.mark.parametrize("credential", [
    "a" * (REMOTE_TOKEN_CHARS.start - 1),
    "a" * (REMOTE_TOKEN_CHARS.stop),
    "token-with-a-\x01-control-character",
    "token-that-is-not-ascii-\u00e9\u00e9\u00e9",
])
def test_a_credential_that_cannot_be_a_token_is_invalid_without_a_call(credential):
    service = AuthService()
    auth = remote_authenticator(service, Clock())

    for err in (refused(auth, {"Authorization": f"Splunk {credential}"}),
                refused(auth, {"Authorization": _basic(credential)})):
        assert (err.status, err.code) == (403, 4)
    assert service.calls == []


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"x:{token}".encode()).decode()


def test_a_query_string_token_is_not_forwarded_unless_enabled():
    service = AuthService()

    err = refused(remote_authenticator(service, Clock()), query={"token": REMOTE_SECRET})

    assert (err.status, err.code) == (400, 16)
    assert service.calls == []


def test_an_enabled_query_string_token_is_forwarded_and_the_answer_still_decides():
    service = AuthService(httpx.Response(200, json={"valid": True, "allow_query_string": True}))
    auth = remote_authenticator(service, Clock(), auth_query_string=True)

    assert auth.authenticate(request(query={"token": REMOTE_SECRET})).name == "remote"
    assert [c["token"] for c in service.calls] == [REMOTE_SECRET]


def test_remote_calls_are_rate_limited_per_process_and_local_tokens_are_not():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, auth_calls_per_second=1, auth_burst=3)
    unknown = [f"unknown-token-{i:04d}-abcdef" for i in range(5)]

    codes = [refused(auth, {"Authorization": f"Splunk {t}"}).code for t in unknown[:4]]
    local = auth.authenticate(request({"Authorization": f"Splunk {SECRET}"}))
    clock.now += 1.0
    after_a_second = refused(auth, {"Authorization": f"Splunk {unknown[4]}"})

    assert codes == [4, 4, 4, 9]
    assert len(service.calls) == 4  # three in the burst, then one a second later
    assert local.name == "web"
    assert after_a_second.code == 4


def test_a_refusal_for_the_rate_asks_the_client_to_retry():
    auth = remote_authenticator(AuthService(), Clock(), auth_calls_per_second=1, auth_burst=1)
    refused(auth, {"Authorization": "Splunk unknown-token-0001-abcdef"})

    err = refused(auth, {"Authorization": "Splunk unknown-token-0002-abcdef"})

    assert (err.status, err.code) == (503, 9) and err.retry_after
    assert err.detail == "token validation rate reached (hec.auth_calls_per_second)"


def test_cached_answers_cost_no_rate():
    service = AuthService()
    auth = remote_authenticator(service, Clock(), auth_calls_per_second=1, auth_burst=1)
    for _ in range(5):
        auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert len(service.calls) == 1


def test_the_token_bucket_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 100
    assert [bucket.take() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(("answer", "default", "allowed"), [
    ({"valid": True}, "main", ["main"]),
    ({"valid": True, "default_index": "network"}, "network", ["main", "network"]),
    ({"valid": True, "allowed_indexes": ["a", "b"], "default_index": "a"}, "a", ["a", "b"]),
])
def test_a_remote_answer_without_index_rules_gets_the_default_scope(answer, default, allowed):
    auth = remote_authenticator(AuthService(httpx.Response(200, json=answer)), Clock())

    token = auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))

    assert (token.default_index, token.allowed_indexes) == (default, allowed)


def test_the_default_scope_is_configurable():
    scope = AuthScope(default_index="web", allowed_indexes=["web", "app"])
    auth = remote_authenticator(AuthService(httpx.Response(200, json={"valid": True})), Clock(),
                                auth_default_scope=scope)

    token = auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))

    assert (token.default_index, token.allowed_indexes) == ("web", ["web", "app"])


def test_a_default_scope_whose_default_is_outside_it_fails_at_start():
    with pytest.raises(ConfigError, match=r"hec\.auth_default_scope.*must be one of allowed_indexes"):
        load_settings(env={"INGEST_HEC_AUTH_DEFAULT_SCOPE": "{default_index: a, allowed_indexes: [b]}"})


@pytest.mark.parametrize("url", ["http://auth.internal", "ftp://auth.internal", "auth.internal"])
def test_an_auth_url_that_is_not_https_fails_at_start(url):
    with pytest.raises(ConfigError, match=r"hec\.auth_url .*expected an https:// URL"):
        load_settings(env={"INGEST_HEC_AUTH_URL": url})


def test_plain_http_is_allowed_for_local_testing_and_warned_at_start(caplog):
    env = {"INGEST_HEC_AUTH_URL": "http://127.0.0.1:9", "INGEST_HEC_AUTH_ALLOW_INSECURE_HTTP": "1"}
    settings = load_settings(env=env)

    with caplog.at_level(logging.WARNING, logger="telhawk_ingest.auth"):
        Authenticator(settings.hec)

    assert settings.hec.auth_url == "http://127.0.0.1:9"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING,
        "hec.auth_url is plain http (hec.auth_allow_insecure_http: true): HEC tokens cross the network "
        "unencrypted; use this for local testing only",
    )]


def test_an_https_auth_url_starts_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="telhawk_ingest.auth"):
        Authenticator(HecSettings(auth_url="https://auth.internal"))
    assert caplog.text == ""
