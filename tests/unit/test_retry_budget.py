"""The retry budget (budget.py): retries at most a share of first tries over a sliding window."""

from __future__ import annotations

from telhawk_ingest.budget import RetryBudget
from telhawk_ingest.retry import RetryPolicy, store_with_retries
from telhawk_ingest.storage.base import retry
from tests.fakes import ScriptedBackend, every, item


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_retries_are_limited_to_the_ratio_of_first_tries():
    budget = RetryBudget(ratio=0.5, min_per_second=0, window_seconds=10, clock=Clock())
    budget.first(4)

    assert [budget.retry() for _ in range(3)] == [True, True, False]
    assert budget.snapshot()["refused"] == 1


def test_a_quiet_service_still_gets_min_per_second_retries():
    budget = RetryBudget(ratio=0.0, min_per_second=0.5, window_seconds=4, clock=Clock())

    assert [budget.retry() for _ in range(3)] == [True, True, False]


def test_first_tries_and_retries_leave_the_budget_when_their_second_leaves_the_window():
    clock = Clock()
    budget = RetryBudget(ratio=1.0, min_per_second=0, window_seconds=10, clock=clock)
    budget.first(1)
    assert budget.retry() and not budget.retry()

    clock.now += 9.5
    assert not budget.retry()  # second 100 is still in the window of seconds 100 - 109
    clock.now += 0.5  # second 110: second 100 leaves, with its first try and its retry
    assert budget.snapshot()["first_tries"] == 0 and budget.snapshot()["retries"] == 0
    budget.first(1)

    assert budget.retry() and not budget.retry()


def test_a_spent_budget_ends_the_tries_with_an_error_naming_it(waits):
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window_seconds=10)  # one retry in 10 s
    backend = ScriptedBackend(*[every(retry("503 from storage"))] * 8)

    [first] = store_with_retries(backend, [item(1)], RetryPolicy(), budget=budget)
    [second] = store_with_retries(backend, [item(2)], RetryPolicy(), budget=budget)

    assert waits == [0.1] and len(backend.calls) == 3
    assert (first.attempts, second.attempts) == (2, 1)
    assert second.outcome.error == ("retry budget spent (core.retry_budget: at most 0% of first tries plus "
                                    "0.1/s over 10 s) after 1 try; last error: 503 from storage")
    assert second.outcome.details == {"retry_budget": "spent"}


def test_a_spent_budget_is_logged_as_such_with_the_items_and_tries(waits, caplog):
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, window_seconds=10)  # no retry at all
    backend = ScriptedBackend(every(retry("503 from storage")))

    with caplog.at_level("WARNING", logger="telhawk_ingest.retry"):
        store_with_retries(backend, [item(1), item(2)], RetryPolicy(), budget=budget)

    [line] = caplog.records
    assert (line.event, line.items, line.tries) == ("retry_budget", 2, 1)
    assert line.reason.startswith("retry budget spent (core.retry_budget: ")
    assert line.getMessage() == f"storage tries ended early for 2 item(s): {line.reason}"
