"""What the load benchmarks share: the HEC endpoint, its credential, and one measured load run.

The stack comparison itself (product, ASGI floor, WSGI floor) is bench/stack.py; the OpenSearch
and DLQ-overhead benches use `measure` here.
"""

from __future__ import annotations

from .common import Context, say
from .load import LoadResult, run_load
from .server import HEC_TOKEN, Server

HEC_PATH = "/services/collector/event"
HEADERS = {"Authorization": f"Splunk {HEC_TOKEN}"}
BATCH = 100
# Caps on measured requests per run (runs are time-bounded too): far above what 2 cores reach.
MAX_BATCH_REQUESTS = 200_000
WARMUP_S = 1.0


def measure(ctx: Context, server: Server, path: str, bodies: list[bytes], connections: int,
            seconds: float | None = None, cap: int = MAX_BATCH_REQUESTS) -> LoadResult:
    """One measured run; the first run of a (path, body) on a server is preceded by a warm-up."""
    key = (path, bodies[0][:64], len(bodies[0]))
    warmup = 0.0 if key in server.warmed else max(ctx.warmup, WARMUP_S)
    server.warmed.add(key)
    result = run_load(ctx.engine, server.port, "POST", path, bodies, HEADERS, connections,
                      ctx.seconds if seconds is None else seconds, cap, warmup)
    server.clear_data()
    if result.failed:
        say(f"    ! {result.failed} of {result.requests} requests failed: {result.statuses}, "
            f"{result.errors} transport errors")
    return result
