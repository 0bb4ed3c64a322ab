"""Retries of storage writes: the policy (pure: how long to wait) and the retrying call (SPEC §6).

The policy is kept apart from the decision to retry: a backend classifies each item (storage/base.py
Outcome), and `store_with_retries` resends only the items classified RETRY, waiting as the policy
says, until they are stored, fail permanently, or the tries run out. The waits come from the
`backoff` package; a Retry-After from storage lengthens a wait, capped by the policy.

Default schedule (the seed's): try 1 at once, then waits of 100, 200, 400 ms, then give up with
`attempts == 4`.

Three things end the tries early, so a failing backend costs a request little (README, "A failing
backend"): the storage circuit breaker (breaker.py; every try is recorded on it, and an open
breaker lets no try through), the request's `Deadline` (core.request_deadline_seconds: no wait
that would outlast it, and each try's network timeout is cut to what is left of it) and, when
configured, the process's retry budget (budget.py). The items not stored then end with an Outcome
whose error names the breaker, the deadline or the budget, and the last error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import backoff

from .breaker import Breaker
from .budget import RetryBudget
from .config import CoreSettings
from .logs import log_event
from .storage.base import TRY_DEADLINE, Item, Outcome, Status, StorageBackend

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


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the storage phase of one request must be over: `at`, monotonic seconds; `seconds`, the
    setting it came from (core.request_deadline_seconds), for the error text."""

    seconds: float
    at: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def spent(self, tries: int, last_error: str) -> Outcome:
        """The outcome of the items not stored when the deadline ran out after `tries` tries."""
        when = (f"after {tries} tr{'y' if tries == 1 else 'ies'}; last error: {last_error or 'none'}"
                if tries else "before these events were tried (earlier ones of the request took it)")
        return Outcome(Status.RETRY, f"storage deadline of {self.seconds:g} s for the request "
                                     f"(core.request_deadline_seconds) spent {when}",
                       {"deadline_seconds": self.seconds})


def breaker_refusal(breaker: Breaker) -> Outcome:
    """The outcome of the items an open breaker turned away (its error names the breaker)."""
    return Outcome(Status.RETRY, breaker.refusal(), {"breaker": breaker.state})


def record_try(breaker: Breaker | None, outcomes: Sequence[Outcome]) -> None:
    """Tell the breaker how a try went: failed when the request failed as a whole with a
    retryable failure (a transport error, a whole-request 429/5xx, a backend that raised), else
    ok. Backends report a whole-request failure as one Outcome repeated for every item
    (storage/base.py); items refused one by one (item 429s) mean storage answered, and are left
    to the backoff."""
    if breaker is None or not outcomes:
        return
    first = outcomes[0]
    failed = first.status is Status.RETRY and all(outcome is first for outcome in outcomes)
    breaker.record(not failed, first.error if failed else "")


def guarded_try(backend: StorageBackend, items: Sequence[Item], breaker: Breaker | None = None,
                deadline: Deadline | None = None) -> list[Outcome]:
    """`try_store`, recorded on `breaker`, its network waits cut to `deadline`. The caller has
    asked `breaker.admit()` first."""
    if deadline is None:
        outcomes = try_store(backend, items)
    else:
        token = TRY_DEADLINE.set(deadline.at)
        try:
            outcomes = try_store(backend, items)
        finally:
            TRY_DEADLINE.reset(token)
    record_try(breaker, outcomes)
    return outcomes


@dataclass(slots=True)
class _Round:
    """The items still to retry after one try, the longest Retry-After among them, the wait before
    the next try and the error that made it necessary."""

    pending: list[int] = field(default_factory=list)
    retry_after: float | None = None
    wait: float = 0.0
    error: str = ""


