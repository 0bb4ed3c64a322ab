"""Fakes for unit tests of pure logic: a scripted storage backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from telhawk_ingest.storage.base import STORED, Item, Outcome


class ScriptedBackend:
    """Answers each store() call from a script: one function per call, given the batch.

    After the script runs out every item is stored. Records every batch it was given.
    """

    name = "scripted"

    def __init__(self, *script: Callable[[Sequence[Item]], list[Outcome]]) -> None:
        self.script = list(script)
        self.calls: list[list[str]] = []
        self.stored: list[Item] = []
        self.is_healthy = True

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        self.calls.append([item.id for item in batch])
        outcomes = self.script.pop(0)(batch) if self.script else [STORED] * len(batch)
        self.stored.extend(item for item, o in zip(batch, outcomes, strict=False) if o.stored)
        return outcomes

    def healthy(self) -> bool:
        return self.is_healthy

    def close(self) -> None:
        pass


def every(outcome: Outcome) -> Callable[[Sequence[Item]], list[Outcome]]:
    return lambda batch: [outcome] * len(batch)


def item(n: int, index: str = "main") -> Item:
    return Item(id=f"id-{n}", index=index, time=1_700_000_000.0 + n, document={"n": n})
