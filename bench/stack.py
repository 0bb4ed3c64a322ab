"""The serving stack side by side, in one run: the product, the parse-only floor on the same ASGI
stack, and the same floor on the WSGI stack.

- product: `POST /services/collector/event` of the emulator as `make run` starts it (gunicorn,
  uvicorn workers, local storage, every event normalized, validated and stored);
- ASGI floor: `POST /bench/floor` (bench/floor.py) served by the very same emulator processes;
- WSGI floor: the same parsing as a Flask function (bench/floor_wsgi.py) under
  `functions-framework`'s WSGI server, gunicorn gthread 4 x 2.

Two loads: batches of 100 OCSF events (~1 KB each) on 8 connections, and single-event requests on
32 connections. The three servers run side by side; every round loads each in turn (the order
reversed every other round), so a busy spell of the shared machine falls on all three alike, and
a figure is the median over rounds (ratios: the median of per-round ratios). Server CPU is the
user + system time of the server's whole process group (master and workers) over the measured run,
from /proc, divided by the events (or requests) served. Resident memory is VmRSS of each worker,
right after start and again after all the load. The load generator (wrk when installed) runs on
the same cores, so these figures compare set-ups; they are not capacity.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from . import events, proc
from .common import Context, fmt_int, fmt_ms, median, say
from .ingest import HEADERS, HEC_PATH
from .load import LoadResult, run_load
from .server import FLOOR_PATH, Server, WsgiFloor

BATCH = 100
MODES = {
    # name: (events per request, connections, distinct bodies)
    "batch": (BATCH, 8, 8),
    "single": (1, 32, 16),
}
TARGET_RATIO = 0.4
TARGET_US_PER_EVENT = 20.0
TARGET_SINGLE_P99_MS = 20.0
MAX_REQUESTS = 2_000_000
WARMUP_S = 2.0


@dataclass
class Sample:
    rate: float  # events/s (batch) or requests/s (single)
    p99_ms: float
    cpu_us: float  # server CPU microseconds per event (batch) or per request (single)
    cores: float  # cores the server's process group used over the run
    failed: int


@dataclass
class Target:
    name: str
    server: Server
    path: str


def _rss_text(kib: dict[int, int]) -> str:
    if not kib:
        return "n/a"
    values = sorted(kib.values())
    return f"{statistics.fmean(values) / 1024:.0f} MiB (max {values[-1] / 1024:.0f}, {len(values)} workers)"


def one_run(ctx: Context, target: Target, bodies: list[bytes], per_request: int, connections: int,
            seconds: float, warmup: float) -> Sample:
    group = target.server.process.pid if target.server.process else -1
    if warmup:
        run_load(ctx.engine, target.server.port, "POST", target.path, bodies, HEADERS, connections, warmup,
                 MAX_REQUESTS, 0.0)
    before = proc.group_cpu(group) if proc.available() else math.nan
    result: LoadResult = run_load(ctx.engine, target.server.port, "POST", target.path, bodies, HEADERS,
                                  connections, seconds, MAX_REQUESTS, 0.0)
    used = proc.group_cpu(group) - before if proc.available() else math.nan
    if target.path == HEC_PATH:
        target.server.clear_data()
    served = result.requests * per_request
    if result.failed:
        say(f"    ! {target.name}: {result.failed} of {result.requests} requests failed: {result.statuses}, "
            f"{result.errors} transport errors")
    return Sample(served / result.seconds if result.seconds else 0.0, result.p99_ms,
                  used / served * 1e6 if served else math.nan, used / result.seconds, result.failed)


def run(ctx: Context) -> None:
    rounds = 2 if ctx.quick else 3
    seconds = ctx.seconds
    emulator, wsgi = ctx.pool.get(*ctx.default), WsgiFloor().start()
    try:
        _run(ctx, emulator, wsgi, rounds, seconds)
    finally:
        wsgi.close()


def _run(ctx: Context, emulator: Server, wsgi: Server, rounds: int, seconds: float) -> None:
    targets = [Target("product", emulator, HEC_PATH), Target("ASGI floor", emulator, FLOOR_PATH),
               Target("WSGI floor", wsgi, HEC_PATH)]
    rest = {name: proc.group_rss_kib(server.process.pid) for name, server in
            (("emulator", emulator), ("WSGI floor", wsgi)) if server.process}
    failed_before = int(emulator.healthz()["failed"])
    say(f"stack: product and ASGI floor on the emulator ({emulator.name}), WSGI floor on {wsgi.name}; "
        f"{rounds} rounds, {seconds:g} s per run, order reversed every other round; engine {ctx.engine}")
    loaded_from = time.monotonic()
    samples: dict[tuple[str, str], list[Sample]] = {}
    warmed: set[tuple[str, str]] = set()
    for mode, (per_request, connections, distinct) in MODES.items():
        bodies = events.bodies("ocsf", per_request, distinct=distinct)
        unit = "ev/s" if per_request > 1 else "req/s"
        say(f"  {mode}: {per_request} OCSF event(s) per request (~{len(bodies[0]):,} B), "
            f"{connections} connections")
        for k in range(rounds):
            order = targets if k % 2 == 0 else targets[::-1]
            line = []
            for target in order:
                key = (mode, target.name)
                warmup = 0.0 if key in warmed else WARMUP_S
                warmed.add(key)
                sample = one_run(ctx, target, bodies, per_request, connections, seconds, warmup)
                samples.setdefault(key, []).append(sample)
                line.append(f"{target.name} {fmt_int(sample.rate)} {unit} (p99 {fmt_ms(sample.p99_ms)}, "
                            f"{sample.cpu_us:.1f} us, {sample.cores:.2f} cores)")
            say(f"    round {k + 1}: " + " | ".join(line))
    loaded_for = time.monotonic() - loaded_from
    after = {name: proc.group_rss_kib(server.process.pid) for name, server in
             (("emulator", emulator), ("WSGI floor", wsgi)) if server.process}
    time.sleep(1.0)  # counters of other workers reach healthz within stats.FLUSH_INTERVAL_S
    lost = int(emulator.healthz()["failed"]) - failed_before
    if lost:
        say(f"  ! {lost} events were dead-lettered: the load was not all success path")

    for mode, (per_request, connections, _) in MODES.items():
        what = "events/s" if per_request > 1 else "requests/s"
        per = "event" if per_request > 1 else "request"
        label = f"{mode}, c={connections}"
        rate = {t.name: median([s.rate for s in samples[(mode, t.name)]]) for t in targets}
        cpu = {t.name: median([s.cpu_us for s in samples[(mode, t.name)]]) for t in targets}
        p99 = {t.name: median([s.p99_ms for s in samples[(mode, t.name)]]) for t in targets}
        ratio = median([p.rate / f.rate if f.rate else math.nan for p, f in
                        zip(samples[(mode, "product")], samples[(mode, "ASGI floor")], strict=True)])
        floors = median([a.rate / w.rate if w.rate else math.nan for a, w in
                         zip(samples[(mode, "ASGI floor")], samples[(mode, "WSGI floor")], strict=True)])
        ctx.add(f"{label}: product {what}", fmt_int(rate["product"]))
        ctx.add(f"  ASGI floor / WSGI floor {what}",
                f"{fmt_int(rate['ASGI floor'])} / {fmt_int(rate['WSGI floor'])} (ratio {floors:.2f})")
        ctx.add("  product / ASGI floor, same run (median of per-round ratios)", f"{ratio:.3f}",
                f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
        # On a shared machine a server's throughput also follows the CPU share it gets (the
        # product's worker threads win it more than the floor's lone event loops): the ratio of
        # CPU costs says what the product would reach next to the floor on equal cores.
        by_cpu = cpu["ASGI floor"] / cpu["product"]
        ctx.add(f"  same by server CPU per {per}: ASGI floor's / product's", f"{by_cpu:.3f}",
                f">= {TARGET_RATIO}", by_cpu >= TARGET_RATIO)
        if per_request > 1:
            ctx.add(f"  product server CPU per {per}", f"{cpu['product']:.1f} us",
                    f"<= {TARGET_US_PER_EVENT:g} us", cpu["product"] <= TARGET_US_PER_EVENT)
        else:
            ctx.add("  product p99 latency", fmt_ms(p99["product"]), f"<= {TARGET_SINGLE_P99_MS:g} ms",
                    p99["product"] <= TARGET_SINGLE_P99_MS)
            ctx.add(f"  product server CPU per {per}", f"{cpu['product']:.0f} us")
        ctx.add(f"  floors' server CPU per {per}, ASGI / WSGI",
                f"{cpu['ASGI floor']:.1f} / {cpu['WSGI floor']:.1f} us")
        ctx.add("  p99 latency, ASGI floor / WSGI floor",
                f"{fmt_ms(p99['ASGI floor'])} / {fmt_ms(p99['WSGI floor'])}")
        cores = {t.name: median([s.cores for s in samples[(mode, t.name)]]) for t in targets}
        ctx.add("  cores used: product, ASGI floor, WSGI floor",
                ", ".join(f"{cores[t.name]:.2f}" for t in targets))
    for name in rest:
        ctx.add(f"RSS per worker, {name}: at rest / after {loaded_for:.0f} s of load",
                f"{_rss_text(rest[name])} / {_rss_text(after.get(name, {}))}")
