"""Self-healing: once storage works again, replay the entries it failed (`storage_failed`) in the
background, rate-limited, so an outage ends with the DLQ drained rather than a page of work.

`start_healing(service)` is what a storage circuit breaker calls when it closes after an outage
(its `on_close` listeners). It starts one background thread per process (single flight: a call
while one runs does nothing); processes and instances sharing the volume may each run one, and
the DLQ's claims (claims.py) keep them from replaying one entry twice. The thread replays
`storage_failed` entries, oldest first, in bounded calls of the replay use case (replay.py) at
`replay.heal_rate_limit` events per second, and stops when none is left or when storage fails
again (an entry failing again at storage: the breaker's next close starts it anew). Each call is
audited under the operator name `self-healing`. Off with `replay.heal_on_recovery: false`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .dlq import DlqFilter
from .errors import ApiError
from .replay import Replayer, ReplayRequest, replay_as
from .service import Service

log = logging.getLogger(__name__)

ACTOR = "self-healing"
STORAGE_FAILED = DlqFilter(reason="storage_failed")

_lock = threading.Lock()
_running: threading.Thread | None = None


@dataclass(slots=True)
class Healed:
    """What one healing run did: entries stored, failed again, skipped; `stopped` says why it ended
    (`drained`, `storage failing`, or `dlq unusable`)."""

    stored: int = 0
    failed: int = 0
    skipped: int = 0
    stopped: str = ""


def heal(svc: Service, *, monotonic: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] | None = None) -> Healed:
    """Replay every `storage_failed` entry at `replay.heal_rate_limit` events/s, call after call,
    until none is left or storage fails again; in the calling thread. `monotonic`, `sleep` and
    `clock` as for replay.Replayer (injected in tests)."""
    replayer = Replayer(svc, clock=clock, monotonic=monotonic, sleep=sleep)
    healed = Healed()
    cursor: str | None = None
    while True:
        req = ReplayRequest(filter=STORAGE_FAILED, rate_limit=svc.settings.replay.heal_rate_limit,
                            cursor=cursor, params={"filter": {"reason": "storage_failed"}, "cursor": cursor},
                            stop_on_storage_failure=True)
        try:
            result = replay_as(svc, ACTOR, req, replayer)
        except ApiError as err:  # the folder or the storage breaker (503): try at the next recovery
            log.warning("self-healing stopped: %s", err.message)
            healed.stopped = "storage failing" if svc.breaker is not None and not svc.breaker.closed \
                else "dlq unusable"
            break
        healed.stored += result.stored
        healed.failed += result.failed
        healed.skipped += result.skipped
        if result.storage_failed or result.breaker_open:
            healed.stopped = "storage failing"
            break
        cursor = result.next_cursor
        if cursor is None:
            healed.stopped = "drained"
            break
    log.info("self-healing %s: %d stored, %d failed again, %d skipped", healed.stopped, healed.stored,
             healed.failed, healed.skipped)
    return healed


def start_healing(svc: Service) -> bool:
    """Start healing in a background thread unless `replay.heal_on_recovery` is off or this
    process already runs one; True when a thread was started. Never raises: a failing run is
    logged."""
    global _running
    if not svc.settings.replay.heal_on_recovery:
        return False
    with _lock:
        if _running is not None and _running.is_alive():
            return False
        _running = threading.Thread(target=_run, args=(svc,), name="telhawk-self-healing", daemon=True)
        _running.start()
    return True


def healing_thread() -> threading.Thread | None:
    """This process's healing thread, running or last run (for shutdown and tests to join)."""
    return _running


def _run(svc: Service) -> None:
    try:
        heal(svc)
    except Exception:
        log.exception("self-healing stopped on an unexpected error; the next recovery starts it again")
