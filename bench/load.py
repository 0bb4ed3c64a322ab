"""Load generators, always in processes separate from the server, on 127.0.0.1 only.

Two engines with one interface (`run_load`):
- `wrk` (when installed): one wrk process, a Lua script that cycles pre-built requests and stops
  each thread after its share of the request cap;
- `python`: client processes forked from the benchmark, one thread per keep-alive connection,
  each sending pre-built request bytes on a raw socket and reading the response by its
  Content-Length (cheaper than http.client, which leaves more of the 2 cores to the server).

Every run is bounded by a request count and by seconds: `seconds` of measurement after `warmup`
seconds whose requests are not counted, and at most `max_requests` measured requests.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
SOCKET_TIMEOUT_S = 30.0


@dataclass
class LoadResult:
    engine: str
    connections: int
    requests: int
    seconds: float
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        """Transport errors plus answers other than 200."""
        return self.errors + sum(n for status, n in self.statuses.items() if status != 200)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_request(method: str, path: str, port: int, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def choose_engine(name: str) -> str:
    if name == "auto":
        return "wrk" if wrk_available() else "python"
    if name == "wrk" and not wrk_available():
        raise SystemExit("bench: --engine wrk, but wrk is not installed (apt-get install wrk)")
    return name


def run_load(
    engine: str,
    port: int,
    method: str,
    path: str,
    bodies: list[bytes | None],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    max_requests: int,
    warmup: float = 1.0,
) -> LoadResult:
    if engine == "wrk":
        return _run_wrk(port, method, path, bodies, headers, connections, seconds, max_requests, warmup)
    return _run_python(port, method, path, bodies, headers, connections, seconds, max_requests, warmup)


# --- python engine -------------------------------------------------------------------------


class _Closed(Exception):
    pass


def _read_response(sock: socket.socket, pending: bytearray) -> tuple[int, bool]:
    """(status, server wants to close) of one response with a Content-Length body."""
    while (end := pending.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed
        pending += chunk
    head = bytes(pending[:end]).decode("latin-1").lower()
    status = int(head[9:12])
    length, close = 0, False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not expected from the benchmarked endpoints")
        elif name == "connection" and "close" in value:
            close = True
    need = end + 4 + length
    while len(pending) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise _Closed
        pending += chunk
    del pending[:need]
    return status, close


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _connection_loop(port, requests, offset, start_at, measure_from, stop_at, cap, out, lock):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors, last, sock = 0, measure_from, None
    pending = bytearray()
    i = offset
    sent = 0
    while time.perf_counter() < start_at:
        time.sleep(0.001)
    while len(latencies) + errors < cap and sent < 2 * cap + 1000:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            break
        sent += 1
        try:
            if sock is None:
                sock, pending = _connect(port), bytearray()
            sock.sendall(requests[i % len(requests)])
            status, close = _read_response(sock, pending)
        except (OSError, _Closed, ValueError):
            if sock is not None:
                sock.close()
            sock = None
            if t0 >= measure_from:
                errors += 1
            time.sleep(0.01)
            continue
        t1 = time.perf_counter()
        i += 1
        if close:
            sock.close()
            sock = None
        if t0 >= measure_from:
            latencies.append(t1 - t0)
            statuses[status] = statuses.get(status, 0) + 1
            last = t1
    if sock is not None:
        sock.close()
    with lock:
        out.append((latencies, statuses, errors, last))


def _client_process(port, requests, first_conn, n_conns, start_at, measure_from, stop_at, cap, queue):
    out: list = []
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=_connection_loop,
            args=(port, requests, first_conn + k, start_at, measure_from, stop_at, cap, out, lock),
        )
        for k in range(n_conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [x for item in out for x in item[0]]
    statuses: dict[int, int] = {}
    for item in out:
        for status, n in item[1].items():
            statuses[status] = statuses.get(status, 0) + n
    queue.put((latencies, statuses, sum(item[2] for item in out), max(item[3] for item in out)))


def _run_python(port, method, path, bodies, headers, connections, seconds, max_requests, warmup):
    requests = [build_request(method, path, port, headers, body) for body in bodies]
    per_process = 8
    processes = max(1, math.ceil(connections / per_process))
    cap = max(1, math.ceil(max_requests / connections))
    start_at = time.perf_counter() + 0.3  # CLOCK_MONOTONIC: the same clock in every process
    measure_from = start_at + warmup
    stop_at = measure_from + seconds
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = []
    for p in range(processes):
        first = p * per_process
        n = min(per_process, connections - first)
        proc = ctx.Process(
            target=_client_process,
            args=(port, requests, first, n, start_at, measure_from, stop_at, cap, queue),
            daemon=True,
        )
        proc.start()
        procs.append(proc)
    results = []
    for _ in procs:
        results.append(queue.get(timeout=stop_at - time.perf_counter() + SOCKET_TIMEOUT_S + 10))
    for proc in procs:
        proc.join(timeout=10)
    latencies = sorted(x for r in results for x in r[0])
    statuses: dict[int, int] = {}
    for r in results:
        for status, n in r[1].items():
            statuses[status] = statuses.get(status, 0) + n
    errors = sum(r[2] for r in results)
    end = max(r[3] for r in results)
    return LoadResult(
        engine="python",
        connections=connections,
        requests=len(latencies),
        seconds=max(end - measure_from, 1e-9),
        errors=errors,
        statuses=statuses,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else math.nan,
    )


# --- wrk engine ----------------------------------------------------------------------------

_WRK_SCRIPT = r"""
local requests = {}
local i = 0
local n = 0
local limit = 0

