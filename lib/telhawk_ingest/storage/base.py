"""The storage seam: what a backend is given, and what it must report back (SPEC §6).

A backend takes a batch of normalized events and reports one Outcome per item, in order: stored,
retryable failure, or permanent failure. Backends never raise for a storage failure and never
sleep or retry; retry.py owns that decision. Backends live one per module: local.py, opensearch.py.
"""

from __future__ import annotations

import enum
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

DEFAULT_INDEX = "main"

# Unix seconds of 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z: the times a UTC date exists for.
MIN_DAY_TIME = -62_135_596_800.0
MAX_DAY_TIME = 253_402_300_800.0
_EPOCH = date(1970, 1, 1)


@dataclass(slots=True)
class Item:
    """One document to store. `id` is the envelope id, used as the document `_id`."""

    id: str
    index: str
    time: float
    document: dict[str, Any]


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
    """The millisecond time inside a UUIDv7 id (RFC 9562), in unix seconds; 0.0 for any other id
    and for an id whose time has no UTC date (48 bits of milliseconds reach past year 9999)."""
    try:
        value = uuid.UUID(item_id)
    except (ValueError, TypeError, AttributeError):
        return 0.0
    seconds = (value.int >> 80) / 1000 if value.version == 7 else 0.0
    return seconds if seconds < MAX_DAY_TIME else 0.0


@functools.lru_cache(maxsize=4096)
def utc_day(day_number: int) -> date:
    """The UTC date `day_number` days after 1970-01-01 (`int(seconds // 86400)`); day arithmetic,
    so no rounding of a time a microsecond before year 10000 can fall outside the calendar."""
    return _EPOCH + timedelta(days=day_number)


def retry(error: str, retry_after: float | None = None, **details: Any) -> Outcome:
    return Outcome(Status.RETRY, error, details, retry_after)


def permanent(error: str, **details: Any) -> Outcome:
    return Outcome(Status.PERMANENT, error, details)


class StorageBackend(Protocol):
    name: str

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        """Store every item; return one Outcome per item, in the batch's order."""
        ...

    def healthy(self) -> bool:
        """A cheap check that the backend can take writes now."""
        ...

    def close(self) -> None: ...
