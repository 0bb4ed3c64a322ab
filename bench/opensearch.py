"""Batched OCSF ingest with `opensearch` storage on a real node, against `local` storage, in one run.

The bench starts its own single-node OpenSearch (local/opensearch/start.sh) on a free port of
127.0.0.1 with a temp OPENSEARCH_HOME_DIR, and two emulators in the batch bench's configuration
(README default, `ctx.connections` client connections, the same OCSF batches): one with the local
backend, one storing into the node under an index prefix unique to this run. The node is warmed
first (a minute of unmeasured load: its JIT needs that much before its CPU per event settles);
then runs alternate local/opensearch (the order flips every round, A B B A ...), and the figure is
the median of the per-round opensearch / local ratios. After every opensearch run the bench
refreshes the prefix's indices and checks that `_count` grew by exactly what `healthz` counted as
stored, and that nothing was dead-lettered.

Bulk size: one HEC request of 100 events is one `_bulk` of 100 (`storage.bulk_max_events`, default
500, caps the events per `_bulk`); its bytes are taken from a recorded `_bulk` of the same pipeline
in process. Then 500-event requests, as one `_bulk` of 500 and as five of 100
(INGEST_STORAGE_BULK_MAX_EVENTS=100), against local with the same requests, to tell per-request
from per-bulk costs.

Where the time goes: for each run, the CPU used by the node (its JVM), the emulator (its process
group), the load generator (our children) and the rest of the machine, from /proc, in cores over
the run, and CPU microseconds per stored event for the node and the emulator. The node is stopped
at the end, on error and on Ctrl-C too.
"""

from __future__ import annotations

import http.client
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import events, proc
from .common import Context, fmt_int, fmt_ms, median, say
from .ingest import BATCH, HEC_PATH, measure
from .server import HEC_TOKEN, HOST, ROOT, Server, config_name, free_port

LAUNCHER = ROOT / "local" / "opensearch"
# 0 replicas: a single node stays green; no disk watermarks: a shared disk filling up must not
# put the bench's indices in read-only mode halfway.
NODE_SETTINGS = ("-Ecluster.default_number_of_replicas=0",
                 "-Ecluster.routing.allocation.disk.threshold_enabled=false")
NODE_START_TIMEOUT_S = 180
NODE_STOP_TIMEOUT_S = 60
TARGET_RATIO = 0.5
# The service's own CPU per event with OpenSearch storage, against the embedded store (the node's
# CPU is the node's).
TARGET_CPU_RATIO = 1.2
BIG_BATCH = 500  # events per HEC request in the bulk-size comparison
SETTLE_TIMEOUT_S = 10.0
# The node's JIT needs about a minute of indexing on 2 busy cores before its CPU per event settles
# (400 - 900 us/event in the first 10 s, 110 - 290 after 60 s): unmeasured load first, in chunks.
NODE_WARMUP_S = 60.0
NODE_WARMUP_CHUNK_S = 10.0


# --- the node -----------------------------------------------------------------------------------


