from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import backoff._sync
import freezegun
import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, settings

from telhawk_ingest import heap

# pytest measures test durations (--durations, and mutmut's time limits) on real time, not the frozen
# clock. And frozen time reaches the service in the worker threads the ASGI handlers hand it to:
# freezegun's default list would give real time to any call with `threading` within five frames up
# the stack, so how deep a clock read sits would decide which clock it gets.
freezegun.configure(default_ignore_list=[
    *(name for name in freezegun.config.DEFAULT_IGNORE_LIST if name != "threading"), "_pytest.timing"])


def _fresh_event_loop() -> None:
    """A process forked from the test process (mutation testing forks a warm one per mutant) starts
    with a new event loop. The Lambda entry points run their app on the main thread's loop
    (Mangum); inherited, that loop's default executor keeps the worker threads the fork did not
    copy, so a handler run in the child would wait for them forever."""
    asyncio.set_event_loop(asyncio.new_event_loop())


os.register_at_fork(after_in_child=_fresh_event_loop)

# The emulator's start-up and a Lambda handler's first invocation freeze their process's heap
# (heap.py); this process runs them among its tests' objects, which must still be collected.
heap.enabled = False

# Mutation testing (mutmut names the mutant under test in MUTANT_UNDER_TEST): a test that runs far
# longer than it did without the mutant fails, so a mutant that makes the code hang or crawl is
# reported as soon as one test notices, not at mutmut's limit for all of the function's tests
# together (which can be an hour). The limit is ten times the test's time in mutmut's measuring run
# (mutmut-stats.json, in the folder the tests run from), at least MUTANT_TEST_FLOOR_S; a test that
# run did not time gets MUTANT_TEST_LIMIT_S. The slowest test takes about 15 s on a loaded 2-core
# machine.
MUTANT_TEST_LIMIT_S = 120
MUTANT_TEST_FLOOR_S = 20
_mutmut_durations: dict[str, float] | None = None


class MutantTestTimeout(Exception):
    pass


def mutant_test_limit(nodeid: str) -> float:
    """Seconds the test `nodeid` may run with a mutant applied."""
    global _mutmut_durations
    if _mutmut_durations is None:
        try:
            _mutmut_durations = json.loads(Path("mutmut-stats.json").read_bytes())["duration_by_test"]
        except (OSError, ValueError, KeyError):
            _mutmut_durations = {}
    measured = _mutmut_durations.get(nodeid)
    return MUTANT_TEST_LIMIT_S if measured is None else max(MUTANT_TEST_FLOOR_S, 10 * measured)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item,
                            nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """The limit covers the test's fixtures too: a mutant can hang one."""
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return (yield)
    limit = mutant_test_limit(item.nodeid)

    def too_slow(_signum: int, _frame: object) -> None:
        raise MutantTestTimeout(f"still running after {limit:.0f} s with a mutant applied")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Frozen time; backoff's sleeps are recorded and advance the frozen clock instead of waiting."""
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        recorded: list[float] = []

        def sleep(seconds: float) -> None:
            recorded.append(seconds)
            frozen.tick(seconds)

        monkeypatch.setattr(backoff._sync.time, "sleep", sleep)
        yield recorded


# Hypothesis: `ci` (the default) tries the same bodies on every run, so a failure in CI is one a
# developer gets again; `explore` draws new ones and ten times as many. Choose with
# HYPOTHESIS_PROFILE. No deadline: one example starts a Service and writes real files.
settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", settings.get_profile("ci"), max_examples=1000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(base: int) -> int:
    """A test's example count under the loaded profile: `base` under `ci`, scaled by the others."""
    return max(1, base * settings.default.max_examples // 100)


@pytest.fixture
def west_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC-8 (no DST), so local and UTC days differ before 08:00 UTC."""
    monkeypatch.setenv("TZ", "XST+08")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
