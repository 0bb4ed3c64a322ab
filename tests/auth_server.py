"""A stand-in for the remote auth service (`POST /api/v1/auth/validate-hec`), served for real on
127.0.0.1, that holds every call until the test releases it.

`answers` maps a token to the JSON answer; any other token is `{"valid": false}`. While `release`
is not set, each call waits (up to `hold_seconds`, so a failing test still ends): `in_flight` and
`calls` say what reached it, and `arrived` is set once `expect` calls are waiting.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AuthServer:
    def __init__(self, answers: dict[str, dict[str, Any]] | None = None, expect: int = 1,
                 hold_seconds: float = 20.0) -> None:
        self.answers = answers or {}
        self.expect = expect
        self.release = threading.Event()
        self.arrived = threading.Event()
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.calls.append(body["token"])
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                    if outer.in_flight >= outer.expect:
                        outer.arrived.set()
                outer.release.wait(hold_seconds)
                with outer._lock:
                    outer.in_flight -= 1
                data = json.dumps(outer.answers.get(body["token"], {"valid": False})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AuthServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