@dataclass
class Node:
    """A node of the bench's own, run by start.sh and stop.sh; `stop` also deletes its folder."""

    settings: tuple[str, ...] = NODE_SETTINGS
    port: int = 0
    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="telhawk-bench-os-")))
    banner: str = ""
    _attempted: bool = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def heap(self) -> str:
        return os.environ.get("OPENSEARCH_HEAP") or "512m"

    def _script(self, name: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
        env = {**os.environ, "OPENSEARCH_PORT": str(self.port), "OPENSEARCH_HOME_DIR": str(self.run_dir),
               "OPENSEARCH_START_TIMEOUT": str(NODE_START_TIMEOUT_S - 20)}
        return subprocess.run([str(LAUNCHER / name), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self) -> None:
        for attempt in range(3):
            self.port = free_port()
            self._attempted = True  # from here on `stop` runs stop.sh, even if start.sh is cut short
            done = self._script("start.sh", *self.settings, timeout=NODE_START_TIMEOUT_S)
            if done.returncode == 0:
                self.banner = done.stdout.strip().splitlines()[-1]
                return
            if "already in use" not in done.stderr or attempt == 2:
                raise RuntimeError(f"start.sh exited {done.returncode}:\n{done.stdout}\n{done.stderr}")

    def pid(self) -> int | None:
        try:
            return int((self.run_dir / f"opensearch-{self.port}.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        try:
            if self._attempted:
                self._attempted = False
                done = self._script("stop.sh", timeout=NODE_STOP_TIMEOUT_S)
                if done.returncode != 0:
                    say(f"  ! stop.sh exited {done.returncode}: {done.stdout} {done.stderr}")
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def call(self, method: str, path: str) -> dict:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {path} answered {response.status}: {body[:300]!r}")
        return orjson.loads(body)

    def count(self, prefix: str) -> int:
        """Events searchable under the prefix, after a refresh."""
        self.call("POST", f"/{prefix}*/_refresh")
        return int(self.call("GET", f"/{prefix}*/_count")["count"])


def launcher_problem() -> str | None:
    """Why start.sh cannot start a node here, or None."""
    for tool, why in (("java", "Java 17+ runs the node"), ("curl", "start.sh waits for the node with it")):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH ({why})"
    built = (LAUNCHER / "target" / "lib").is_dir() and (LAUNCHER / "target" / "classes").is_dir()
    if not built and shutil.which("mvn") is None:
        return "mvn is not on PATH and local/opensearch is not built yet"
    return None


# --- CPU accounting -----------------------------------------------------------------------------

@dataclass
class CpuSample:
    wall: float
    node: float
    emulator: float
    load: float
    machine: float


def cpu_sample(node_pid: int | None, server: Server) -> CpuSample | None:
    """CPU seconds so far of the node, the server's process group, our reaped children, the machine."""
    if not proc.available():
        return None
    group = server.process.pid if server.process else -1
    node = emulator = 0.0
    for pid, _, pgrp, seconds in proc.proc_stats():
        if pid == node_pid:
            node += seconds
        elif pgrp == group:
            emulator += seconds
    times = os.times()
    return CpuSample(time.monotonic(), node, emulator, times.children_user + times.children_system,
                     proc.machine_busy())


# --- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    eps: float
    p99_ms: float
    stored: int  # events the emulator stored during the run (warm-up and last in-flight included)
    cores: dict[str, float]  # node, emulator, load, other: average cores used over the run
    us_per_event: dict[str, float]  # node, emulator: CPU microseconds per stored event


def _settled(server: Server, node: Node, prefix: str | None, before: dict, counted: int) -> tuple[dict, int]:
    """(healthz, events the node gained) once the emulator has finished the requests still in flight
    when the load stopped: `stored` unchanged between two looks, and with `prefix`, the node holding
    exactly that many more events (a `_bulk` applied but not yet answered shows as more)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = server.healthz()
    while True:
        time.sleep(0.25)
        now = server.healthz()
        found = node.count(prefix) - counted if prefix else 0
        stored = int(now["stored"]) - int(before["stored"])
        done = now["stored"] == last["stored"] and (not prefix or found == stored)
        if done or time.monotonic() > deadline:
            return now, found
        last = now


def one_run(ctx: Context, server: Server, bodies: list[bytes], per_body: int, connections: int,
            seconds: float, node: Node, prefix: str | None) -> Run:
    """One measured run; with `prefix`, also checks that the node holds every event stored."""
    before = server.healthz()
    counted = node.count(prefix) if prefix else 0
    start = cpu_sample(node.pid(), server)
    result = measure(ctx, server, HEC_PATH, bodies, connections, seconds)
    end = cpu_sample(node.pid(), server)
    after, found = _settled(server, node, prefix, before, counted)
    stored = int(after["stored"]) - int(before["stored"])
    lost = int(after["failed"]) - int(before["failed"])
    if lost:
        say(f"    ! {lost} events were dead-lettered: the load is not the success path")
    if prefix:
        retries = int(after["storage"]["retries"]) - int(before["storage"]["retries"])
        if found != stored or retries:
            say(f"    ! stored {stored:,} events, OpenSearch counts {found:,} more; "
                f"{retries} storage retries")
    cores: dict[str, float] = {}
    per_event: dict[str, float] = {}
    if start and end:
        wall = end.wall - start.wall
        used = {name: getattr(end, name) - getattr(start, name) for name in ("node", "emulator", "load")}
        used["other"] = max(0.0, end.machine - start.machine - sum(used.values()))
        cores = {name: value / wall for name, value in used.items()}
        per_event = {name: used[name] / stored * 1e6 if stored else math.nan for name in ("node", "emulator")}
    eps = result.rps * per_body if not result.failed else 0.0
    return Run(eps, result.p99_ms, stored, cores, per_event)


def bulk_sizes(url: str, prefix: str, body: bytes, bulk_max: int | None) -> list[tuple[int, int]]:
    """(bytes, events) of each `_bulk` the service sends for `body`, recorded in process against the
    node with the emulator's pipeline and settings."""
    import httpx

    from telhawk_ingest.config import load_settings
    from telhawk_ingest.envelope import rfc3339
    from telhawk_ingest.hec import parse_events
    from telhawk_ingest.service import Service
    from telhawk_ingest.storage.opensearch import OpenSearchBackend

    sent: list[tuple[int, int]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request):
            if request.url.path == "/_bulk":
                sent.append((len(request.content), request.content.count(b"\n") // 2))
            return super().handle_request(request)

    with tempfile.TemporaryDirectory(prefix="telhawk-bench-probe-") as home:
        env = {"INGEST_OPENSEARCH_URL": url, "INGEST_STORAGE_INDEX_PREFIX": prefix,
               "INGEST_HEC_TOKENS": f"bench:{HEC_TOKEN}", "INGEST_DLQ_BASE_PATH": f"{home}/dlq",
               "INGEST_STORAGE_DATA_DIR": f"{home}/data"}
        if bulk_max:
            env["INGEST_STORAGE_BULK_MAX_EVENTS"] = str(bulk_max)
        settings = load_settings(env=env)
        backend = OpenSearchBackend(settings.core, settings.storage, transport=Recording())
        service = Service(settings, backend=backend)
        try:
            envelopes = parse_events(body, settings.hec.tokens[0], rfc3339())
            result = service.ingest(envelopes)
        finally:
            backend.close()
            service.counters.retire()
    if result.stored != len(envelopes):
        raise RuntimeError(f"bulk probe stored {result.stored} of {len(envelopes)} events")
    return sent


def _bulk_text(sizes: list[tuple[int, int]]) -> str:
    if not sizes:
        return "n/a"
    nbytes = sum(b for b, _ in sizes) / len(sizes)
    nevents = sum(e for _, e in sizes) / len(sizes)
    return f"{len(sizes)} x {nevents:.0f} events, {nbytes / 1024:,.0f} KiB each"


def _cores_text(runs: list[Run]) -> str:
    if not runs or not runs[0].cores:
        return "n/a"
    parts = [f"{name} {median([r.cores[name] for r in runs]):.2f}" for name in runs[0].cores]
    return ", ".join(parts)


def _us_text(runs: list[Run]) -> str:
    if not runs or not runs[0].us_per_event:
        return "n/a"
    return ", ".join(f"{name} {median([r.us_per_event[name] for r in runs]):.0f}"
                     for name in runs[0].us_per_event)


@dataclass
class Case:
    """One way of sending: events per HEC request, and the emulator's `storage.bulk_max_events`."""

    per_body: int
    bulk_max: int | None  # None: the default (500)

    @property
    def label(self) -> str:
        return f"{self.per_body}/req" + (f", bulk_max_events {self.bulk_max}" if self.bulk_max else "")


def _alternate(ctx: Context, node: Node, prefix: str, local: Server, remotes: dict[str, Server],
               bodies: list[bytes], per_body: int, connections: int, seconds: float, rounds: int,
               ) -> tuple[list[Run], dict[str, list[Run]], dict[str, list[float]]]:
    """`rounds` rounds of local and each opensearch server, the order reversed every other round."""
    local_runs: list[Run] = []
    remote_runs: dict[str, list[Run]] = {name: [] for name in remotes}
    ratios: dict[str, list[float]] = {name: [] for name in remotes}
    for k in range(rounds):
        order: list[tuple[str, Server]] = [("local", local), *remotes.items()]
        if k % 2:
            order.reverse()
        round_runs: dict[str, Run] = {}
        for name, server in order:
            run = one_run(ctx, server, bodies, per_body, connections, seconds, node,
                          None if server is local else prefix)
            round_runs[name] = run
        base = round_runs["local"]
        local_runs.append(base)
        line = [f"  round {k + 1}: local {fmt_int(base.eps):>7} ev/s"]
        for name in remotes:
            run = round_runs[name]
            remote_runs[name].append(run)
            ratio = run.eps / base.eps if base.eps else math.nan
            ratios[name].append(ratio)
            line.append(f"{name} {fmt_int(run.eps):>7} ev/s ({ratio:.3f})")
        say("   ".join(line))
        for name, run in round_runs.items():
            if run.cores:
                say(f"      {name:<22} cores: " + ", ".join(f"{n} {v:.2f}" for n, v in run.cores.items())
                    + "; CPU us/event: " + ", ".join(f"{n} {v:.0f}" for n, v in run.us_per_event.items()))
    return local_runs, remote_runs, ratios


def run(ctx: Context) -> None:
    problem = launcher_problem()
    if problem:
        say(f"opensearch: skipped, {problem}")
        ctx.add("opensearch / local, batch events/s", "n/a (no node)", f">= {TARGET_RATIO}")
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    node = Node()
    started: list[Server] = []
    try:
        _run(ctx, node, started)
    finally:
        for server in started:
            ctx.pool.release(server)  # before the node goes: no emulator left pointing at it
        node.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _run(ctx: Context, node: Node, started: list[Server]) -> None:
    rounds = 3 if ctx.quick else 5
    big_rounds = 2 if ctx.quick else 3
    seconds = max(1.0, ctx.seconds)
    connections = ctx.connections
    cfg = ctx.default
    began = time.monotonic()
    node.start()
    say(f"opensearch: {node.banner.split(': ')[0]} ({time.monotonic() - began:.0f} s), heap {node.heap}, "
        f"{' '.join(node.settings)}")
    prefix = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-"
    base_env = {"INGEST_OPENSEARCH_URL": node.url, "INGEST_STORAGE_BACKEND": "opensearch",
                "INGEST_STORAGE_INDEX_PREFIX": prefix}
    cases = {"main": Case(BATCH, None), "big": Case(BIG_BATCH, None), "big-split": Case(BIG_BATCH, BATCH)}
    bodies = {n: events.bodies("ocsf", n) for n in (BATCH, BIG_BATCH)}
    sizes = {name: bulk_sizes(node.url, prefix, bodies[case.per_body][0], case.bulk_max)
             for name, case in cases.items()}
    local = ctx.pool.get(*cfg)
    remote = {}
    for name, case in cases.items():
        env = dict(base_env)
        if case.bulk_max:
            env["INGEST_STORAGE_BULK_MAX_EVENTS"] = str(case.bulk_max)
        remote[name] = ctx.pool.get(*cfg, **env)
        if all(remote[name] is not server for server in started):
            started.append(remote[name])
    obj_bytes = events.mean_object_bytes(bodies[BATCH][0], BATCH)
    say(f"  emulator {config_name(*cfg)} (README default), {connections} connections, OCSF ~{obj_bytes:,.0f} "
        f"B/event, {seconds:g} s per run, engine {ctx.engine}; index prefix {prefix}")
    say(f"  bulk requests: {BATCH}/req -> {_bulk_text(sizes['main'])}; {BIG_BATCH}/req -> "
        f"{_bulk_text(sizes['big'])}; {BIG_BATCH}/req with bulk_max_events {BATCH} -> "
        f"{_bulk_text(sizes['big-split'])}")

    warm = NODE_WARMUP_S / 3 if ctx.quick else NODE_WARMUP_S
    say(f"  node warm-up, {warm:g} s of {BATCH}-event requests, not counted:")
    for k in range(math.ceil(warm / NODE_WARMUP_CHUNK_S)):
        chunk = one_run(ctx, remote["main"], bodies[BATCH], BATCH, connections, NODE_WARMUP_CHUNK_S, node,
                        prefix)
        say(f"    {(k + 1) * NODE_WARMUP_CHUNK_S:3.0f} s: {fmt_int(chunk.eps):>6} ev/s; node CPU "
            f"{chunk.us_per_event.get('node', math.nan):.0f} us/event")
    say(f"  {BATCH} events per request, {rounds} rounds, local and opensearch alternated:")
    local_runs, os_runs, ratios = _alternate(ctx, node, prefix, local, {"opensearch": remote["main"]},
                                             bodies[BATCH], BATCH, connections, seconds, rounds)
    ratio = median(ratios["opensearch"])
    os_eps = median([r.eps for r in os_runs["opensearch"]])
    local_eps = median([r.eps for r in local_runs])
    label = f"{config_name(*cfg)}, c={connections}, {BATCH}/req"
    say(f"  median: local {fmt_int(local_eps)} ev/s, opensearch {fmt_int(os_eps)} ev/s, "
        f"median of per-round ratios {ratio:.3f}")
    ctx.add(f"batch ocsf, local storage, events/s [{label}]", fmt_int(local_eps))
    ctx.add(f"batch ocsf, opensearch storage, events/s [{label}]", fmt_int(os_eps))
    spread = [r for r in ratios["opensearch"] if not math.isnan(r)]
    ctx.add(f"  opensearch / local, same run (median of {rounds} rounds; range)",
            f"{ratio:.3f} ({min(spread, default=math.nan):.2f} - {max(spread, default=math.nan):.2f})",
            f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
    ctx.add("  _bulk request size", _bulk_text(sizes["main"]))
    ctx.add("  p99 latency, local / opensearch",
            f"{fmt_ms(median([r.p99_ms for r in local_runs]))} / "
            f"{fmt_ms(median([r.p99_ms for r in os_runs['opensearch']]))}")
    ctx.add("  cores used, local runs", _cores_text(local_runs))
    ctx.add("  cores used, opensearch runs", _cores_text(os_runs["opensearch"]))
    ctx.add("  CPU us per stored event, local runs / opensearch runs",
            f"{_us_text(local_runs)} / {_us_text(os_runs['opensearch'])}")
    cpu_ratio = median([o.us_per_event["emulator"] / lo.us_per_event["emulator"]
                        for lo, o in zip(local_runs, os_runs["opensearch"], strict=True)
                        if lo.us_per_event and o.us_per_event])
    ctx.add("  the service's own CPU per event, opensearch / local (median of per-round ratios)",
            f"{cpu_ratio:.2f}", f"<= {TARGET_CPU_RATIO:g}", cpu_ratio <= TARGET_CPU_RATIO)

    say(f"  {BIG_BATCH} events per request, {big_rounds} rounds: local, one _bulk of {BIG_BATCH}, "
        f"five of {BATCH}:")
    big = {f"os 1x{BIG_BATCH}": remote["big"], f"os 5x{BATCH}": remote["big-split"]}
    big_local, big_os, big_ratios = _alternate(ctx, node, prefix, local, big, bodies[BIG_BATCH], BIG_BATCH,
                                               connections, seconds, big_rounds)
    parts = [f"local {fmt_int(median([r.eps for r in big_local]))}"]
    parts += [f"{name} {fmt_int(median([r.eps for r in big_os[name]]))} ({median(big_ratios[name]):.3f})"
              for name in big]
    say("  median: " + ", ".join(parts))
    ctx.add(f"{BIG_BATCH}/req events/s: local; opensearch 1 bulk (ratio); 5 bulks of {BATCH} (ratio)",
            "; ".join(parts))
    for name, runs in big_os.items():
        ctx.add(f"  cores used, {name}", _cores_text(runs))
    say(f"  stored into OpenSearch under {prefix}*: {node.count(prefix):,} events")
