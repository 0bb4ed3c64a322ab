from __future__ import annotations

import time
from collections.abc import Iterator

import backoff._sync
import freezegun
import pytest
from freezegun import freeze_time

# pytest measures test durations (--durations, and mutmut's time limits) on real time, not the frozen clock.
freezegun.configure(extend_ignore_list=["_pytest.timing"])


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


@pytest.fixture
def west_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC-8 (no DST), so local and UTC days differ before 08:00 UTC."""
    monkeypatch.setenv("TZ", "XST+08")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
