"""HEC authentication: which credentials a client may send and what it hears when they are wrong."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest

from telhawk_ingest.auth import MAX_CACHE_ENTRIES, NEGATIVE_CACHE_SECONDS, Authenticator
from telhawk_ingest.config import HecSettings, HecToken
from telhawk_ingest.errors import HecError
from telhawk_ingest.hec import HecRequest

SECRET = "6f1e2d3c-aaaa-bbbb-cccc-000000000001"
QUERY_SECRET = "6f1e2d3c-aaaa-bbbb-cccc-000000000002"
REMOTE_SECRET = "remote-0000-1111-2222-333333333333"
OPERATOR_SECRET = "operator-secret-0000-1111-2222"
AUTH_URL = "https://auth.internal:8080"
OTHER_SECRET = "another-remote-token-0000-1111"
OTHER = {"Authorization": f"Splunk {OTHER_SECRET}"}

SETTINGS = HecSettings(
    tokens=[
        HecToken(name="web", token=SECRET, default_index="main"),
        HecToken(name="curl", token=QUERY_SECRET, allow_query_string=True),
    ]
)


def request(headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> HecRequest:
    return HecRequest(
        method="POST", path="/services/collector/event", headers=headers or {}, query=query or {}, body=b""
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AuthService:
    """A fake auth service behind httpx.MockTransport that records every call it gets."""

    def __init__(self, answer: httpx.Response | Exception | None = None) -> None:
        self.answer = answer
        self.calls: list[dict] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        assert req.method == "POST"
        assert str(req.url) == AUTH_URL + "/api/v1/auth/validate-hec"
        body = json.loads(req.content)
        self.calls.append(body)
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer is not None:
            return self.answer
        if body["token"] == REMOTE_SECRET:
            return httpx.Response(
                200,
                json={
                    "valid": True,
                    "token_id": "t-1",
                    "token_name": "from-auth",
                    "user_id": "u-1",
                    "default_index": "remote-idx",
                    "allowed_indexes": ["remote-idx"],
                },
            )
        return httpx.Response(200, json={"valid": False})


def remote_authenticator(service: AuthService, clock: Clock, cache_seconds: float = 30.0,
                         **hec: Any) -> Authenticator:
    settings = HecSettings(tokens=SETTINGS.tokens, auth_url=AUTH_URL + "/", auth_cache_seconds=cache_seconds,
                           **hec)
    return Authenticator(settings, transport=httpx.MockTransport(service), clock=clock,
                         operator_tokens=[OPERATOR_SECRET])


@pytest.mark.parametrize(
    "authorization",
    [f"Splunk {SECRET}", f"splunk {SECRET}", f"SPLUNK {SECRET}", f"Telhawk {SECRET}", f"telHAWK  {SECRET} "],
)
def test_splunk_and_telhawk_schemes_are_accepted_in_any_case(authorization):
    token = Authenticator(SETTINGS).authenticate(request({"Authorization": authorization}))
    assert token.name == "web"


@pytest.mark.parametrize("user", ["x", "", "splunk", "any user name"])
def test_basic_auth_takes_the_token_as_password_with_any_user_name(user):
    token = Authenticator(SETTINGS).authenticate(request({"authorization": basic(user, SECRET)}))
    assert token.name == "web"


def test_the_header_name_is_case_insensitive():
    assert Authenticator(SETTINGS).authenticate(request({"AUTHORIZATION": f"Splunk {SECRET}"})).name == "web"


def test_a_query_string_token_works_only_where_the_token_allows_it():
    auth = Authenticator(SETTINGS)
    assert auth.authenticate(request(query={"token": QUERY_SECRET})).name == "curl"


def test_the_authorization_header_wins_over_a_query_token():
    auth = Authenticator(SETTINGS)
    token = auth.authenticate(request({"Authorization": f"Splunk {QUERY_SECRET}"}, {"token": SECRET}))
    assert token.name == "curl"


BAD_CREDENTIALS = [
    # (case, headers, query, code, HTTP status)
    ("no credential at all", {}, {}, 2, 401),
    ("blank authorization header", {"Authorization": "   "}, {}, 2, 401),
    ("unknown scheme", {"Authorization": f"Bearer {SECRET}"}, {}, 3, 401),
    ("token without a scheme", {"Authorization": SECRET}, {}, 3, 401),
    ("scheme without a token", {"Authorization": "Splunk"}, {}, 3, 401),
    ("token with spaces", {"Authorization": f"Splunk {SECRET} extra"}, {}, 3, 401),
    ("basic that is not base64", {"Authorization": "Basic !!!not-base64!!!"}, {}, 3, 401),
    (
        "basic without a colon",
        {"Authorization": "Basic " + base64.b64encode(SECRET.encode()).decode()},
        {},
        3,
        401,
    ),
    ("unknown token", {"Authorization": "Splunk 00000000-0000-0000-0000-000000000000"}, {}, 4, 403),
    ("basic with a wrong token", {"Authorization": basic("x", "wrong-token")}, {}, 4, 403),
    ("query token not allowed", {}, {"token": SECRET}, 16, 400),
    ("unknown query token", {}, {"token": "nobody-knows-me"}, 4, 403),
]


@pytest.mark.parametrize(
    ("headers", "query", "code", "status"),
    [case[1:] for case in BAD_CREDENTIALS],
    ids=[case[0] for case in BAD_CREDENTIALS],
)
def test_a_bad_credential_is_refused_with_splunks_code_and_status(headers, query, code, status):
    with pytest.raises(HecError) as caught:
        Authenticator(SETTINGS).authenticate(request(headers, query))
    assert (caught.value.code, caught.value.status) == (code, status)


def test_a_refusal_never_echoes_the_token():
    with pytest.raises(HecError) as caught:
        Authenticator(SETTINGS).authenticate(request({"Authorization": "Bearer secret-value-123"}))
    assert "secret-value-123" not in json.dumps(caught.value.body())


def test_configured_tokens_never_reach_the_remote_service():
    service = AuthService()
    auth = remote_authenticator(service, Clock())
    assert auth.authenticate(request({"Authorization": f"Splunk {SECRET}"})).name == "web"
    assert service.calls == []


def test_a_remote_token_carries_the_services_name_and_index_rules_but_not_the_secret():
    auth = remote_authenticator(AuthService(), Clock())
    token = auth.authenticate(request({"Authorization": f"Telhawk {REMOTE_SECRET}"}))
    assert token.name == "from-auth"
    assert token.default_index == "remote-idx" and token.allowed_indexes == ["remote-idx"]
    assert token.allow_query_string is False
    assert token.ack is False
    assert REMOTE_SECRET not in token.token


def test_a_remote_token_takes_indexer_acknowledgement_from_the_answer():
    service = AuthService(httpx.Response(200, json={"valid": True, "token_name": "firehose", "ack": True}))
    token = remote_authenticator(service, Clock()).authenticate(request(OTHER))
    assert (token.name, token.ack) == ("firehose", True)


def test_a_remote_answer_without_a_name_is_named_remote():
    service = AuthService(httpx.Response(200, json={"valid": True}))
    token = remote_authenticator(service, Clock()).authenticate(request(OTHER))
    assert token.name == "remote"


def test_a_positive_remote_answer_is_cached_until_it_expires():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=30)
    headers = {"Authorization": f"Splunk {REMOTE_SECRET}"}
    auth.authenticate(request(headers))
    clock.now += 29
    auth.authenticate(request(headers))
    assert len(service.calls) == 1
    clock.now += 2
    auth.authenticate(request(headers))
    assert len(service.calls) == 2


def test_the_cache_is_keyed_by_a_digest_never_by_the_token():
    auth = remote_authenticator(AuthService(), Clock())
    auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert REMOTE_SECRET not in repr(auth._cache)


def test_an_invalid_remote_answer_is_invalid_token_and_cached_only_briefly():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=300)
    headers = {"Authorization": "Splunk not-a-real-token"}
    for _ in range(3):
        with pytest.raises(HecError) as caught:
            auth.authenticate(request(headers))
        assert (caught.value.code, caught.value.status) == (4, 403)
    assert len(service.calls) == 1
    clock.now += NEGATIVE_CACHE_SECONDS + 0.1
    with pytest.raises(HecError):
        auth.authenticate(request(headers))
    assert len(service.calls) == 2


def test_a_zero_cache_time_asks_the_service_every_time():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=0)
    for _ in range(2):
        auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert len(service.calls) == 2


FAILING_SERVICE = [
    ("server error", httpx.Response(500, text="boom")),
    ("bad gateway", httpx.Response(502)),
    ("auth service refuses us", httpx.Response(401, json={"valid": False})),
    ("not JSON", httpx.Response(200, text="<html>ok</html>")),
    ("JSON without valid", httpx.Response(200, json={"ok": True})),
    ("valid that is not a boolean", httpx.Response(200, json={"valid": "yes"})),
    ("malformed allowed_indexes", httpx.Response(200, json={"valid": True, "allowed_indexes": "main"})),
    ("malformed ack", httpx.Response(200, json={"valid": True, "ack": [True]})),
    ("connection refused", httpx.ConnectError("refused")),
    ("timeout", httpx.ReadTimeout("slow")),
]


@pytest.mark.parametrize("answer", [c[1] for c in FAILING_SERVICE], ids=[c[0] for c in FAILING_SERVICE])
def test_a_failing_auth_service_makes_the_client_retry_and_is_not_cached(answer):
    service, clock = AuthService(answer), Clock()
    auth = remote_authenticator(service, clock)
    headers = {"Authorization": f"Splunk {REMOTE_SECRET}"}
    with pytest.raises(HecError) as caught:
        auth.authenticate(request(headers))
    assert (caught.value.code, caught.value.status) == (9, 503)
    assert caught.value.retry_after is not None
    service.answer = None
    assert auth.authenticate(request(headers)).name == "from-auth"
    assert len(service.calls) == 2


def test_a_query_token_validated_remotely_still_needs_query_string_permission():
    auth = remote_authenticator(AuthService(), Clock())
    with pytest.raises(HecError) as caught:
        auth.authenticate(request(query={"token": REMOTE_SECRET}))
    assert caught.value.code == 16


def test_without_an_auth_service_an_unknown_token_is_invalid():
    with pytest.raises(HecError) as caught:
        Authenticator(SETTINGS).authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert caught.value.code == 4


def test_concurrent_requests_share_one_client_and_one_cache():
    service = AuthService()
    auth = remote_authenticator(service, Clock(), auth_max_in_flight=16)
    results: list[str] = []

    def call() -> None:
        results.append(auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"})).name)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["from-auth"] * 16
    assert 1 <= len(service.calls) <= 16
    auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    calls = len(service.calls)
    auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert len(service.calls) == calls
    auth.close()


REFUSAL_DETAILS = [
    # (case, Authorization header, detail the client reads)
    ("unknown scheme", f"Bearer {SECRET}", "expected the Splunk, Telhawk or Basic scheme"),
    ("basic that is not base64", "Basic !!!", "Basic credential is not base64 of user:token"),
    ("basic with characters outside base64", basic("x", SECRET) + "!",
     "Basic credential is not base64 of user:token"),
    ("basic that is not UTF-8", "Basic " + base64.b64encode(b"x:\xff\xfe").decode(),
     "Basic credential is not base64 of user:token"),
    ("basic without a colon", "Basic " + base64.b64encode(SECRET.encode()).decode(),
     "Basic credential is not base64 of user:token"),
    ("empty token", "Splunk   ", "the credential is empty or contains spaces"),
    ("token with a space", basic("x", "two words"), "the credential is empty or contains spaces"),
]


@pytest.mark.parametrize(("authorization", "detail"), [c[1:] for c in REFUSAL_DETAILS],
                         ids=[c[0] for c in REFUSAL_DETAILS])
def test_a_malformed_credential_is_code_3_with_a_detail_saying_what_is_wrong(authorization, detail):
    with pytest.raises(HecError) as caught:
        Authenticator(SETTINGS).authenticate(request({"Authorization": authorization}))
    assert caught.value.body() == {"text": "Invalid authorization", "code": 3, "detail": detail}


def test_a_basic_password_may_itself_contain_colons():
    settings = HecSettings(tokens=[HecToken(name="colons", token="abc:def:ghi")])
    token = Authenticator(settings).authenticate(request({"Authorization": basic("user", "abc:def:ghi")}))
    assert token.name == "colons"


def test_a_token_with_a_lone_surrogate_is_an_unknown_token_not_a_crash():
    with pytest.raises(HecError) as caught:
        Authenticator(SETTINGS).authenticate(request(query={"token": "abc\udcff"}))
    assert caught.value.code == 4


FAILURE_DETAILS = [
    ("refused connection", httpx.ConnectError("refused"), "auth service unreachable (ConnectError)"),
    ("timeout", httpx.ReadTimeout("slow"), "auth service unreachable (ReadTimeout)"),
    ("server error", httpx.Response(500, text="boom"), "auth service answered HTTP 500"),
    ("not JSON", httpx.Response(200, text="ok"), 'auth service answer is not {"valid": bool, ...}'),
    ("bad metadata", httpx.Response(200, json={"valid": True, "allowed_indexes": "main"}),
     "auth service answer has malformed token metadata"),
]


@pytest.mark.parametrize(("answer", "detail"), [c[1:] for c in FAILURE_DETAILS],
                         ids=[c[0] for c in FAILURE_DETAILS])
def test_a_failing_auth_service_is_named_in_the_detail(answer, detail):
    auth = remote_authenticator(AuthService(answer), Clock())
    with pytest.raises(HecError) as caught:
        auth.authenticate(request(OTHER))
    assert caught.value.body() == {"text": "Server is busy", "code": 9, "detail": detail}


def test_a_remote_answer_carries_every_token_setting():
    service = AuthService(httpx.Response(200, json={
        "valid": True, "name": "legacy-name", "default_index": "web", "default_sourcetype": "access_combined",
        "default_source": "nginx", "allowed_indexes": ["web"], "allow_query_string": True,
    }))
    auth = remote_authenticator(service, Clock(), auth_query_string=True)

    token = auth.authenticate(request(query={"token": OTHER_SECRET}))

    assert (token.name, token.default_index, token.default_sourcetype, token.default_source) == (
        "legacy-name", "web", "access_combined", "nginx")
    assert token.allowed_indexes == ["web"] and token.allow_query_string is True


def test_the_auth_url_keeps_its_path_prefix():
    seen: list[str] = []

    def service(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(200, json={"valid": True})

    settings = HecSettings(auth_url="https://gateway.internal/hec-X/")
    Authenticator(settings, transport=httpx.MockTransport(service)).authenticate(request(OTHER))

    assert seen == ["https://gateway.internal/hec-X/api/v1/auth/validate-hec"]


def test_the_auth_service_is_given_the_configured_timeout():
    timeouts: list[dict] = []

    def service(req: httpx.Request) -> httpx.Response:
        timeouts.append(req.extensions["timeout"])
        return httpx.Response(200, json={"valid": True})

    settings = HecSettings(auth_url=AUTH_URL, auth_timeout_seconds=0.75)
    Authenticator(settings, transport=httpx.MockTransport(service)).authenticate(request(OTHER))

    assert timeouts == [{"connect": 0.75, "read": 0.75, "write": 0.75, "pool": 0.75}]


def test_a_cached_answer_expires_exactly_at_its_cache_time():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=30)
    headers = {"Authorization": f"Splunk {REMOTE_SECRET}"}
    auth.authenticate(request(headers))
    clock.now += 30
    auth.authenticate(request(headers))
    assert len(service.calls) == 2


def test_a_cache_time_under_a_second_still_caches():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=0.5)
    for _ in range(3):
        auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))
    assert len(service.calls) == 1


# Appended to the short names the cache tests use, so each is a token long enough to be forwarded.
TOKEN_TAIL = "-0000-1111-2222-3333"


class CountingService:
    """Accepts every token but those starting with "bad"; records the validations, each by its
    short name (the token without TOKEN_TAIL)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        token = json.loads(req.content)["token"]
        self.calls.append(token.removesuffix(TOKEN_TAIL))
        return httpx.Response(200, json={"valid": not token.startswith("bad")})


