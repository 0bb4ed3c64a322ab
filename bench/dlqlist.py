"""The first page of a filtered DLQ listing (`reason=`) over 100,000 entries of mixed reasons.

The entries are written straight into a temp DLQ folder (valid records, the real name pattern, no
fsync: only the reading side is measured): half `normalization_failed`, three tenths
`validation_failed`, a fifth `storage_failed`, interleaved. Measured in process, on
`DeadLetterQueue.list` (what `GET /api/v1/dlq?reason=...` runs, without HTTP), per reason:

- cold without an index: the first call of a new DeadLetterQueue (its catalog of entry summaries
  empty, as in a process that just started) with no summary index on the volume; it reads every
  entry, then saves the index;
- warm: the median and max of the next calls of that object;
- cold with the index: the first call of new DeadLetterQueue objects (median and max of a few),
  and of new processes (the call alone, interpreter start and imports not counted);
- once, cold with a stale index: after 1,000 entries were added and 1,000 removed since it was saved;
- once, after 500 entries were rewritten in place by another DeadLetterQueue (the rewrite journal
  names them): the next call of a warm object, and the first of a new one with the index.

And the floor under every cold call: the directory's listing alone (os.scandir into a name -> inode
map; and DeadLetterQueue's whole scan: that, the name pattern, sorting). The operating system's
page cache is warm throughout: the files were just written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from . import events
from .common import Context, fmt_ms, median, say

TARGET_MS = 100.0
WARM_CALLS = 10
COLD_OBJECTS = 5  # new DeadLetterQueue objects per reason, with the index present
COLD_PROCESSES = 3  # new processes per reason, with the index present
FLOOR_RUNS = 5
STALE = 1_000  # entries added and removed before the stale-index run
REWRITTEN = 500  # entries rewritten (as by a replay that fails again) before the last runs
# A new process's first call, timed inside the process (argv: DLQ folder, reason).
CHILD = """
import sys, time
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, DlqFilter
dlq = DeadLetterQueue(DlqSettings(base_path=sys.argv[1], min_free_bytes=0))
started = time.perf_counter()
page, total, _ = dlq.list(DlqFilter(reason=sys.argv[2]), limit=100)
print((time.perf_counter() - started) * 1000, len(page), total)
"""
# Out of every ten entries: five, three and two.
MIX = ["normalization_failed"] * 5 + ["validation_failed"] * 3 + ["storage_failed"] * 2
STAGES = {"normalization_failed": "normalize", "validation_failed": "validate", "storage_failed": "store"}


def fill(directory: Path, count: int, first: int | None = None) -> float:
    """Write `count` entries of mixed reasons, ten per second of names (from unix second `first`,
    default: ending a minute ago); returns the seconds taken."""
    started = time.perf_counter()
    base = events.dlq_record()
    templates = {}
    for reason in set(MIX):
        record = dict(base, id="@ID@", reason=reason, stage=STAGES[reason], error=f"bench {reason}")
        templates[reason] = orjson.dumps(record).partition(b"@ID@")
    if first is None:
        first = int(time.time()) - count // 10 - 60
    for i in range(count):
        stem = f"failed_{first + i // 10}_{os.urandom(16).hex()}"
        prefix, _, suffix = templates[MIX[i % len(MIX)]]
        fd = os.open(directory / f"{stem}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, prefix + stem.encode() + suffix)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def first_page(dlq, reason: str) -> tuple[float, int, int]:
    """(milliseconds, records on the page, total matching) of one `list(reason=...)` call."""
    from telhawk_ingest.dlq import DlqFilter

    started = time.perf_counter()
    page, total, _cursor = dlq.list(DlqFilter(reason=reason), limit=100)
    return (time.perf_counter() - started) * 1000, len(page), total


def listing_floor(directory: Path) -> tuple[list[float], list[float]]:
    """Milliseconds of os.scandir into a name -> inode map, and of a new DLQ object's whole scan."""
    from telhawk_ingest.config import DlqSettings
    from telhawk_ingest.dlq import DeadLetterQueue

    scandir, scan = [], []
    settings = DlqSettings(base_path=directory, min_free_bytes=0)
    for _ in range(FLOOR_RUNS):
        started = time.perf_counter()
        with os.scandir(directory) as found:
            inodes = {entry.name: entry.inode() for entry in found}
        scandir.append((time.perf_counter() - started) * 1000)
        dlq = DeadLetterQueue(settings)
        started = time.perf_counter()
        dlq._scan()
        scan.append((time.perf_counter() - started) * 1000)
    assert len(inodes) >= 1
    return scandir, scan


