"""HEC token authentication (SPEC §3): which configured or remotely validated token a request carries.

Here: `Authenticator`, which reads the credential from the request (an `Authorization` header
with the `Telhawk` or `Splunk` scheme, HTTP Basic with the token as password, or `?token=`
where the token allows it), finds the token among the configured ones, and otherwise asks
the optional remote auth service (`POST {auth_url}/api/v1/auth/validate-hec`). Every refusal
is a `HecError` with Splunk's code: 2 no credential, 3 malformed header or unknown scheme,
4 unknown token, 16 query-string token not enabled, 9 auth service unavailable.

Not here: reading the body (authentication comes first, so a refused client never costs a
body read), operator credentials for the DLQ API, or the HTTP response itself.

Decisions:

- A non-blank `Authorization` header wins over `?token=`; a blank one counts as absent.
- Tokens are looked up by their SHA-256 digest, in the configured table and in the cache,
  so no string comparison runs over the secret itself and the cache never holds a token.
  A remote token's `HecToken.token` therefore holds `sha256:<digest>`, never the secret.
- Remote answers: 200 with `{"valid": true, ...}` accepts the token; `token_name` (or `name`)
  names it, else "remote"; `default_index`, `default_sourcetype`, `default_source`,
  `allowed_indexes`, `allow_query_string` and `ack` are taken when present. 200 with
  `{"valid": false}` is code 4. Anything else (refused connection, timeout, a non-200
  status, a body that is not that shape, metadata of the wrong type) is code 9 with
  Retry-After: a failing auth service must make clients resend, never drop their data.
  Metadata of the wrong type is not ignored, since ignoring a malformed `allowed_indexes`
  would widen what the token may write.
- Positive answers are cached for `hec.auth_cache_seconds`. Negative answers are cached for
  at most NEGATIVE_CACHE_SECONDS, so a client hammering with a wrong token costs the auth
  service one call per few seconds, while a token created a moment ago is usable almost at
  once. Failures are never cached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from .config import HecSettings, HecToken
from .errors import HecError
from .hec import HecRequest

NEGATIVE_CACHE_SECONDS = 5.0
# Beyond this many cached answers, expired ones are dropped, then the oldest.
MAX_CACHE_ENTRIES = 10_000

_SCHEMES = ("telhawk", "splunk")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    """Answers "which token is this request using?", or raises the HecError a client should see."""

    def __init__(
        self,
        hec: HecSettings,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = {_digest(t.token): t for t in hec.tokens}
        self._auth_url = hec.auth_url.rstrip("/") + "/api/v1/auth/validate-hec" if hec.auth_url else None
        self._timeout = hec.auth_timeout_seconds
        self._ttl = hec.auth_cache_seconds
        self._negative_ttl = min(hec.auth_cache_seconds, NEGATIVE_CACHE_SECONDS)
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        # digest -> (expires at, token or None for "known invalid")
        self._cache: dict[bytes, tuple[float, HecToken | None]] = {}
        self._client: httpx.Client | None = None

    def authenticate(self, req: HecRequest) -> HecToken:
        header = (req.header("authorization") or "").strip()
        if header:
            return self._lookup(_token_from_header(header))
        query_token = req.query.get("token")
        if query_token:
            token = self._lookup(query_token)
            if not token.allow_query_string:
                raise HecError(16)
            return token
        raise HecError(2)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lookup(self, secret: str) -> HecToken:
        digest = _digest(secret)
        token = self._tokens.get(digest)
        if token is not None:
            return token
        url = self._auth_url
        if url is None:
            raise HecError(4)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            if cached[1] is None:
                raise HecError(4)
            return cached[1]
        # The lock is not held during the call: one slow validation must not queue every
        # other request behind it. Two concurrent misses for one token both ask; that is fine.
        token = self._validate_remotely(url, secret, digest)
        ttl = self._ttl if token is not None else self._negative_ttl
        if ttl > 0:
            self._remember(digest, self._clock() + ttl, token)
        if token is None:
            raise HecError(4)
        return token

    def _validate_remotely(self, url: str, secret: str, digest: bytes) -> HecToken | None:
        try:
            response = self._http().post(url, json={"token": secret})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise HecError(9, detail=f"auth service unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise HecError(9, detail=f"auth service answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("valid"), bool):
            raise HecError(9, detail='auth service answer is not {"valid": bool, ...}')
        if not answer["valid"]:
            return None
        try:
            return HecToken(**_token_fields(answer), token=f"sha256:{digest.hex()}")
        except (ValidationError, TypeError):
            raise HecError(9, detail="auth service answer has malformed token metadata") from None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, timeout=self._timeout)
            return self._client

    def _remember(self, digest: bytes, expires: float, token: HecToken | None) -> None:
        with self._lock:
            cache = self._cache
            if len(cache) >= MAX_CACHE_ENTRIES:
                now = self._clock()
                for key in [k for k, (until, _) in cache.items() if until <= now]:
                    del cache[key]
                while len(cache) >= MAX_CACHE_ENTRIES:
                    del cache[next(iter(cache))]
            cache.pop(digest, None)
            cache[digest] = (expires, token)


def _token_from_header(header: str) -> str:
    """The token in a non-blank Authorization header; HecError(3) when it is malformed."""
    scheme, _, credential = header.partition(" ")
    scheme = scheme.lower()
    credential = credential.strip()
    if scheme in _SCHEMES:
        token = credential
    elif scheme == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise HecError(3, detail="Basic credential is not base64 of user:token") from None
        _, colon, token = decoded.partition(":")
        if not colon:
            raise HecError(3, detail="Basic credential is not base64 of user:token")
    else:
        raise HecError(3, detail="expected the Splunk, Telhawk or Basic scheme")
    if not token or any(c.isspace() for c in token):
        raise HecError(3, detail="the credential is empty or contains spaces")
    return token


def _token_fields(answer: dict[str, Any]) -> dict[str, Any]:
    """HecToken fields from a positive remote answer; absent keys keep the model's defaults."""
    fields: dict[str, Any] = {"name": answer.get("token_name") or answer.get("name") or "remote"}
    for key in ("default_index", "default_sourcetype", "default_source", "allowed_indexes"):
        if answer.get(key) is not None:
            fields[key] = answer[key]
    for key in ("allow_query_string", "ack"):
        if key in answer:
            fields[key] = answer[key]
    return fields
