"""Storage down: single-event ingest latency with the storage circuit breaker and without it.

Storage is a stand-in node on 127.0.0.1 that answers every request `503` after DOWN_DELAY_S (a
node that is overloaded or restarting: slow and failing). Two emulators, as `make run` starts them
but with the `opensearch` backend pointed at it: one with the breaker (the default settings), one
with `storage.breaker.enabled: false`. Each gets single-event HEC requests one at a time, on a new
connection each (as curl sends them). The breaker's emulator is warmed up first, so that every
worker's breaker has opened (each process has its own); the latency is then that of an event
that goes straight to the DLQ. Without the breaker every request waits out the whole retry
schedule (four tries and 100 + 200 + 400 ms of backoff). Every answer must be 200 with the event
dead-lettered, and the DLQ folder must hold exactly one entry per request sent.

A dead-lettered event costs two fsyncs on a local disk (the entry file and its folder; the DLQ
ledger's admission is fsync'd only on network volumes), so on a shared disk the figure with the
breaker follows the disk. A third run, for information,
puts the DLQ folder on tmpfs (/dev/shm), where fsync costs nothing: what is left is the request
path itself, breaker included.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson

from . import events
from .common import Context, fmt_ms, say
from .ingest import HEADERS, HEC_PATH
from .load import percentile
from .server import Server

DOWN_DELAY_S = 0.1
TARGET_WITH_MS = 20.0
TARGET_WITHOUT_MS = 700.0
# A worker's breaker opens after 5 failed tries (storage.breaker.failures): two requests.
WARMUP_PER_WORKER = 6


@contextmanager
def storage_down(delay: float = DOWN_DELAY_S) -> Iterator[str]:
    """A node on 127.0.0.1 answering every request 503 after `delay` seconds; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _down(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            body = b'{"error":{"type":"unavailable","reason":"storage down"},"status":503}'
            try:
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_HEAD = _down

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ingest(server: Server, bodies: list[bytes], count: int) -> tuple[list[float], list[str]]:
    """`count` single-event requests one after another: (seconds each, problems seen)."""
    took, problems = [], []
    for n in range(count):
        started = time.perf_counter()
        status, body = server.request("POST", HEC_PATH, bodies[n % len(bodies)], HEADERS, timeout=60)
        took.append(time.perf_counter() - started)
        answer = orjson.loads(body) if body.startswith(b"{") else {}
        if status != 200 or answer.get("dead_lettered") != 1:
            problems.append(f"{status} {body[:120]!r}")
    return took, problems


def _dlq_files(path: Path | None) -> int:
    return len(list(path.glob("failed_*.json"))) if path else 0


def run(ctx: Context) -> None:
    measured_with = 100 if ctx.quick else 300
    measured_without = 8 if ctx.quick else 20
    workers, threads = ctx.default
    bodies = events.bodies("ocsf", 1, distinct=16)
    with storage_down() as url:
        env = {"INGEST_STORAGE_BACKEND": "opensearch", "INGEST_OPENSEARCH_URL": url}
        results = {}
        shm = Path("/dev/shm")
        # (label, breaker enabled, DLQ folder: None for the emulator's own temp folder on disk)
        runs: list[tuple[str, bool, Path | None]] = [("with the breaker", True, None),
                                                     ("without the breaker", False, None)]
        if shm.is_dir():
            runs.append(("with the breaker, DLQ on tmpfs", True, Path(tempfile.mkdtemp(dir=shm))))
        for name, enabled, dlq_path in runs:
            breaker = {"INGEST_STORAGE_BREAKER": f"{{enabled: {str(enabled).lower()}}}"}
            server = Server(workers, threads, {**env, **breaker}, dlq_path=dlq_path).start()
            try:
                warmup = WARMUP_PER_WORKER * workers if enabled else 1
                _, warm_problems = _ingest(server, bodies, warmup)
                count = measured_with if enabled else measured_without
                took, problems = _ingest(server, bodies, count)
                files = _dlq_files(server.dlq_path)
                state = server.healthz()["storage"]["breaker"]["state"]
            finally:
                server.close()
                if dlq_path is not None:
                    shutil.rmtree(dlq_path, ignore_errors=True)
            took.sort()
            sent = warmup + count
            results[name] = (percentile(took, 99), percentile(took, 50), count, sent, files,
                             warm_problems + problems, state)
            say(f"breaker: storage down (503 after {DOWN_DELAY_S * 1000:.0f} ms), {name}, "
                f"{workers}w x {threads}t: {count} single-event requests after {warmup} unmeasured: "
                f"p50 {fmt_ms(results[name][1] * 1000)}, p99 {fmt_ms(results[name][0] * 1000)}; "
                f"DLQ entries {files} for {sent} requests; breaker state seen by healthz: {state}")
            for problem in (warm_problems + problems)[:3]:
                say(f"    ! {problem}")
    for (name, enabled, dlq_path), (p99, _, count, sent, files, problems, _) in zip(
            runs, results.values(), strict=True):
        ms = p99 * 1000
        if not enabled:
            target, ok = f">= {TARGET_WITHOUT_MS:g} ms", ms >= TARGET_WITHOUT_MS
        elif dlq_path is None:
            target, ok = f"<= {TARGET_WITH_MS:g} ms", ms <= TARGET_WITH_MS
        else:
            target, ok = "info", None
        ctx.add(f"storage down, single-event p99 {name} ({count} requests)", fmt_ms(ms), target, ok)
        ctx.add(f"  every event dead-lettered ({name})", f"{files} entries / {sent} requests",
                "all", files == sent and not problems)
