"""The serving stack against clients that hold back: refused from their headers alone, cut when slow,
and never able to starve the health check. Real emulator processes, raw sockets on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from telhawk_ingest.storage.local import LocalBackend
from tests.e2e.rawhttp import Answer, closed_by_peer, connect, head, read_answer

pytestmark = pytest.mark.e2e

EVENT_PATH = "/services/collector/event"
HELD_BACK = "10000000"  # Content-Length of a body the client never sends
SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port {} ssh2"


def sshd(port: int) -> bytes:
    return json.dumps({"event": SSHD.format(port), "sourcetype": "linux_secure"}).encode()


def send_head(emu, headers: dict[str, str], path: str = EVENT_PATH, method: str = "POST"):
    sock = connect(emu.port)
    sock.sendall(head(method, path, emu.port, headers))
    return sock


# -- refused from the headers alone (SPEC §3: authentication comes before the body is read) ---------

REFUSALS = [
    ("unknown token", {"Authorization": "Splunk not-a-token"}, EVENT_PATH, 403, 4),
    ("no credential", {}, EVENT_PATH, 401, 2),
    ("unknown scheme", {"Authorization": "Token abc"}, EVENT_PATH, 401, 3),
    ("query token not enabled", {}, EVENT_PATH + "?token=00000000-0000-4000-8000-000000000001", 400, 16),
]


@pytest.mark.parametrize(("case", "headers", "path", "status", "code"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_a_refused_client_holding_back_a_10_mb_body_is_answered_at_once(emulator, case, headers, path,
                                                                          status, code):
    started = time.monotonic()
    with send_head(emulator, {**headers, "Content-Length": HELD_BACK}, path) as sock:
        answer = read_answer(sock, 3.0)

    assert (answer.status, answer.json()["code"]) == (status, code)
    assert time.monotonic() - started < 2.0
    # Nothing of the body was read, so the connection cannot carry another request: it is closed.
    assert answer.headers.get("connection") == "close" and answer.closed


def test_expect_100_continue_with_a_bad_token_gets_403_and_never_100_continue(emulator):
    headers = {"Authorization": "Splunk not-a-token", "Content-Length": HELD_BACK, "Expect": "100-continue"}
    with send_head(emulator, headers) as sock:
        answer = read_answer(sock, 3.0)

    assert answer.interim == []
    assert (answer.status, answer.json()["code"]) == (403, 4)


def test_expect_100_continue_with_a_good_token_gets_100_then_the_body_is_stored(emulator):
    body = sshd(61000)
    headers = {"Authorization": f"Splunk {emulator.hec_token}", "Content-Length": str(len(body)),
               "Expect": "100-continue"}
    with send_head(emulator, headers) as sock:
        interim = read_answer(sock, 3.0, stop_after_interim=True)
        sock.sendall(body)
        answer = read_answer(sock, 10.0)

    assert interim.status == 100
    assert (answer.status, answer.json()) == (200, {"text": "Success", "code": 0})
    ports = {d["_source"]["src_endpoint"]["port"] for d in LocalBackend(emulator.data_dir).documents()}
    assert 61000 in ports


# -- slow clients --------------------------------------------------------------------------------------

class Trickle:
    """Many connections that sent their headers and now send one body byte every `every_s` seconds."""

    def __init__(self, emu, connections: int, every_s: float, content_length: int = 1000) -> None:
        headers = {"Authorization": f"Splunk {emu.hec_token}", "Content-Length": str(content_length)}
        self.socks = []
        for _ in range(connections):
            sock = connect(emu.port)
            sock.sendall(head("POST", EVENT_PATH, emu.port, headers))
            self.socks.append(sock)
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            for sock in self.socks:
                try:
                    sock.send(b" ")
                except OSError:
                    pass  # cut by the server: what the test waits for

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def health_latencies(emu, count: int, spacing_s: float) -> list[float]:
    """Seconds each GET /services/collector/health took, on new connections; 5 s means no answer."""
    took = []
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(trust_env=False, timeout=5.0, limits=fresh) as client:
        for _ in range(count):
            started = time.monotonic()
            try:
                answer = client.get(f"{emu.url}/services/collector/health")
                took.append(time.monotonic() - started if answer.status_code == 200 else 5.0)
            except httpx.TransportError:
                took.append(5.0)
            time.sleep(spacing_s)
    return took


def test_100_slow_clients_neither_starve_health_nor_stay_connected_past_the_body_timeout(start_emulator):
    emu = start_emulator(workers=2, INGEST_HEC_BODY_READ_TIMEOUT_SECONDS="3")
    slow = Trickle(emu, connections=100, every_s=1.0)
    try:
        took = health_latencies(emu, count=20, spacing_s=0.05)
        answers: list[Answer | None] = []
        for sock in slow.socks:
            try:
                answers.append(read_answer(sock, max(0.1, slow.started + 5.0 - time.monotonic())))
            except (TimeoutError, ConnectionError):
                answers.append(None)
        cut_within = time.monotonic() - slow.started
    finally:
        slow.close()

    assert max(took) <= 1.0, f"health took {sorted(took)[-3:]} s under 100 slow clients"
    assert [a.status if a else None for a in answers] == [408] * 100
    assert {a.json()["code"] for a in answers if a} == {6}
    assert all(a.closed for a in answers if a)
    assert cut_within < 5.0


# -- overload and shutdown -----------------------------------------------------------------------------

def held_request(emu, body: bytes, sent: int):
    """A POST whose headers and first `sent` body bytes are sent: a request in flight."""
    sock = send_head(emu, {"Authorization": f"Splunk {emu.hec_token}", "Content-Length": str(len(body))})
    sock.sendall(body[:sent])
    return sock


def assert_busy(answer: Answer) -> None:
    assert (answer.status, answer.json()["code"], answer.json()["text"]) == (503, 9, "Server is busy")
    assert int(answer.headers["retry-after"]) > 0
    assert answer.headers["connection"] == "close" and answer.closed


def stored_ports(emu) -> list[int]:
    return sorted(d["_source"]["src_endpoint"]["port"] for d in LocalBackend(emu.data_dir).documents())


def test_past_max_in_flight_requests_get_503_code_9_and_those_in_flight_still_succeed(start_emulator):
    emu = start_emulator(workers=1, args=["--max-in-flight", "3"])
    bodies = [sshd(63000 + n) for n in range(3)]
    held = [held_request(emu, body, 5) for body in bodies]
    try:
        time.sleep(0.3)  # the three requests reach the application
        with send_head(emu, {"Authorization": f"Splunk {emu.hec_token}", "Content-Length": "10"}) as extra:
            refused = read_answer(extra, 3.0)
        for sock, body in zip(held, bodies, strict=True):
            sock.sendall(body[5:])
        answers = [read_answer(sock, 10.0) for sock in held]
    finally:
        for sock in held:
            sock.close()

    assert_busy(refused)
    assert [a.status for a in answers] == [200] * 3
    assert stored_ports(emu) == [63000, 63001, 63002]
    shedding = emu.healthz(lambda h: h["shedding"]["requests_shed"] >= 1)["shedding"]
    assert (shedding["requests_shed"], shedding["max_in_flight"]) == (1, 3)


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones_with_503_code_9(start_emulator):
    emu = start_emulator(workers=2)
    body = b"".join(sshd(64000 + n) for n in range(5))
    with held_request(emu, body, 10) as in_flight:
        time.sleep(0.3)  # the request reaches the application
        emu.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the master has passed SIGTERM on to the workers
        late = sshd(64100)
        with send_head(emu, {"Authorization": f"Splunk {emu.hec_token}",
                             "Content-Length": str(len(late))}) as newcomer:
            newcomer.sendall(late)
            refused = read_answer(newcomer, 3.0)
        in_flight.sendall(body[10:])
        answer = read_answer(in_flight, 10.0)
    exit_code = emu.process.wait(timeout=10)

    assert_busy(refused)
    assert (answer.status, answer.json()) == (200, {"text": "Success", "code": 0})
    assert exit_code == 0
    assert stored_ports(emu) == [64000 + n for n in range(5)]


def test_a_request_still_unfinished_when_the_drain_ends_is_told_to_retry_never_acknowledged(start_emulator):
    emu = start_emulator(workers=1, args=["--graceful-timeout", "2"],
                         INGEST_HEC_BODY_READ_TIMEOUT_SECONDS="60")
    body = sshd(65000)
    with held_request(emu, body, 5) as in_flight:
        time.sleep(0.3)
        signalled = time.monotonic()
        emu.process.send_signal(signal.SIGTERM)
        answer = read_answer(in_flight, 8.0)
        answered_after = time.monotonic() - signalled
    exit_code = emu.process.wait(timeout=10)

    assert_busy(answer)
    assert 2.0 <= answered_after < 5.0
    assert exit_code == 0
    assert stored_ports(emu) == []


# -- request heads -------------------------------------------------------------------------------------

def test_a_head_sent_a_byte_at_a_time_is_cut_at_the_keep_alive_deadline(start_emulator):
    emu = start_emulator(workers=1, args=["--keep-alive", "2"])
    head_bytes = head("POST", EVENT_PATH, emu.port, {"Authorization": f"Splunk {emu.hec_token}",
                                                      "Content-Length": "2"})
    with connect(emu.port) as sock:
        opened = time.monotonic()
        cut = False
        for byte in head_bytes[:-4]:  # never the blank line that ends the head
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut = True
                break
            if closed_by_peer(sock, 0.25):
                cut = True
                break
        took = time.monotonic() - opened

    assert cut and 2.0 <= took < 4.0


def test_a_head_over_16_kib_is_refused_with_400_and_closed(emulator):
    headers = {"Authorization": f"Splunk {emulator.hec_token}", "Content-Length": "2",
               **{f"X-Padding-{n}": "x" * 1000 for n in range(17)}}
    with send_head(emulator, headers) as sock:
        answer = read_answer(sock, 3.0)

    assert answer.status == 400 and answer.closed


def test_a_head_just_under_the_limit_is_served(emulator):
    body = sshd(66000)
    headers = {"Authorization": f"Splunk {emulator.hec_token}", "Content-Length": str(len(body)),
               **{f"X-Padding-{n}": "x" * 1000 for n in range(14)}}
    with send_head(emulator, headers) as sock:
        sock.sendall(body)
        answer = read_answer(sock, 10.0)

    assert (answer.status, answer.json()["code"]) == (200, 0)


QS_TOKEN = "qs-token-abcdef0123456789"


def test_the_access_log_shows_query_string_tokens_as_stars_accepted_or_refused(start_emulator):
    config = {"hec": {"tokens": [{"name": "qs", "token": QS_TOKEN, "allow_query_string": True}]},
              "operator": {"tokens": [{"name": "ops", "token": "operator-token-for-e2e-0001"}]}}
    emu = start_emulator(config=config, workers=1, args=["--access-log"])
    refused = "local-operator-token-change-me"
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        ok = client.post(f"{emu.url}{EVENT_PATH}?token={QS_TOKEN}&channel=x", content=b'{"event": "hi"}')
        bad = client.post(f"{emu.url}{EVENT_PATH}?Token={refused}", content=b'{"event": "hi"}')
        listing = client.get(f"{emu.url}/api/v1/dlq?access_token={refused}")
    assert ok.status_code == 200 and bad.status_code in (401, 403) and listing.status_code == 401
    emu.stop()  # the worker's log is written out before it exits

    log = emu.output()
    requests = [line for line in log.splitlines() if ' - "' in line and "/healthz" not in line]
    assert len(requests) == 3, log
    assert f'"POST {EVENT_PATH}?token=***&channel=x HTTP/1.1" 200' in log
    assert f"{EVENT_PATH}?Token=***" in log and "/api/v1/dlq?access_token=***" in log
    assert QS_TOKEN not in log and refused not in log
