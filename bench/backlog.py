"""`healthz` and the first page of `list_dlq` with a large backlog of pending DLQ files.

The files are written straight into a temp DLQ folder (valid records, the real name pattern
`failed_<secs>_<32 hex>.json`, no fsync: only the reading side is measured), then an emulator is
started on that folder. Each call is made on a new connection, as curl would: the first call
(cold: the answering worker has read nothing yet) and the median and max of the next 20. With
several workers a later call may still be the first one a given worker answers.
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
from .server import OPERATOR_TOKEN, Server

TARGET_MS = 50.0
WARM_CALLS = 20


def _fill(directory: Path, count: int, max_seconds: float = 180.0) -> tuple[int, float]:
    """Write up to `count` files (fewer if it takes over `max_seconds`): (written, seconds)."""
    started = time.perf_counter()
    record = events.dlq_record()
    base = int(time.time()) - count // 100 - 60
    prefix, _, suffix = orjson.dumps(dict(record, id="@ID@")).partition(b"@ID@")
    for i in range(count):
        if i % 1000 == 0 and time.perf_counter() - started > max_seconds:
            return i, time.perf_counter() - started
        stem = f"failed_{base + i // 100}_{os.urandom(16).hex()}"
        fd = os.open(directory / f"{stem}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, prefix + stem.encode() + suffix)
        finally:
            os.close(fd)
    return count, time.perf_counter() - started


def _timed(server: Server, path: str, headers: dict | None = None) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    status, body = server.get(path, headers=headers)
    return (time.perf_counter() - started) * 1000, status, body


def run(ctx: Context) -> None:
    count = 20_000 if ctx.quick else 100_000
    workers, threads = ctx.default
    server = Server(workers, threads)
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-backlog-"))
    try:
        directory = home / "dlq"
        directory.mkdir(mode=0o700)
        count, seconds = _fill(directory, count)
        say(f"backlog: {count:,} pending DLQ files written in {seconds:.1f} s; emulator {server.name}")
        server.dlq_path = directory
        server.start()
        try:
            auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            calls = {"healthz": ("/healthz", None), "list_dlq": ("/api/v1/dlq", auth)}
            for name, (path, headers) in calls.items():
                cold, status, body = _timed(server, path, headers)
                if status != 200:
                    raise RuntimeError(f"{path} answered {status}: {body[:300]!r}")
                warm = []
                for _ in range(WARM_CALLS):
                    ms, status, body = _timed(server, path, headers)
                    warm.append(ms)
                answer = orjson.loads(body)
                seen = (answer["dlq_stats"]["pending_files"] if name == "healthz"
                        else f"{len(answer['events'])} events, count {answer['count']}")
                say(f"  {name:<9} cold {fmt_ms(cold)}  next {WARM_CALLS}: median {fmt_ms(median(warm))}, "
                    f"max {fmt_ms(max(warm))}   ({seen})")
                ctx.add(f"{name} with {count:,} pending files, cold (first call)", fmt_ms(cold),
                        f"<= {TARGET_MS:g} ms", cold <= TARGET_MS)
                ctx.add(f"  {name}, median of next {WARM_CALLS} (max)",
                        f"{fmt_ms(median(warm))} ({fmt_ms(max(warm))})", f"<= {TARGET_MS:g} ms",
                        median(warm) <= TARGET_MS)
        finally:
            server.close()
    finally:
        started = time.perf_counter()
        shutil.rmtree(home, ignore_errors=True)
        say(f"  cleaned up in {time.perf_counter() - started:.1f} s")
