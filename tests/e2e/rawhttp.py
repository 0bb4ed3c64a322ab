"""HTTP/1.1 on a raw socket, for clients no library would be: bodies held back, sent a byte at a time,
`Expect: 100-continue` answered or not. Everything here talks to 127.0.0.1 only."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    """What the server sent on one connection: interim answers first (100 Continue), then one final one."""

    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int] = field(default_factory=list)
    closed: bool = False  # the server closed the connection after this answer

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket, deadline_s: float = 5.0, *, stop_after_interim: bool = False) -> Answer:
    """Read interim answers and one final answer (Content-Length framed); raise TimeoutError when
    none is complete within `deadline_s`. With `stop_after_interim`, return at the first interim
    answer (status 100) instead of waiting for the final one."""
    deadline = time.monotonic() + deadline_s
    data = b""
    interim: list[int] = []
    closed = False

    def more() -> None:
        nonlocal data, closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete answer within {deadline_s} s; got {data[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no complete answer within {deadline_s} s; got {data[:200]!r}") from None
        except ConnectionError:
            # A reset: the server closed while bytes of ours were still unread on its side.
            chunk = b""
        if not chunk:
            closed = True
            raise ConnectionError(f"connection closed; got {data[:200]!r}")
        data += chunk

    while True:
        while b"\r\n\r\n" not in data:
            more()
        head_bytes, _, data = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            interim.append(status)
            if stop_after_interim:
                return Answer(status, headers, b"", interim)
            continue
        length = int(headers.get("content-length", "0"))
        while len(data) < length:
            more()
        body = data[:length]
        if headers.get("connection", "").lower() == "close":
            # The server said it closes: check that it does.
            try:
                while True:
                    more()
            except ConnectionError:
                pass
            except TimeoutError:
                closed = False
        return Answer(status, headers, body, interim, closed)


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True when the server closes the connection (EOF or reset) within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False
