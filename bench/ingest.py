"""HEC ingest under load: 100-event batches against the floor, and single-event requests.

`sweep` starts emulators in several workers/threads configurations side by side and loads them
in turn, round after round, with OCSF batches at several connection counts; `batch` then
measures, alternating in one run, the real endpoint and the floor (bench/floor.py, served by the
same processes) for OCSF and sshd batches, in the README's default configuration and in the best
one the sweep found; `single` measures one event per request.
"""

from __future__ import annotations

import math

from . import events
from .common import Context, fmt_int, fmt_ms, median, say, table
from .load import LoadResult, run_load
from .server import FLOOR_PATH, HEC_TOKEN, Server, config_name

HEC_PATH = "/services/collector/event"
HEADERS = {"Authorization": f"Splunk {HEC_TOKEN}"}
BATCH = 100
TARGET_EVENTS_PER_S = 40_000
TARGET_FLOOR_RATIO = 0.4
SWEEP_CONFIGS = [(1, 4), (2, 2), (2, 4), (2, 8), (3, 2), (4, 1), (4, 2)]
SWEEP_CONNECTIONS = [4, 8, 16]
# Caps on measured requests per run (runs are time-bounded too): far above what 2 cores reach.
MAX_BATCH_REQUESTS = 200_000
MAX_SINGLE_REQUESTS = 2_000_000
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


def _dead_lettered(server: Server) -> int:
    return int(server.healthz()["failed"])


def _role(ctx: Context, cfg: tuple[int, int]) -> str:
    return f"{config_name(*cfg)} ({'README default' if cfg == ctx.default else 'best'})"


def sweep(ctx: Context) -> None:
    """Pick workers, threads and connections for the highest OCSF batch throughput."""
    bodies = events.bodies("ocsf", BATCH)
    seconds = 1.0
    rounds = 1 if ctx.quick else 2
    configs = SWEEP_CONFIGS if not ctx.quick else [(2, 2), (2, 4), (4, 2)]
    say(f"sweep: OCSF batches of {BATCH}; events/s per emulator configuration and connection count, "
        f"{seconds:g} s each, median of {rounds} interleaved round(s); engine {ctx.engine}")
    servers = dict(zip(configs, ctx.pool.get_many(configs), strict=True))
    rates: dict[tuple[int, int, int], list[float]] = {}
    for _ in range(rounds):
        for cfg, server in servers.items():
            for connections in SWEEP_CONNECTIONS:
                result = measure(ctx, server, HEC_PATH, bodies, connections, seconds)
                rate = result.rps * BATCH if not result.failed else 0.0
                rates.setdefault((*cfg, connections), []).append(rate)
    for cfg, server in servers.items():
        if cfg != ctx.default:
            ctx.pool.release(server)
    rows = [[config_name(*cfg), *(fmt_int(median(rates[(*cfg, c)])) for c in SWEEP_CONNECTIONS)]
            for cfg in configs]
    say(table(rows, ["config", *(f"c={c}" for c in SWEEP_CONNECTIONS)]))
    best = max(rates, key=lambda key: median(rates[key]))
    ctx.best = best
    ctx.connections = best[2]
    say(f"  best: {config_name(*best[:2])} with {best[2]} connections")


