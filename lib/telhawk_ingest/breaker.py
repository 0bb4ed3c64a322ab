"""The circuit breaker on the storage hop: a failing backend costs a request almost nothing.

Here: `Breaker` (per process, shared by every request of it) and its states. Not here: what a
failed try is for a backend (retry.py decides, from the outcomes) or what happens to the events
it turns away (they go to the DLQ as `storage_failed`, service.py).

States (README, "A failing backend"):

- closed: every try goes to storage. `failures` consecutive failed tries (tries whose request
  failed as a whole: a transport error, a whole-request 429/5xx) open it.
- open: no try goes to storage; the events of a request go straight to the DLQ with an error
  naming the open breaker, without waiting out the backoff.
- half-open: `cooldown_seconds` after opening, the next try is let through as the probe; other
  tries are still turned away meanwhile. The probe's success closes the breaker (and calls the
  `on_close` listeners, e.g. the replay of what the outage dead-lettered); its failure opens it
  again for another cool-down. A probe that never reports back (its request died) is replaced
  by another one a cool-down later.

Every change of state is logged (logs.py, event `breaker`). Time comes from `clock` (monotonic
seconds) and `wall` (unix seconds, for `since`), injected by tests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .envelope import rfc3339
from .logs import log_event

log = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class Breaker:
    """A consecutive-failures circuit breaker (states in the module docstring).

    `failures`: consecutive failed tries that open it (>= 1); `cooldown_seconds`: how long it
    stays open before a probe. Thread-safe; while closed and healthy, `admit` and `record` take no
    lock (one attribute read each), so the hot path pays nothing.
    """

    def __init__(
        self,
        failures: int = 5,
        cooldown_seconds: float = 15.0,
        *,
        name: str = "storage",
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures: expected at least 1, got {failures}")
        self.name = name
        self.failures = failures
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock or (lambda: time.monotonic())
        self._wall = wall or (lambda: time.time())
        self._lock = threading.Lock()
        self.state = CLOSED
        self.consecutive_failures = 0
        self.last_error = ""
        self.since = self._wall()  # unix seconds of the last change of state
        self._opened_at = 0.0  # monotonic time the breaker (re)opened
        self._probe_at: float | None = None  # monotonic time the outstanding probe was let through
        self._listeners: list[Callable[[], None]] = []
        self.opened = 0  # times it opened, in this process
        self.refused = 0  # tries turned away, in this process

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (in the thread of the probe that closed the breaker) whenever the
        breaker closes after having been open. Exceptions it raises are logged, not raised."""
        self._listeners.append(callback)

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def admit(self) -> bool:
        """Whether a try may go to storage now. While open and the cool-down is over, the first
        caller becomes the probe (the breaker turns half-open) and gets True; the others get False
        until the probe reports back through `record`."""
        if self.state == CLOSED:
            return True
        with self._lock:
            now = self._clock()
            if self.state == OPEN and now - self._opened_at >= self.cooldown_seconds:
                self._change(HALF_OPEN)
                self._probe_at = now
                return True
            if (self.state == HALF_OPEN and self._probe_at is not None
                    and now - self._probe_at >= self.cooldown_seconds):
                self._probe_at = now  # the last probe never reported back: let another through
                return True
            if self.state == CLOSED:
                return True
            self.refused += 1
            return False

    def record(self, ok: bool, error: str = "") -> None:
        """The result of a try that `admit` let through: `ok` when storage answered (stored, or
        refused an item for good), False when the whole try failed (`error`: its last error)."""
        if ok and self.state == CLOSED and not self.consecutive_failures:
            return
        closed_now = False
        with self._lock:
            if ok:
                self.consecutive_failures = 0
                if self.state != CLOSED:
                    self._change(CLOSED)
                    closed_now = True
            else:
                self.consecutive_failures += 1
                self.last_error = error
                if self.state == HALF_OPEN or (
                        self.state == CLOSED and self.consecutive_failures >= self.failures):
                    self._open()
                # While open, a straggler that was let through before opening changes nothing.
        if closed_now:
            for callback in list(self._listeners):
                try:
                    callback()
                except Exception:
                    log.exception("a listener of the %s circuit breaker's closing failed", self.name)

    def retry_after(self) -> int:
        """Whole seconds until the cool-down lets a probe through (at least 1): the `Retry-After`
        of a call the open breaker turned away."""
        with self._lock:
            since = self._probe_at if self.state == HALF_OPEN and self._probe_at is not None \
                else self._opened_at
            left = self.cooldown_seconds - (self._clock() - since)
        return max(1, math.ceil(left))

    def refusal(self) -> str:
        """The DLQ error of an event turned away: names the breaker, since when and the last error."""
        return (f"{self.name} circuit breaker {self.state.replace('_', '-')} since {rfc3339(self.since)} "
                f"({self.consecutive_failures} consecutive failed tries); last error: "
                f"{self.last_error or 'unknown'}")

    def snapshot(self) -> dict[str, Any]:
        """The state for healthz: `state` (closed|open|half_open), `since` (RFC 3339), the
        consecutive failures, the settings, and this process's opened/refused totals."""
        return {"state": self.state, "since": rfc3339(self.since),
                "consecutive_failures": self.consecutive_failures, "failures": self.failures,
                "cooldown_seconds": self.cooldown_seconds, "opened": self.opened, "refused": self.refused,
                "last_error": self.last_error}

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_at = None
        self.opened += 1
        self._change(OPEN)

    def _change(self, state: str) -> None:
        before, self.state = self.state, state
        self.since = self._wall()
        level = logging.INFO if state == CLOSED else logging.WARNING
        log_event(log, level, "breaker", f"{self.name} circuit breaker {before} -> {state}",
                  breaker=self.name, state=state, previous=before,
                  consecutive_failures=self.consecutive_failures, last_error=self.last_error)
