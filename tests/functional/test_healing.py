"""Self-healing (healing.py): `storage_failed` entries replayed in the background once storage
works again, rate-limited, one run per process, stopping when storage fails again."""

from __future__ import annotations

import threading
from pathlib import Path

from telhawk_ingest import healing
from telhawk_ingest.audit import AuditLog
from telhawk_ingest.storage.base import Item, Outcome
from tests.functional.test_ingest import CISCO, SSHD_EVENT
from tests.functional.test_replay import Switch, entries, replay, stored_ids


def dead_letter_storage_failures(make_client, tmp_path: Path, n: int, **sections):
    """A client whose store was down while `n` sshd events and one cisco_asa event came in."""
    switch = Switch(tmp_path)
    client = make_client(backend=switch, core={"max_retries": 0}, **sections)
    switch.down = True
    client.hec(SSHD_EVENT * n + CISCO)
    switch.down = False
    return client, switch


def test_healing_drains_storage_failures_and_leaves_other_entries(make_client, tmp_path):
    client, _ = dead_letter_storage_failures(make_client, tmp_path, 5)
    failed = [r for r in entries(client) if r["reason"] == "storage_failed"]
    assert len(failed) == 5

    assert healing.start_healing(client.service) is True
    thread = healing.healing_thread()
    assert thread is not None
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert [r["reason"] for r in entries(client)] == ["normalization_failed"]
    assert sorted(stored_ids(client)) == sorted(r["envelope"]["id"] for r in failed)
    audit = list(AuditLog(client.service.settings.state_path / "audit").entries())
    assert [(a["operator"], a["action"], a["count"]) for a in audit] == [("self-healing", "replay_dlq", 5)]


def test_healing_is_rate_limited_with_the_injected_clock(make_client, tmp_path):
    client, _ = dead_letter_storage_failures(make_client, tmp_path, 5, replay={"heal_rate_limit": 2})
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    healed = healing.heal(client.service, monotonic=lambda: now[0], sleep=sleep)

    assert (healed.stored, healed.stopped) == (5, "drained")
    assert sleeps == [1.0, 1.0]  # 2 events/s: batches of 2, 2, 1, a second apart


def test_healing_stops_when_storage_fails_again_and_leaves_the_rest_untouched(make_client, tmp_path):
    client, switch = dead_letter_storage_failures(make_client, tmp_path, 5, replay={"heal_rate_limit": 2})
    switch.down = True

    healed = healing.heal(client.service, monotonic=lambda: 0.0, sleep=lambda s: None)

    assert (healed.stored, healed.failed, healed.stopped) == (0, 2, "storage failing")
    attempts = sorted(r["attempts"] for r in entries(client) if r["reason"] == "storage_failed")
    assert attempts == [1, 1, 1, 2, 2]  # one batch tried again, then it stopped
    assert stored_ids(client) == []


class Gate:
    """The embedded store, held closed until `release()`: a healing run that stays running."""

    name = "local"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.opened = threading.Event()
        self.entered = threading.Event()

    def store(self, batch: list[Item]) -> list[Outcome]:
        self.entered.set()
        self.opened.wait(timeout=60)
        return self.inner.store(batch)

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


def test_one_healing_run_at_a_time_per_process(make_client, tmp_path):
    client, switch = dead_letter_storage_failures(make_client, tmp_path, 3)
    gate = Gate(switch)
    client.service.backend = gate

    assert healing.start_healing(client.service) is True
    assert gate.entered.wait(timeout=60)
    assert healing.start_healing(client.service) is False  # one is running
    gate.opened.set()
    healing.healing_thread().join(timeout=60)
    assert [r["reason"] for r in entries(client)] == ["normalization_failed"]
    assert healing.start_healing(client.service) is True  # the run is over: a new one may start
    healing.healing_thread().join(timeout=60)


def test_healing_can_be_turned_off(make_client, tmp_path):
    client, _ = dead_letter_storage_failures(make_client, tmp_path, 2, replay={"heal_on_recovery": False})
    assert healing.start_healing(client.service) is False
    assert len(entries(client)) == 3


OPENS_AT_ONCE = {"breaker": {"failures": 1}}  # the outage's first failed try opens the breaker


def test_an_open_breaker_turns_a_replay_away_leaving_every_entry_as_it_was(make_client, tmp_path):
    client, switch = dead_letter_storage_failures(make_client, tmp_path, 3, storage=OPENS_AT_ONCE)
    assert not client.service.breaker.closed  # the outage opened it
    before = {p.name: p.read_bytes() for p in client.service.settings.dlq.base_path.glob("failed_*.json")}
    switch.down = True

    answer = replay(client, {"filter": {"reason": "storage_failed"}})

    assert answer.status_code == 503 and "breaker" in answer.json()["error"]
    after = {p.name: p.read_bytes() for p in client.service.settings.dlq.base_path.glob("failed_*.json")}
    assert after == before  # not an attempt: nothing rewritten
    healed = healing.heal(client.service, monotonic=lambda: 0.0, sleep=lambda s: None)
    assert healed.stopped == "storage failing"


def test_a_replay_the_open_breaker_turns_away_says_when_to_come_back(make_client, tmp_path):
    storage = {"breaker": {"failures": 1, "cooldown_seconds": 120}}
    client, switch = dead_letter_storage_failures(make_client, tmp_path, 2, storage=storage)
    switch.down = True

    answer = replay(client, {"filter": {"reason": "storage_failed"}})

    assert answer.status_code == 503
    assert 118 <= int(answer.headers["Retry-After"]) <= 120  # the cool-down left, not a fixed guess


def test_the_breaker_closing_after_an_outage_starts_healing(make_client, tmp_path):
    client, _ = dead_letter_storage_failures(make_client, tmp_path, 4, storage=OPENS_AT_ONCE)
    breaker = client.service.breaker
    assert not breaker.closed

    breaker.record(True)  # the probe after the cool-down was stored: storage is back

    thread = healing.healing_thread()
    assert breaker.closed and thread is not None
    thread.join(timeout=60)
    assert [r["reason"] for r in entries(client)] == ["normalization_failed"]
    assert len(stored_ids(client)) == 4
