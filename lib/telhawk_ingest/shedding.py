"""Load shedding: a per-process limit on ingest requests in flight (README, "A failing backend").

Here: `InFlight`, the count of ingest requests between their admission and their answer in this
process, against `hec.max_in_flight`. One more is refused at once, before its body is read, with
503 HEC code 9 and `Retry-After` (SPEC §2, §3: the client keeps the data and sends it again);
nothing of a refused request is processed. Refusals are counted in `requests_shed` (stats.py,
every instance on the volume) and logged (logs.py, event `shed`). Not here: the HTTP side
(http.py admits each ingest request here first).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .errors import HecError
from .logs import log_event

log = logging.getLogger(__name__)


class InFlight:
    """Ingest requests in flight in this process, at most `limit` (>= 1). Thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"hec.max_in_flight: expected at least 1, got {limit}")
        self.limit = limit
        self.count = 0
        self.peak = 0
        self.shed = 0  # refused in this process since it started
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Take a place for one request; False (and nothing taken) when all `limit` are taken."""
        with self._lock:
            if self.count >= self.limit:
                self.shed += 1
                return False
            self.count += 1
            if self.count > self.peak:
                self.peak = self.count
            return True

    def leave(self) -> None:
        """Give back the place `enter` took."""
        with self._lock:
            self.count -= 1

    def refusal(self, path: str) -> HecError:
        """The 503 code 9 for a request `enter` refused (logged here)."""
        log_event(log, logging.WARNING, "shed",
                  f"shed an ingest request to {path}: {self.limit} in flight (hec.max_in_flight)",
                  in_flight=self.count, max_in_flight=self.limit, path=path)
        return HecError(9, detail=f"{self.limit} ingest requests in flight in this process "
                                  "(hec.max_in_flight); try again")

    def snapshot(self) -> dict[str, Any]:
        """This process's figures for healthz: in flight now, the limit, the peak, shed here."""
        return {"in_flight": self.count, "max_in_flight": self.limit, "peak_in_flight": self.peak,
                "shed_here": self.shed}
