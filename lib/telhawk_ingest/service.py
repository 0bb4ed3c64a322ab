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
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import ack, ocsf
from .audit import AuditLog
from .auth import Authenticator
from .breaker import Breaker
from .budget import RetryBudget
from .config import HecToken, Settings, load_settings
from .dlq import REASONS, DeadLetterQueue, DlqFilter, make_record, record_cap
from .envelope import Envelope, id_time, parse_time, rfc3339
from .errors import ApiError, DLQUnavailable, HecError, PipelineError
from .hec import HecRequest, endpoint_kind, parse_events, parse_raw, read_body
from .logs import configure as configure_logs
from .normalizers import Registry
from .normalizers.loading import load_registry
from .ratelimit import TokenRates
from .retention import record_dropped
from .retry import Deadline, RetryPolicy, guarded_try, record_try, store_with_retries
from .shedding import InFlight
from .stats import Counters
from .storage import make_backend
from .storage.base import DEFAULT_INDEX, SECONDS_PER_DAY, Item, Outcome, StorageBackend, day_anchor, seconds
from .storage.document import stored_document

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

# A query string as the transport gives it: pairs in order (repeats kept), or a plain mapping.
Query = Mapping[str, str] | Iterable[tuple[str, str]]
# What each operator call understands (SPEC §8); anything else is refused before anything is done.
FILTER_PARAMS = frozenset({"reason", "source_type", "since", "until", "error"})
LIST_PARAMS = FILTER_PARAMS | {"limit", "cursor"}
PURGE_PARAMS = FILTER_PARAMS | {"dry_run"}


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
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after else {}
        return cls(err.status, err.body(), headers)


SUCCESS = {"text": "Success", "code": 0}
# The counter of each DLQ reason (stats.COUNTERS).
_DLQ_COUNTERS = {reason: f"dlq_{reason}" for reason in REASONS}
# The HEC endpoints that take events (hec.endpoint_kind).
INGEST_KINDS = frozenset({"event", "raw"})


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    stored: int = 0
    dead_lettered: int = 0
    dlq_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Prepared:
    """Envelopes normalized and validated, not yet stored (`Service.prepare`): the storage items
    with the envelope of each, and the DLQ records of the events that failed before storage."""

    envelopes: list[Envelope]
    items: list[Item] = field(default_factory=list)
    item_envelopes: list[Envelope] = field(default_factory=list)  # one per item, same order
    failed: list[dict[str, Any]] = field(default_factory=list)
    # DLQ entries named after their envelope ids and created only if absent (dlq.named_stem): set
    # for event-triggered events, whose redelivery must not dead-letter anything twice (SPEC §7).
    named_entries: bool = False