def full_cache(monkeypatch, entries: int = 3) -> tuple[Authenticator, CountingService, Clock]:
    monkeypatch.setattr("telhawk_ingest.auth.MAX_CACHE_ENTRIES", entries)
    service, clock = CountingService(), Clock()
    settings = HecSettings(auth_url=AUTH_URL, auth_cache_seconds=30)
    return Authenticator(settings, transport=httpx.MockTransport(service), clock=clock), service, clock


def use(auth: Authenticator, name: str) -> None:
    try:
        auth.authenticate(request({"Authorization": f"Splunk {name}{TOKEN_TAIL}"}))
    except HecError:
        pass


def test_a_full_cache_forgets_the_oldest_answer(monkeypatch):
    auth, service, _ = full_cache(monkeypatch)
    for token in ("t1", "t2", "t3", "t4"):
        use(auth, token)

    for token in ("t2", "t3", "t4", "t1"):
        use(auth, token)

    assert service.calls == ["t1", "t2", "t3", "t4", "t1"]


def test_a_full_cache_forgets_expired_answers_before_live_ones(monkeypatch):
    auth, service, clock = full_cache(monkeypatch)
    use(auth, "t1")
    use(auth, "bad-2")  # a refusal is cached for NEGATIVE_CACHE_SECONDS only
    use(auth, "t3")
    clock.now += NEGATIVE_CACHE_SECONDS  # the refusal expires now

    use(auth, "t4")
    use(auth, "t1")
    use(auth, "t3")

    assert service.calls == ["t1", "bad-2", "t3", "t4"]


