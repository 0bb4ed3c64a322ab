"""The use cases: ingest, list, purge, health. No Flask and no os.environ here.

Ingest runs the whole pipeline inside the request (SPEC §1): authenticate, read and parse the whole
body, normalize and validate each event, store the good ones with retries, and dead-letter every
event that failed. The answer is 200 only when every event is stored or durably dead-lettered
(SPEC §2); when the DLQ cannot take an event that needs it, the answer is 503 code 9 and the client
keeps the data.

Handlers get a `Service` from `service()`, built once per process from the settings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import ocsf
from .audit import AuditLog
from .auth import Authenticator
from .config import HecToken, Settings, load_settings
from .dlq import REASONS, DeadLetterQueue, DlqFilter, make_record
from .envelope import Envelope, parse_time, rfc3339
from .errors import ApiError, DLQUnavailable, HecError, PipelineError
from .hec import HecRequest, endpoint_kind, parse_events, parse_raw, read_body
from .normalizers import Registry, default_registry
from .retry import RetryPolicy, store_with_retries
from .stats import Counters
from .storage import make_backend
from .storage.base import DEFAULT_INDEX, Item, StorageBackend

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(slots=True)
class Reply:
    """A JSON answer: status, body and extra headers. http.py turns it into a response."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def hec(cls, err: HecError) -> Reply:
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after else {}
        return cls(err.status, err.body(), headers)

    @classmethod
    def api(cls, err: ApiError) -> Reply:
        return cls(err.status, err.body())