@dataclass(slots=True)
class Staged:
    """A HEC ingest request parsed and prepared, its answer not yet decided (`Service.hec_stage`)."""

    channel: str | None  # the ack channel, when the token has acknowledgement on
    prepared: Prepared


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator: the name goes to the audit log, never the token. `role` is the
    token's (`read` or `admin`, SPEC §9)."""

    name: str
    role: str = "admin"

    def require_admin(self, action: str) -> None:
        """ApiError 403 unless this operator's token has the `admin` role (SPEC §11: `read` tokens
        list, show and read statistics; changing the DLQ takes `admin`)."""
        if self.role != "admin":
            raise ApiError(403, f"{action} needs an operator token with the admin role; "
                                f"this token's role is {self.role!r}; nothing was done")


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        backend: StorageBackend | None = None,
        registry: Registry | None = None,
        validate: Callable[[dict[str, Any]], None] = ocsf.validate,
        authenticator: Authenticator | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend or make_backend(settings)
        self.registry = registry or load_registry(settings.normalizers)
        self.validate = validate
        self.auth = authenticator or Authenticator(
            settings.hec, operator_tokens=[t.token for t in settings.operator.tokens])
        self.counters = Counters(settings.state_path / "counters")
        # The shared counters are also the DLQ's ledger: its limits see every process's writes.
        self.dlq = DeadLetterQueue(settings.dlq, ledger=self.counters,
                                   max_record_bytes=record_cap(settings.hec.max_body_bytes),
                                   on_drop=lambda ids: record_dropped(self.counters, self.audit, ids))
        self.audit = AuditLog(settings.state_path / "audit")
        self.policy = RetryPolicy.from_settings(settings.core)
        # Per process (README, "A failing backend"): the storage breaker (None when disabled), the
        # ingest requests in flight (http.py admits each one here first), the tokens' rate limits
        # and the retry budget (None unless enabled).
        breaker = settings.storage.breaker
        self.breaker = Breaker(breaker.failures, breaker.cooldown_seconds) if breaker.enabled else None
        if self.breaker is not None:  # storage is back: replay what the outage dead-lettered (healing.py)
            self.breaker.on_close(self._heal)
        self.in_flight = InFlight(settings.hec.max_in_flight)
        self.rate_limits = TokenRates(settings.hec.tokens)
        budget = settings.core.retry_budget
        self.retry_budget = RetryBudget(budget.ratio, budget.min_per_second, budget.window_seconds) \
            if budget.enabled else None
        # Looked up on each call unless given, so `received_at` and envelope ids read one clock.
        self.clock = clock or (lambda: time.time())
        self.ack_ids = ack.AckIds()
        self.started = time.monotonic()
        self._operators = {t.token: Operator(t.name, t.role) for t in settings.operator.tokens}
        self._hec_tokens = {t.token for t in settings.hec.tokens}
        # Read once: settings lookups on every event were a tenth of preparing it.
        window = settings.storage.day_window
        self._day_window = (window.back_days, window.ahead_days)
        self._arrival: tuple[str, float] = ("", 0.0)  # the last UUIDv7 time read (_day_anchor)
        self._received: tuple[str, float | None] = ("", None)  # the last received_at parsed (_day_anchor)

    def _heal(self) -> None:
        from .healing import start_healing  # healing builds on this module

        start_healing(self)

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
            if kind == "ack":
                return self.hec_ack(req, token)
            staged = self._stage(req, token, kind)
        except HecError as err:
            return self.hec_refuse(err)
        return self.hec_complete(staged)

    def hec_stage(self, req: HecRequest, token: HecToken) -> Staged | Reply:
        """The first half of `hec` for a POST to the event or raw endpoint (INGEST_KINDS) whose
        token `hec_admit` gave (ValueError for any other request): the channel, the body
        (decompressed), the envelopes, normalized and validated. The refusal when the request is
        refused (nothing of it is stored then).

        Never blocks: no disk, no network, only CPU in proportion to the body, so an event loop may
        run it. Then `hec_submit` and `hec_complete` finish the request.
        """
        kind = endpoint_kind(req.path)
        if kind not in INGEST_KINDS or req.method != "POST":
            raise ValueError(f"hec_stage takes a POST to an ingest endpoint, not {req.method} {req.path}")
        try:
            return self._stage(req, token, kind)
        except HecError as err:
            return self.hec_refuse(err)

    def _stage(self, req: HecRequest, token: HecToken, kind: str) -> Staged:
        # Like authentication, the channel depends on headers and query only: checked before the body.
        channel = ack.channel(req) if token.ack else None
        limits = self.settings.hec
        body = read_body(req, limits.max_body_bytes, limits.max_decompression_ratio)
        received_at = rfc3339(self.clock())
        if kind == "raw":
            envelopes = parse_raw(body, req, token, received_at, limits.max_events_per_request)
        else:
            envelopes = parse_events(body, token, received_at, limits.max_events_per_request)
        if token.rate_limit is not None:
            try:
                self.rate_limits.admit(token, len(envelopes))
            except HecError:
                self.counters.add(requests_rate_limited=1)
                raise
        return Staged(channel, self.prepare(envelopes))

    def hec_submit(self, staged: Staged, done: Callable[[list[Outcome]], None]) -> bool:
        """Start the first try at storing a staged request without waiting for it: `done(outcomes)`
        is called from the storage writer's thread once it is over (one outcome per item). Only
        when the backend takes a batch without blocking (`enqueue`: the local store's writer), the
        request's items fit in one bulk chunk (`storage.bulk_max_events`), and no event failed
        before storage (those must be admitted by the DLQ before anything is stored, SPEC §2).
        False otherwise, and nothing was started: `hec_complete(staged)` stores it all."""
        enqueue = getattr(self.backend, "enqueue", None)
        prepared = staged.prepared
        if enqueue is None or prepared.failed or len(prepared.items) > self.settings.storage.bulk_max_events:
            return False
        if self.breaker is not None and not self.breaker.closed:
            return False  # the breaker decides in `finish` whether to try at all
        enqueue(prepared.items, done)
        return True

    def hec_complete(self, staged: Staged, first: Sequence[Outcome] | None = None) -> Reply:
        """The answer to a staged request once every event is safe (`finish`; `first`: the
        outcomes `hec_submit` called back with, in item order).

        Blocks while storing, retrying or writing the DLQ; it does none of them, and so never
        blocks, when nothing failed before storage and every outcome in `first` is stored.
        """
        try:
            result = self.finish(staged.prepared, first)
        except DLQUnavailable as err:
            log.error("DLQ unavailable, refusing the request so the client keeps it: %s", err)
            self.counters.add(requests_rejected=1)
            return Reply.hec(err.as_hec_error())
        body = dict(SUCCESS)
        if staged.channel is not None:
            # Handed out only here, in a 200 answer: an ack id always stands for durable events.
            body["ackId"] = self.ack_ids.next_id(staged.channel)
        if result.dead_lettered:
            body.update(accepted=result.accepted, dead_lettered=result.dead_lettered)
        return Reply(200, body)

    def hec_abandoned(self, outcomes: list[Outcome]) -> None:
        """The first try's outcomes of a submitted request whose answer was not sent (its task was
        cancelled at shutdown): the stored events are counted; nothing is retried or dead-lettered,
        since the client, told to try again, sends the whole request again."""
        stored = sum(1 for outcome in outcomes if outcome.stored)
        self.counters.add(stored=stored, stored_first_try=stored)

    def hec_ack(self, req: HecRequest, token: HecToken) -> Reply:
        """`POST /services/collector/ack` for an authenticated token (SPEC §3; ack.py).

        Raises HecError: 14 when the token has acknowledgement off, 10 or 11 for the channel,
        6 for a body that is not `{"acks": [ids]}`, and read_body's 413 or 6 as on ingest.
        """
        if not token.ack:
            raise HecError(14)
        ack.channel(req)
        limits = self.settings.hec
        ack_ids = ack.parse_ack_query(read_body(req, limits.max_body_bytes, limits.max_decompression_ratio))
        return Reply(200, ack.ack_answer(ack_ids))

    def hec_admit(self, req: HecRequest) -> HecToken | Reply | None:
        """The part of `hec` that needs no body: method, path, headers and query string only.

        SPEC §3: authentication comes before the body is read. Returns the token of an
        authenticated POST to an ingest or ack endpoint (read the body, then call `hec(req, token)`),
        the refusal when the credential, the data channel or acknowledgement (codes 10, 11, 14) is
        refused, or None when `hec(req)` answers without a body
        (health, unknown path, wrong method). Blocks while asking the remote auth service, which
        only happens when `hec.auth_url` is set.
        """
        kind = endpoint_kind(req.path)
        if kind is None or kind == "health" or req.method != "POST":
            return None
        try:
            token = self.auth.authenticate(req)
            if kind == "ack" and not token.ack:
                raise HecError(14)
            if token.ack:
                ack.channel(req)  # 10 or 11, from the headers and query alone
        except HecError as err:
            return self.hec_refuse(err)
        return token

    def hec_shed(self, path: str) -> Reply:
        """The 503 code 9 for an ingest request refused for `hec.max_in_flight` (shedding.py),
        counted in `requests_shed`."""
        self.counters.add(requests_shed=1)
        return Reply.hec(self.in_flight.refusal(path))

    def hec_refuse(self, err: HecError) -> Reply:
        """The answer to a refused HEC request, counted in `requests_rejected`."""
        if err.status >= 500:
            log.warning("HEC request refused: %s %s", err.code, err)
        self.counters.add(requests_rejected=1)
        return Reply.hec(err)

    def hec_health(self) -> Reply:
        """17 while ingest can keep an event somewhere; 18 exactly when it could neither store nor
        dead-letter one (SPEC §3). The DLQ side is the check ingest itself runs (DeadLetterQueue
        .refusal); the storage side is the backend's own `healthy()`, asked only when the DLQ would
        refuse (for OpenSearch it is a request)."""
        if self.dlq.refusal() is None or self.backend.healthy():
            return Reply(200, {"text": "HEC is healthy", "code": 17})
        return Reply.hec(HecError(18))

    def ingest(self, envelopes: list[Envelope]) -> IngestResult:
        """Normalize, validate, store and dead-letter; return only when every event is safe.

        Raises DLQUnavailable when an event that needs the DLQ cannot be written to it (SPEC §2).
        The failures known before storing (normalization, validation) are admitted by the DLQ
        first, against its writability and limits: if it cannot take them all, the request is
        refused before anything of it is stored. Storage failures are known only after storing;
        if the DLQ cannot take those, the answer is 503 too, with the rest of the request stored:
        a replayed envelope keeps its id, so storage (idempotent by `_id`, SPEC §6) keeps it once,
        but a plain HEC resend carries new ids (README: "When the DLQ cannot take more").
        """
        return self.finish(self.prepare(envelopes))

    def prepare(self, envelopes: list[Envelope]) -> Prepared:
        """Normalize and validate every envelope: `ingest`'s first half. CPU only, never blocks."""
        prepared = Prepared(envelopes)
        items, item_envelopes, failed = prepared.items, prepared.item_envelopes, prepared.failed
        for envelope in envelopes:
            try:
                items.append(self._prepare(envelope))
                item_envelopes.append(envelope)
            except PipelineError as err:
                failed.append(make_record(envelope.to_dict(), err.reason, err.message, 1, err.details,
                                          self.clock()))
            except Exception as exc:
                # A fault in a stage costs this event, not the request (and not a 500 that would
                # make the client resend the rest): it is dead-lettered with the message.
                log.exception("event %s failed unexpectedly before storage", envelope.id)
                failed.append(make_record(envelope.to_dict(), "normalization_failed",
                                          f"unexpected {type(exc).__name__}: {exc}", 1,
                                          {"exception": type(exc).__name__}, self.clock()))
        return prepared

    def finish(self, prepared: Prepared, first: Sequence[Outcome] | None = None) -> IngestResult:
        """Store and dead-letter what `prepare` gave: `ingest`'s second half; raises DLQUnavailable
        as `ingest` does. `first`: the outcomes of a first try at storing already made
        (`hec_submit`), one per item.

        Storing ends within `core.request_deadline_seconds` of this call, and at once while the
        storage breaker is open: the events not stored then are dead-lettered (retry.py).
        """
        items = prepared.items
        breaker = self.breaker
        if first is not None:
            record_try(breaker, first)
        deadline = Deadline.start(self.settings.core.request_deadline_seconds)
        if self.retry_budget is not None and items:
            self.retry_budget.first(-(-len(items) // self.settings.storage.bulk_max_events))  # the chunks
        if items and not prepared.failed and len(items) <= self.settings.storage.bulk_max_events:
            if first is None and (breaker is None or breaker.closed):
                first = guarded_try(self.backend, items, breaker, deadline)
            if first is not None and all(outcome.stored for outcome in first):
                # Nothing to retry or dead-letter: what the general path below concludes, in short.
                self.counters.add(stored=len(items), stored_first_try=len(items))
                return IngestResult(len(prepared.envelopes), len(items))
        failed = list(prepared.failed)
        with self.dlq.reserve(failed, self.clock(), named=prepared.named_entries) as held:
            stored, retries, storage_failed = self._store(prepared.items, prepared.item_envelopes, first,
                                                          deadline)
            try:
                held.add(storage_failed, self.clock())
                ids = held.write()
            except DLQUnavailable:
                self.counters.add(stored=stored, storage_retries=retries)  # stored all the same
                raise
        failed += storage_failed
        deltas = {"stored": stored, "storage_retries": retries}
        for record in failed:
            if record["id"] in held.existing:
                continue  # dead-lettered by an earlier delivery of its message (dlq.named_stem)
            counter = _DLQ_COUNTERS[record["reason"]]
            deltas[counter] = deltas.get(counter, 0) + 1
        self.counters.add(**deltas)
        return IngestResult(len(prepared.envelopes), stored, len(failed), ids)

    def _store(self, items: list[Item], envelopes: list[Envelope], first: Sequence[Outcome] | None = None,
               deadline: Deadline | None = None) -> tuple[int, int, list[dict[str, Any]]]:
        """Store items in bulk chunks with retries: (stored, retries, DLQ records of the failures).
        `first`: the first try's outcomes when it was already made, one per item (and recorded
        on the breaker). `deadline`: shared by every chunk."""
        retries = 0

        def count_retry(n: int, _wait: float) -> None:
            nonlocal retries
            retries += n

        stored = first_try = 0
        failed: list[dict[str, Any]] = []
        size = self.settings.storage.bulk_max_events
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            finals = store_with_retries(self.backend, chunk, self.policy, count_retry,
                                        None if first is None else first[start:start + size],
                                        breaker=self.breaker, deadline=deadline, budget=self.retry_budget)
            for offset, final in enumerate(finals):
                if final.outcome.stored:
                    stored += 1
                    first_try += final.attempts == 1
                    continue
                envelope = envelopes[start + offset]
                failed.append(make_record(
                    envelope.to_dict(), "storage_failed", final.outcome.error, final.attempts,
                    final.outcome.details, self.clock(),
                ))
        # Counted here: stored events count whether or not the DLQ then takes the failures (finish).
        self.counters.add(stored_first_try=first_try)
        return stored, retries, failed

    def _prepare(self, envelope: Envelope) -> Item:
        """Normalize and validate one event into a storage item; PipelineError when it fails."""
        event = self.registry.normalize(envelope)
        self.validate(event)
        return Item(envelope.id, envelope.index or DEFAULT_INDEX, self._day_anchor(envelope, event),
                    stored_document(event, envelope))

    def _day_anchor(self, envelope: Envelope, event: dict[str, Any]) -> float:
        """The time whose UTC day the event is stored under: SPEC §3's window rule (`day_anchor`).

        The event's time is the HEC `time` when the client sent one, else the OCSF `time` (epoch
        milliseconds); neither is rescaled or changed in the document. Arrival is the envelope id's
        time (UUIDv7), so it is the same on every try, replay and redelivery; but only within
        `[received_at - replay_back_days, received_at + ahead_days]` (config.DayWindow), since an
        envelope posted back to HEC brings its id from the client, while `received_at` is always
        the server's. Otherwise, and for an id that is not UUIDv7, arrival is `received_at`.
        """
        given = envelope.attributes.get("time")
        event_time = seconds(given) if given is not None else seconds(event.get("time"), 1000)
        # The ids of one request mostly share their millisecond: its time is read once. A UUIDv7
        # whose first 13 characters (the time and its dash) are those of the last one read has that
        # one's time; what else id_time checks (length, version, variant) is checked here.
        eid = envelope.id
        known, arrival = self._arrival
        if not (eid[:13] == known and len(eid) == 36 and eid[14] == "7" and eid[19] in "89abAB"):
            arrival = id_time(eid)
            if arrival is not None:
                self._arrival = (eid[:13], arrival)
        # The request's arrival (received_at, the server's) is shared by all its envelopes: parsed once.
        text, received = self._received
        if envelope.received_at != text:
            try:
                received = seconds(parse_time(envelope.received_at))
            except ValueError:
                received = None
            self._received = (envelope.received_at, received)
        # A posted-back envelope's id counts only within replay_back_days of this arrival: made-up
        # ids cannot pick storage days of their own.
        window = self.settings.storage.day_window
        if received is not None and (arrival is None or not (
                received - window.replay_back_days * SECONDS_PER_DAY <= arrival
                <= received + window.ahead_days * SECONDS_PER_DAY)):
            arrival = received
        back_days, ahead_days = self._day_window
        return day_anchor(event_time, self.clock() if arrival is None else arrival, back_days, ahead_days)

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
        who = self._operators.get(credential)
        if who is None:
            raise ApiError(401, "unknown operator token")
        return who

    def list_dlq(self, who: Operator, params: Query) -> dict[str, Any]:
        """A page of entries (SPEC §8); ApiError 400 for a parameter not in LIST_PARAMS."""
        query = parse_query(params, LIST_PARAMS)
        flt = parse_filter(query)
        limit = parse_limit(query.get("limit"))
        events, total, next_cursor = self.dlq.list(flt, limit, query.get("cursor") or None)
        self.audit.record(who.name, "list_dlq", len(events), query)
        return {"events": events, "count": total, "next_cursor": next_cursor}

    def purge_dlq(self, who: Operator, params: Query) -> dict[str, Any]:
        """Delete the matching entries (SPEC §8); ApiError 400, deleting nothing, for a parameter
        not in PURGE_PARAMS: a typo must never widen a filtered purge into a purge of everything."""
        who.require_admin("purge")
        query = parse_query(params, PURGE_PARAMS)
        if parse_flag(query, "dry_run"):
            matched, ids = self.dlq.purge_preview(parse_filter(query))
            self.audit.record(who.name, "purge_dlq", 0, {**query, "would_purge": matched})
            return {"status": "dry_run", "dry_run": True, "purged": 0, "would_purge": matched, "ids": ids}
        purged = self.dlq.purge(parse_filter(query))
        self.counters.add(dlq_purged=purged)
        self.audit.record(who.name, "purge_dlq", purged, query)
        return {"status": "purged", "purged": purged}

    def healthz(self) -> dict[str, Any]:
        totals = self.counters.totals()
        dead_lettered = sum(totals[f"dlq_{reason}"] for reason in REASONS)
        dlq_stats = self.dlq.stats()
        storage_healthy = self.backend.healthy()
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
                "temp_files": dlq_stats["temp_files"],
                "accepting": dlq_stats["accepting"],
                "refusal": dlq_stats["refusal"],
                "pending_bytes": dlq_stats["pending_bytes"],
                "max_pending_files": self.dlq.max_pending_files,
                "max_pending_bytes": self.dlq.max_pending_bytes,
                "free_bytes": dlq_stats["free_bytes"],
                "by_reason": {reason: totals[f"dlq_{reason}"] for reason in REASONS},
                "full_policy": self.dlq.full_policy,
                "dropped": totals["dlq_dropped"],
                "expired": totals["dlq_expired"],
            },
            "storage": {"backend": self.backend.name, "healthy": storage_healthy,
                        "retries": totals["storage_retries"],
                        # This process's breaker (each process has its own).
                        "breaker": self.breaker.snapshot() if self.breaker else {"state": "disabled"},
                        "request_deadline_seconds": self.settings.core.request_deadline_seconds,
                        "retry_budget": self.retry_budget.snapshot() if self.retry_budget else None},
            "hec_health_code": self.hec_health().body["code"],
            "requests_rejected": totals["requests_rejected"],
            # Events stored by a replay count here, not in `stored` (replay.py: `processed` counts
            # each event once); `failed`: replays that failed again, their entries rewritten.
            "replayed": {"stored": totals["replay_stored"], "failed": totals["replay_failed"]},
            # requests_shed: every instance on the volume; the rest: this process.
            "shedding": {"requests_shed": totals["requests_shed"], **self.in_flight.snapshot(),
                         "requests_rate_limited": totals["requests_rate_limited"],
                         "rate_limited_here": self.rate_limits.limited},
        }


