"""The retry budget: retries at most a share of first tries, so retries cannot multiply the load on
a storage backend that is struggling (README, "A failing backend"; off unless configured).

Here: `RetryBudget`, per process. Over the last `window_seconds`, retries may number at most
`ratio` x the first tries plus `min_per_second` x the window (so a quiet service can still retry).
A retry the budget refuses is not made: retry.py ends the items' tries and they go to the DLQ as
`storage_failed` with an error naming the budget. The same idea as Finagle's RetryBudget and
gRPC's retry throttling; counted in whole seconds, which is fine-grained enough for a window of
seconds. Time comes from `clock` (monotonic seconds), injected by tests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .storage.base import Outcome, Status


class RetryBudget:
    """`ratio` (0..1) of first tries, plus `min_per_second`, over `window_seconds` (>= 1)."""

    def __init__(self, ratio: float, min_per_second: float, window_seconds: int,
                 clock: Callable[[], float] | None = None) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window_seconds = window_seconds
        self._clock = clock or (lambda: time.monotonic())
        self._lock = threading.Lock()
        self._seconds: deque[list[int]] = deque()  # [second, first tries, retries], oldest first
        self._firsts = 0
        self._retries = 0
        self.refused = 0  # retries refused in this process

    def first(self, count: int = 1) -> None:
        """Count `count` first tries."""
        with self._lock:
            self._now()[1] += count
            self._firsts += count

    def retry(self) -> bool:
        """Take one retry from the budget; False (nothing taken) when it is spent."""
        with self._lock:
            current = self._now()
            allowed = self.ratio * self._firsts + self.min_per_second * self.window_seconds
            if self._retries + 1 > allowed:
                self.refused += 1
                return False
            current[2] += 1
            self._retries += 1
            return True

    def spent(self, tries: int, last_error: str) -> Outcome:
        """The outcome of items whose next retry the budget refused, after `tries` tries."""
        rule = (f"at most {self.ratio:.0%} of first tries plus {self.min_per_second:g}/s over "
                f"{self.window_seconds} s")
        return Outcome(Status.RETRY, f"retry budget spent (core.retry_budget: {rule}) after {tries} "
                                     f"tr{'y' if tries == 1 else 'ies'}; last error: {last_error}",
                       {"retry_budget": "spent"})

    def snapshot(self) -> dict[str, float | int]:
        """For healthz: first tries and retries in the window, and retries refused in this process."""
        with self._lock:
            self._now()
            return {"first_tries": self._firsts, "retries": self._retries, "refused": self.refused,
                    "ratio": self.ratio, "min_per_second": self.min_per_second,
                    "window_seconds": self.window_seconds}

    def _now(self) -> list[int]:
        """The current second's counts, after dropping the seconds that left the window."""
        second = int(self._clock())
        seconds = self._seconds
        while seconds and seconds[0][0] <= second - self.window_seconds:
            _, firsts, retries = seconds.popleft()
            self._firsts -= firsts
            self._retries -= retries
        if not seconds or seconds[-1][0] != second:
            seconds.append([second, 0, 0])
        return seconds[-1]