SUCCESS = {"text": "Success", "code": 0}


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    stored: int = 0
    dead_lettered: int = 0
    dlq_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator: the name goes to the audit log, never the token."""

    name: str


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        backend: StorageBackend | None = None,
        registry: Registry | None = None,
        validate: Callable[[dict[str, Any]], None] = ocsf.validate,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self.registry = registry or default_registry()
        self.validate = validate
        self.auth = authenticator or Authenticator(settings.hec)
        self.dlq = DeadLetterQueue(settings.dlq)
        self.counters = Counters(settings.state_path / "counters")
        self.audit = AuditLog(settings.state_path / "audit")
        self.policy = RetryPolicy.from_settings(settings.core)
        self.clock = clock
        self.started = time.monotonic()
        self._operators = {t.token: t.name for t in settings.operator.tokens}
        self._hec_tokens = {t.token for t in settings.hec.tokens}

    # -- HEC ------------------------------------------------------------------------------

    def hec(self, req: HecRequest, token: HecToken | None = None) -> Reply:
        """Answer one HEC request; every failure is a HEC-shaped answer, never an exception.

        `token` is what `hec_admit` returned for this request when the caller authenticated it
        before reading its body; without it the request is authenticated here.
        """
        kind = endpoint_kind(req.path)
        try:
            if kind is None:
                raise HecError(6, status=404, detail=f"no HEC endpoint at {req.path}")
            if kind == "health":
                if req.method not in ("GET", "HEAD"):
                    raise HecError(6, status=405, detail="use GET for the health endpoint")
                return self.hec_health()
            if req.method != "POST":
                raise HecError(6, status=405, detail=f"{req.method} is not allowed here; use POST")
            if token is None:
                token = self.auth.authenticate(req)
            body = read_body(req, self.settings.hec.max_body_bytes)
            received_at = rfc3339(self.clock())
            if kind == "raw":
                envelopes = parse_raw(body, req, token, received_at)
            else:
                envelopes = parse_events(body, token, received_at)
            result = self.ingest(envelopes)
        except HecError as err:
            return self.hec_refuse(err)
        except DLQUnavailable as err:
            log.error("DLQ unavailable, refusing the request so the client keeps it: %s", err)
            self.counters.add(requests_rejected=1)
            return Reply.hec(err.as_hec_error())
        body = dict(SUCCESS)
        if result.dead_lettered:
            body.update(accepted=result.accepted, dead_lettered=result.dead_lettered)
        return Reply(200, body)

    def hec_admit(self, req: HecRequest) -> HecToken | Reply | None:
        """The part of `hec` that needs no body: method, path, headers and query string only.

        SPEC §3: authentication comes before the body is read. Returns the token of an
        authenticated POST to an ingest endpoint (read the body, then call `hec(req, token)`), the
        refusal when the credential is refused, or None when `hec(req)` answers without a body
        (health, unknown path, wrong method). Blocks while asking the remote auth service, which
        only happens when `hec.auth_url` is set.
        """
        kind = endpoint_kind(req.path)
        if kind is None or kind == "health" or req.method != "POST":
            return None
        try:
            return self.auth.authenticate(req)
        except HecError as err:
            return self.hec_refuse(err)

    def hec_refuse(self, err: HecError) -> Reply:
        """The answer to a refused HEC request, counted in `requests_rejected`."""
        if err.status >= 500:
            log.warning("HEC request refused: %s %s", err.code, err)
        self.counters.add(requests_rejected=1)
        return Reply.hec(err)

    def hec_health(self) -> Reply:
        """17 while events can be kept somewhere; 18 when the DLQ is full and storage is failing."""
        if self.dlq.accepting() or self.backend.healthy():
            return Reply(200, {"text": "HEC is healthy", "code": 17})
        return Reply.hec(HecError(18))

    def ingest(self, envelopes: list[Envelope]) -> IngestResult:
        """Normalize, validate, store and dead-letter; return only when every event is safe.

        Raises DLQUnavailable when an event that needs the DLQ cannot be written to it.
        """
        items: list[Item] = []
        stored_envelopes: list[Envelope] = []
        failed: list[dict[str, Any]] = []
        for envelope in envelopes:
            try:
                items.append(self._prepare(envelope))
                stored_envelopes.append(envelope)
            except PipelineError as err:
                failed.append(make_record(envelope.to_dict(), err.reason, err.message, 1, err.details,
                                          self.clock()))
        if failed:
            # Fail before storing anything, so a client resending after the 503 adds no duplicates.
            self.dlq.check_writable()
        retries = 0

        def count_retry(n: int, _wait: float) -> None:
            nonlocal retries
            retries += n

        stored = 0
        for start in range(0, len(items), self.settings.storage.bulk_max_events):
            chunk = items[start:start + self.settings.storage.bulk_max_events]
            finals = store_with_retries(self.backend, chunk, self.policy, count_retry)
            for offset, final in enumerate(finals):
                if final.outcome.stored:
                    stored += 1
                    continue
                envelope = stored_envelopes[start + offset]
                failed.append(make_record(
                    envelope.to_dict(), "storage_failed", final.outcome.error, final.attempts,
                    final.outcome.details, self.clock(),
                ))
        ids = self.dlq.write_many(failed, self.clock()) if failed else []
        by_reason = {reason: 0 for reason in REASONS}
        for record in failed:
            by_reason[record["reason"]] += 1
        self.counters.add(
            stored=stored,
            storage_retries=retries,
            **{f"dlq_{reason}": n for reason, n in by_reason.items()},
        )
        return IngestResult(len(envelopes), stored, len(failed), ids)

    def _prepare(self, envelope: Envelope) -> Item:
        """Normalize and validate one event into a storage item; PipelineError when it fails."""
        event = self.registry.normalize(envelope)
        self.validate(event)
        when = envelope.time
        if when is None:
            ocsf_time = event.get("time")  # OCSF time is epoch milliseconds
            if isinstance(ocsf_time, int | float):
                when = ocsf_time / 1000
            else:
                when = parse_time(envelope.received_at)
        return Item(envelope.id, envelope.index or DEFAULT_INDEX, when, event)

    # -- operators -----------------------------------------------------------------------

    def operator(self, authorization: str | None) -> Operator:
        """The operator behind an `Authorization: Bearer <token>` header (SPEC §8)."""
        if not authorization:
            raise ApiError(401, "an operator credential is required: Authorization: Bearer <token>")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if credential in self._hec_tokens:
            raise ApiError(403, "a HEC token cannot be used for operator calls")
        if scheme.lower() != "bearer" or not credential:
            raise ApiError(401, "expected Authorization: Bearer <operator token>")
        name = self._operators.get(credential)
        if name is None:
            raise ApiError(401, "unknown operator token")
        return Operator(name)

    def list_dlq(self, who: Operator, query: Mapping[str, str]) -> dict[str, Any]:
        flt = parse_filter(query)
        limit = parse_limit(query.get("limit"))
        events, total, next_cursor = self.dlq.list(flt, limit, query.get("cursor") or None)
        self.audit.record(who.name, "list_dlq", len(events), query)
        return {"events": events, "count": total, "next_cursor": next_cursor}

    def purge_dlq(self, who: Operator, query: Mapping[str, str]) -> dict[str, Any]:
        purged = self.dlq.purge(parse_filter(query))
        self.counters.add(dlq_purged=purged)
        self.audit.record(who.name, "purge_dlq", purged, query)
        return {"status": "purged", "purged": purged}

    def healthz(self) -> dict[str, Any]:
        totals = self.counters.totals()
        dead_lettered = sum(totals[f"dlq_{reason}"] for reason in REASONS)
        dlq_stats = self.dlq.stats()
        return {
            "uptime_seconds": int(time.monotonic() - self.started),
            "processed": totals["stored"] + dead_lettered,
            "failed": dead_lettered,
            "stored": totals["stored"],
            "dlq_written": dead_lettered,
            "dlq_stats": {
                "enabled": dlq_stats["enabled"],
                "written": dead_lettered,
                "pending_files": dlq_stats["pending_files"],
                "base_path": dlq_stats["base_path"],
                "corrupt_files": dlq_stats["corrupt_files"],
                "unverified_files": dlq_stats["unverified_files"],
                "accepting": dlq_stats["accepting"],
                "free_bytes": dlq_stats["free_bytes"],
                "by_reason": {reason: totals[f"dlq_{reason}"] for reason in REASONS},
            },
            "storage": {"backend": self.backend.name, "retries": totals["storage_retries"]},
            "requests_rejected": totals["requests_rejected"],
        }


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise ApiError(400, f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {value!r}") \
            from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def _time_param(query: Mapping[str, str], key: str) -> float | None:
    value = query.get(key)
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ApiError(400, f"{key}: expected RFC 3339 or unix seconds, got {value!r}") from None


def parse_filter(query: Mapping[str, str]) -> DlqFilter:
    reason = query.get("reason") or None
    if reason is not None and reason not in REASONS:
        raise ApiError(400, f"reason: expected one of {', '.join(REASONS)}, got {reason!r}")
    return DlqFilter(
        reason=reason,
        source_type=query.get("source_type") or None,
        since=_time_param(query, "since"),
        until=_time_param(query, "until"),
        error=query.get("error") or None,
    )


_service: Service | None = None
_service_lock = threading.Lock()


def service() -> Service:
    """The process's Service, built from the settings on first use (after any fork)."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                _service = Service(load_settings())
    return _service
