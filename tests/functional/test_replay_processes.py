"""Replays in real processes on one DLQ directory: claims keep every entry replayed exactly once,
and a replay killed midway loses and doubles nothing (SPEC §11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from telhawk_ingest.claims import CLAIMS_DIR, HOLDER_PREFIX
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import NO_FILTER, DeadLetterQueue
from telhawk_ingest.replay import Replayer, ReplayRequest
from telhawk_ingest.service import Service
from tests.readback import stored_documents
from tests.replay_worker import settings, write_entries

ROOT = Path(__file__).resolve().parents[2]


def worker(dlq: Path, data: Path, mode: str, gate: Path | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tests.replay_worker", str(dlq), str(data), mode]
    if gate is not None:
        args.append(str(gate))
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.01)


def claim_names(dlq_path: Path) -> list[str]:
    """The entries claimed under the DLQ (holder files aside)."""
    return sorted(n for n in os.listdir(dlq_path / CLAIMS_DIR) if not n.startswith(HOLDER_PREFIX))


def envelope_ids(dlq: DeadLetterQueue, entry_ids: list[str]) -> dict[str, str]:
    return {entry_id: dlq.get(entry_id)["envelope"]["id"] for entry_id in entry_ids}


def test_two_processes_replaying_at_once_replay_every_entry_exactly_once(tmp_path):
    dlq_path = tmp_path / "dlq"
    dlq = DeadLetterQueue(DlqSettings(base_path=dlq_path, min_free_bytes=0))
    entries = write_entries(dlq, 300)
    envelopes = envelope_ids(dlq, entries)
    gate = tmp_path / "go"
    # Each process stores into its own store: an entry replayed by both would be in both.
    procs = [worker(dlq_path, tmp_path / name, "all", gate) for name in ("a", "b")]
    wait_for(lambda: all((tmp_path / f"ready-{name}").exists() for name in ("a", "b")))
    gate.touch()
    outputs = [p.communicate(timeout=120) for p in procs]

    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    replayed = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert not set(replayed[0]) & set(replayed[1])
    assert sorted(replayed[0] + replayed[1]) == sorted(entries)
    stored = [d["_id"] for name in ("a", "b") for d in stored_documents(tmp_path / name)]
    assert Counter(stored) == Counter(envelopes.values())  # each event stored once, in one store
    assert not list(dlq_path.glob("failed_*.json"))
    assert os.listdir(dlq_path / CLAIMS_DIR) == []


def test_a_replay_killed_midway_loses_and_doubles_nothing_and_its_claims_are_released(tmp_path):
    dlq_path, data = tmp_path / "dlq", tmp_path / "data"
    dlq = DeadLetterQueue(DlqSettings(base_path=dlq_path, min_free_bytes=0))
    entries = sorted(write_entries(dlq, 35))  # replayed oldest name first
    envelopes = envelope_ids(dlq, entries)
    proc = worker(dlq_path, data, "hang")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "hanging"  # first batch stored, second claimed
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    claimed = claim_names(dlq_path)
    left = sorted(p.stem for p in dlq_path.glob("failed_*.json"))
    assert claimed == entries[10:20]  # the batch it was storing when killed
    assert left == entries[10:]  # the stored batch removed, nothing else
    assert sorted(d["_id"] for d in stored_documents(data)) == sorted(envelopes[e] for e in entries[:10])

    config = settings(dlq_path, data)
    svc = Service(config)
    try:
        # Before the timeout the killed replay's claims hold: those entries are skipped.
        early = Replayer(svc, clock=lambda: time.time() + 60).run(ReplayRequest(filter=NO_FILTER))
        assert (early.stored, early.skipped) == (15, 10)
        assert claim_names(dlq_path) == claimed
        timeout = config.replay.claim_timeout_seconds
        late = Replayer(svc, clock=lambda: time.time() + timeout + 1).run(ReplayRequest(filter=NO_FILTER))
        assert (late.matched, late.stored, late.skipped, late.next_cursor) == (10, 10, 0, None)
    finally:
        svc.backend.close()
    assert os.listdir(dlq_path / CLAIMS_DIR) == []
    assert not list(dlq_path.glob("failed_*.json"))
    assert Counter(d["_id"] for d in stored_documents(data)) == Counter(envelopes.values())