def in_new_process(directory: Path, reason: str) -> tuple[float, int, int]:
    """`first_page` in a new Python process: (milliseconds of the call, page size, count)."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(directory), reason], capture_output=True,
                         text=True, check=True, timeout=300)
    ms, size, total = out.stdout.split()
    return float(ms), int(size), int(total)


def spread(values: list[float]) -> str:
    return f"median {fmt_ms(median(values))}, max {fmt_ms(max(values))}"


def run(ctx: Context) -> None:
    from telhawk_ingest.config import DlqSettings
    from telhawk_ingest.dlq import DeadLetterQueue
    from telhawk_ingest.dlqindex import INDEX_NAME, STATE_DIR

    count = 20_000 if ctx.quick else 100_000
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-dlqlist-"))
    try:
        directory = home / "dlq"
        directory.mkdir(mode=0o700)
        seconds = fill(directory, count)
        index = directory / STATE_DIR / INDEX_NAME
        say(f"dlqlist: {count:,} entries of mixed reasons written in {seconds:.1f} s (in process, "
            f"DeadLetterQueue.list, limit 100)")
        scandir, scan = listing_floor(directory)
        say(f"  listing alone ({FLOOR_RUNS} runs): os.scandir name->inode {spread(scandir)}; "
            f"DLQ scan (scandir, pattern, sort) {spread(scan)}")
        ctx.add(f"  listing alone: os.scandir of {count:,} names, median (max)",
                f"{fmt_ms(median(scandir))} ({fmt_ms(max(scandir))})")
        ctx.add("  listing alone: the DLQ's scan (scandir, pattern, sort), median (max)",
                f"{fmt_ms(median(scan))} ({fmt_ms(max(scan))})")
        settings = DlqSettings(base_path=directory, min_free_bytes=0)
        for reason in ("storage_failed", "normalization_failed"):
            index.unlink(missing_ok=True)
            dlq = DeadLetterQueue(settings)  # a new catalog: what a process that just started has
            bare, size, total = first_page(dlq, reason)
            assert index.is_file(), "the first full filtered listing saves the index"
            warm = [first_page(dlq, reason)[0] for _ in range(WARM_CALLS)]
            objects = [first_page(DeadLetterQueue(settings), reason) for _ in range(COLD_OBJECTS)]
            processes = [in_new_process(directory, reason) for _ in range(COLD_PROCESSES)]
            assert all(o[1:] == (size, total) for o in objects + processes), "same page and count"
            cold = [o[0] for o in objects]
            fresh = [p[0] for p in processes]
            say(f"  reason={reason:<21} ({size} on the page, count {total:,}; index "
                f"{index.stat().st_size / 1e6:.1f} MB)")
            say(f"    cold, no index: {fmt_ms(bare)}   warm, next {WARM_CALLS}: {spread(warm)}")
            say(f"    cold with the index: new objects {spread(cold)}; new processes {spread(fresh)}")
            ctx.add(f"filtered list (reason={reason}) over {count:,} entries, cold with the index: "
                    f"new object, median of {COLD_OBJECTS} (max)", f"{fmt_ms(median(cold))} "
                    f"({fmt_ms(max(cold))})", f"<= {TARGET_MS:g} ms", median(cold) <= TARGET_MS)
            ctx.add(f"  same, new process, median of {COLD_PROCESSES} (max)",
                    f"{fmt_ms(median(fresh))} ({fmt_ms(max(fresh))})", f"<= {TARGET_MS:g} ms",
                    median(fresh) <= TARGET_MS)
            ctx.add("  same, cold without an index (reads every entry, saves the index)", fmt_ms(bare),
                    f"<= {TARGET_MS:g} ms", bare <= TARGET_MS)
            ctx.add(f"  same, warm: median of next {WARM_CALLS} (max)",
                    f"{fmt_ms(median(warm))} ({fmt_ms(max(warm))})", f"<= {TARGET_MS:g} ms",
                    median(warm) <= TARGET_MS)
        stale(ctx, directory, settings, count)
        rewritten(ctx, directory, settings)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def stale(ctx: Context, directory: Path, settings: object, count: int) -> None:
    """Cold with an index that misses STALE new entries and names STALE removed ones."""
    from telhawk_ingest.dlq import FILE_RE, DeadLetterQueue

    names = sorted(n for n in os.listdir(directory) if FILE_RE.match(n))
    for name in names[:STALE]:
        os.unlink(directory / name)
    fill(directory, STALE, first=int(time.time()))
    runs = [first_page(DeadLetterQueue(settings), "storage_failed")[0]]  # this one saves a fresh index
    say(f"  stale index ({STALE:,} entries added, {STALE:,} removed since): first new object "
        f"{fmt_ms(runs[0])} (reads the {STALE:,} new entries)")
    ctx.add(f"  reason=storage_failed, cold with an index missing {STALE:,} new and naming {STALE:,} "
            f"removed entries", fmt_ms(runs[0]), f"<= {TARGET_MS:g} ms", runs[0] <= TARGET_MS)
    assert count >= STALE


def rewritten(ctx: Context, directory: Path, settings: object) -> None:
    """After REWRITTEN entries were rewritten in place by another DLQ object (each journaled): a
    warm object's next call, and a new object's first call with the index saved before."""
    from telhawk_ingest.dlq import FILE_RE, DeadLetterQueue

    warm = DeadLetterQueue(settings)
    before = first_page(warm, "storage_failed")[2]
    changed = 0
    rewriter = DeadLetterQueue(settings)
    names = sorted(n for n in os.listdir(directory) if FILE_RE.match(n))
    step = max(1, len(names) // REWRITTEN)
    for name in names[::step][:REWRITTEN]:
        record = rewriter.read(name[:-5])
        assert record is not None
        changed += record["reason"] != "storage_failed"
        record.update(reason="storage_failed", error="bench rewritten", attempts=record["attempts"] + 1)
        rewriter.rewrite(name[:-5], record)
    again, _, seen_warm = first_page(warm, "storage_failed")
    cold, _, seen_cold = first_page(DeadLetterQueue(settings), "storage_failed")
    assert seen_warm == seen_cold == before + changed, "rewritten entries counted under their new reason"
    say(f"  after {REWRITTEN:,} entries were rewritten elsewhere (journaled): warm object's next call "
        f"{fmt_ms(again)}, new object with the index {fmt_ms(cold)} (both read the {REWRITTEN:,})")
    ctx.add(f"  reason=storage_failed, warm, next call after {REWRITTEN:,} entries rewritten elsewhere",
            fmt_ms(again), "info", None)
    ctx.add(f"  reason=storage_failed, cold with the index, {REWRITTEN:,} entries rewritten since",
            fmt_ms(cold), f"<= {TARGET_MS:g} ms", cold <= TARGET_MS)
