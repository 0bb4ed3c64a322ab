"""What ends the tries early: the storage circuit breaker and the request's deadline (retry.py),
under frozen time (`clock`: backoff's sleeps are recorded and advance the frozen clock)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import backoff
import pytest
from freezegun import freeze_time

from telhawk_ingest.breaker import CLOSED, OPEN, Breaker
from telhawk_ingest.budget import RetryBudget
from telhawk_ingest.retry import Deadline, RetryPolicy, store_with_retries
from telhawk_ingest.storage.base import Item, Outcome, Status, retry, time_left
from tests.fakes import ScriptedBackend, every, item

POLICY = RetryPolicy()


@dataclass
class Clock:
    frozen: Any
    waits: list[float] = field(default_factory=list)

    def tick(self, seconds: float) -> None:
        self.frozen.tick(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        made = Clock(frozen)

        def sleep(seconds: float) -> None:
            made.waits.append(seconds)
            frozen.tick(seconds)

        monkeypatch.setattr(backoff._sync.time, "sleep", sleep)
        yield made
DOWN = retry("transport error: [Errno 111] Connection refused", error_type="ConnectError")


def down(n: int):
    return [every(DOWN)] * n


def test_the_breaker_opening_mid_request_ends_it_without_waiting_out_the_backoff(clock, caplog):
    breaker = Breaker(failures=2, cooldown_seconds=30.0)
    backend = ScriptedBackend(*down(4))

    with caplog.at_level("WARNING", logger="telhawk_ingest.retry"):
        [final] = store_with_retries(backend, [item(1)], POLICY, breaker=breaker)

    assert [r.name for r in caplog.records] == ["telhawk_ingest.breaker"]  # the breaker logs its opening

    assert clock.waits == [0.1]  # not 0.1, 0.2, 0.4
    assert len(backend.calls) == 2 and final.attempts == 2
    assert breaker.state == OPEN
    assert final.outcome.error.startswith("storage circuit breaker open since 2026-01-02T03:04:05.")
    assert final.outcome.error.endswith("last error: transport error: [Errno 111] Connection refused")


def test_an_open_breaker_sends_nothing_to_storage_and_waits_for_nothing(clock):
    breaker = Breaker(failures=1, cooldown_seconds=30.0)
    store_with_retries(ScriptedBackend(*down(1)), [item(1)], RetryPolicy(max_retries=0), breaker=breaker)
    backend = ScriptedBackend()
    start = time.monotonic()

    finals = store_with_retries(backend, [item(2), item(3)], POLICY, breaker=breaker)

    assert backend.calls == [] and clock.waits == [] and time.monotonic() == start
    assert [(f.outcome.status, f.attempts) for f in finals] == [(Status.RETRY, 1)] * 2
    assert finals[0].outcome.details == {"breaker": "open"}
    assert "circuit breaker open" in finals[0].outcome.error


def test_after_the_cooldown_one_probe_goes_to_storage_and_its_success_closes_the_breaker(clock):
    breaker = Breaker(failures=1, cooldown_seconds=30.0)
    closed: list[bool] = []
    breaker.on_close(lambda: closed.append(True))
    store_with_retries(ScriptedBackend(*down(1)), [item(1)], RetryPolicy(max_retries=0), breaker=breaker)
    healthy = ScriptedBackend()
    assert store_with_retries(healthy, [item(2)], POLICY, breaker=breaker)[0].outcome.details == {
        "breaker": "open"}
    waits_before = list(clock.waits)
    clock.tick(30.0)

    [final] = store_with_retries(healthy, [item(3)], POLICY, breaker=breaker)

    assert final.outcome.stored and healthy.calls == [["id-3"]]
    assert breaker.state == CLOSED and closed == [True]
    assert clock.waits == waits_before


def test_a_failed_probe_dead_letters_its_events_at_once_and_reopens_the_breaker(clock):
    breaker = Breaker(failures=1, cooldown_seconds=30.0)
    store_with_retries(ScriptedBackend(*down(1)), [item(1)], RetryPolicy(max_retries=0), breaker=breaker)
    clock.tick(30.0)
    backend = ScriptedBackend(*down(4))

    [final] = store_with_retries(backend, [item(2)], POLICY, breaker=breaker)

    assert len(backend.calls) == 1 and clock.waits == []  # the probe only, no backoff after it
    assert final.attempts == 1 and "circuit breaker open" in final.outcome.error
    assert breaker.state == OPEN and breaker.opened == 2


def test_items_rejected_one_by_one_count_as_storage_answering_not_as_a_failed_try(clock):
    breaker = Breaker(failures=1, cooldown_seconds=30.0)

    def busy(batch):  # a 429 for each item, each its own outcome: the node answered
        return [retry("429 es_rejected_execution_exception", status=429) for _ in batch]

    store_with_retries(ScriptedBackend(busy, busy), [item(1), item(2)], POLICY, breaker=breaker)

    assert breaker.state == CLOSED and breaker.consecutive_failures == 0


def test_items_storage_refused_for_good_count_as_storage_answering():
    breaker = Breaker(failures=1, cooldown_seconds=30.0)
    backend = ScriptedBackend(every(Outcome(Status.PERMANENT, "mapper_parsing_exception")))

    store_with_retries(backend, [item(1)], POLICY, breaker=breaker)

    assert breaker.state == CLOSED and breaker.consecutive_failures == 0


class SlowNode:
    """A node that answers after `answer_after` seconds; a client timeout of `timeout` seconds (cut
    to the try's deadline, as the OpenSearch backend cuts it) gives up first. Advances the frozen
    clock instead of waiting."""

    name = "slow"

    def __init__(self, clock: Clock, answer_after: float = 12.0, timeout: float = 10.0) -> None:
        self.clock, self.answer_after, self.timeout = clock, answer_after, timeout
        self.tries: list[float] = []

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        waited = min(self.answer_after, time_left(self.timeout))
        self.tries.append(waited)
        self.clock.tick(waited)
        return [retry("transport error: ReadTimeout", error_type="ReadTimeout")] * len(batch)

    def healthy(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_without_a_deadline_a_node_answering_after_12_s_holds_a_request_40_7_s(clock):
    node = SlowNode(clock)
    start = time.monotonic()

    [final] = store_with_retries(node, [item(1)], POLICY)

    assert time.monotonic() - start == pytest.approx(40.7)  # 4 timeouts of 10 s and 0.7 s of waits
    assert final.attempts == 4


def test_the_deadline_bounds_the_whole_storage_phase_and_names_itself_in_the_error(clock):
    node = SlowNode(clock)
    start = time.monotonic()

    [final] = store_with_retries(node, [item(1)], POLICY, deadline=Deadline.start(15.0))

    assert time.monotonic() - start == pytest.approx(15.0)
    assert node.tries == [10.0, pytest.approx(4.9)]  # the second try cut to what was left
    assert final.attempts == 2 and final.outcome.status is Status.RETRY
    assert final.outcome.error == ("storage deadline of 15 s for the request (core.request_deadline_seconds) "
                                   "spent after 2 tries; last error: transport error: ReadTimeout")
    assert final.outcome.details == {"deadline_seconds": 15.0}


def test_a_spent_deadline_is_logged_with_the_items_and_tries(clock, caplog):
    with caplog.at_level("WARNING", logger="telhawk_ingest.retry"):
        store_with_retries(SlowNode(clock), [item(1), item(2)], POLICY, deadline=Deadline.start(15.0))

    [line] = caplog.records
    assert (line.event, line.items, line.tries) == ("deadline", 2, 2)
    assert line.reason.startswith("storage deadline of 15 s")


def test_a_wait_that_would_outlast_the_deadline_is_not_taken(clock):
    backend = ScriptedBackend(*[every(retry("429 from storage", retry_after=4.0))] * 4)

    [final] = store_with_retries(backend, [item(1)], POLICY, deadline=Deadline.start(3.0))

    assert clock.waits == [] and len(backend.calls) == 1
    assert final.attempts == 1
    assert final.outcome.error.endswith("spent after 1 try; last error: 429 from storage")


def test_a_spent_deadline_leaves_later_events_untried(clock):
    deadline = Deadline.start(1.0)
    clock.tick(1.0)
    backend = ScriptedBackend()

    finals = store_with_retries(backend, [item(1), item(2)], POLICY, deadline=deadline)

    assert backend.calls == []
    assert [f.attempts for f in finals] == [1, 1]
    assert "spent before these events were tried" in finals[0].outcome.error


def test_a_spent_deadline_after_a_failure_without_a_message_says_none():
    backend = ScriptedBackend(every(retry("", retry_after=4.0)))

    [final] = store_with_retries(backend, [item(1)], POLICY, deadline=Deadline.start(3.0))

    assert final.outcome.error == ("storage deadline of 3 s for the request (core.request_deadline_seconds) "
                                   "spent after 1 try; last error: none")


def test_a_deadline_that_ran_out_during_a_wait_ends_the_tries_with_the_last_error(clock, caplog):
    # The wait itself fitted; what else ran meanwhile (here the on_retry callback) took the rest.
    backend = ScriptedBackend(*[every(retry("503 from storage"))] * 4)

    with caplog.at_level("WARNING", logger="telhawk_ingest.retry"):
        [final] = store_with_retries(backend, [item(1)], POLICY, deadline=Deadline.start(1.0),
                                     on_retry=lambda count, wait: clock.tick(1.0))

    assert len(backend.calls) == 1 and final.attempts == 1
    assert [(r.event, r.tries) for r in caplog.records] == [("deadline", 1)]
    assert final.outcome.error == ("storage deadline of 1 s for the request (core.request_deadline_seconds) "
                                   "spent after 1 try; last error: 503 from storage")


def test_a_try_starts_while_any_of_the_deadline_is_left(clock):
    backend = ScriptedBackend(every(retry("503 from storage")))

    [final] = store_with_retries(backend, [item(1)], POLICY, on_retry=lambda count, wait: clock.tick(1.0),
                                 deadline=Deadline.start(2.0))  # 0.9 s left after the wait

    assert len(backend.calls) == 2 and final.outcome.stored and final.attempts == 2


def test_a_breaker_opened_elsewhere_during_a_wait_ends_the_tries_with_those_made(clock):
    breaker = Breaker(failures=1, cooldown_seconds=30.0)
    # Each event refused on its own: storage answered, so the breaker stays closed for these tries.
    one_by_one = [lambda batch: [retry("429 from storage") for _ in batch]] * 2
    backend = ScriptedBackend(*one_by_one)

    def another_request_fails(count: int, wait: float) -> None:
        if len(backend.calls) == 2:
            breaker.record(False, "transport error: refused")

    finals = store_with_retries(backend, [item(1), item(2)], POLICY, on_retry=another_request_fails,
                                breaker=breaker)

    assert len(backend.calls) == 2 and [f.attempts for f in finals] == [2, 2]
    assert finals[0].outcome.details == {"breaker": OPEN}


def test_a_batch_stored_at_once_takes_nothing_from_the_deadline_or_the_budget(clock, caplog):
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window_seconds=10)

    with caplog.at_level("WARNING", logger="telhawk_ingest.retry"):
        finals = store_with_retries(ScriptedBackend(), [item(1)], POLICY, deadline=Deadline.start(0.05),
                                    budget=budget)

    assert finals[0].outcome.stored and caplog.records == []
    assert budget.snapshot()["retries"] == 0


def test_the_last_try_keeps_its_own_error_however_little_of_the_deadline_is_left(clock):
    backend = ScriptedBackend(*[every(retry("503 from storage"))] * 4)

    [final] = store_with_retries(backend, [item(1)], POLICY, deadline=Deadline.start(1.0))

    assert clock.waits == [0.1, 0.2, 0.4] and final.attempts == 4  # 0.3 s left, the next wait: 0.8 s
    assert final.outcome.error == "503 from storage"


def test_a_wait_that_would_end_exactly_at_the_deadline_is_not_taken(clock):
    backend = ScriptedBackend(every(retry("503 from storage")))

    [final] = store_with_retries(backend, [item(1)], RetryPolicy(delay_ms=500), deadline=Deadline.start(0.5))

    assert clock.waits == [] and len(backend.calls) == 1
    assert final.outcome.error.endswith("spent after 1 try; last error: 503 from storage")


def test_a_retry_log_line_gives_the_wait_in_seconds_to_the_microsecond(clock, caplog):
    backend = ScriptedBackend(every(retry("429 from storage", retry_after=1.23456789)))

    with caplog.at_level("INFO", logger="telhawk_ingest.retry"):
        store_with_retries(backend, [item(1)], POLICY)

    [line] = [r for r in caplog.records if r.name == "telhawk_ingest.retry"]
    assert (line.event, line.attempt, line.items, line.wait_seconds) == ("retry", 1, 1, 1.234568)
    assert line.getMessage() == "storage retry: 1 item(s), try 1 failed, waiting 1.235s: 429 from storage"
