"""Replaying DLQ entries on the server: `POST /api/v1/dlq/replay` (SPEC §11).

Each entry goes through normalization, validation and storage again (`Service.prepare`, then
`store_with_retries` with the service's retry policy; never through HEC), under its original
envelope, id included, so storage (idempotent by `_id`, SPEC §6) never keeps an event twice.
Stored: the entry is removed. Failed again: the one entry stays, rewritten atomically with
`attempts` + 1 and `error`, `reason`, `stage`, `last_attempt` and `details` of this failure
(`DeadLetterQueue.rewrite`; `timestamp` stays the first failure's).

Entries are claimed before they are read (claims.py), so two replays at once, in two processes or
on two instances sharing the volume, never replay one entry twice; a replay killed midway leaves
its claims, released after `replay.claim_timeout_seconds`, and its entries as they were (an entry
is removed only once its event is stored, so none is lost; one stored and not yet removed when
the replay was killed is stored again, idempotently, by the next).

One call does bounded work: at most `replay.max_entries_per_call` entries and
`replay.time_budget_seconds` (checked between batches of at most `storage.bulk_max_events`),
then answers `next_cursor` (the last entry it looked at; null when none is left) to continue.
`rate_limit` (events per second) paces the batches with the injected clock and sleep.

Counters (healthz `processed` = `stored` + dead-lettered, SPEC §8, stays the count of events that
finished the pipeline, each once): an event stored by a replay counts in `replay_stored`, not in
`stored`, since it already counts as dead-lettered; a replay that fails again counts in
`replay_failed` and writes no new entry, so no `dlq_*` counter moves.

A whole message (`decode_failed`, SPEC §7: an event-triggered message that could not be decoded) is
not one event: it is decoded again (triggers.redecode, the one seam) into the events its delivery
gives, under the same envelope ids, and those go through the steps above. The events that fail get
DLQ entries of their own, named after their envelope ids and created only if absent (as a delivery
writes them, so a redelivery and a replay dead-letter nothing twice); the message's entry is
removed once every event is stored or so dead-lettered (SPEC §2), and stays as it was when the DLQ
cannot take them. Decoding that fails again rewrites the one entry (`attempts` + 1). Counting: the
entry counts once in the answer (`stored` when removed, `failed` when it stays, plus `decoded`:
entries, events, stored, dead_lettered); its stored events in `replay_stored`, its events' new
entries in `dlq_<reason>` (new dead letters), an entry that stays in `replay_failed`. A dry run
decodes it (no claims, no writes) and says what it gives (`decode`). The rate limit counts its
events, `max_entries_per_call` counts the entry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .claims import Claims, Holder
from .dlq import STAGES, DlqFilter, _seconds, _summarize, check_id, make_record
from .envelope import Envelope, rfc3339
from .errors import ApiError, DLQUnavailable
from .retry import Deadline, Final, store_with_retries
from .service import FILTER_PARAMS, Operator, Query, Service, parse_filter, parse_query
from .storage.base import Item, Outcome, StorageBackend
from .triggers import Undecodable, is_whole_message, redecode

log = logging.getLogger(__name__)

BODY_KEYS = frozenset({"ids", "filter", "dry_run", "rate_limit", "cursor"})
# Ids in one request, as many as a listing page holds (service.MAX_LIMIT).
MAX_IDS = 1000
# The largest request body the replay call reads (1000 ids of 52 bytes, and room to spare).
MAX_BODY_BYTES = 256 * 1024
_FORMATS = ("json", "raw")


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay: `ids` (sorted, unique) or `filter`, exactly one of them."""

    ids: tuple[str, ...] | None = None
    filter: DlqFilter | None = None
    dry_run: bool = False
    rate_limit: float | None = None  # events per second; None: as fast as storage takes them
    cursor: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # as given, for the audit log
    # Self-healing's: end the call after a batch in which an entry failed again at storage.
    stop_on_storage_failure: bool = False


@dataclass(slots=True)
class Decoded:
    """Whole messages (`decode_failed` entries) decoded again in one call: `entries` decoded into
    `events`, of which `stored` were stored and `dead_lettered` went into new entries of their
    own (none counted that a delivery had already dead-lettered)."""

    entries: int = 0
    events: int = 0
    stored: int = 0
    dead_lettered: int = 0