def batch(ctx: Context) -> None:
    """Events/s of 100-event batches, real endpoint vs the floor, alternated in one run."""
    rounds = 2 if ctx.quick else 6
    seconds = 1.0
    connections = ctx.connections
    kinds = {kind: events.bodies(kind, BATCH) for kind in events.KINDS}
    size = {kind: events.mean_object_bytes(kinds[kind][0], BATCH) for kind in events.KINDS}
    servers = dict(zip(ctx.configs(), ctx.pool.get_many(ctx.configs()), strict=True))
    say(f"batch: {BATCH} events per request, {connections} connections, {seconds:g} s per run, "
        f"{rounds} rounds alternating ingest and floor, medians; engine {ctx.engine}")
    rates: dict[tuple, list[float]] = {}
    ratios: dict[tuple, list[float]] = {}
    p99: dict[tuple, list[float]] = {}
    for _ in range(rounds):
        for cfg, server in servers.items():
            for kind in events.KINDS:
                before = _dead_lettered(server)
                real = measure(ctx, server, HEC_PATH, kinds[kind], connections, seconds)
                floor = measure(ctx, server, FLOOR_PATH, kinds[kind], connections, seconds)
                lost = _dead_lettered(server) - before
                if lost:
                    say(f"    ! {lost} events were dead-lettered: the load is not the success path")
                real_eps, floor_eps = real.rps * BATCH, floor.rps * BATCH
                ratio = real_eps / floor_eps if floor_eps else math.nan
                say(f"  {config_name(*cfg):<8} {kind:<5} ingest {fmt_int(real_eps):>7} ev/s "
                    f"(p99 {fmt_ms(real.p99_ms)})   floor {fmt_int(floor_eps):>8} ev/s   ratio {ratio:.3f}")
                rates.setdefault((cfg, kind, "ingest"), []).append(real_eps)
                rates.setdefault((cfg, kind, "floor"), []).append(floor_eps)
                ratios.setdefault((cfg, kind), []).append(ratio)
                p99.setdefault((cfg, kind), []).append(real.p99_ms)
    if len(servers) > 1:
        best_cfg = ctx.configs()[1]
        gain = median([b / a for a, b in zip(rates[(ctx.default, "ocsf", "ingest")],
                                             rates[(best_cfg, "ocsf", "ingest")], strict=True)])
        say(f"  {config_name(*best_cfg)} / {config_name(*ctx.default)}, OCSF ingest, median of per-round "
            f"ratios: {gain:.3f}")
        ctx.add(f"best / README default, ocsf events/s (per-round ratio, c={connections})",
                f"{gain:.3f} ({config_name(*best_cfg)})")
    for cfg in servers:
        label = f"{_role(ctx, cfg)}, c={connections}"
        for kind in events.KINDS:
            ingest_eps = median(rates[(cfg, kind, "ingest")])
            floor_eps = median(rates[(cfg, kind, "floor")])
            ratio = median(ratios[(cfg, kind)])
            what = f"{kind} ~{size[kind]:,.0f} B/event"
            if kind == "ocsf":
                ctx.add(f"batch {what}, events/s [{label}]", fmt_int(ingest_eps),
                        f">= {TARGET_EVENTS_PER_S:,}", ingest_eps >= TARGET_EVENTS_PER_S)
                ctx.add(f"  floor events/s, same run [{label}]", fmt_int(floor_eps))
                ctx.add(f"  ingest / floor [{label}]", f"{ratio:.3f}", f">= {TARGET_FLOOR_RATIO}",
                        ratio >= TARGET_FLOOR_RATIO)
                ctx.add(f"  batch request p99 latency [{label}]", fmt_ms(median(p99[(cfg, kind)])))
            else:
                ctx.add(f"batch {what} (linux_secure), events/s [{label}]", fmt_int(ingest_eps))
                ctx.add(f"  floor events/s; ingest / floor [{label}]", f"{fmt_int(floor_eps)}; {ratio:.3f}")


def single(ctx: Context) -> None:
    """One ~1 KB OCSF event per request: throughput with several connections, latency with one."""
    bodies = events.bodies("ocsf", 1, distinct=16)
    loaded = 8
    say(f"single: one OCSF event (~{len(bodies[0]):,} B) per request, {ctx.seconds:g} s per run")
    for cfg, server in zip(ctx.configs(), ctx.pool.get_many(ctx.configs()), strict=True):
        label = _role(ctx, cfg)
        busy = measure(ctx, server, HEC_PATH, bodies, loaded, cap=MAX_SINGLE_REQUESTS)
        calm = measure(ctx, server, HEC_PATH, bodies, 1, cap=MAX_SINGLE_REQUESTS)
        say(f"  {label:<26} c={loaded}: {fmt_int(busy.rps)} req/s, p50 {fmt_ms(busy.p50_ms)}, "
            f"p99 {fmt_ms(busy.p99_ms)}   c=1: {fmt_int(calm.rps)} req/s, p50 {fmt_ms(calm.p50_ms)}, "
            f"p99 {fmt_ms(calm.p99_ms)}")
        ctx.add(f"single event, requests/s [{label}, c={loaded}]", fmt_int(busy.rps))
        ctx.add(f"  p99 latency [{label}, c={loaded}]", fmt_ms(busy.p99_ms))
        ctx.add(f"  p50 / p99 latency [{label}, c=1]", f"{fmt_ms(calm.p50_ms)} / {fmt_ms(calm.p99_ms)}")
