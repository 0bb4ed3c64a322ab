"""Claims on DLQ entries (claims.py): exclusive, released by their holder, broken only when older
than the timeout, measured with an injected clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from telhawk_ingest.claims import CLAIMS_DIR, HOLDER_PREFIX, Claims

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
def claims(tmp_path: Path, clock: Clock) -> Claims:
    return Claims(tmp_path, TIMEOUT, clock)


def names(tmp_path: Path) -> list[str]:
    """The claims directory's entry claims (holder files aside)."""
    return sorted(n for n in os.listdir(tmp_path / CLAIMS_DIR) if not n.startswith(HOLDER_PREFIX))


def test_an_entry_claimed_by_one_replay_cannot_be_claimed_by_another(claims):
    a, b = claims.holder(), claims.holder()
    assert a.claim(ENTRY) and a.holds(ENTRY)
    assert not b.claim(ENTRY) and not b.holds(ENTRY)
    assert b.claim(OTHER)  # other entries stay free


def test_claiming_twice_from_one_holder_is_harmless(claims):
    # What a retried link whose first try succeeded looks like (NFS): the claim is still ours.
    a = claims.holder()
    assert a.claim(ENTRY) and a.claim(ENTRY) and a.holds(ENTRY)


def test_a_released_claim_frees_the_entry_and_a_closed_holder_leaves_nothing(claims, tmp_path):
    with claims.holder() as a:
        a.claim(ENTRY)
        a.claim(OTHER)
        a.release(ENTRY)
        assert names(tmp_path) == [OTHER]
        assert claims.holder().claim(ENTRY)
    assert names(tmp_path) == [ENTRY]  # the other holder's, still open
    assert len(os.listdir(tmp_path / CLAIMS_DIR)) == 2  # its claim and its holder file


def test_a_claim_is_broken_only_once_older_than_the_timeout(claims, clock, tmp_path):
    killed = claims.holder()
    killed.claim(ENTRY)  # its replay is killed: nothing releases it
    clock.now += TIMEOUT - 1
    assert not claims.holder().claim(ENTRY)
    assert claims.release_stale() == []
    clock.now += 2
    # Holder files' mtimes are real: the killed one is stale once the clock passes its mtime + timeout.
    assert claims.release_stale() == [ENTRY]
    assert os.listdir(tmp_path / CLAIMS_DIR) == []  # its holder file and the new ones' files too
    fresh = claims.holder()
    assert fresh.claim(ENTRY) and fresh.holds(ENTRY)
    assert not killed.holds(ENTRY)  # the old holder can tell it lost the entry


def test_a_stale_claim_is_broken_by_claiming_the_entry_too(claims, clock):
    claims.holder().claim(ENTRY)
    clock.now += TIMEOUT + 1
    assert claims.holder().claim(ENTRY)


def test_a_holder_that_lost_its_claim_does_not_release_the_new_one(claims, clock, tmp_path):
    old = claims.holder()
    old.claim(ENTRY)
    clock.now += TIMEOUT + 1
    new = claims.holder()
    assert new.claim(ENTRY)
    old.close()
    assert new.holds(ENTRY)
    assert names(tmp_path) == [ENTRY]


def test_a_fresh_claim_moved_aside_by_a_late_breaker_is_put_back(claims, clock, tmp_path, monkeypatch):
    """The race the rename-and-check protects against: a breaker judges a claim stale, another
    process breaks it and claims the entry, then the first breaker's rename moves the fresh one."""
    claims.holder().claim(ENTRY)
    clock.now += TIMEOUT + 1
    late = Claims(tmp_path, TIMEOUT, clock)
    other = Claims(tmp_path, TIMEOUT, clock).holder()
    real_stale = late._stale

    def stale_then_race(name: str):
        st = real_stale(name)
        if name == ENTRY:
            os.unlink(tmp_path / CLAIMS_DIR / ENTRY)  # a third process breaks it ...
            assert other.claim(ENTRY)  # ... and claims the entry
        return st

    monkeypatch.setattr(late, "_stale", stale_then_race)
    assert late.break_if_stale(ENTRY) is False
    clock.now = time.time()
    assert other.holds(ENTRY)
    assert names(tmp_path) == [ENTRY]


def test_release_stale_removes_what_killed_replays_and_breakers_left(claims, clock, tmp_path):
    claims.holder()  # a holder file whose replay was killed before claiming anything
    (tmp_path / CLAIMS_DIR / f"{ENTRY}.broken-{'c' * 32}").write_bytes(b"")  # a breaker killed midway
    clock.now += TIMEOUT + 1
    claims.release_stale()
    assert os.listdir(tmp_path / CLAIMS_DIR) == []
