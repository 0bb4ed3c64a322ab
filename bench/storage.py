"""The embedded store (SQLite, storage/local.py) against the former NDJSON file backend, in one run.

Both backends take the same ~1 KB OCSF events, alternating round by round (the order flips every
round, A B B A ...) so that machine noise falls on both alike:
- over HTTP: two emulators in the README default configuration, one serving HEC ingest as the
  product does, one serving bench/ndjson.py's `ndjson` in its place (the same pipeline storing
  with NdjsonBackend); batches of 100 events on the batch bench's connections, and single-event
  requests on 8 connections, 1 s runs;
- in process: `store()` of 100-item batches from 4 threads and of single items from 8 threads,
  each backend in a temp folder of its own, 0.5 s runs, fresh ids every call.
Figures are medians over rounds and the median of the per-round ratios (sqlite / ndjson); the
target is batch events/s over HTTP >= 0.9x the NDJSON backend's.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import events
from .common import Context, fmt_int, median, say
from .ingest import BATCH, HEC_PATH, measure
from .server import Server

TARGET_RATIO = 0.9
SINGLE_CONNECTIONS = 8
NDJSON_HANDLER = "bench/ndjson.handler"
BACKENDS = ("sqlite", "ndjson")
MAX_SINGLE_REQUESTS = 200_000


def _failed(server: Server) -> int:
    return int(server.healthz()["failed"])


def _in_process(store: Callable[[list], object], threads: int, per_call: int, seconds: float,
                document: dict) -> float:
    """Items/s stored by `threads` threads calling `store` with `per_call` fresh items each."""
    from telhawk_ingest.envelope import new_id
    from telhawk_ingest.storage.base import Item

    counts = [0] * threads
    now = time.time()
    deadline = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < deadline:
            store([Item(new_id(), "main", now, document) for _ in range(per_call)])
            counts[k] += per_call

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def in_process(ctx: Context, rounds: int) -> dict[tuple[str, str], list[float]]:
    """{(backend, kind): [items/s per round]} of both backends' `store()` in this process."""
    from telhawk_ingest.storage.local import LocalBackend

    from .ndjson import NdjsonBackend

    document = events.ocsf_objects(1)[0]["event"]
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-storage-"))
    backends = {"sqlite": LocalBackend(home / "sqlite"), "ndjson": NdjsonBackend(home / "ndjson")}
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        order = list(BACKENDS)
        for _ in range(rounds):
            for name in order:
                store = backends[name].store
                rates.setdefault((name, "batch"), []).append(_in_process(store, 4, BATCH, 0.5, document))
                rates.setdefault((name, "single"), []).append(_in_process(store, 8, 1, 0.5, document))
            order.reverse()
    finally:
        for backend in backends.values():
            backend.close()
        shutil.rmtree(home, ignore_errors=True)
    return rates


def run(ctx: Context) -> None:
    rounds = 2 if ctx.quick else 4
    connections = ctx.connections
    batch_bodies = events.bodies("ocsf", BATCH)
    single_bodies = events.bodies("ocsf", 1, distinct=16)
    say(f"storage: embedded SQLite store vs the former NDJSON files, {rounds} alternating rounds; "
        f"HTTP: {BATCH}-event batches on {connections} connections and single events on "
        f"{SINGLE_CONNECTIONS}, 1 s runs, emulators {Server().name}; engine {ctx.engine}")
    servers = {
        "sqlite": ctx.pool.get(*ctx.default),
        "ndjson": ctx.pool.get(*ctx.default, ingest_handler=NDJSON_HANDLER),
    }
    http: dict[tuple[str, str], list[float]] = {}
    order = list(BACKENDS)
    for _ in range(rounds):
        for name in order:
            server = servers[name]
            before = _failed(server)
            batch = measure(ctx, server, HEC_PATH, batch_bodies, connections, 1.0)
            single = measure(ctx, server, HEC_PATH, single_bodies, SINGLE_CONNECTIONS, 1.0,
                             cap=MAX_SINGLE_REQUESTS)
            if _failed(server) != before:
                say(f"    ! {name}: events were dead-lettered: the load is not the success path")
            batch_eps = batch.rps * BATCH if not batch.failed else 0.0
            single_rps = single.rps if not single.failed else 0.0
            http.setdefault((name, "batch"), []).append(batch_eps)
            http.setdefault((name, "single"), []).append(single_rps)
            say(f"  {name:<6} batch {fmt_int(batch_eps):>7} events/s   "
                f"single {fmt_int(single_rps):>6} requests/s")
        order.reverse()
    local = in_process(ctx, rounds)

    say("  in process (store() only):")
    for name in BACKENDS:
        say(f"  {name:<6} batch {fmt_int(median(local[(name, 'batch')])):>7} items/s (4 threads)   "
            f"single {fmt_int(median(local[(name, 'single')])):>6} items/s (8 threads)")
    batch_ratio = _ratio(http, "batch")
    ctx.add(f"storage: batches of {BATCH} OCSF events over HTTP, events/s sqlite | ndjson",
            _pair(http, "batch"))
    ctx.add("  sqlite / ndjson, batch (median of per-round ratios)", f"{batch_ratio:.2f}x",
            f">= {TARGET_RATIO}x", batch_ratio >= TARGET_RATIO)
    ctx.add(f"storage: single-event requests/s (c={SINGLE_CONNECTIONS}) sqlite | ndjson",
            _pair(http, "single"))
    ctx.add("storage: in-process store(), batch items/s sqlite | ndjson", _pair(local, "batch"))
    ctx.add("storage: in-process store(), single items/s sqlite | ndjson", _pair(local, "single"))


def _ratio(rates: dict[tuple[str, str], list[float]], kind: str) -> float:
    """Median of the per-round sqlite / ndjson ratios."""
    pairs = zip(rates[("sqlite", kind)], rates[("ndjson", kind)], strict=True)
    return median([a / b for a, b in pairs if b])


def _pair(rates: dict[tuple[str, str], list[float]], kind: str) -> str:
    sqlite, ndjson = (fmt_int(median(rates[(name, kind)])) for name in BACKENDS)
    return f"{sqlite} | {ndjson} ({_ratio(rates, kind):.2f}x)"
