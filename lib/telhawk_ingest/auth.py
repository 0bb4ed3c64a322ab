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

The auth service is not an amplifier. Configured tokens are looked up first, in memory, and never
wait for anything remote. A credential goes out only when no local rule already refuses it: never
an operator token, never one outside REMOTE_TOKEN_CHARS characters or with characters other than
visible ASCII (4, no call), and a `?token=` only with `hec.auth_query_string: true` (else 16, no
call). Calls are bounded per process: at most `hec.auth_max_in_flight` at once, and a token
bucket of `hec.auth_calls_per_second` (bursts of `hec.auth_burst`); a request past either is
answered 503 code 9 at once, never queued, so a slow auth service holds at most that many
request threads. `https` is required unless `hec.auth_allow_insecure_http` (config.py), which
is warned about at start-up. A positive answer without `allowed_indexes` gets
`hec.auth_default_scope` (by default only `main`), plus the `default_index` the answer names,
if any: never every index.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from pydantic import ValidationError

from .config import AuthScope, HecSettings, HecToken
from .errors import HecError
from .hec import HecRequest

log = logging.getLogger(__name__)

NEGATIVE_CACHE_SECONDS = 5.0
# Beyond this many cached answers, expired ones are dropped, then the oldest.
MAX_CACHE_ENTRIES = 10_000
# The lengths of a credential worth asking the auth service about (Splunk's tokens are GUIDs,
# 36 characters); shorter or longer ones are invalid without a call.
REMOTE_TOKEN_CHARS = range(16, 257)
_TOKEN_SHAPE = re.compile(f"[!-~]{{{REMOTE_TOKEN_CHARS.start},{REMOTE_TOKEN_CHARS.stop - 1}}}")

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
        *,
        operator_tokens: Iterable[str] = (),
    ) -> None:
        """`operator_tokens`: credentials of the operator API, which are never sent to the auth
        service (the service passes them)."""
        self._tokens = {_digest(t.token): t for t in hec.tokens}
        self._never_forward = {_digest(t) for t in operator_tokens}
        self._auth_url = hec.auth_url.rstrip("/") + "/api/v1/auth/validate-hec" if hec.auth_url else None
        self._timeout = hec.auth_timeout_seconds
        self._ttl = hec.auth_cache_seconds
        self._negative_ttl = min(hec.auth_cache_seconds, NEGATIVE_CACHE_SECONDS)
        self._query_string = hec.auth_query_string
        self._scope = hec.auth_default_scope
        self._in_flight = threading.BoundedSemaphore(hec.auth_max_in_flight)
        self._bucket = TokenBucket(hec.auth_calls_per_second, hec.auth_burst, clock)
        self._transport = transport
        self._clock = clock
        self._lock = threading.Lock()
        # digest -> (expires at, token or None for "known invalid")
        self._cache: dict[bytes, tuple[float, HecToken | None]] = {}
        self._client: httpx.Client | None = None
        if self._auth_url is not None and self._auth_url.startswith("http://"):
            log.warning("hec.auth_url is plain http (hec.auth_allow_insecure_http: true): HEC tokens "
                        "cross the network unencrypted; use this for local testing only")

    def authenticate(self, req: HecRequest) -> HecToken:
        header = (req.header("authorization") or "").strip()
        if header:
            return self._lookup(_token_from_header(header))
        query_token = req.query.get("token")
        if query_token:
            token = self._lookup(query_token, query=True)
            if not token.allow_query_string:
                raise HecError(16)
            return token
        raise HecError(2)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lookup(self, secret: str, query: bool = False) -> HecToken:
        digest = _digest(secret)
        token = self._tokens.get(digest)
        if token is not None:
            return token
        url = self._auth_url
        if url is None or digest in self._never_forward or not _forwardable(secret):
            raise HecError(4)
        if query and not self._query_string:
            raise HecError(16)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            if cached[1] is None:
                raise HecError(4)
            return cached[1]
        # The lock is not held during the call: one slow validation must not queue every
        # other request behind it. Two concurrent misses for one token both ask; that is fine.
        if not self._in_flight.acquire(blocking=False):
            raise HecError(9, detail="too many token validations in flight (hec.auth_max_in_flight)")
        try:
            if not self._bucket.take():
                raise HecError(9, detail="token validation rate reached (hec.auth_calls_per_second)")
            token = self._validate_remotely(url, secret, digest)
        finally:
            self._in_flight.release()
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
            return HecToken(**_token_fields(answer, self._scope), token=f"sha256:{digest.hex()}")
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


def _token_fields(answer: dict[str, Any], scope: AuthScope) -> dict[str, Any]:
    """HecToken fields from a positive remote answer; absent keys keep the model's defaults,
    except the index rules: without `allowed_indexes`, the token gets `scope` (plus the answer's
    `default_index`, which is also its default), never every index."""
    fields: dict[str, Any] = {"name": answer.get("token_name") or answer.get("name") or "remote"}
    for key in ("default_index", "default_sourcetype", "default_source", "allowed_indexes"):
        if answer.get(key) is not None:
            fields[key] = answer[key]
    for key in ("allow_query_string", "ack"):
        if key in answer:
            fields[key] = answer[key]
    if "allowed_indexes" not in fields:
        default = fields.setdefault("default_index", scope.default_index)
        allowed = list(scope.allowed_indexes)
        if isinstance(default, str) and default not in allowed:
            allowed.append(default)
        fields["allowed_indexes"] = allowed
    return fields


def _forwardable(secret: str) -> bool:
    """Whether a credential unknown here could be a token at all: REMOTE_TOKEN_CHARS long, and
    visible ASCII only (no spaces or control characters)."""
    return _TOKEN_SHAPE.fullmatch(secret) is not None


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; thread-safe. `clock`: monotonic seconds."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token if there is one; never waits."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True
