"""Prometheus metrics (SPEC §11 `GET /metrics`): the volume-wide counters and DLQ state, and this
instance's request latencies, in the Prometheus text format (prometheus_client).

Two kinds of numbers, and how to aggregate them (README, "Metrics"):

- Counters and DLQ gauges come from the shared counters (stats.py) and the DLQ directory at
  scrape time, through a custom collector (`VolumeCollector`): every instance sharing the DLQ
  volume reports the same values, equal to `healthz`, kept across restarts. Aggregate them across
  instances with `max()`, never `sum()` (which would count each event once per instance).
- Request latency histograms (`LATENCY`) are this process's own, in memory: each instance (each
  gunicorn worker, each serverless instance) answers for itself, so `sum()` them across
  instances. No per-process files (prometheus_client's multiprocess mode), which would pile up
  on serverless platforms where every cold start is a new process.

The counters map generically: `EVENT_COUNTERS` and `PLAIN_COUNTERS` name the stats.COUNTERS they
read; a name not in stats.COUNTERS (a counter this build does not have) is left out of the
exposition, so a new counter takes one line here. Events carry a `trigger` label
(stats.TRIGGERS): the counters' per-trigger copies (stats.by_trigger) give the event-driven
triggers' counts, and HTTP's are the totals less those.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import stats
from .dlq import REASONS

if TYPE_CHECKING:
    from starlette.responses import Response

    from .service import Service

PREFIX = "telhawk_"


@dataclass(frozen=True, slots=True)
class PlainCounter:
    """A Prometheus counter read from one stats counter, with fixed labels."""

    metric: str  # family name without `_total`
    counter: str  # its stats.COUNTERS name
    doc: str
    labels: Mapping[str, str] = field(default_factory=dict)


# Counters of events, by trigger: (family, stats counter, help). `received` and `dlq_written`
# (which add a `reason` label) are built from these in `VolumeCollector`.
EVENT_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("events_stored", "stored",
     "Events stored (every instance on the DLQ volume; healthz `stored`)."),
    ("events_stored_first_try", "stored_first_try",
     "Events stored at their first try, without a retry."),
)
_TRIGGER_FAILURES_DOC = ("Messages or records handed back to their platform to be delivered again "
                         "(an event could be neither stored nor dead-lettered).")
_SCHEDULE_DOC = "Scheduled runs (DLQ retention, replay), by outcome."
_REPLAY_DOC = "DLQ entries replayed, by outcome: stored (entry removed) or failed again (entry kept)."
PLAIN_COUNTERS: tuple[PlainCounter, ...] = (
    PlainCounter("storage_retries", "storage_retries",
                 "Storage retries, one per event per retry (healthz `storage.retries`)."),
    PlainCounter("requests_rejected", "requests_rejected",
                 "HEC requests refused (4xx, and 503 when the DLQ could not take their failures)."),
    PlainCounter("requests_shed", "requests_shed",
                 "Ingest requests shed at once with 503 code 9 (in-flight limit reached)."),
    PlainCounter("requests_rate_limited", "requests_rate_limited",
                 "Ingest requests refused with 503 code 9 for their token's rate limit."),
    PlainCounter("dlq_replayed", "replay_stored", _REPLAY_DOC, {"outcome": "stored"}),
    PlainCounter("dlq_replayed", "replay_failed", _REPLAY_DOC, {"outcome": "failed"}),
    PlainCounter("dlq_purged", "dlq_purged", "DLQ entries deleted by purges."),
    PlainCounter("dlq_deleted", "dlq_deleted", "DLQ entries deleted one by one."),
    PlainCounter("dlq_dropped", "dlq_dropped",
                 "DLQ entries dropped to make room (dlq.full_policy: drop_oldest)."),
    PlainCounter("dlq_expired", "dlq_expired", "DLQ entries removed for their age (dlq.max_age)."),
    *(PlainCounter("trigger_failures", f"trigger_{via}_failures", _TRIGGER_FAILURES_DOC, {"trigger": via})
      for via in ("pubsub", "sqs", "kinesis")),
    PlainCounter("schedule_runs", "trigger_schedule_runs", _SCHEDULE_DOC, {"outcome": "ok"}),
    PlainCounter("schedule_runs", "trigger_schedule_failures", _SCHEDULE_DOC, {"outcome": "failed"}),
)
BREAKER_STATES = ("closed", "open", "half_open")
# Request latency buckets (seconds): a single event takes milliseconds; a request waiting out
# storage retries and timeouts takes tens of seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from a request reaching the handler to its answer, this instance only (sum across instances).",
    ["function", "route", "status_class"],
    namespace="telhawk",
    buckets=LATENCY_BUCKETS,
    registry=None,
)


def counted(totals: Mapping[str, int], name: str, via: str) -> int | None:
    """Counter `name`'s value for trigger `via` (stats.TRIGGERS) from `totals`: the per-trigger
    copy for an event-driven trigger, the total less every copy for HTTP. None when this build has
    no such counter; 0 for an event-driven trigger when `name` has no per-trigger copies."""
    if name not in totals:
        return None
    if via != "http":
        return totals.get(stats.trigger_counter(name, via), 0)
    others = sum(totals.get(stats.trigger_counter(name, t), 0) for t in stats.TRIGGERS if t != "http")
    return totals[name] - others


def oldest_entry_age(svc: Service, now: float) -> float:
    """Seconds since the oldest pending DLQ entry first failed (`dlq.oldest_entry_time`); 0 when the DLQ
    is empty. Never negative (another host's clock may be ahead)."""
    oldest = svc.dlq.oldest_entry_time()
    return 0.0 if oldest is None else max(0.0, now - oldest)


class VolumeCollector(Collector):
    """The counters and DLQ gauges of every instance on the DLQ volume, read at each scrape:
    one `healthz()` (gauges) and one read of the shared counters (counters), so counter values
    equal `healthz`'s (`processed`, `stored`, `dlq_stats.by_reason`, `storage.retries`,
    `requests_rejected`) when nothing happens in between."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        health = self.svc.healthz()
        totals = self.svc.counters.totals()
        yield from self._events(totals)
        yield from self._plain(totals)
        yield from self._gauges(health)

    def _events(self, totals: Mapping[str, int]) -> Iterator[Metric]:
        received = CounterMetricFamily(
            PREFIX + "events_received",
            "Events that finished the pipeline: stored or dead-lettered (healthz `processed`).",
            labels=["trigger"])
        written = CounterMetricFamily(
            PREFIX + "dlq_written",
            "Events dead-lettered, by reason (healthz `dlq_stats.by_reason`; their sum: `dlq_written`).",
            labels=["reason", "trigger"])
        families = [(CounterMetricFamily(PREFIX + metric, doc, labels=["trigger"]), counter)
                    for metric, counter, doc in EVENT_COUNTERS if counter in totals]
        for via in stats.TRIGGERS:
            events = 0
            for reason in REASONS:
                value = counted(totals, f"dlq_{reason}", via)
                if value is not None:
                    written.add_metric([reason, via], value)
                    events += value
            stored = counted(totals, "stored", via) or 0
            received.add_metric([via], stored + events)
            for family, counter in families:
                family.add_metric([via], counted(totals, counter, via) or 0)
        yield received
        yield from (family for family, _ in families)
        yield written

    def _plain(self, totals: Mapping[str, int]) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for spec in PLAIN_COUNTERS:
            if spec.counter not in totals:
                continue
            family = families.get(spec.metric)
            if family is None:
                family = families[spec.metric] = CounterMetricFamily(
                    PREFIX + spec.metric, spec.doc, labels=list(spec.labels))
            family.add_metric(list(spec.labels.values()), totals[spec.counter])
        yield from families.values()

    def _gauges(self, health: Mapping[str, Any]) -> Iterator[Metric]:
        dlq = health["dlq_stats"]
        storage = health["storage"]
        yield _gauge("dlq_pending_files", "DLQ entry files pending (healthz `dlq_stats.pending_files`).",
                     dlq["pending_files"])
        yield _gauge("dlq_pending_bytes", "Bytes of the DLQ entry files pending.", dlq["pending_bytes"])
        yield _gauge("dlq_oldest_entry_age_seconds",
                     "Seconds since the oldest pending DLQ entry first failed; 0 when the DLQ is empty.",
                     oldest_entry_age(self.svc, time.time()))
        yield _gauge("dlq_corrupt_files", "DLQ files that match the entry pattern but cannot be read.",
                     len(dlq["corrupt_files"]))
        yield _gauge("dlq_accepting", "1 when the DLQ takes new entries, 0 when it refuses them (full, "
                     "unwritable).", int(bool(dlq["accepting"])))
        if dlq.get("free_bytes") is not None:
            yield _gauge("dlq_free_bytes", "Free bytes on the DLQ volume.", dlq["free_bytes"])
        yield _gauge("storage_healthy", "1 when the storage backend answers its health check, else 0.",
                     int(bool(storage["healthy"])))
        state = _breaker_state(storage.get("breaker"))
        if state is not None:
            breaker = GaugeMetricFamily(PREFIX + "storage_breaker_state",
                                        "The storage circuit breaker: 1 for its current state.",
                                        labels=["state"])
            for name in (*BREAKER_STATES, *([state] if state not in BREAKER_STATES else [])):
                breaker.add_metric([name], int(name == state))
            yield breaker


def _gauge(metric: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + metric, doc, value=value)


def _breaker_state(breaker: Any) -> str | None:
    """The breaker's state from healthz `storage.breaker`: a state name, or a mapping with one
    under `state`; None when healthz has no breaker."""
    if isinstance(breaker, Mapping):
        breaker = breaker.get("state")
    return str(breaker).lower().replace("-", "_") if breaker is not None else None


def exposition(svc: Service, accept: str | None = None) -> tuple[bytes, str]:
    """The metrics document and its Content-Type: Prometheus text (0.0.4), or OpenMetrics when
    the `Accept` header asks for it (prometheus_client's negotiation)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VolumeCollector(svc))
    registry.register(LATENCY)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# -- request latency ---------------------------------------------------------------------------

# The emulator's dispatcher puts the matched function and route in the scope (local/emulator.py).
FUNCTION_KEY = "telhawk.function"
ROUTE_KEY = "telhawk.route"


def request_labels(scope: Mapping[str, Any]) -> tuple[str, str]:
    """(function, route) for a request's latency: the emulator's matched route, else API Gateway's
    (`routeKey` of an HTTP API, method and `resource` of a REST API, through Mangum), else
    `<method> *`; the function from the scope, else the platform's name for this process (one
    function per process there). Route templates, never raw paths: an id in a path must not make a
    new series."""
    event = scope.get("aws.event")
    route = scope.get(ROUTE_KEY)
    if route is None and isinstance(event, Mapping):
        route = event.get("routeKey") or (
            f"{event.get('httpMethod')} {event['resource']}" if event.get("resource") else None)
    method = scope.get("method", "GET")
    return str(scope.get(FUNCTION_KEY) or _platform_function()), str(route or f"{method} *")


@functools.cache
def _platform_function() -> str:
    """The function this process serves, as its platform names it (Lambda, functions-framework,
    Cloud Run), or `unknown`."""
    return (os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or os.environ.get("FUNCTION_TARGET")
            or os.environ.get("K_SERVICE") or "unknown")


@functools.lru_cache(maxsize=1024)
def _series(function: str, route: str, status_class: str) -> Any:
    """LATENCY's child for these labels, looked up once (`labels()` takes a lock each time)."""
    return LATENCY.labels(function, route, status_class)


def observe(scope: Mapping[str, Any], status: int, seconds: float) -> None:
    """Count one answered request in LATENCY (`request_labels`, the status class `2xx`..`5xx`)."""
    function, route = request_labels(scope)
    _series(function, route, f"{status // 100}xx").observe(seconds)


P = ParamSpec("P")


def timed(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Wrap an async handler whose first argument is the Starlette request: its answer's latency
    and status go to LATENCY (an exception counts as a 500, then propagates)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(*args, **kwargs)
            status = response.status_code
            return response
        finally:
            observe(args[0].scope, status, time.perf_counter() - started)  # type: ignore[attr-defined]

    return wrapper
