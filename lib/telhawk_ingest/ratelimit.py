"""Per-token rate limits: a HEC token's events per second, per process (README, "A failing backend").

Here: `TokenRates`, a token bucket per token that has `rate_limit` set (config.TokenRateLimit).
A request is admitted while its token's bucket is not empty, and takes as many tokens as it has
events; a large request may take the bucket below zero (its events all count, later requests wait
for the refill), so a request bigger than the burst is never refused for ever. A request refused
is answered 503 HEC code 9 (Splunk's "Server is busy": HEC has no 429) with a `Retry-After` of the
whole seconds after which the bucket is above zero again; nothing of it is kept (the limit is checked after
parsing, before anything is normalized, stored or dead-lettered). Counted in
`requests_rate_limited` and logged (event `rate_limited`, with the token's name). Not here: tokens
validated by the remote auth service, which have no configured limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable

from .config import HecToken
from .errors import HecError
from .logs import log_event

log = logging.getLogger(__name__)


class _Bucket:
    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now


class TokenRates:
    """The buckets of the tokens in `tokens` that have a rate limit. Thread-safe."""

    def __init__(self, tokens: Iterable[HecToken], clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or (lambda: time.monotonic())
        now = self._clock()
        self._buckets = {
            t.name: _Bucket(t.rate_limit.events_per_second,
                            float(t.rate_limit.burst or math.ceil(t.rate_limit.events_per_second)), now)
            for t in tokens if t.rate_limit is not None
        }
        self._lock = threading.Lock()
        self.limited = 0  # requests refused in this process

    def admit(self, token: HecToken, events: int) -> None:
        """Take `events` from the token's bucket, or raise HecError 9 (nothing taken) when it is
        empty. Tokens without a configured limit pass at no cost."""
        bucket = self._buckets.get(token.name) if token.rate_limit is not None else None
        if bucket is None:
            return
        with self._lock:
            now = self._clock()
            bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.at) * bucket.rate)
            bucket.at = now
            if bucket.tokens > 0:
                bucket.tokens -= events
                return
            self.limited += 1
            # Whole seconds after which the bucket is above zero again (HTTP Retry-After).
            wait = int(-bucket.tokens // bucket.rate) + 1
        log_event(log, logging.WARNING, "rate_limited",
                  f"token {token.name!r} is over its rate limit of {bucket.rate:g} events/s",
                  token_name=token.name, events=events, events_per_second=bucket.rate, retry_after=wait)
        raise HecError(9, detail=f"token {token.name!r} is over its rate limit of {bucket.rate:g} events/s "
                                 f"(hec.tokens[].rate_limit); try again in {wait} s", retry_after=wait)
