"""Server-side replay: a DLQ of 100,000 entries (valid OCSF events that failed at storage)
replayed into the embedded store, in process, with the replay use case's bounded calls.

The entries are written straight into a temp DLQ folder (the real name pattern and record shape,
each with its own envelope id, no fsync: only replaying is measured). Then `Replayer.run` is
called with the cursor until it answers null, as the CLI's loop does, with the default per-call
budgets; every entry is claimed, read, normalized, validated, stored (one SQLite commit per
batch of storage.bulk_max_events) and removed. Printed: entries/s over the whole drain, the
number of calls, and with `--profile` where the time goes (cProfile, top functions by own time).

`python -m bench replay` (N from `--replay-entries`, default 100,000; 20,000 with --quick) or
`python -m bench.replay [N] [--profile]`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from .common import Context, say

TARGET_PER_S = 5_000.0
EVENT = Path(__file__).resolve().parents[1] / "tests" / "events" / "ocsf_authentication.json"


def _fill(directory: Path, count: int) -> float:
    """Write `count` storage_failed entries of distinct OCSF events; returns the seconds taken."""
    from telhawk_ingest.dlq import make_record
    from telhawk_ingest.envelope import new_id, rfc3339

    started = time.perf_counter()
    event = orjson.loads(EVENT.read_bytes())
    received = rfc3339()
    base = int(time.time()) - count // 100 - 60
    for i in range(count):
        event["message"] = f"Logon failed for user{i}"
        envelope = {"id": new_id(), "source": "dc1", "source_type": "ocsf:authentication", "format": "json",
                    "payload": orjson.dumps(event).decode(),
                    "attributes": {"host": "dc1", "index": "main", "fields": {}, "token_name": "bench"},
                    "received_at": received}
        record = make_record(envelope, "storage_failed", "storage failed: connection refused", 4)
        stem = f"failed_{base + i // 100}_{os.urandom(16).hex()}"
        record["id"] = stem
        fd = os.open(directory / f"{stem}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, orjson.dumps(record))
        finally:
            os.close(fd)
    return time.perf_counter() - started


def drain(count: int, profile: bool = False) -> dict[str, float]:
    """Fill a temp DLQ with `count` entries and replay them all; the figures."""
    from telhawk_ingest.config import Settings
    from telhawk_ingest.dlq import NO_FILTER
    from telhawk_ingest.replay import Replayer, ReplayRequest
    from telhawk_ingest.service import Service

    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-replay-"))
    try:
        (home / "dlq").mkdir(mode=0o700)
        filled = _fill(home / "dlq", count)
        say(f"replay: {count:,} DLQ entries written in {filled:.1f} s")
        settings = Settings.model_validate({
            "dlq": {"base_path": str(home / "dlq"), "min_free_bytes": 0},
            "storage": {"backend": "local", "data_dir": str(home / "data")},
        })
        svc = Service(settings)
        try:
            replayer = Replayer(svc)
            profiler = cProfile.Profile() if profile else None
            calls = stored = 0
            cursor = None
            started = time.perf_counter()
            cpu = time.process_time()
            if profiler:
                profiler.enable()
            while True:
                result = replayer.run(ReplayRequest(filter=NO_FILTER, cursor=cursor))
                calls += 1
                stored += result.stored
                cursor = result.next_cursor
                if cursor is None:
                    break
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            if profiler:
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
                say(out.getvalue())
            left = len([n for n in os.listdir(home / "dlq") if n.endswith(".json")])
        finally:
            svc.backend.close()
            svc.counters.retire()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if stored != count or left:
        raise RuntimeError(f"replay stored {stored} of {count} entries and left {left}")
    return {"seconds": seconds, "per_s": count / seconds, "calls": calls, "cpu_us": cpu / count * 1e6,
            "per_cpu_s": count / cpu}


def run(ctx: Context) -> None:
    count = min(ctx.replay_entries, 20_000) if ctx.quick else ctx.replay_entries
    figures = drain(count)
    say(f"  {_line(count, figures)}")
    ctx.add(f"replay {count:,} DLQ entries into the embedded store", f"{figures['per_s']:,.0f} entries/s",
            f">= {TARGET_PER_S:,.0f}/s", figures["per_s"] >= TARGET_PER_S)
    ctx.add("  replay: process CPU per entry (entries per CPU second)",
            f"{figures['cpu_us']:.0f} us ({figures['per_cpu_s']:,.0f})")


def _line(count: int, figures: dict[str, float]) -> str:
    return (f"replayed {count:,} entries in {figures['seconds']:.1f} s over {figures['calls']:.0f} calls: "
            f"{figures['per_s']:,.0f} entries/s; process CPU {figures['cpu_us']:.0f} us per entry "
            f"({figures['per_cpu_s']:,.0f} entries per CPU second); target >= {TARGET_PER_S:,.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="?", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="print where the time goes (cProfile)")
    args = parser.parse_args()
    figures = drain(args.entries, args.profile)
    say(_line(args.entries, figures))


if __name__ == "__main__":
    main()