def parse_query(params: Query, known: frozenset[str]) -> dict[str, str]:
    """The query as a dict, or ApiError 400 naming every parameter the call does not take, every
    one given twice and every one given empty (SPEC §8: nothing is changed by a request that was
    not understood). Names are case-sensitive: `LIMIT` is not `limit`."""
    pairs = list(params.items() if isinstance(params, Mapping) else params)
    unknown = sorted({name for name, _ in pairs if name not in known})
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise ApiError(400, f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}: this call takes {takes}; nothing was done")
    repeated = sorted(name for name, n in Counter(name for name, _ in pairs).items() if n > 1)
    if repeated:
        raise ApiError(400, f"query parameter {', '.join(map(repr, repeated))} given more than once; "
                            "nothing was done")
    # `?reason=` from a script's unset variable must not read as "no filter": a purge would then
    # delete every entry. An empty value is refused; to not filter, leave the parameter out.
    empty = sorted(name for name, value in pairs if not value.strip())
    if empty:
        raise ApiError(400, f"query parameter {', '.join(map(repr, empty))} is empty; leave a parameter "
                            "out to not use it; nothing was done")
    return dict(pairs)


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


def parse_flag(query: Mapping[str, str], key: str) -> bool:
    """A yes/no query parameter: `true`/`1` or `false`/`0` (any case); absent is false. ApiError
    400 for anything else, so `dry_run=yes-please` never runs for real."""
    value = query.get(key)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, f"{key}: expected true or false, got {value[:40]!r}; nothing was done")


