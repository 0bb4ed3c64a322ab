"""A node that goes away or is overloaded: retries, the DLQ, and what is stored once it recovers.

These tests run against a node of their own (LocalNode: local/opensearch/start.sh on a free
port), which they stop, restart and overload without disturbing the shared node. Its write
thread pool is one thread with a queue of one, so a bulk touching several shards at once gets
item 429s (rejected_execution_exception) without needing a large load. A batch into one index
has one shard and is never rejected, so the outage test is not disturbed by it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import httpx
import pytest

from telhawk_ingest.storage.base import Item, Outcome, StorageBackend
from tests.opensearch.conftest import (
    LocalNode,
    dlq_records,
    envelope_of,
    ingest_at_once,
    launcher_problem,
    node_missing,
    ocsf_event,
    search_ids,
)

pytestmark = pytest.mark.opensearch

TINY_WRITE_POOL = ("-Ethread_pool.write.size=1", "-Ethread_pool.write.queue_size=1")


@pytest.fixture(scope="module")
def own_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    problem = launcher_problem()
    if problem:
        node_missing(problem)
    node = LocalNode(tmp_path_factory.mktemp("opensearch-run"), settings=TINY_WRITE_POOL)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def node_client(own_node: LocalNode) -> Iterator[httpx.Client]:
    if not own_node.running:  # an earlier test stopped it and failed before starting it again
        own_node.start()
    with httpx.Client(base_url=own_node.url, timeout=30) as client:
        yield client


class Recording:
    """The real backend, with every outcome it reported kept for the test to look at."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        outcomes = self.backend.store(batch)
        with self._lock:
            self.outcomes.extend(outcomes)
        return outcomes

    def healthy(self) -> bool:
        return self.backend.healthy()

    def close(self) -> None:
        self.backend.close()


def test_events_sent_while_the_node_is_down_are_retried_then_dead_lettered_and_later_ones_stored(
        own_node, node_client, make_service):
    prefix = "outage-"
    # The breaker opens at the fifth failed try (the second batch's first) and is over its
    # cool-down long before the node is back: the first batch after is its probe.
    service = make_service(own_node.url, prefix, max_retries=3, retry_delay_ms=20, timeout_seconds=3,
                           breaker={"failures": 5, "cooldown_seconds": 1})
    batch_size = 10

    def batches(n: int) -> list[list]:
        return [[envelope_of(ocsf_event(message=f"batch event {k}")) for k in range(batch_size)]
                for _ in range(n)]

    before, during, after = batches(3), batches(3), batches(3)
    sent = {e.id for batch in before + during + after for e in batch}

    for batch in before:
        assert service.ingest(batch).stored == batch_size
    # A restarted local node starts empty, so what it held is read before it goes away.
    stored = set(search_ids(node_client, prefix))

    own_node.stop()
    try:
        for batch in during:
            result = service.ingest(batch)
            assert (result.stored, result.dead_lettered) == (0, batch_size)
    finally:
        own_node.start()

    for batch in after:
        assert service.ingest(batch).stored == batch_size
    after_restart = search_ids(node_client, prefix)
    stored |= set(after_restart)

    records = dlq_records(service)
    dead_lettered = {r["envelope"]["id"] for r in records}
    assert len(after_restart) == len(after) * batch_size
    assert stored | dead_lettered == sent
    assert stored & dead_lettered == set()
    assert dead_lettered == {e.id for batch in during for e in batch}
    first = {e.id for e in during[0]}
    for record in records:
        assert record["reason"] == "storage_failed"
        if record["envelope"]["id"] in first:
            assert record["attempts"] == service.settings.core.max_retries + 1 == 4
            # The last try met a closed port: stop.sh returns once the node's process is gone.
            assert record["error"].startswith("transport error: ConnectError")
            assert record["details"]["error_type"] == "ConnectError"
        else:  # the breaker was open: one try for the second batch, none for the third
            assert record["attempts"] == 1
            assert record["error"].startswith("storage circuit breaker open since ")
            assert "last error: transport error: ConnectError" in record["error"]
            assert record["details"] == {"breaker": "open"}
    assert service.breaker.state == "closed" and service.breaker.opened == 1


def test_an_overflowing_write_queue_is_retried_item_by_item_until_every_event_is_stored(
        own_node, node_client, make_service):
    prefix = "overload-"
    # A longer schedule than the default: four bulks at once into a one-thread pool take a few rounds.
    service = make_service(own_node.url, prefix, max_retries=10, retry_delay_ms=50, retry_max_delay_ms=1000,
                           jitter=True)
    recording = Recording(service.backend)
    service.backend = recording
    # Each bulk spans four indices (four shards), so it alone is more than the pool takes at once.
    batches = [[envelope_of(ocsf_event(message=f"event {k}"), index=f"shard{k % 4}") for k in range(40)]
               for _ in range(4)]
    results = ingest_at_once(service, batches, timeout=120)

    rejected = [o for o in recording.outcomes if o.details.get("status") == 429]
    assert rejected, "the node never answered 429; the test did not overload it"
    assert {o.details["error_type"] for o in rejected} == {"rejected_execution_exception"}
    assert [(r.stored, r.dead_lettered) for r in results] == [(40, 0)] * 4
    assert dlq_records(service) == []
    ids = search_ids(node_client, prefix)
    assert sorted(ids) == sorted(e.id for batch in batches for e in batch)
