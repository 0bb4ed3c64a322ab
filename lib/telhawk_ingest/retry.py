"""Retries of storage writes: the policy (pure: how long to wait) and the retrying call (SPEC §6).

The policy is kept apart from the decision to retry: a backend classifies each item (storage/base.py
Outcome), and `store_with_retries` resends only the items classified RETRY, waiting as the policy
says, until they are stored, fail permanently, or the tries run out. The waits come from the
`backoff` package; a Retry-After from storage lengthens a wait, capped by the policy.

Default schedule (the seed's): try 1 at once, then waits of 100, 200, 400 ms, then give up with
`attempts == 4`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import backoff

from .config import CoreSettings
from .storage.base import Item, Outcome, Status, StorageBackend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    delay_ms: int = 100
    multiplier: float = 2.0
    max_delay_ms: int = 30_000
    jitter: bool = False
    max_retry_after_seconds: float = 5.0

    @classmethod
    def from_settings(cls, core: CoreSettings) -> RetryPolicy:
        return cls(
            max_retries=core.max_retries,
            delay_ms=core.retry_delay_ms,
            multiplier=core.retry_multiplier,
            max_delay_ms=core.retry_max_delay_ms,
            jitter=core.jitter,
            max_retry_after_seconds=core.max_retry_after_seconds,
        )

    @property
    def max_tries(self) -> int:
        return self.max_retries + 1

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based), given the storage's Retry-After."""
        base = min(self.delay_ms * self.multiplier ** (retry - 1), self.max_delay_ms) / 1000
        if self.jitter:
            base = random.uniform(0, base)  # full jitter, as AWS's backoff study recommends
        if retry_after:
            base = max(base, min(retry_after, self.max_retry_after_seconds))
        return base

    def schedule(self) -> list[float]:
        """The waits between tries when storage gives no Retry-After."""
        return [self.delay(n) for n in range(1, self.max_retries + 1)]


@dataclass(frozen=True, slots=True)
class Final:
    """What finally happened to one item, after every try (shared between items alike)."""

    outcome: Outcome
    attempts: int


@dataclass(slots=True)
class _Round:
    """The items still to retry after one try, and the longest Retry-After among them."""

    pending: list[int] = field(default_factory=list)
    retry_after: float | None = None


def _waits(policy: RetryPolicy) -> Generator[float, _Round | None, None]:
    """A backoff wait generator; backoff sends in each try's _Round, so Retry-After is honoured."""
    sent = yield 0.0  # primed by backoff with send(None)
    retry = 1
    while True:
        sent = yield policy.delay(retry, sent.retry_after if sent else None)
        retry += 1


def try_store(backend: StorageBackend, items: Sequence[Item]) -> list[Outcome]:
    """One try, no waiting: the backend's outcomes, one per item; RETRY for every item when the
    backend raised or answered the wrong number of outcomes (a backend bug must not fail the
    request, nor lose events: they are retried, then dead-lettered)."""
    try:
        outcomes = backend.store(items)
    except Exception as exc:
        log.exception("storage backend %s raised instead of reporting outcomes", backend.name)
        return [Outcome(Status.RETRY, f"storage failed: {type(exc).__name__}: {exc}")] * len(items)
    return _accounted(outcomes, len(items))


def _accounted(outcomes: Sequence[Outcome], count: int) -> list[Outcome]:
    if len(outcomes) != count:
        return [Outcome(Status.RETRY, "storage returned a wrong number of results")] * count
    return list(outcomes)


def store_with_retries(
    backend: StorageBackend,
    items: Sequence[Item],
    policy: RetryPolicy,
    on_retry: Callable[[int, float], None] | None = None,
    first: Sequence[Outcome] | None = None,
) -> list[Final]:
    """Store `items`, retrying only the retryable ones; one Final per item, in order.

    `on_retry(count, wait)` is called before each wait with the number of items being retried.
    `first`: the outcomes of a first try the caller already made (e.g. through the local store's
    `enqueue`, awaited on an event loop), one per item; the backend is then asked only for retries.
    """
    finals: list[Final | None] = [None] * len(items)
    todo = list(range(len(items)))
    tries = 0

    def attempt() -> _Round:
        nonlocal todo, tries
        tries += 1  # an item in this try has been in every try so far
        if tries > 1:
            outcomes = try_store(backend, [items[i] for i in todo])
        else:
            outcomes = try_store(backend, items) if first is None else _accounted(first, len(items))
        rnd = _Round()
        final = None
        for i, outcome in zip(todo, outcomes, strict=True):
            # Backends repeat one Outcome object (STORED) for most items: share its Final too.
            if final is None or final.outcome is not outcome:
                final = Final(outcome, tries)
            finals[i] = final
            if outcome.status is Status.RETRY:
                rnd.pending.append(i)
                if outcome.retry_after is not None:
                    rnd.retry_after = max(rnd.retry_after or 0.0, outcome.retry_after)
        todo = rnd.pending
        return rnd

    def backing_off(details: dict) -> None:
        log.info("storage retry: %d item(s), try %d failed, waiting %.3fs",
                 len(details["value"].pending), details["tries"], details["wait"])
        if on_retry:
            on_retry(len(details["value"].pending), details["wait"])

    if not items:
        return []
    # The first try needs no retry machinery, and usually no retry: building backoff's wrapper
    # for every batch cost more than the bookkeeping of a hundred items.
    first: _Round | None = attempt()
    if first.pending:

        def next_try() -> _Round:
            # backoff makes its first call at once: hand it the try already made.
            nonlocal first
            if first is not None:
                done, first = first, None
                return done
            return attempt()

        retrying = backoff.on_predicate(
            _waits,
            predicate=lambda rnd: bool(rnd.pending),
            max_tries=policy.max_tries,
            jitter=None,  # jitter, when enabled, is applied by the policy, never to a Retry-After
            on_backoff=backing_off,
            logger=None,
            policy=policy,
        )(next_try)
        retrying()
    return [f for f in finals if f is not None]
