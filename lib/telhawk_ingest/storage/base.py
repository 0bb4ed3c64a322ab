"""The storage seam: what a backend is given, and what it must report back (SPEC §6).

A backend takes a batch of normalized events and reports one Outcome per item, in order: stored,
retryable failure, or permanent failure. A failure of the whole request (nothing reached storage,
or it refused the request as a whole) is one Outcome object repeated for every item: the storage
circuit breaker counts those (retry.record_try). Backends never raise for a storage failure and never
sleep or retry; retry.py owns that decision. Backends live one per module: local.py, opensearch.py.
"""

from __future__ import annotations

import enum
import functools
import math
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

import orjson

from ..config import INDEX_RULE, is_index_name
from ..envelope import id_time as envelope_id_time

DEFAULT_INDEX = "main"

SECONDS_PER_DAY = 86_400
# Day anchors stay within the days a UTC date can name: 1970-01-01 to 9999-12-31.
_LAST_SECOND = 253_402_300_799
# Unix seconds of 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z: the times a UTC date exists for.
MIN_DAY_TIME = -62_135_596_800.0
MAX_DAY_TIME = 253_402_300_800.0
_EPOCH = date(1970, 1, 1)


@dataclass(slots=True)
class Item:
    """One document to store. `id` is the envelope id, used as the document `_id`.

    `time` is the day anchor in unix seconds (see `day_anchor`): its UTC day is the day the item is
    stored under (OpenSearch's daily index, the local store's day). The document keeps its own times.
    """

    id: str
    index: str
    time: float
    document: dict[str, Any]


def seconds(value: Any, per_second: int = 1) -> float | None:
    """A JSON number counted in 1/`per_second` seconds as finite unix seconds, else None.

    Booleans, text, and numbers too large for a float give None: nothing is guessed from them.
    """
    kind = type(value)
    if kind is not float and kind is not int:  # bool is an int subclass, not an int
        return None
    try:
        result = value / per_second
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def day_anchor(event_time: float | None, arrival: float, back_days: int, ahead_days: int) -> float:
    """The time whose UTC day an item is stored under, in unix seconds (SPEC §3).

    The event's own time when it lies within `[arrival - back_days, arrival + ahead_days]`, else
    the arrival. Both inputs are fixed for an envelope (the arrival is its id's time), so every try,
    replay and redelivery gets the same day; and a time in the wrong unit or out of range never
    names a day of its own. Clamped to 1970-01-01..9999-12-31, the days a date can name.
    """
    anchor = arrival
    if event_time is not None and (
        arrival - back_days * SECONDS_PER_DAY <= event_time <= arrival + ahead_days * SECONDS_PER_DAY
    ):
        anchor = event_time
    if 0.0 <= anchor <= _LAST_SECOND:
        return anchor
    return 0.0 if anchor < 0.0 else float(_LAST_SECOND)


class Status(enum.Enum):
    STORED = "stored"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # Seconds the storage asked us to wait (HTTP Retry-After), when it said so.
    retry_after: float | None = None

    @property
    def stored(self) -> bool:
        return self.status is Status.STORED


STORED = Outcome(Status.STORED)


def storage_time(item: Item) -> float:
    """Unix seconds that pick the item's storage day: `item.time` when a UTC date exists for it
    (a finite number from year 1 to 9999), else the time inside its UUIDv7 id.

    Never raises, and gives the same answer on every attempt for the same item, so a retry or a
    replay goes to the day of the first try; both backends name days from it.
    """
    when = item.time
    if type(when) in (float, int) and MIN_DAY_TIME <= when < MAX_DAY_TIME:
        return float(when)
    return id_time(item.id)


def id_time(item_id: str) -> float:
    """The time inside a UUIDv7 id in unix seconds (`envelope.id_time`); 0.0 for any other id and
    for an id whose time has no UTC date (48 bits of milliseconds reach past year 9999)."""
    seconds = envelope_id_time(item_id) if type(item_id) is str else None
    return seconds if seconds is not None and seconds < MAX_DAY_TIME else 0.0


@functools.lru_cache(maxsize=4096)
def utc_day(day_number: int) -> date:
    """The UTC date `day_number` days after 1970-01-01 (`int(seconds // 86400)`); day arithmetic,
    so no rounding of a time a microsecond before year 10000 can fall outside the calendar."""
    return _EPOCH + timedelta(days=day_number)


def index_of(item: Item) -> str | Outcome:
    """The index an item is stored in (DEFAULT_INDEX when it names none), or a permanent Outcome
    when the name breaks Splunk's naming rule (config.INDEX_NAME).

    The HEC layer refuses such names with code 7, so none reaches a backend from a client; this
    guard is for anything else that builds items. A name is never rewritten into a valid one:
    two names would then share an index (`a b` and `a_b`) or land somewhere no one asked for.
    """
    index = item.index or DEFAULT_INDEX
    if is_index_name(index):
        return index
    shown = index[:100] if type(index) is str else type(index).__name__
    return permanent(f"index {shown!r} is not an index name ({INDEX_RULE})", field="index")


def retry(error: str, retry_after: float | None = None, **details: Any) -> Outcome:
    return Outcome(Status.RETRY, error, details, retry_after)


def permanent(error: str, **details: Any) -> Outcome:
    return Outcome(Status.PERMANENT, error, details)


def encode_document(document: dict[str, Any], wrap: dict[str, Any] | None = None) -> bytes | Outcome:
    """`document` as JSON (inside `wrap`'s "_source" when given), or the permanent Outcome that
    sends it to the DLQ when no try could encode it.

    orjson refuses objects nested more than 254 levels deep (the HEC parser takes 1,024), integers
    beyond 64 bits and non-string keys. The error names the top-level member at fault, e.g.
    `event cannot be encoded as JSON: unmapped: Recursion limit reached`. Raises nothing.
    """
    try:
        if wrap is None:
            return orjson.dumps(document)
        return orjson.dumps({**wrap, "_source": document})
    except orjson.JSONEncodeError as exc:
        member = _failing_member(document, wrap)
        where = f"{member[:80]}: " if member is not None else ""
        return permanent(f"event cannot be encoded as JSON: {where}{exc}", error_type="json_encode_error",
                         **({"field": member} if member is not None else {}))


def _failing_member(document: dict[str, Any], wrap: dict[str, Any] | None) -> str | None:
    """The first top-level member that cannot be encoded where it sits in the document."""
    for key, value in document.items():
        try:
            orjson.dumps({key: value} if wrap is None else {"_source": {key: value}})
        except orjson.JSONEncodeError:
            return key if isinstance(key, str) else repr(key)
    return None


# The monotonic time by which the try running in this context must be over, or None: retry.py sets
# it from the request's deadline (core.request_deadline_seconds) around each try. A backend that
# waits on a network caps its timeouts with `time_left`, so a slow node cannot outlast the deadline.
TRY_DEADLINE: ContextVar[float | None] = ContextVar("telhawk_try_deadline", default=None)
# The shortest timeout `time_left` gives: a try that starts must be able to send its request.
MIN_TRY_SECONDS = 0.001


def time_left(timeout: float) -> float:
    """`timeout` (seconds), shortened to what is left of the current try's deadline (TRY_DEADLINE)."""
    at = TRY_DEADLINE.get()
    if at is None:
        return timeout
    return max(MIN_TRY_SECONDS, min(timeout, at - time.monotonic()))


class StorageBackend(Protocol):
    name: str

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        """Store every item; return one Outcome per item, in the batch's order."""
        ...

    def healthy(self) -> bool:
        """A cheap check that the backend can take writes now."""
        ...

    def close(self) -> None: ...