# Unix seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
MIN_TIME_S = -62_135_596_800.0
MAX_TIME_S = 253_402_300_799.0


def _time_param(query: Mapping[str, str], key: str) -> float | None:
    """`since`/`until` of the list, purge and replay filters as unix seconds: RFC 3339 text or a
    finite number. ApiError 400 otherwise, `nan`, `inf` and `-inf` included (float() reads them,
    but they are no time: `nan` matched nothing, `inf` everything)."""
    value = query.get(key)
    if not value:
        return None
    try:
        seconds = parse_time(value)
    except ValueError:
        seconds = math.nan
    # Finite and within what RFC 3339 can write (years 1 to 9999): `1e308` is no time either.
    if not (math.isfinite(seconds) and MIN_TIME_S <= seconds <= MAX_TIME_S):
        raise ApiError(400, f"{key}: expected RFC 3339 or unix seconds, got {value!r:.80}")
    return seconds


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
    """The process's Service, built from the settings on first use (after any fork); the process's
    logs are configured from the same settings then (logs.py), so a function served alone by
    functions-framework writes JSON lines too."""
    global _service
    if _service is None:
        with _service_lock:
            if _service is None:
                settings = load_settings()
                configure_logs(settings.log.level, settings.log.format)
                _service = Service(settings)
    return _service
