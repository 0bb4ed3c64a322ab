"""State files on the DLQ volume under serverless cold starts: file counts and read time stay bounded.

10,000 simulated cold starts, one every GAP_S seconds of simulated time (file times set with
utime, compactions given that time): each counts a few events, writes its counters file, runs the
compaction a process runs at its first write, and is killed (no clean exit, as on Lambda); one in
AUDIT_EVERY also gets a tokenless operator call, which writes an audit file. At checkpoints: the
files in `.state/counters` and `.state/audit`, the time a fresh process's `Counters.totals()`
(what `healthz` reads of them) takes, and a check that the totals are exact. For comparison, the
same number of counters files with no compaction, as before.
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from telhawk_ingest import stats
from telhawk_ingest.audit import AuditLog
from telhawk_ingest.stats import Counters

from .common import Context, say, table

STARTS = 10_000
GAP_S = 2.0
AUDIT_EVERY = 10
CHECKPOINTS = (1_000, 2_000, 5_000, 10_000)


def _kill(counters: Counters) -> None:
    atexit.unregister(counters.retire)
    stats._live.discard(counters)
    if counters._fd is not None:
        os.close(counters._fd)
        counters._fd = None


def _set_time(path: Path | None, when: float) -> None:
    if path is not None:
        os.utime(path, (when, when))


def _totals_ms(directory: Path) -> tuple[float, int]:
    """Median of five cold reads by a fresh process: (ms, stored total)."""
    times, stored = [], 0
    for _ in range(5):
        stats._compacted_cache.clear()
        reader = Counters(directory)
        started = time.perf_counter()
        stored = reader.totals()["stored"]
        times.append((time.perf_counter() - started) * 1000)
        _kill(reader)
    return statistics.median(times), stored


def run(ctx: Context) -> None:
    starts = STARTS // 10 if ctx.quick else STARTS
    root = Path(tempfile.mkdtemp(prefix="bench-state-"))
    counters_dir, audit_dir, plain_dir = root / "counters", root / "audit", root / "plain"
    t0 = time.time() - starts * GAP_S
    rows, expected = [], 0
    began = time.monotonic()
    try:
        for i in range(1, starts + 1):
            now = t0 + i * GAP_S
            process = Counters(counters_dir)
            process.add(stored=i % 7 + 1, requests_rejected=1, now=True)
            expected += i % 7 + 1
            _set_time(process._path, now)
            process.compact(now=now)
            _kill(process)
            if i % AUDIT_EVERY == 0:
                audit = AuditLog(audit_dir, clock=lambda now=now: now, summary_timer=False)
                audit.record(None, "denied", 0, {"method": "GET", "path": "/api/v1/dlq", "status": 401})
                _set_time(audit._path, now)
                audit.compact(now=now)
            if i in CHECKPOINTS or i == starts:
                ms, stored = _totals_ms(counters_dir)
                audit_files = list(audit_dir.iterdir()) if audit_dir.exists() else []
                rows.append([f"{i:,}", str(len(list(counters_dir.iterdir()))), f"{ms:.1f} ms",
                             "exact" if stored == expected else f"WRONG ({stored} != {expected})",
                             str(len(audit_files)), f"{sum(p.stat().st_size for p in audit_files):,}"])
        elapsed = time.monotonic() - began
        for _ in range(starts):  # the same cold starts without compaction, as before
            process = Counters(plain_dir)
            process.add(stored=1, now=True)
            _kill(process)
        plain_ms, _ = _totals_ms(plain_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    say(f"state: {starts:,} simulated cold starts, one every {GAP_S:.0f} s, killed; "
        f"1 in {AUDIT_EVERY} with a tokenless operator call ({elapsed:.0f} s)")
    say(table(rows, ["cold starts", "counters files", "totals() read", "totals",
                     "audit files", "audit bytes"]))
    say(f"  without compaction: {starts:,} counters files, totals() read {plain_ms:.1f} ms")
    ctx.add("state: counters files after 10k cold starts", rows[-1][1], "bounded")
    ctx.add("state: healthz counters read after 10k cold starts", rows[-1][2],
            f"info (was {plain_ms:.1f} ms)")
