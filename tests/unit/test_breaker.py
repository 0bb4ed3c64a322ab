"""The storage circuit breaker's states under an injected clock (breaker.py)."""

from __future__ import annotations

import logging

import pytest

from telhawk_ingest.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    """Monotonic and wall time that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_767_323_045.0 + self.now  # 2026-01-02T03:04:05.000Z at now == 0


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, failures: int = 3, cooldown: float = 10.0) -> Breaker:
    return Breaker(failures, cooldown, clock=clock.monotonic, wall=clock.wall)


def fail(b: Breaker, times: int, error: str = "transport error: ConnectError") -> None:
    for _ in range(times):
        assert b.admit()
        b.record(False, error)


def test_it_opens_after_n_consecutive_failed_tries_and_then_turns_tries_away(clock):
    b = breaker(clock, failures=3)

    fail(b, 2)
    assert b.state == CLOSED and b.admit()
    fail(b, 1)

    assert b.state == OPEN
    assert [b.admit() for _ in range(5)] == [False] * 5
    assert b.refused == 5 and b.opened == 1


def test_a_success_between_failures_starts_the_count_again(clock):
    b = breaker(clock, failures=3)

    fail(b, 2)
    b.record(True)
    fail(b, 2)

    assert b.state == CLOSED and b.consecutive_failures == 2


def test_open_then_one_probe_after_the_cooldown_then_closed_on_its_success(clock):
    b = breaker(clock, failures=2, cooldown=10.0)
    closed: list[str] = []
    b.on_close(lambda: closed.append(b.state))
    fail(b, 2)

    clock.now += 9.999
    assert not b.admit()  # still cooling down
    clock.now += 0.001
    assert b.admit()  # the probe
    assert b.state == HALF_OPEN
    assert not b.admit() and not b.admit()  # the others still go to the DLQ meanwhile

    b.record(True)

    assert b.state == CLOSED and b.consecutive_failures == 0
    assert closed == [CLOSED]  # listeners run once the breaker is closed
    assert b.admit()


def test_a_failed_probe_opens_it_again_for_a_whole_cooldown(clock):
    b = breaker(clock, failures=2, cooldown=10.0)
    b.on_close(lambda: pytest.fail("the breaker never closed"))
    fail(b, 2)
    clock.now += 10.0
    assert b.admit()

    b.record(False, "503 from storage")

    assert b.state == OPEN and b.opened == 2
    assert b.last_error == "503 from storage"
    clock.now += 9.0
    assert not b.admit()
    clock.now += 1.0
    assert b.admit() and b.state == HALF_OPEN


def test_a_probe_that_never_reports_back_is_replaced_a_cooldown_later(clock):
    b = breaker(clock, failures=1, cooldown=5.0)
    fail(b, 1)
    clock.now += 5.0
    assert b.admit()  # the probe's request dies without recording anything

    clock.now += 4.0
    assert not b.admit()
    clock.now += 1.0
    assert b.admit()


def test_a_late_success_while_open_closes_it_and_a_late_failure_changes_nothing(clock):
    b = breaker(clock, failures=1, cooldown=5.0)
    fail(b, 1)

    b.record(True)  # a try let through before the breaker opened, answering late: storage answers

    assert b.state == CLOSED
    b2 = breaker(clock, failures=1, cooldown=5.0)
    fail(b2, 1)
    b2.record(False, "late failure")
    assert b2.state == OPEN and b2.opened == 1


def test_the_refusal_names_the_open_breaker_since_when_and_the_last_error(clock):
    clock.now = 0.0
    b = breaker(clock, failures=2)
    fail(b, 2, "transport error: [Errno 111] Connection refused")

    assert b.refusal() == ("storage circuit breaker open since 2026-01-02T03:04:05.000Z (2 consecutive "
                           "failed tries); last error: transport error: [Errno 111] Connection refused")


def test_the_snapshot_gives_state_since_and_consecutive_failures(clock):
    clock.now = 0.0
    b = breaker(clock, failures=2, cooldown=7.5)
    fail(b, 2, "503")

    snap = b.snapshot()

    assert snap["state"] == "open" and snap["since"] == "2026-01-02T03:04:05.000Z"
    assert snap["consecutive_failures"] == 2 and snap["failures"] == 2 and snap["cooldown_seconds"] == 7.5
    assert snap["last_error"] == "503"


def test_a_listener_that_raises_is_logged_and_the_breaker_still_closes(clock, caplog):
    b = breaker(clock, failures=1, cooldown=1.0)
    b.on_close(lambda: 1 / 0)
    seen: list[int] = []
    b.on_close(lambda: seen.append(1))
    fail(b, 1)
    clock.now += 1.0
    assert b.admit()

    with caplog.at_level(logging.ERROR):
        b.record(True)

    assert b.state == CLOSED and seen == [1]
    assert "listener" in caplog.text


def test_every_change_of_state_is_logged_as_a_breaker_event(clock, caplog):
    b = breaker(clock, failures=1, cooldown=1.0)
    with caplog.at_level(logging.INFO, logger="telhawk_ingest.breaker"):
        fail(b, 1, "503")
        clock.now += 1.0
        b.admit()
        b.record(True)

    changes = [(r.event, r.previous, r.state, r.levelno) for r in caplog.records]
    assert changes == [("breaker", "closed", "open", logging.WARNING),
                       ("breaker", "open", "half_open", logging.WARNING),
                       ("breaker", "half_open", "closed", logging.INFO)]


def test_failures_below_one_are_refused():
    with pytest.raises(ValueError, match="failures"):
        Breaker(0, 1.0)


def test_retry_after_is_the_cool_down_left_in_whole_seconds_and_at_least_one(clock):
    b = breaker(clock, failures=1, cooldown=10.0)
    fail(b, 1)

    assert b.retry_after() == 10
    clock.now += 2.5
    assert b.retry_after() == 8  # 7.5 s left, rounded up: never asked back before the probe
    clock.now += 7.4
    assert b.retry_after() == 1
    clock.now += 5.0
    assert b.retry_after() == 1  # the cool-down is over: come back now, not in 0 or -4 s
    assert b.admit()  # the probe, which fails: a whole cool-down again
    b.record(False, "still down")
    assert b.retry_after() == 10
