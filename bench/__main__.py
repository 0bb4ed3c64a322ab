"""`python -m bench [BENCH ...]`: run the benchmarks and print their figures.

Benches, in the order they run (default: all but opensearch):
  stack     the product, the parse-only floor on the same ASGI stack and the same floor on the
            WSGI stack, alternated: batches of 100 OCSF events (8 connections) and single events
            (32 connections); events or requests/s, p99, ratios, server CPU per event or request
            (/proc), resident memory per worker at rest and after the load
  slow      GET /services/collector/health under 200 connections that trickle their bodies
  storage   the embedded SQLite store against the former NDJSON file backend (bench/ndjson.py),
            batch and single events, over HTTP and in process, alternated
  dlq       DeadLetterQueue.write p50/p99 against a bare write+fsync+rename (in process)
  overhead  DLQ enabled vs disabled on the success path, alternated A/B
  backlog   healthz and list_dlq with 100,000 pending DLQ files
  dlqlist   the first page of a reason-filtered DLQ listing over 100,000 entries of mixed reasons,
            with a cold and a warm catalog (in process)
  normalizers  every normalizer against adversarial lines: worst time per line and per request
  abuse     one request per fresh process: peak memory at the body limit and the time of
            adversarial requests (events cap, decompression ratio, gzip members, DLQ files)
  state     counters and audit files under 10,000 simulated serverless cold starts (in process)
  replay    100,000 DLQ entries replayed into the embedded store (in process): entries/s
  breaker   storage down (a node answering 503 slowly): single-event ingest p99 with the storage
            circuit breaker and without it, and every event dead-lettered
  queue     events/s through the SQS (local queue) and Pub/Sub (push) paths against HTTP ingest,
            100 OCSF events per request, alternated in the same emulator
  opensearch  OCSF batches into a real OpenSearch node of its own vs local storage, alternated,
            the emulator's CPU per event in both, and the _bulk request size (needs Java; not in
            the default set, about 3 minutes)
Figures are printed, never judged pass/fail on time; the last table compares them to targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime

from . import (
    abuse,
    backlog,
    breaker,
    dlqlist,
    dlqwrite,
    normalizers,
    opensearch,
    overhead,
    queue,
    replay,
    slow,
    stack,
    state,
    storage,
)
from .common import Context, say, summary
from .load import choose_engine
from .server import config_name

BENCHES = {
    "stack": stack.run,
    "slow": slow.run,
    "storage": storage.run,
    "dlq": dlqwrite.run,
    "overhead": overhead.run,
    "backlog": backlog.run,
    "dlqlist": dlqlist.run,
    "normalizers": normalizers.run,
    "abuse": abuse.run,
    "state": state.run,
    "replay": replay.run,
    "breaker": breaker.run,
    "opensearch": opensearch.run,
    "queue": queue.run,
}
DEFAULT = [name for name in BENCHES if name != "opensearch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="*", metavar="BENCH", help=f"any of {', '.join(BENCHES)}")
    parser.add_argument("--engine", choices=["auto", "wrk", "python"], default="auto",
                        help="load generator: wrk when installed (auto), or the Python client")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per load run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument("--connections", type=int, default=8,
                        help="client connections for the batch load of the overhead and opensearch benches")
    parser.add_argument("--replay-entries", type=int, default=100_000,
                        help="DLQ entries the replay bench drains (20,000 at most with --quick)")
    args = parser.parse_args(argv)
    unknown = [b for b in args.benches if b not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = args.benches or DEFAULT
    ctx = Context(engine=choose_engine(args.engine), seconds=args.seconds, warmup=args.warmup,
                  quick=args.quick, connections=args.connections, replay_entries=args.replay_entries)
    if args.quick:
        ctx.seconds = min(ctx.seconds, 2.0)
        ctx.warmup = min(ctx.warmup, 0.5)
    started = datetime.now(UTC)
    say(f"bench {started:%Y-%m-%d %H:%M} UTC: {', '.join(selected)}; {os.cpu_count()} CPUs "
        f"({platform.machine()}), Python {platform.python_version()}, load engine {ctx.engine}, "
        f"server and client on the same machine")
    try:
        for name in selected:
            say()
            began = time.monotonic()
            BENCHES[name](ctx)
            say(f"  ({name}: {time.monotonic() - began:.0f} s)")
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        ctx.pool.close()
    say()
    say(f"summary ({time.monotonic() - ctx.started:.0f} s; emulator {config_name(*ctx.default)}):")
    say(summary(ctx.figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
