"""The embedded store (SQLite, storage/local.py) against the former NDJSON file backend, in one run.

Both backends take the same ~1 KB OCSF events, alternating round by round (the order flips every
round, A B B A ...) so that machine noise falls on both alike:
- over HTTP: two emulators in the README default configuration, one serving HEC ingest as the
  product does, one serving bench/ndjson.py's `ndjson` in its place (the same pipeline storing
  with NdjsonBackend); batches of 100 events on the batch bench's connections, and single-event
  requests on 8 connections, 1 s runs;
- storage alone, in process: `store()` of 100-item batches from 4 threads (and the CPU this
  process spends per item) and of single items from 8 threads, 0.5 s runs, fresh ids every call;
- storage alone, across processes: 4 processes of 2 threads each (the emulator's workers and
  threads) storing 100-item batches into one data folder at once, 1.5 s runs.
Figures are medians over rounds and the median of the per-round ratios (sqlite / ndjson); the
target is batch events/s over HTTP >= 0.9x the NDJSON backend's.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
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
PROCESSES, PROCESS_THREADS = 4, 2  # as the emulator's default workers and threads


def _failed(server: Server) -> int:
    return int(server.healthz()["failed"])


def _store_load(store: Callable[[list], object], threads: int, per_call: int, seconds: float,
                document: dict) -> tuple[float, float]:
    """(items/s, CPU us per item) of `threads` threads calling `store` with `per_call` fresh items
    each; the CPU is this process's (its writer threads included)."""
    from telhawk_ingest.envelope import new_id
    from telhawk_ingest.storage.base import Item

    counts = [0] * threads
    now = time.time()
    deadline = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < deadline:
            store([Item(new_id(), "main", now, document) for _ in range(per_call)])
            counts[k] += per_call

    started, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stored = sum(counts)
    return stored / (time.perf_counter() - started), (time.process_time() - cpu) / stored * 1e6


def _backend(name: str, data_dir: Path):  # either backend
    from telhawk_ingest.storage.local import LocalBackend

    from .ndjson import NdjsonBackend

    return LocalBackend(data_dir) if name == "sqlite" else NdjsonBackend(data_dir)


def in_process(rounds: int) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """{(backend, kind): [(items/s, CPU us per item) per round]} of `store()` in this process."""
    document = events.ocsf_objects(1)[0]["event"]
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-storage-"))
    backends = {name: _backend(name, home / name) for name in BACKENDS}
    figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        order = list(BACKENDS)
        for _ in range(rounds):
            for name in order:
                store = backends[name].store
                figures.setdefault((name, "batch"), []).append(_store_load(store, 4, BATCH, 0.5, document))
                figures.setdefault((name, "single"), []).append(_store_load(store, 8, 1, 0.5, document))
            order.reverse()
    finally:
        for backend in backends.values():
            backend.close()
        shutil.rmtree(home, ignore_errors=True)
    return figures


def _child(name: str, data_dir: str, seconds: float, ready: Queue, start: Event, results: Queue) -> None:
    """One of the processes of `across_processes`: PROCESS_THREADS threads storing batches."""
    backend = _backend(name, Path(data_dir))
    document = events.ocsf_objects(1)[0]["event"]
    ready.put(True)
    start.wait(60)
    rate, _ = _store_load(backend.store, PROCESS_THREADS, BATCH, seconds, document)
    backend.close()
    results.put(rate)


def across_processes(rounds: int, seconds: float = 1.5) -> dict[str, list[float]]:
    """{backend: [items/s per round]}: PROCESSES processes (as the emulator's workers) storing
    100-item batches into one data folder at once, storage alone."""
    spawn = multiprocessing.get_context("spawn")
    home = Path(tempfile.mkdtemp(prefix="telhawk-bench-storage-"))
    rates: dict[str, list[float]] = {}
    try:
        order = list(BACKENDS)
        for k in range(rounds):
            for name in order:
                ready, results, start = spawn.Queue(), spawn.Queue(), spawn.Event()
                children = [spawn.Process(target=_child, args=(name, str(home / f"{name}{k}"), seconds, ready,
                                                               start, results)) for _ in range(PROCESSES)]
                for child in children:
                    child.start()
                for _ in children:
                    ready.get(timeout=60)
                start.set()
                rates.setdefault(name, []).append(sum(results.get(timeout=60) for _ in children))
                for child in children:
                    child.join(10)
            order.reverse()
    finally:
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
    local = in_process(rounds)
    processes = across_processes(max(1, rounds // 2))
    rates = {key: [rate for rate, _ in runs] for key, runs in local.items()}
    cpu = {name: f"{median([us for _, us in local[(name, 'batch')]]):.1f} us" for name in BACKENDS}
    together = {(name, "batch"): processes[name] for name in BACKENDS}
    say("  storage alone:")
    for name in BACKENDS:
        say(f"  {name:<6} in process: batch {fmt_int(median(rates[(name, 'batch')])):>7} items/s "
            f"(4 threads, CPU {cpu[name]}/item), single {fmt_int(median(rates[(name, 'single')])):>6} "
            f"items/s (8 threads)")
        say(f"  {name:<6} {PROCESSES} processes x {PROCESS_THREADS} threads: batch "
            f"{fmt_int(median(processes[name])):>7} items/s")
    batch_ratio = _ratio(http, "batch")
    ctx.add(f"storage: batches of {BATCH} OCSF events over HTTP, events/s sqlite | ndjson",
            _pair(http, "batch"))
    ctx.add("  sqlite / ndjson, batch (median of per-round ratios)", f"{batch_ratio:.2f}x",
            f">= {TARGET_RATIO}x", batch_ratio >= TARGET_RATIO)
    ctx.add(f"storage: single-event requests/s (c={SINGLE_CONNECTIONS}) sqlite | ndjson",
            _pair(http, "single"))
    ctx.add("storage alone, in process: batch items/s sqlite | ndjson", _pair(rates, "batch"))
    ctx.add("  CPU per stored item, batches: sqlite | ndjson", f"{cpu['sqlite']} | {cpu['ndjson']}")
    ctx.add("  single items/s sqlite | ndjson", _pair(rates, "single"))
    ctx.add(f"storage alone, {PROCESSES} processes: batch items/s sqlite | ndjson", _pair(together, "batch"))


def _ratio(rates: dict[tuple[str, str], list[float]], kind: str) -> float:
    """Median of the per-round sqlite / ndjson ratios."""
    pairs = zip(rates[("sqlite", kind)], rates[("ndjson", kind)], strict=True)
    return median([a / b for a, b in pairs if b])


def _pair(rates: dict[tuple[str, str], list[float]], kind: str) -> str:
    sqlite, ndjson = (fmt_int(median(rates[(name, kind)])) for name in BACKENDS)
    return f"{sqlite} | {ndjson} ({_ratio(rates, kind):.2f}x)"