def _waits() -> Generator[float, _Round | None, None]:
    """A backoff wait generator; backoff sends in each try's _Round, which carries its wait (worked
    out by the policy when the try ended, so the deadline can be checked against it)."""
    sent = yield 0.0  # primed by backoff with send(None)
    while True:
        sent = yield sent.wait if sent else 0.0


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
    *,
    breaker: Breaker | None = None,
    deadline: Deadline | None = None,
    budget: RetryBudget | None = None,
) -> list[Final]:
    """Store `items`, retrying only the retryable ones; one Final per item, in order.

    `on_retry(count, wait)` is called before each wait with the number of items being retried.
    `first`: the outcomes of a first try the caller already made (e.g. through the local store's
    `enqueue`, awaited on an event loop), one per item, already recorded on `breaker`; the backend
    is then asked only for retries. `breaker`: asked before each try and told how it went; while it
    is open no try is made and the items end with `breaker_refusal`. `deadline`: no wait that would
    outlast it, each try cut to it; the items not stored when it runs out end with
    `Deadline.spent`. `budget`: each retry takes one from it (the caller counts the first tries);
    when it is spent the items end with `RetryBudget.spent`. An item ended early has `attempts` =
    the tries made (at least 1: it went through the pipeline once).
    """
    finals: list[Final | None] = [None] * len(items)
    todo = list(range(len(items)))
    tries = 0

    def halt(outcome: Outcome, made: int) -> _Round:
        if "breaker" not in outcome.details:  # the breaker logs its own changes; these are news
            kind = "deadline" if "deadline_seconds" in outcome.details else "retry_budget"
            log_event(log, logging.WARNING, kind, f"storage tries ended early for {len(todo)} item(s): "
                      f"{outcome.error}", items=len(todo), tries=made, reason=outcome.error)
        final = Final(outcome, max(made, 1))
        for i in todo:
            finals[i] = final
        return _Round()  # nothing pending: backoff stops

    def attempt() -> _Round:
        nonlocal todo, tries
        tries += 1  # an item in this try has been in every try so far
        if tries == 1 and first is not None:
            outcomes = _accounted(first, len(items))
        else:
            if breaker is not None and not breaker.admit():
                return halt(breaker_refusal(breaker), tries - 1)
            if deadline is not None and deadline.remaining() <= 0:
                last = finals[todo[0]]
                return halt(deadline.spent(tries - 1, last.outcome.error if last else ""), tries - 1)
            outcomes = guarded_try(backend, items if tries == 1 else [items[i] for i in todo],
                                   breaker, deadline)
        rnd = _Round()
        final = None
        for i, outcome in zip(todo, outcomes, strict=True):
            # Backends repeat one Outcome object (STORED) for most items: share its Final too.
            if final is None or final.outcome is not outcome:
                final = Final(outcome, tries)
            finals[i] = final
            if outcome.status is Status.RETRY:
                if not rnd.pending:
                    rnd.error = outcome.error
                rnd.pending.append(i)
                if outcome.retry_after is not None:
                    rnd.retry_after = max(rnd.retry_after or 0.0, outcome.retry_after)
        todo = rnd.pending
        if rnd.pending and tries < policy.max_tries:
            rnd.wait = policy.delay(tries, rnd.retry_after)
            # Waiting only to be turned away (or past the deadline) would cost the request for nothing.
            if breaker is not None and not breaker.closed:
                return halt(breaker_refusal(breaker), tries)
            if deadline is not None and deadline.remaining() <= rnd.wait:
                return halt(deadline.spent(tries, rnd.error), tries)
            if budget is not None and not budget.retry():
                return halt(budget.spent(tries, rnd.error), tries)
        return rnd

    def backing_off(details: dict) -> None:
        rnd = details["value"]
        log_event(log, logging.INFO, "retry",
                  f"storage retry: {len(rnd.pending)} item(s), try {details['tries']} failed, "
                  f"waiting {details['wait']:.3f}s: {rnd.error}",
                  attempt=details["tries"], items=len(rnd.pending), wait_seconds=round(details["wait"], 6),
                  reason=rnd.error)
        if on_retry:
            on_retry(len(rnd.pending), details["wait"])

    if not items:
        return []
    # The first try needs no retry machinery, and usually no retry: building backoff's wrapper
    # for every batch cost more than the bookkeeping of a hundred items.
    made: _Round | None = attempt()
    if made.pending:

        def next_try() -> _Round:
            # backoff makes its first call at once: hand it the try already made.
            nonlocal made
            if made is not None:
                done, made = made, None
                return done
            return attempt()

        retrying = backoff.on_predicate(
            _waits,
            predicate=lambda rnd: bool(rnd.pending),
            max_tries=policy.max_tries,
            jitter=None,  # jitter, when enabled, is applied by the policy, never to a Retry-After
            on_backoff=backing_off,
            logger=None,
        )(next_try)
        retrying()
    return [f for f in finals if f is not None]
