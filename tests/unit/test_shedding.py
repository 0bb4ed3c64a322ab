"""The per-process in-flight limit of ingest requests (shedding.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from telhawk_ingest.shedding import InFlight


def test_places_are_taken_up_to_the_limit_and_given_back():
    limit = InFlight(2)

    assert [limit.enter(), limit.enter(), limit.enter()] == [True, True, False]
    limit.leave()

    assert limit.enter()
    assert limit.snapshot() == {"in_flight": 2, "max_in_flight": 2, "peak_in_flight": 2, "shed_here": 1}


def test_many_threads_never_take_more_places_than_the_limit():
    limit = InFlight(3)
    start = threading.Barrier(8)
    admitted: list[bool] = []

    def request() -> None:
        start.wait()
        admitted.append(limit.enter())

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert admitted.count(True) == 3 and limit.count == 3 and limit.shed == 5


def test_the_refusal_is_503_code_9_with_retry_after_and_is_logged(caplog):
    limit = InFlight(1)
    limit.enter()
    limit.enter()

    with caplog.at_level(logging.WARNING, logger="telhawk_ingest.shedding"):
        err = limit.refusal("/services/collector/raw")

    assert (err.status, err.code, err.retry_after > 0) == (503, 9, True)
    assert "(hec.max_in_flight)" in str(err)
    [line] = caplog.records
    assert (line.event, line.in_flight, line.max_in_flight, line.path) == (
        "shed", 1, 1, "/services/collector/raw")


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match=r"hec\.max_in_flight"):
        InFlight(0)