@dataclass(slots=True)
class ReplayResult:
    """The counts of one call; `matched` = `stored` + `failed` + `skipped` (dry run: the entries
    it would replay, listed in `ids`, + `skipped`)."""

    dry_run: bool
    matched: int = 0
    stored: int = 0
    failed: int = 0
    skipped: int = 0
    next_cursor: str | None = None
    ids: list[str] = field(default_factory=list)  # dry run: what a replay would take; else: stored
    storage_failed: int = 0  # failed again at storage (self-healing stops on it)
    breaker_open: str = ""  # the open breaker's refusal, when it turned a batch away untried
    decoded: Decoded = field(default_factory=Decoded)
    # Dry run: per whole-message entry, what decoding it again gives ({"events": n} or {"error": ...}).
    decode: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_events: int = 0  # events beyond one per entry (whole messages), for the rate limit

    def answer(self) -> dict[str, Any]:
        """SPEC §11's answer; a dry run also lists the entry ids it would replay (`ids`) and, for
        whole messages, what decoding each again gives (`decode`); a call that decoded whole
        messages again says what became of them (`decoded`: entries, events, stored,
        dead_lettered)."""
        out: dict[str, Any] = {"matched": self.matched, "stored": self.stored, "failed": self.failed,
                               "skipped": self.skipped, "dry_run": self.dry_run,
                               "next_cursor": self.next_cursor}
        if self.dry_run:
            out["ids"] = self.ids
            if self.decode:
                out["decode"] = self.decode
        elif self.decoded.entries:
            out["decoded"] = dataclasses.asdict(self.decoded)
        return out


def _refuse(message: str) -> ApiError:
    return ApiError(400, f"{message}; nothing was done")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _entry_id(value: str, key: str) -> str:
    try:
        return check_id(value)
    except ApiError as err:
        raise _refuse(f"{key}: {err.message}") from None


