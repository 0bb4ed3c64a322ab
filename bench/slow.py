"""Health under slow clients: 200 connections that send their headers, then one body byte every 2 s.

The emulator as `make run` starts it. Each slow connection sends a valid HEC token and a
Content-Length of 10,000 bytes, then one body byte every 2 s; meanwhile GET
/services/collector/health is asked every 0.2 s on a new connection (5 s timeout; no answer counts
as 5 s). The run lasts past the body-read deadline (`hec.body_read_timeout_seconds`, 10 s by
default), and at the end every slow connection is checked: answered 408 (HEC code 6) and closed,
or still open.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

from .common import Context, fmt_ms, say
from .ingest import HEADERS, HEC_PATH
from .load import HOST, percentile

CONNECTIONS = 200
TRICKLE_EVERY_S = 2.0
PROBE_EVERY_S = 0.2
PROBE_TIMEOUT_S = 5.0
BODY_TIMEOUT_S = 10.0  # the default of hec.body_read_timeout_seconds
TARGET_P99_S = 1.0


def _open(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=5)
    head = [f"POST {HEC_PATH} HTTP/1.1", f"Host: {HOST}:{port}", "Content-Length: 10000"]
    head += [f"{name}: {value}" for name, value in HEADERS.items()]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.wait(TRICKLE_EVERY_S):
        for sock in socks:
            try:
                sock.send(b" ")
            except OSError:
                pass


def _probe(port: int) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", "/services/collector/health")
        response = conn.getresponse()
        response.read()
        ok = response.status == 200
    except OSError:
        ok = False
    finally:
        conn.close()
    return time.perf_counter() - started if ok else PROBE_TIMEOUT_S


def _fate(sock: socket.socket) -> str:
    """'408' when the server answered 408 and closed, 'open' when it did neither, else what it did."""
    sock.settimeout(0.2)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return "open" if not data else f"{data[9:12].decode()} not closed"
    except OSError:
        return "reset" if not data else data[9:12].decode()
    return data[9:12].decode() if data else "closed without answer"


def run(ctx: Context) -> None:
    server = ctx.pool.get(*ctx.default)
    duration = BODY_TIMEOUT_S + 3.0
    say(f"slow: {CONNECTIONS} connections sending one body byte every {TRICKLE_EVERY_S:g} s, health asked "
        f"every {PROBE_EVERY_S:g} s for {duration:g} s; emulator {server.name}")
    socks = [_open(server.port) for _ in range(CONNECTIONS)]
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
    trickler.start()
    opened = time.monotonic()
    took: list[float] = []
    try:
        while time.monotonic() - opened < duration:
            took.append(_probe(server.port))
            time.sleep(PROBE_EVERY_S)
    finally:
        stop.set()
        trickler.join(timeout=5)
        fates: dict[str, int] = {}
        for sock in socks:
            fate = _fate(sock)
            fates[fate] = fates.get(fate, 0) + 1
            sock.close()
    took.sort()
    p99 = percentile(took, 99)
    say(f"  health: {len(took)} probes, p50 {fmt_ms(percentile(took, 50) * 1000)}, p99 {fmt_ms(p99 * 1000)}, "
        f"max {fmt_ms(took[-1] * 1000)}; slow connections at the end: {fates}")
    ctx.add(f"health p99 under {CONNECTIONS} slow connections", fmt_ms(p99 * 1000), f"<= {TARGET_P99_S:g} s",
            p99 <= TARGET_P99_S)
    ctx.add(f"  slow connections cut (408 and closed) within {duration:g} s", f"{fates.get('408', 0)} of "
            f"{CONNECTIONS}", f"{CONNECTIONS}", fates.get("408", 0) == CONNECTIONS)