function init(args)
  limit = tonumber(args[1])
  local method = args[2]
  local path = args[3]
  for k = 4, #args do
    local body = nil
    if args[k] ~= "-" then
      local f = assert(io.open(args[k], "rb"))
      body = f:read("*a")
      f:close()
    end
    requests[#requests + 1] = wrk.format(method, path, nil, body)
  end
  i = math.random(#requests) - 1
end

function request()
  if #requests == 0 then
    return wrk.format()  -- wrk checks the script in a state where init() never ran
  end
  i = i % #requests + 1
  return requests[i]
end

function response(status, headers, body)
  n = n + 1
  if n >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %d, "requests": %d, "status": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _run_wrk(port, method, path, bodies, headers, connections, seconds, max_requests, warmup):
    threads = 1 if connections <= 8 else 2
    with tempfile.TemporaryDirectory(prefix="telhawk-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(_WRK_SCRIPT)
        files = []
        for k, body in enumerate(bodies):
            if body is None:
                files.append("-")
                continue
            f = Path(tmp) / f"body{k}"
            f.write_bytes(body)
            files.append(str(f))

        def wrk(duration_s: int, cap: int) -> dict:
            command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
                       "--timeout", f"{int(SOCKET_TIMEOUT_S)}s", "-s", str(script)]
            command += [h for name, value in headers.items() for h in ("-H", f"{name}: {value}")]
            per_thread = max(1, math.ceil(cap / threads))
            command += [f"http://{HOST}:{port}{path}", "--", str(per_thread), method, path, *files]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
                                  timeout=duration_s + SOCKET_TIMEOUT_S + 10)
            for line in done.stdout.splitlines():
                if line.startswith("BENCHJSON "):
                    return json.loads(line[len("BENCHJSON "):])
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]} {done.stderr[-800:]}")

        if warmup > 0:
            wrk(max(1, math.ceil(warmup)), max_requests)
        stats = wrk(max(1, math.ceil(seconds)), max_requests)
    transport = stats["connect"] + stats["read"] + stats["write"] + stats["timeout"]
    bad = stats["status"]
    return LoadResult(
        engine="wrk",
        connections=connections,
        requests=stats["requests"],
        seconds=stats["duration_us"] / 1e6,
        errors=transport,
        statuses={200: stats["requests"] - bad, **({400: bad} if bad else {})},  # wrk counts >= 400 only
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        max_ms=stats["max_us"] / 1000,
    )
