"""The first page of a filtered DLQ listing (`reason=`) over 100,000 entries of mixed reasons.

The entries are written straight into a temp DLQ folder (valid records, the real name pattern, no
fsync: only the reading side is measured): half `normalization_failed`, three tenths
`validation_failed`, a fifth `storage_failed`, interleaved. Measured in process, on
`DeadLetterQueue.list` (what `GET /api/v1/dlq?reason=...` runs, without HTTP): the first call of a
new DeadLetterQueue (cold: its catalog of entry summaries is empty, as in a process that just
started), then the median and max of the next calls (warm), for each reason. The operating system's
page cache is warm in both: the files were just written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from . import events
from .common import Context, fmt_ms, median, say

TARGET_MS = 100.0
WARM_CALLS = 10
# Out of every ten entries: five, three and two.
MIX = ["normalization_failed"] * 5 + ["validation_failed"] * 3 + ["storage_failed"] * 2
STAGES = {"normalization_failed": "normalize", "validation_failed": "validate", "storage_failed": "store"}


def fill(directory: Path, count: int) -> float:
    """Write `count` entries of mixed reasons, ten per second of names; returns the seconds taken."""
    started = time.perf_counter()
    base = events.dlq_record()
    templates = {}
    for reason in set(MIX):
        record = dict(base, id="@ID@", reason=reason, stage=STAGES[reason], error=f"bench {reason}")
        templates[reason] = orjson.dumps(record).partition(b"@ID@")
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


def run(ctx: Context) -> None:
    from telhawk_ingest.config import DlqSettings
    from telhawk_ingest.dlq import DeadLetterQueue

    count = 20_000 if ctx.quick else 100_000
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-dlqlist-"))
    try:
        directory = home / "dlq"
        directory.mkdir(mode=0o700)
        seconds = fill(directory, count)
        say(f"dlqlist: {count:,} entries of mixed reasons written in {seconds:.1f} s (in process, "
            f"DeadLetterQueue.list, limit 100)")
        settings = DlqSettings(base_path=directory, min_free_bytes=0)
        for reason in ("storage_failed", "normalization_failed"):
            dlq = DeadLetterQueue(settings)  # a new catalog: what a process that just started has
            cold, size, total = first_page(dlq, reason)
            warm = [first_page(dlq, reason)[0] for _ in range(WARM_CALLS)]
            say(f"  reason={reason:<21} cold {fmt_ms(cold)}  next {WARM_CALLS}: median "
                f"{fmt_ms(median(warm))}, max {fmt_ms(max(warm))}   ({size} on the page, count {total:,})")
            ctx.add(f"filtered list (reason={reason}) over {count:,} entries, cold", fmt_ms(cold),
                    f"<= {TARGET_MS:g} ms", cold <= TARGET_MS)
            ctx.add(f"  same, warm: median of next {WARM_CALLS} (max)",
                    f"{fmt_ms(median(warm))} ({fmt_ms(max(warm))})", f"<= {TARGET_MS:g} ms",
                    median(warm) <= TARGET_MS)
    finally:
        shutil.rmtree(home, ignore_errors=True)
