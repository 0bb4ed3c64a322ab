"""DLQ write latency, in process: `DeadLetterQueue.write` against a bare durable write.

Three writers of the same ~1 KB record bytes into the same directory, alternated in blocks so
that disk and machine noise falls on all of them alike:
- `dlq`: `DeadLetterQueue.write(record)` (serialize, temp file, write, fsync, rename, directory
  fsync, plus the free-space check);
- `bare`: os.open + write + fsync + close + rename of the pre-serialized bytes;
- `bare+dir`: the same plus a directory fsync, which is what makes the rename itself durable.
Then `write_many` in batches of 10, per event.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from . import events
from .common import Context, fmt_ms, say
from .load import percentile

TARGET_P99_MS = 2.0
TARGET_RATIO = 1.5
BLOCK = 50
MAX_SECONDS = 60.0  # per phase; a disk this slow still gets figures, from fewer records


def _bare(directory: Path, data: bytes, i: int, dir_fsync: bool) -> float:
    started = time.perf_counter()
    tmp = directory / f".tmp-bare-{i}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / f"bare_{i}.json")
    if dir_fsync:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return time.perf_counter() - started


def run(ctx: Context) -> None:
    from telhawk_ingest.config import DlqSettings
    from telhawk_ingest.dlq import DeadLetterQueue

    n = 600 if ctx.quick else 2000
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-dlq-"))
    try:
        directory = home / "dlq"
        dlq = DeadLetterQueue(DlqSettings(enabled=True, base_path=directory))
        template = events.dlq_record()
        sample = dict(template, id=f"failed_{int(time.time())}_{'0' * 32}")
        data = orjson.dumps(sample)
        say(f"dlq: up to {n} records of {len(data):,} B per writer, in {directory.parent} "
            f"(alternating blocks of {BLOCK})")
        times: dict[str, list[float]] = {"dlq": [], "bare": [], "bare+dir": []}
        order = list(times)
        done = 0
        deadline = time.monotonic() + MAX_SECONDS
        while done < n and time.monotonic() < deadline:
            for name in order:
                for k in range(done, min(done + BLOCK, n)):
                    if name == "dlq":
                        record = dict(template, envelope=dict(template["envelope"]))
                        started = time.perf_counter()
                        dlq.write(record)
                        times[name].append(time.perf_counter() - started)
                    else:
                        times[name].append(_bare(directory, data, k, name == "bare+dir"))
            order = order[1:] + order[:1]
            done += BLOCK
        batch_times = []
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(n // 10):
            if time.monotonic() > deadline:
                break
            records = [dict(template, envelope=dict(template["envelope"])) for _ in range(10)]
            started = time.perf_counter()
            dlq.write_many(records)
            batch_times.append((time.perf_counter() - started) / 10)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    stats = {}
    for name, values in times.items():
        values.sort()
        stats[name] = (percentile(values, 50) * 1000, percentile(values, 99) * 1000)
        say(f"  {name:<9} p50 {fmt_ms(stats[name][0])}  p99 {fmt_ms(stats[name][1])}  "
            f"max {fmt_ms(values[-1] * 1000)}")
    batch_times.sort()
    many = (percentile(batch_times, 50) * 1000, percentile(batch_times, 99) * 1000)
    say(f"  write_many(10) per event: p50 {fmt_ms(many[0])}  p99 {fmt_ms(many[1])}")
    p50, p99 = stats["dlq"]
    ratio = p99 / stats["bare"][1]
    ratio_dir = p99 / stats["bare+dir"][1]
    ctx.add("DLQ write p50 / p99 per event", f"{fmt_ms(p50)} / {fmt_ms(p99)}", f"p99 <= {TARGET_P99_MS:g} ms",
            p99 <= TARGET_P99_MS)
    ctx.add("  p99 DLQ / p99 bare write+fsync+rename", f"{ratio:.2f}x ({fmt_ms(stats['bare'][1])})",
            f"<= {TARGET_RATIO:g}x", ratio <= TARGET_RATIO)
    ctx.add("  p99 DLQ / p99 bare incl. dir fsync", f"{ratio_dir:.2f}x ({fmt_ms(stats['bare+dir'][1])})")
    ctx.add("  write_many(10) p50 / p99 per event", f"{fmt_ms(many[0])} / {fmt_ms(many[1])}")
