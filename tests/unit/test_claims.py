"""Claims on DLQ entries (claims.py): exclusive, released by their holder, broken only when older
than the timeout, measured with an injected clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telhawk_ingest.claims import CLAIMS_DIR, Claims

ENTRY = "failed_1700000000_" + "a" * 32
OTHER = "failed_1700000001_" + "b" * 32
TIMEOUT = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pair(tmp_path: Path, clock: Clock) -> tuple[Claims, Claims]:
    """Two holders on one directory, as two replaying processes."""
    return Claims(tmp_path, TIMEOUT, clock), Claims(tmp_path, TIMEOUT, clock)


def test_an_entry_claimed_by_one_replay_cannot_be_claimed_by_another(pair):
    a, b = pair
    claim = a.claim(ENTRY)
    assert claim is not None and a.holds(claim)
    assert b.claim(ENTRY) is None
    assert b.claim(OTHER) is not None  # other entries stay free


def test_a_released_claim_frees_the_entry(pair, tmp_path):
    a, b = pair
    claim = a.claim(ENTRY)
    a.release(claim)
    assert os.listdir(tmp_path / CLAIMS_DIR) == []
    assert b.claim(ENTRY) is not None


def test_a_claim_is_broken_only_once_older_than_the_timeout(pair, clock, tmp_path):
    a, b = pair
    left = a.claim(ENTRY)  # its holder is killed
    clock.now += TIMEOUT - 1
    assert b.claim(ENTRY) is None
    assert b.release_stale() == []
    clock.now += 2
    assert b.release_stale() == [ENTRY]
    assert os.listdir(tmp_path / CLAIMS_DIR) == []
    taken = b.claim(ENTRY)
    assert taken is not None and b.holds(taken)
    assert not a.holds(left)  # the old holder can tell it lost the entry


def test_a_stale_claim_is_broken_by_claiming_the_entry_too(pair, clock):
    a, b = pair
    a.claim(ENTRY)
    clock.now += TIMEOUT + 1
    assert b.claim(ENTRY) is not None


def test_a_holder_that_lost_its_claim_does_not_release_the_new_one(pair, clock, tmp_path):
    a, b = pair
    old = a.claim(ENTRY)
    clock.now += TIMEOUT + 1
    new = b.claim(ENTRY)
    a.release(old)
    assert b.holds(new)
    assert os.listdir(tmp_path / CLAIMS_DIR) == [ENTRY]


def test_a_fresh_claim_moved_aside_by_a_late_breaker_is_put_back(pair, clock, tmp_path, monkeypatch):
    """The race the rename-and-check protects against: a breaker judges a claim stale, another
    process breaks it and claims the entry, then the first breaker's rename moves the fresh one."""
    a, b = pair
    a.claim(ENTRY)
    clock.now += TIMEOUT + 1
    fresh = None
    real_token = b._token

    def token_then_race(name: str) -> bytes | None:
        nonlocal fresh
        token = real_token(name)
        if name == ENTRY and fresh is None:
            os.unlink(tmp_path / CLAIMS_DIR / ENTRY)  # a third process breaks it ...
            fresh = Claims(tmp_path, TIMEOUT, clock).claim(ENTRY)  # ... and claims the entry
        return token

    monkeypatch.setattr(b, "_token", token_then_race)
    assert b.claim(ENTRY) is None
    assert fresh is not None
    assert Claims(tmp_path, TIMEOUT, clock).holds(fresh)
    assert os.listdir(tmp_path / CLAIMS_DIR) == [ENTRY]


def test_release_stale_removes_aside_files_a_killed_breaker_left(pair, clock, tmp_path):
    a, _ = pair
    a.claim(OTHER)
    aside = tmp_path / CLAIMS_DIR / f"{ENTRY}.broken-{'c' * 32}"
    aside.write_bytes(b"x")
    clock.now += TIMEOUT + 1
    a.release_stale()
    assert os.listdir(tmp_path / CLAIMS_DIR) == []