def parse_request(body: bytes) -> ReplayRequest:
    """The replay body (SPEC §11): `{"ids": [...]}` or `{"filter": {reason, source_type, since,
    until, error}}`, optional `dry_run` (bool), `rate_limit` (events per second, > 0), `cursor`
    (an entry id). ApiError 400 naming every unknown key, or the first value of a wrong type,
    before anything is done (SPEC §8)."""
    if not body.strip():
        raise _refuse('expected a JSON object body: {"ids": [...]} or {"filter": {...}}')
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _refuse(f"the body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _refuse('expected a JSON object body: {"ids": [...]} or {"filter": {...}}')
    _refuse_duplicate_keys(body)
    _refuse_unknown(obj, BODY_KEYS, "body key")
    if ("ids" in obj) == ("filter" in obj):
        raise _refuse('give either "ids" or "filter" (an empty filter {} replays every entry)')
    ids = flt = None
    if "ids" in obj:
        ids = _ids(obj["ids"])
    else:
        flt = _filter(obj["filter"])
    dry_run = obj.get("dry_run", False)
    if type(dry_run) is not bool:
        raise _refuse(f"dry_run: expected true or false, got {dry_run!r:.80}")
    rate = obj.get("rate_limit")
    if rate is not None and not (_is_number(rate) and rate > 0):
        raise _refuse(f"rate_limit: expected events per second, a number above 0, got {rate!r:.80}")
    cursor = obj.get("cursor")
    if cursor is not None:
        if type(cursor) is not str:
            raise _refuse(f"cursor: expected an entry id (a string) or null, got {cursor!r:.80}")
        _entry_id(cursor, "cursor")
    return ReplayRequest(ids, flt, dry_run, None if rate is None else float(rate), cursor, obj)


def _refuse_duplicate_keys(body: bytes) -> None:
    """ApiError 400 naming the first key an object of `body` (valid JSON) gives more than once:
    the parser would keep the last silently, as a query parameter given twice is refused
    (service.parse_query). One more parse of a body of at most MAX_IDS ids: about 0.1 ms."""
    def pairs(members: list[tuple[str, Any]]) -> None:
        seen = set()
        for key, _ in members:
            if key in seen:
                raise _refuse(f"key {key!r:.80} is given more than once in the body")
            seen.add(key)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except RecursionError:  # deeper than Python's parser goes, though orjson took it
        raise _refuse("the body is nested too deeply") from None


def _refuse_unknown(obj: dict[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise _refuse(f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                      f"expected {', '.join(sorted(known))}")


def _ids(value: Any) -> tuple[str, ...]:
    if type(value) is not list or not value:
        raise _refuse("ids: expected a non-empty list of entry ids")
    if len(value) > MAX_IDS:
        raise _refuse(f"ids: at most {MAX_IDS} per call, got {len(value)}")
    for entry_id in value:
        if type(entry_id) is not str:
            raise _refuse(f"ids: expected entry ids (strings), got {entry_id!r:.80}")
        _entry_id(entry_id, "ids")
    return tuple(sorted(set(value)))


def _filter(value: Any) -> DlqFilter:
    """A filter object, checked as the list call's query parameters are (service.parse_filter)."""
    if type(value) is not dict:
        raise _refuse(f"filter: expected an object with any of {', '.join(sorted(FILTER_PARAMS))}")
    _refuse_unknown(value, FILTER_PARAMS, "filter key")
    query = {}
    for key, given in value.items():
        if key in ("since", "until") and _is_number(given):
            given = str(given)
        if type(given) is not str or not given.strip():
            raise _refuse(f"filter.{key}: expected a non-empty string"
                          f"{' (RFC 3339) or unix seconds' if key in ('since', 'until') else ''}, "
                          f"got {given!r:.80}")
        query[key] = given
    try:
        return parse_filter(query)
    except ApiError as err:
        raise _refuse(f"filter.{err.message}") from None


def envelope_of(record: dict[str, Any] | None) -> Envelope | None:
    """The envelope a DLQ record holds, as it was first received (SPEC §4); None when the record
    does not hold one of the shape the service writes (a file planted or edited on the volume)."""
    env = record.get("envelope") if record is not None else None
    if not isinstance(env, dict):
        return None
    texts = [env.get(key) for key in ("id", "source", "source_type", "payload", "received_at")]
    attributes = env.get("attributes")
    if (not all(type(v) is str for v in texts) or env.get("format") not in _FORMATS
            or type(attributes) is not dict):
        return None
    return Envelope(id=env["id"], source=env["source"], source_type=env["source_type"], format=env["format"],
                    payload=env["payload"], attributes=attributes, received_at=env["received_at"])


def refailed(record: dict[str, Any], reason: str, error: str, details: dict[str, Any] | None,
             now: float) -> dict[str, Any]:
    """The record of an entry whose replay failed again: `attempts` + 1, this failure's `error`,
    `reason`, `stage`, `details` and `last_attempt`; `timestamp` and the envelope unchanged."""
    attempts = record.get("attempts")
    out = dict(record)
    out.update(error=error, reason=reason, attempts=(attempts if type(attempts) is int else 1) + 1,
               last_attempt=rfc3339(now), stage=STAGES[reason], details=details or {})
    return out


@dataclass(slots=True)
class Pacer:
    """Paces batches to `rate` events per second from the first one: a batch starts no earlier
    than `sent / rate` seconds after the start. `monotonic` and `sleep` are injected in tests."""

    rate: float | None
    monotonic: Callable[[], float]
    sleep: Callable[[float], None]
    sent: int = 0
    start: float = 0.0

    def __post_init__(self) -> None:
        self.start = self.monotonic()

    def wait(self, deadline: float) -> bool:
        """Wait until the next batch may start; False (without waiting) when that is past
        `deadline` (a monotonic time)."""
        if not self.rate:
            return True
        due = self.start + self.sent / self.rate
        if due > deadline:
            return False
        now = self.monotonic()
        if due > now:
            self.sleep(due - now)
        return True


def _unusable(exc: OSError) -> ApiError:
    return ApiError(503, f"the DLQ folder cannot be used for a replay now ({exc.strerror or exc}); "
                         "nothing was replayed; try again later")


@dataclass(slots=True)
class _Taken:
    entry_id: str
    record: dict[str, Any]
    envelope: Envelope
    # A whole message's (decode_failed) events, decoded again (triggers.redecode); None for an
    # entry of one event.
    events: list[Envelope] | None = None


@dataclass(slots=True)
class _Failure:
    """Why one event of a replay was not stored, for its entry (rewritten or new)."""

    envelope: Envelope
    reason: str
    error: str
    details: dict[str, Any] | None
    attempts: int


@dataclass(slots=True)
class _Tally:
    """What one batch did, applied to the answer and the shared counters at its end."""

    removed: list[str] = field(default_factory=list)  # entries to remove: every event kept
    events_stored: int = 0
    failed: int = 0
    storage_failed: int = 0
    retries: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)  # dlq_<reason> counters of new entries


class _Tried:
    """A storage backend that notes whether any try reached it (an open breaker makes none)."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.tried = False

    def store(self, items: Sequence[Item]) -> list[Outcome]:
        self.tried = True
        return self.backend.store(items)

    def healthy(self) -> bool:
        return self.backend.healthy()

    def close(self) -> None:
        self.backend.close()


class Replayer:
    """Replays entries of one Service's DLQ into its storage backend.

    `clock`: unix seconds (the service's by default), for claims' age and `last_attempt`;
    `monotonic` and `sleep`: for the time budget and the rate limit.
    """

    def __init__(self, svc: Service, *, clock: Callable[[], float] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.svc = svc
        self.settings = svc.settings.replay
        self.clock = clock or svc.clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.claims = Claims(svc.dlq.path, self.settings.claim_timeout_seconds, self.clock)

    def _cool_down_left(self) -> int | None:
        """The `Retry-After` of a call the open breaker turned away (Breaker.retry_after)."""
        return self.svc.breaker.retry_after() if self.svc.breaker is not None else None

    def run(self, req: ReplayRequest) -> ReplayResult:
        """One bounded call (module docstring); every entry-level problem is counted in
        `skipped` or `failed`. When the DLQ folder itself fails (claims or removals cannot be
        made: OSError), the call ends with the batches done so far and a cursor before the batch
        that failed, which the next call replays again; ApiError 503 when not one batch was done."""
        result = ReplayResult(req.dry_run)
        if not req.dry_run:
            try:
                self.claims.release_stale()
            except OSError as exc:
                raise _unusable(exc) from exc
        return self._run(req, result)

    def _run(self, req: ReplayRequest, result: ReplayResult) -> ReplayResult:
        deadline = self.monotonic() + self.settings.time_budget_seconds
        limit = self.settings.max_entries_per_call
        size = self.svc.settings.storage.bulk_max_events
        if req.rate_limit:
            size = max(1, min(size, int(req.rate_limit)))  # no burst above one second's worth
        pacer = Pacer(req.rate_limit, self.monotonic, self.sleep)
        todo = self._candidates(req)
        pending = next(todo, None)
        last = None
        while pending is not None and result.matched < limit:
            if last is not None and (self.monotonic() >= deadline or not pacer.wait(deadline)):
                break
            room = min(size, limit - result.matched)
            batch: list[str] = []
            while pending is not None and len(batch) < room:
                batch.append(pending)
                pending = next(todo, None)
            if req.dry_run:
                self._look(batch, req.filter, result)
            else:
                before = dataclasses.replace(result, ids=list(result.ids),
                                             decoded=dataclasses.replace(result.decoded))
                try:
                    self._replay(batch, req.filter, result)
                except OSError as exc:
                    log.error("replay stopped: the DLQ folder failed: %s", exc)
                    if last is None:
                        raise _unusable(exc) from exc
                    before.next_cursor = last
                    return before
            if result.breaker_open:
                # Storage is down: end the call before the batch it turned away, so that the next
                # call (after the breaker's cool-down) starts with it.
                if last is None:
                    raise ApiError(503, f"{result.breaker_open}; nothing was replayed; try again after "
                                        "the breaker's cool-down", retry_after=self._cool_down_left())
                result.next_cursor = last
                return result
            pacer.sent += len(batch) + result.extra_events
            result.extra_events = 0
            last = batch[-1]
            if req.stop_on_storage_failure and result.storage_failed:
                break
        result.next_cursor = last if pending is not None else None
        return result

    def _candidates(self, req: ReplayRequest) -> Iterator[str]:
        if req.ids is not None:
            return (i for i in req.ids if req.cursor is None or i > req.cursor)
        assert req.filter is not None
        return self.svc.dlq.iter_matching(req.filter, after=req.cursor, parse=False)

    def _readable(self, entry_id: str, flt: DlqFilter | None) -> tuple[dict[str, Any], Envelope] | None:
        """The entry's record read afresh and its envelope, when it still matches the filter."""
        record = self.svc.dlq.read(entry_id)
        if record is None:
            return None
        if flt is not None and flt.needs_content and not flt.matches(_summarize(record, _seconds(entry_id))):
            return None  # rewritten by another replay since it was listed, and no longer matching
        envelope = envelope_of(record)
        return None if envelope is None else (record, envelope)

    def _look(self, batch: list[str], flt: DlqFilter | None, result: ReplayResult) -> None:
        """A dry run: count what a replay would take; nothing is claimed, changed or counted."""
        for entry_id in batch:
            result.matched += 1
            found = self._readable(entry_id, flt)
            if found is None:
                result.skipped += 1
                continue
            result.ids.append(entry_id)
            if is_whole_message(found[0]):
                try:
                    result.decode[entry_id] = {"events": len(redecode(self.svc, found[1]))}
                except Undecodable as exc:
                    result.decode[entry_id] = {"error": str(exc)}

    def _replay(self, batch: list[str], flt: DlqFilter | None, result: ReplayResult) -> None:
        with self.claims.holder() as holder:
            taken: list[_Taken] = []
            for entry_id in batch:
                result.matched += 1
                if not holder.claim(entry_id):  # another replay holds it
                    result.skipped += 1
                    continue
                found = self._readable(entry_id, flt)
                if found is None:  # gone, corrupt, or no longer matching
                    holder.release(entry_id)
                    result.skipped += 1
                    continue
                taken.append(_Taken(entry_id, *found))
            if taken:
                self._settle(taken, holder, result)

    def _settle(self, taken: list[_Taken], holder: Holder, result: ReplayResult) -> None:
        """Normalize, validate and store the taken entries, then remove the stored ones and
        rewrite the ones that failed again; counts in `result` and the shared counters. A whole
        message (`decode_failed`) is decoded again first (triggers.redecode): its events go
        through the same steps, and the entry is removed once each is stored or dead-lettered in
        an entry of its own (module docstring)."""
        svc = self.svc
        now = self.clock()
        ready: list[_Taken] = []
        tally = _Tally()
        for t in taken:
            if is_whole_message(t.record):
                try:
                    t.events = redecode(svc, t.envelope)
                except Undecodable as exc:
                    self._refail(t, holder, "decode_failed", str(exc), exc.details, now, result, tally)
                    continue
                result.decoded.entries += 1
                result.decoded.events += len(t.events)
            ready.append(t)
        if ready:
            self._store(ready, holder, now, result, tally)
        # Not fsync'd: an entry that a power cut brings back is replayed again, and its events,
        # already stored or dead-lettered under their own names, are found there (idempotent by
        # _id; dlq.named_stem); that saves a directory fsync per batch.
        svc.dlq.remove(tally.removed, sync=False)
        result.stored += len(tally.removed)
        result.failed += tally.failed
        result.storage_failed += tally.storage_failed
        result.ids.extend(tally.removed)
        svc.counters.add(replay_stored=tally.events_stored, replay_failed=tally.failed,
                         storage_retries=tally.retries, **tally.dead_lettered)

    def _store(self, ready: list[_Taken], holder: Holder, now: float, result: ReplayResult,
               tally: _Tally) -> None:
        svc = self.svc
        envelopes = [e for t in ready for e in (t.events if t.events is not None else [t.envelope])]
        result.extra_events += len(envelopes) - len(ready)
        prepared = svc.prepare(envelopes)

        def count_retry(n: int, _wait: float) -> None:
            tally.retries += n

        # Like a request's storage phase: through the process's breaker, within the request
        # deadline, retries counted against the retry budget (README, "A failing backend"); in
        # chunks of storage.bulk_max_events (a whole message may bring more events than a batch).
        backend = _Tried(svc.backend)
        deadline = Deadline.start(svc.settings.core.request_deadline_seconds)
        size = svc.settings.storage.bulk_max_events
        finals: list[Final] = []
        for start in range(0, len(prepared.items), size):
            finals += store_with_retries(backend, prepared.items[start:start + size], svc.policy, count_retry,
                                         breaker=svc.breaker, deadline=deadline, budget=svc.retry_budget)
            if not backend.tried:
                break
        if finals and not backend.tried:
            # Turned away by the open breaker before any try: nothing happened to these entries,
            # which stay as they were (not an attempt); the call ends here (_run).
            result.skipped += len(ready)
            result.breaker_open = finals[0].outcome.error
            return
        at_item = {id(envelope): i for i, envelope in enumerate(prepared.item_envelopes)}
        early = iter(prepared.failed)  # failures before storage, in the order of the envelopes

        def failure(envelope: Envelope) -> _Failure | None:
            """None when stored, else why not (in envelope order: `early` is consumed in it)."""
            i = at_item.get(id(envelope))
            if i is not None and finals[i].outcome.stored:
                return None
            if i is not None:
                final = finals[i]
                return _Failure(envelope, "storage_failed", final.outcome.error, final.outcome.details,
                                final.attempts)
            first = next(early)
            return _Failure(envelope, first["reason"], first["error"], first["details"], 1)

        for t in ready:
            if t.events is not None:
                self._settle_message(t, [failure(e) for e in t.events], holder, now, result, tally)
                continue
            why = failure(t.envelope)
            if not holder.holds(t.entry_id):
                result.skipped += 1  # taken over after the claim timed out: the new holder decides
            elif why is None:
                tally.removed.append(t.entry_id)
                tally.events_stored += 1
            else:
                self._refail(t, holder, why.reason, why.error, why.details, now, result, tally)

    def _settle_message(self, t: _Taken, failures: list[_Failure | None], holder: Holder, now: float,
                        result: ReplayResult, tally: _Tally) -> None:
        """A whole message's events stored or not: those not stored are dead-lettered in entries
        named after their envelope ids, created only if absent (as its delivery names them), then
        the message's entry is removed; when the DLQ cannot take them, the entry stays as it was."""
        if not holder.holds(t.entry_id):
            result.skipped += 1  # taken over after the claim timed out: the new holder decides
            return
        stored = failures.count(None)
        records = [make_record(f.envelope.to_dict(), f.reason, f.error, f.attempts, f.details, now)
                   for f in failures if f is not None]
        if records:
            try:
                with self.svc.dlq.reserve(records, now, named=True) as held:
                    held.write()
            except DLQUnavailable as exc:
                log.error("DLQ entry %s decoded into %d events, %d not stored, whose entries could not be "
                          "written; it stays as it was: %s", t.entry_id, len(failures), len(records), exc)
                tally.failed += 1
                return
            for record in records:
                if record["id"] not in held.existing:  # else dead-lettered by a delivery already
                    counter = f"dlq_{record['reason']}"
                    tally.dead_lettered[counter] = tally.dead_lettered.get(counter, 0) + 1
                    result.decoded.dead_lettered += 1
                tally.storage_failed += record["reason"] == "storage_failed"
        tally.removed.append(t.entry_id)
        tally.events_stored += stored
        result.decoded.stored += stored

    def _refail(self, t: _Taken, holder: Holder, reason: str, error: str, details: dict[str, Any] | None,
                now: float, result: ReplayResult, tally: _Tally) -> None:
        """The one entry stays, rewritten with `attempts` + 1 and this failure (`refailed`)."""
        if not holder.holds(t.entry_id):
            result.skipped += 1  # taken over after the claim timed out: the new holder decides
            return
        try:
            self.svc.dlq.rewrite(t.entry_id, refailed(t.record, reason, error, details, now))
        except FileNotFoundError:
            result.skipped += 1  # purged meanwhile
            return
        except DLQUnavailable as exc:
            # The entry stays as it was (the rename never happened): nothing is lost.
            log.error("DLQ entry %s failed again and could not be rewritten: %s", t.entry_id, exc)
        tally.failed += 1
        tally.storage_failed += reason == "storage_failed"


def audit_params(req: ReplayRequest, result: ReplayResult) -> dict[str, Any]:
    """What the audit log keeps of a replay: the request as given and the answer's counts."""
    return {**req.params, **{k: v for k, v in result.answer().items() if k != "ids"}}


def replay_as(svc: Service, actor: str, req: ReplayRequest, replayer: Replayer | None = None) -> ReplayResult:
    """Run one bounded replay call for `actor` (an operator's name, or `self-healing`, or a
    schedule's) and audit it with the request and the counts; for the API, the CLI's directory
    mode and schedules alike. Raises ApiError 503 when the DLQ folder cannot be used."""
    result = (replayer or Replayer(svc)).run(req)
    svc.audit.record(actor, "replay_dlq", result.matched, audit_params(req, result))
    log.info("replay by %s: %d matched, %d stored, %d failed again, %d skipped%s", actor, result.matched,
             result.stored, result.failed, result.skipped, " (dry run)" if req.dry_run else "")
    return result


def replay_dlq(svc: Service, who: Operator, query: Query, body: bytes,
               replayer: Replayer | None = None) -> dict[str, Any]:
    """`POST /api/v1/dlq/replay` (SPEC §11): admin role (ApiError 403), no query parameters and
    a body `parse_request` takes (ApiError 400 otherwise, nothing done). Audited with who, the
    ids or filter, and the counts."""
    who.require_admin("replay")
    parse_query(query, frozenset())
    return replay_as(svc, who.name, parse_request(body), replayer).answer()
