"""The audit log stays bounded: refused calls are rate-limited and summarized, files are capped,
folded and retired, and granted calls are always written (audit.py)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from telhawk_ingest import audit, fold
from telhawk_ingest.audit import REFUSED_LINES_PER_WINDOW, REFUSED_WINDOW_S, AuditLog


@pytest.fixture(autouse=True)
def no_background_compaction(monkeypatch):
    """A process compacts when it writes, when due; here each test says when compactions run."""
    monkeypatch.setattr(AuditLog, "compact_if_due", lambda self: None)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def log_in(directory: Path, clock: Clock | None = None) -> AuditLog:
    return AuditLog(directory, clock=clock or Clock(), summary_timer=False)


def deny(log: AuditLog, status: int = 401, path: str = "/api/v1/dlq") -> None:
    log.record(None, "denied", 0, {"method": "GET", "path": path, "status": status})


def test_refused_calls_past_the_budget_become_one_summary_line_when_the_window_ends(tmp_path):
    clock = Clock()
    log = log_in(tmp_path, clock)
    for _ in range(300):
        deny(log)
    assert len(list(log.entries())) == REFUSED_LINES_PER_WINDOW

    clock.now += REFUSED_WINDOW_S
    log.flush_suppressed()

    *lines, summary = list(log.entries())
    assert len(lines) == REFUSED_LINES_PER_WINDOW
    assert summary["action"] == "refused_suppressed" and summary["count"] == 300 - REFUSED_LINES_PER_WINDOW
    assert summary["params"]["message"] == (
        "280 more refused calls from callers without a valid credential suppressed")
    assert summary["params"]["calls"] == [{"action": "denied", "operator": None, "status": 401,
                                           "method": "GET", "path": "/api/v1/dlq", "count": 280}]


def test_granted_calls_are_always_written_even_when_refusals_are_suppressed(tmp_path):
    log = log_in(tmp_path)
    for _ in range(100):
        deny(log)
    log.record("ops", "purge_dlq", 3, {"reason": "validation_failed"})
    log.record("ops", "list_dlq", 0, {})

    actions = Counter(e["action"] for e in log.entries())
    assert actions == {"denied": REFUSED_LINES_PER_WINDOW, "purge_dlq": 1, "list_dlq": 1}


def test_a_new_window_writes_the_last_ones_summary_then_admits_refusals_again(tmp_path):
    clock = Clock()
    log = log_in(tmp_path, clock)
    for _ in range(REFUSED_LINES_PER_WINDOW + 5):
        log.record("alice", "refused", 0, {"method": "DELETE", "path": "/api/v1/dlq/purge", "status": 400})
    clock.now += REFUSED_WINDOW_S + 1
    deny(log, status=403)

    entries = list(log.entries())
    assert [e["action"] for e in entries[-2:]] == ["refused_suppressed", "denied"]
    assert entries[-2]["count"] == 5 and "from alice suppressed" in entries[-2]["params"]["message"]


def test_the_summary_comes_by_itself_when_no_call_follows(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "REFUSED_WINDOW_S", 0.2)
    log = AuditLog(tmp_path)  # real clock, summary timer on
    for _ in range(REFUSED_LINES_PER_WINDOW + 3):
        deny(log)
    deadline = time.monotonic() + 5
    while not any(e["action"] == "refused_suppressed" for e in log.entries()):
        assert time.monotonic() < deadline, "no summary line within 5 s"
        time.sleep(0.05)
    assert [e["count"] for e in log.entries() if e["action"] == "refused_suppressed"] == [3]


def test_a_process_file_is_closed_at_the_size_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "MAX_FILE_BYTES", 1000)
    log = log_in(tmp_path)
    for i in range(50):
        log.record("ops", "list_dlq", i, {})

    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert len(sizes) > 1 and max(sizes) <= 1000
    assert [e["count"] for e in log.entries()] == list(range(50))


def dead_process_files(directory: Path, n: int, age_s: float) -> list[dict]:
    written = []
    for i in range(n):
        log = log_in(directory)
        log.record("ops", "list_dlq", i, {"cursor": f"c{i}"})
        written.append(i)
        assert log._path is not None
        then = time.time() - age_s
        os.utime(log._path, (then, then))
    return written


def test_files_of_processes_gone_are_folded_into_archives_with_every_line_once(tmp_path):
    written = dead_process_files(tmp_path, 300, audit.ABSORB_AFTER_S + 1)
    assert len(list(tmp_path.iterdir())) == 300

    assert log_in(tmp_path).compact(now=time.time()) == 300

    assert [p.name.startswith(audit.ARCHIVE_PREFIX) for p in tmp_path.iterdir()] == [True]
    assert sorted(e["count"] for e in AuditLog(tmp_path).entries()) == written


def test_small_archives_are_merged_and_the_oldest_are_deleted_past_the_file_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(audit, "MAX_FILES", 5)
    monkeypatch.setattr(audit, "MAX_FILE_BYTES", 400)
    dead_process_files(tmp_path, 40, audit.ABSORB_AFTER_S + 1)

    log_in(tmp_path).compact(now=time.time())

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 5 and all(n.startswith(audit.ARCHIVE_PREFIX) for n in names)
    counts = sorted(e["count"] for e in AuditLog(tmp_path).entries())
    assert counts == sorted(set(counts)) and counts[-1] == 39  # the newest kept, none twice


def test_a_fold_stopped_after_its_commit_never_shows_a_line_twice(tmp_path, monkeypatch):
    written = dead_process_files(tmp_path, 4, audit.ABSORB_AFTER_S + 1)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # killed before cleaning up
    log_in(tmp_path).compact(now=time.time())
    monkeypatch.undo()
    assert sum(fold.is_claim(p.name) for p in tmp_path.iterdir()) == 4

    assert sorted(e["count"] for e in AuditLog(tmp_path).entries()) == written
    log_in(tmp_path).compact(now=time.time() + fold.CLAIM_STALE_S + 1)
    assert not any(fold.is_claim(p.name) for p in tmp_path.iterdir())
    assert sorted(e["count"] for e in AuditLog(tmp_path).entries()) == written


@pytest.mark.parametrize("n", [0, 1])
def test_nothing_to_fold_changes_nothing(tmp_path, n):
    dead_process_files(tmp_path, n, 10.0)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert log_in(tmp_path).compact(now=time.time()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before
