"""The storage seam: what a backend is given, and what it must report back (SPEC §6).

A backend takes a batch of normalized events and reports one Outcome per item, in order: stored,
retryable failure, or permanent failure. Backends never raise for a storage failure and never
sleep or retry; retry.py owns that decision. Backends live one per module: local.py, opensearch.py.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_INDEX = "main"


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
