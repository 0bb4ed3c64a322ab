"""Success-path cost of the DLQ and retry machinery, storage healthy.

Two emulators in the same configuration, one with the DLQ enabled and one with it disabled
(INGEST_DLQ_ENABLED=false), both up at once and loaded in turn (A B B A A B ...) with the same
OCSF batches; the overhead is 1 - enabled/disabled per pair, and the median of the pairs is the
figure. Then both are loaded at the same time, which leaves the rest of the machine's noise to
both alike. Last, in process: `Service.ingest` with the DLQ enabled vs disabled in short
alternating blocks, both storing into a backend that stores instantly (no HTTP, no fsync: far
less noise), and the cost of the retry wrapper alone (store_with_retries around that backend)
against a whole ingest.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from . import events
from .common import Context, fmt_int, median, say
from .ingest import BATCH, HEADERS, HEC_PATH, MAX_BATCH_REQUESTS
from .load import run_load

TARGET_OVERHEAD = 0.03


def _in_process(repeats: int, blocks: int) -> tuple[float, float, float]:
    """In one process, Service.ingest of the same batch with the DLQ enabled and disabled, both
    storing into a backend that stores instantly (the same for both), so only CPU is compared.

    Returns (overhead: median over adjacent block pairs of 1 - disabled/enabled time, retry wrapper
    us per batch, the wrapper's share of an ingest). Blocks of `repeats` batches alternate A B B A.
    """
    from telhawk_ingest.config import load_settings
    from telhawk_ingest.hec import parse_events
    from telhawk_ingest.retry import store_with_retries
    from telhawk_ingest.service import Service
    from telhawk_ingest.storage.base import STORED

    class Instant:
        name = "instant"

        def store(self, batch):
            return [STORED] * len(batch)

        def healthy(self):
            return True

        def close(self):
            pass

    def make(home: Path, enabled: bool) -> Service:
        saved = dict(os.environ)
        os.environ.update(INGEST_DLQ_BASE_PATH=str(home / "dlq"), INGEST_STORAGE_DATA_DIR=str(home / "data"),
                          INGEST_STORAGE_BACKEND="local", INGEST_HEC_TOKENS="bench:bench-token-0000",
                          INGEST_DLQ_ENABLED="true" if enabled else "false")
        try:
            # A backend that stores instantly: fsync times would bury a difference of a few percent.
            return Service(load_settings(), backend=Instant())
        finally:
            os.environ.clear()
            os.environ.update(saved)

    with tempfile.TemporaryDirectory(prefix="telhawk-bench-inproc-") as home:
        services = {"A": make(Path(home) / "a", True), "B": make(Path(home) / "b", False)}
        token = services["A"].settings.hec.tokens[0]
        body = events.bodies("ocsf", BATCH, distinct=1)[0]

        def block(svc: Service) -> float:
            started = time.perf_counter()
            for _ in range(repeats):
                result = svc.ingest(parse_events(body, token, "2024-11-04T01:02:03.000Z"))
                assert result.stored == BATCH
            return time.perf_counter() - started

        for svc in services.values():
            block(svc)
        ratios = []
        for k in range(blocks):
            took = {name: block(services[name]) for name in ("AB" if k % 2 == 0 else "BA")}
            ratios.append(1 - took["B"] / took["A"])
        svc = services["A"]
        envelopes = parse_events(body, token, "2024-11-04T01:02:03.000Z")
        items = [svc._prepare(e) for e in envelopes]
        backend = Instant()

        def clock(fn) -> float:
            samples = []
            for _ in range(20):
                started = time.perf_counter()
                for _ in range(5):
                    fn()
                samples.append((time.perf_counter() - started) / 5)
            return min(samples)

        direct = clock(lambda: backend.store(items))
        wrapped = clock(lambda: store_with_retries(backend, items, svc.policy))
        whole = clock(lambda: svc.ingest(parse_events(body, token, "2024-11-04T01:02:03.000Z")))
        for svc in services.values():
            svc.counters.retire()
    # Adjacent blocks a few ms apart see the same machine: the median of their ratios is steady
    # to about 1 % where whole-second runs differ by 10 % and more.
    return median(ratios), (wrapped - direct) * 1e6, (wrapped - direct) / whole


def _rate(ctx: Context, server, bodies, connections: int, seconds: float) -> float:
    result = run_load(ctx.engine, server.port, "POST", HEC_PATH, bodies, HEADERS, connections, seconds,
                      MAX_BATCH_REQUESTS, 0.0)
    server.clear_data()
    return result.rps * BATCH if not result.failed else float("nan")


def _at_once(ctx: Context, servers: dict, bodies, connections: int) -> dict[str, float]:
    """Load every server at the same time (one load process each); events/s by name."""
    rate: dict[str, float] = {}

    def one(name: str) -> None:
        rate[name] = _rate(ctx, servers[name], bodies, connections, ctx.seconds)

    workers = [threading.Thread(target=one, args=(name,)) for name in servers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return rate


def run(ctx: Context) -> None:
    pairs = 4 if ctx.quick else 10
    seconds = 1.0
    workers, threads = ctx.default
    connections = ctx.connections
    enabled = ctx.pool.get(workers, threads)
    disabled = ctx.pool.get(workers, threads, INGEST_DLQ_ENABLED="false")
    bodies = events.bodies("ocsf", BATCH)
    for server in (enabled, disabled):  # the same warm-up for both
        run_load(ctx.engine, server.port, "POST", HEC_PATH, bodies, HEADERS, connections, 1.0,
                 MAX_BATCH_REQUESTS, 0.0)
        server.clear_data()
    say(f"overhead: DLQ enabled (A) vs disabled (B), {workers}w x {threads}t, c={connections}, "
        f"{seconds:g} s per run, order A B B A ...")
    overheads = []
    for k in range(pairs):
        order = [("A", enabled), ("B", disabled)] if k % 2 == 0 else [("B", disabled), ("A", enabled)]
        rate = {name: _rate(ctx, server, bodies, connections, seconds) for name, server in order}
        overheads.append(1 - rate["A"] / rate["B"])
        say(f"  pair {k + 1}: enabled {fmt_int(rate['A'])} ev/s, disabled {fmt_int(rate['B'])} ev/s, "
            f"overhead {overheads[-1] * 100:+.1f} %")
    # Both at once, each with the same connections: noise from the rest of the machine then falls
    # on both alike, and the ratio is that of their costs per event.
    together = []
    for _ in range(2):
        rate = _at_once(ctx, {"A": enabled, "B": disabled}, bodies, max(1, connections // 2))
        together.append(1 - rate["A"] / rate["B"])
        say(f"  simultaneous: enabled {fmt_int(rate['A'])} ev/s, disabled {fmt_int(rate['B'])} ev/s, "
            f"overhead {together[-1] * 100:+.1f} %")
    ctx.pool.release(disabled)
    value = median(overheads)
    spread = statistics.pstdev(overheads) if len(overheads) > 1 else 0.0
    # A spread wider than the target itself cannot tell a pass from a failure: not judged then.
    judged = spread <= TARGET_OVERHEAD
    ctx.add(f"DLQ+retry success-path overhead (median of {pairs} A/B pairs)",
            f"{value * 100:+.1f} % (sd {spread * 100:.1f})",
            f"<= {TARGET_OVERHEAD * 100:g} %" + ("" if judged else " (sd too wide to judge)"),
            (value <= TARGET_OVERHEAD) if judged else None)
    ctx.add("  same, both loaded at once (mean of 2)", f"{statistics.fmean(together) * 100:+.1f} %")
    inproc, wrapper_us, share = _in_process(2, 100 if ctx.quick else 400)
    say(f"  in process, Service.ingest of the same batch: overhead {inproc * 100:+.2f} % (median of "
        f"adjacent A/B blocks); store_with_retries adds {wrapper_us:.1f} us per {BATCH}-event batch, "
        f"{share * 100:.2f} % of the in-process ingest")
    ctx.add("  same, in process (Service.ingest, A/B blocks)", f"{inproc * 100:+.2f} %",
            f"<= {TARGET_OVERHEAD * 100:g} %", inproc <= TARGET_OVERHEAD)
    ctx.add("  retry wrapper cost, in process", f"{wrapper_us:.0f} us/batch = {share * 100:.2f} %")
