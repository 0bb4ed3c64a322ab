"""Scheduled runs: DLQ retention and the optional replay, as timers invoke them (SPEC §12).

No logic of their own: `run_schedule(kind, event)` takes the run's time from the scheduled event
(EventBridge's `time`; a Cloud Scheduler job posts `{"time": ...}` likewise; the local emulator
takes it from the request, which is how tests inject a clock into its processes), else the
service's clock, then calls the use case: DLQ retention (retention.py, SPEC §9 caps and age) or
the replay of the entries matching `triggers.replay_filter` (replay.py, SPEC §11), which does
nothing while no filter is configured. Runs are counted in `trigger_schedule_runs`, runs that
raised in `trigger_schedule_failures` (and raise again, so the platform records a failed
invocation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from . import stats
from .envelope import parse_time, rfc3339
from .logs import log_event
from .service import Service, service

log = logging.getLogger(__name__)

# The name the audit log gives scheduled runs.
SCHEDULE_OPERATOR = "schedule"


def schedule_time(event: Any, clock: Callable[[], float]) -> float:
    """Unix seconds of a scheduled run: the event's `time` (RFC 3339 or unix seconds), else `clock()`."""
    value = event.get("time") if isinstance(event, Mapping) else None
    if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
        try:
            return parse_time(value)
        except ValueError:
            log.warning("scheduled event time %r is not a time; using the clock", str(value)[:60])
    return clock()


def _retention(svc: Service, now: float) -> dict[str, Any]:
    """The DLQ retention use case (retention.py: SPEC §9 caps and age, audited) at `now`."""
    from .retention import RetentionParts, run_retention

    return run_retention(RetentionParts.of(svc), now=now, dry_run=False)


def _replay(svc: Service, now: float) -> dict[str, Any]:
    """The replay use case (replay.py, SPEC §11) for `triggers.replay_filter`, as the operator
    `schedule` with the admin role; nothing while no filter is configured. A filter the replay
    call refuses raises its ApiError (a failed run). `now` is not the replay's clock: claims
    age by the real one."""
    flt = svc.settings.triggers.replay_filter
    if not flt:
        return {"skipped": "triggers.replay_filter is not set"}
    import orjson

    from .replay import replay_dlq
    from .service import Operator

    body: dict[str, Any] = {"filter": dict(flt)}
    if svc.settings.triggers.replay_rate_limit is not None:
        body["rate_limit"] = svc.settings.triggers.replay_rate_limit
    return replay_dlq(svc, Operator(SCHEDULE_OPERATOR, "admin"), [], orjson.dumps(body))


SCHEDULES: dict[str, Callable[[Service, float], dict[str, Any]]] = {
    "retention": _retention, "replay": _replay}


def run_schedule(kind: str, event: Any, svc: Service | None = None) -> dict[str, Any]:
    """Run the scheduled use case `kind` (a key of SCHEDULES): `{"schedule", "time", "result"}`,
    the result being the use case's own answer. Raises what the use case raises (counted)."""
    svc = svc or service()
    now = schedule_time(event, svc.clock)
    try:
        with stats.trigger("schedule"):  # what a scheduled replay stores counts under `schedule`
            result = SCHEDULES[kind](svc, now)
    except Exception:
        svc.counters.add(trigger_schedule_failures=1)
        log.exception("scheduled %s failed", kind)
        raise
    svc.counters.add(trigger_schedule_runs=1)
    log_event(log, logging.INFO, "schedule", f"scheduled {kind} ran", schedule=kind, time=rfc3339(now),
              result=result)
    return {"schedule": kind, "time": rfc3339(now), "result": result}


# A scheduler's request body is a small JSON object (`{"time": ...}`) or nothing.
MAX_SCHEDULE_BODY = 64 * 1024


async def schedule_endpoint(request: Any, kind: str) -> Any:
    """The HTTP form of a scheduled function (Cloud Scheduler's HTTP target on Google Cloud): POST
    with an optional JSON body `{"time": <RFC 3339 or unix seconds>}`; answers `run_schedule`'s
    result as JSON (200), 400 for a body that is not a JSON object, 405 for another method, 500
    when the use case raised (the scheduler records a failed run and retries per its policy)."""
    import asyncio

    import orjson
    from starlette.responses import Response

    def answer(status: int, body: dict[str, Any]) -> Response:
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    if request.method != "POST":
        return answer(405, {"error": "use POST"})
    body = await request.body()
    if len(body) > MAX_SCHEDULE_BODY:
        return answer(413, {"error": f"the body is over {MAX_SCHEDULE_BODY} bytes"})
    try:
        event = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        return answer(400, {"error": 'expected no body or a JSON object such as {"time": "..."}'})
    try:
        return answer(200, await asyncio.to_thread(run_schedule, kind, event))
    except Exception as exc:
        return answer(500, {"error": f"scheduled {kind} failed: {type(exc).__name__}: {exc}"})
