"""Per-token rate limits (ratelimit.py): a token bucket of events per token, per process."""

from __future__ import annotations

import pytest

from telhawk_ingest.config import HecToken
from telhawk_ingest.errors import HecError
from telhawk_ingest.ratelimit import TokenRates

LIMITED = HecToken(name="firewalls", token="t" * 32, rate_limit={"events_per_second": 2, "burst": 2})
FREE = HecToken(name="apps", token="u" * 32)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_token_gets_its_burst_then_503_code_9_with_the_seconds_until_it_refills():
    clock = Clock()
    rates = TokenRates([LIMITED, FREE], clock)
    rates.admit(LIMITED, 2)

    with pytest.raises(HecError) as refused:
        rates.admit(LIMITED, 1)

    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (503, 9, 1)
    assert "token 'firewalls' is over its rate limit of 2 events/s" in str(refused.value)
    assert "t" * 32 not in str(refused.value)
    assert rates.limited == 1


def test_a_request_larger_than_the_burst_passes_and_later_ones_wait_for_the_refill():
    clock = Clock()
    rates = TokenRates([LIMITED], clock)
    rates.admit(LIMITED, 2)
    clock.now += 0.5  # one event's worth

    rates.admit(LIMITED, 5)  # passes, the bucket goes to -4

    with pytest.raises(HecError) as refused:
        rates.admit(LIMITED, 1)
    assert refused.value.retry_after == 3  # at 2 s the bucket is back at 0, above it only after
    clock.now += 2.5
    rates.admit(LIMITED, 1)


def test_tokens_without_a_limit_are_never_refused():
    rates = TokenRates([LIMITED, FREE], Clock())

    for _ in range(1000):
        rates.admit(FREE, 100)

    assert rates.limited == 0


def test_the_burst_defaults_to_one_seconds_worth():
    token = HecToken(name="x", token="v" * 32, rate_limit={"events_per_second": 2.5})
    rates = TokenRates([token], Clock())

    rates.admit(token, 1)
    rates.admit(token, 1)
    rates.admit(token, 1)  # 3 = ceil(2.5) in the burst
    with pytest.raises(HecError):
        rates.admit(token, 1)