def test_a_refreshed_answer_counts_as_the_newest_in_a_full_cache(monkeypatch):
    auth, service, clock = full_cache(monkeypatch)
    use(auth, "t1")
    clock.now += 20
    use(auth, "t2")
    clock.now += 11  # t1 expired: asked again, and now newer than t2
    use(auth, "t1")
    use(auth, "t3")

    use(auth, "t4")  # full: t2 is the oldest
    use(auth, "t1")
    use(auth, "t3")

    assert service.calls == ["t1", "t2", "t1", "t3", "t4"]


def test_close_closes_the_connection_to_the_auth_service_once():
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    settings = HecSettings(auth_url=AUTH_URL)
    auth = Authenticator(settings, transport=Transport(AuthService()))
    auth.close()  # before any use: nothing to close
    auth.authenticate(request({"Authorization": f"Splunk {REMOTE_SECRET}"}))

    auth.close()
    auth.close()

    assert closed == [True]


def test_a_refusal_is_remembered_for_5_seconds_and_the_cache_holds_10000_answers():
    service, clock = AuthService(), Clock()
    auth = remote_authenticator(service, clock, cache_seconds=300)
    headers = {"Authorization": "Splunk not-a-real-token"}
    for step in (0.0, 4.9, 0.1):
        clock.now += step
        with pytest.raises(HecError):
            auth.authenticate(request(headers))
    assert len(service.calls) == 2  # asked at 0 s and again at 5 s
    assert NEGATIVE_CACHE_SECONDS == 5.0
    assert MAX_CACHE_ENTRIES == 10_000  # about 2 MB of digests and tokens
