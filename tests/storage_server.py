"""A fault-injecting stand-in for OpenSearch's `_bulk`, served for real on 127.0.0.1.

For failure injection only (whole-request errors, per-item errors, a server that dies mid-request);
the behaviour of the real server is tested against a real node (tests/opensearch/). Each bulk
request is answered by the next entry of `script`, then by `default`:

- "ok": every item created (409 for an `_id` it already holds)
- an int status (e.g. 503): the whole request fails with that status
- a callable (doc_index, action, doc) -> (status, error_type or None): per-item answers
- "die": the server closes the connection without answering, and from then on is dead: it accepts
  no connection and drops every request on connections already open

`answer_after` (seconds) delays every bulk answer: a node that is slow to answer. An answer the
client stopped waiting for is dropped quietly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = str | int | Callable[[int, dict[str, Any], dict[str, Any]], tuple[int, str | None]]


class StorageServer:
    def __init__(self, *script: Script, default: Script = "ok", answer_after: float = 0.0) -> None:
        self.script = list(script)
        self.answer_after = answer_after
        self.default = default
        self.docs: dict[str, dict[str, Any]] = {}
        self.requests: list[list[str]] = []
        self.dead = False
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if outer.dead:
                    return self._drop()
                self._send(200, {"version": {"number": "2.19.0"}, "tagline": "stand-in"})

            def do_PUT(self) -> None:  # index templates
                self._read()
                if outer.dead:
                    return self._drop()
                self._send(200, {"acknowledged": True})

            def do_HEAD(self) -> None:
                self._send(200, {})

            def do_POST(self) -> None:
                body = self._read()
                answer = None if outer.dead else outer._answer(body)
                if answer is None:
                    self._drop()
                    return
                if outer.answer_after:
                    time.sleep(outer.answer_after)
                try:
                    self._send(*answer)
                except OSError:  # the client gave up waiting
                    self.close_connection = True

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()
                if not outer.dead:
                    outer.dead = True
                    threading.Thread(target=outer.stop, daemon=True).start()

            def _read(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StorageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, body: bytes) -> tuple[int, dict[str, Any]] | None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        pairs = list(zip(lines[::2], lines[1::2], strict=True))
        with self._lock:
            step = self.script.pop(0) if self.script else self.default
            self.requests.append([next(iter(a.values()))["_id"] for a, _ in pairs])
            if step == "die":
                return None
            if isinstance(step, int):
                return step, {"error": {"type": "injected", "reason": f"injected {step}"}, "status": step}
            items = []
            for n, (action, doc) in enumerate(pairs):
                meta = next(iter(action.values()))
                status, error = step(n, action, doc) if callable(step) else (201, None)
                if status < 300 and meta["_id"] in self.docs:
                    status, error = 409, "version_conflict_engine_exception"
                elif status < 300:
                    self.docs[meta["_id"]] = doc
                item: dict[str, Any] = {"_index": meta.get("_index"), "_id": meta["_id"], "status": status}
                if error:
                    item["error"] = {"type": error, "reason": f"injected {error}"}
                items.append({next(iter(action)): item})
            return 200, {"took": 1, "errors": any("error" in i[next(iter(i))] for i in items), "items": items}
