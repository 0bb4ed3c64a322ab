"""The emulator under test, started as the README starts it (`python -m local`), in temp folders.

Each `Server` is one `python -m local` process tree (gunicorn master and workers) on a free port of
127.0.0.1, with its own DLQ and data folders, fixed bench tokens and the local storage backend. It
serves a generated template: template.yaml's functions unchanged plus `BenchFloor`
(bench/floor.py, `POST /bench/floor`), so the floor runs in the very same processes, with the same
workers and threads, as the real handlers. `WsgiFloor` is the same floor on the WSGI stack, in a
`functions-framework` process tree of its own. `ingest_handler` serves another function in place of
the HEC ingest one (bench/ndjson.py: the same pipeline with the former NDJSON file backend).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
HEC_TOKEN = "bench-hec-0000-4000-8000-000000000042"
OPERATOR_TOKEN = "bench-operator-token-0123456789abcdef"
FLOOR_PATH = "/bench/floor"
START_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 15.0
_SCRUBBED = ("INGEST_", "CORE_", "FUNCTION_")


def _emulator_defaults() -> tuple[int, int]:
    """(workers, threads) that `python -m local` (and so `make run`) uses when not told."""
    from local.emulator import parse_args

    args = parse_args([])
    return args.workers, args.threads


DEFAULT_WORKERS, DEFAULT_THREADS = _emulator_defaults()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_template(directory: Path, ingest_handler: str | None = None) -> Path:
    """template.yaml plus the floor function, with code paths made absolute; `ingest_handler`
    (e.g. `bench/ndjson.handler`) replaces the Handler of the HEC ingest function."""
    from local.emulator import load_template

    template = load_template(ROOT / "template.yaml")
    function_globals = template.setdefault("Globals", {}).setdefault("Function", {})
    function_globals["CodeUri"] = str(ROOT / function_globals.get("CodeUri", "."))
    for resource in template["Resources"].values():
        props = resource.get("Properties") if isinstance(resource, dict) else None
        if isinstance(props, dict) and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = str(ROOT / props["CodeUri"])
    if ingest_handler:
        template["Resources"]["IngestEvent"]["Properties"]["Handler"] = ingest_handler
    template["Resources"]["BenchFloor"] = {
        "Type": "AWS::Serverless::Function",
        "Properties": {
            "Description": "Benchmark floor: read and JSON-parse the body, answer a constant",
            "Handler": "bench/floor.floor",
            "CodeUri": str(ROOT),
            "Events": {"Floor": {"Type": "HttpApi", "Properties": {"Path": FLOOR_PATH, "Method": "POST"}}},
        },
    }
    path = directory / "template.yaml"
    path.write_text(yaml.safe_dump(template, sort_keys=False))
    return path


def config_name(workers: int, threads: int) -> str:
    return f"{workers}w x {threads}t"


@dataclass
class Server:
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS
    env: dict[str, str] = field(default_factory=dict)
    dlq_path: Path | None = None  # default: a fresh temp folder
    ingest_handler: str | None = None  # default: template.yaml's own
    home: Path = field(init=False)
    data_dir: Path = field(init=False)
    port: int = field(init=False, default=0)
    process: subprocess.Popen | None = field(init=False, default=None)
    warmed: set = field(init=False, default_factory=set)  # what has been warmed up, by the benches
    _template: Path = field(init=False)

    @property
    def name(self) -> str:
        return config_name(self.workers, self.threads)

    def start(self) -> Server:
        self.launch()
        return self.wait()

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait`)."""
        self.home = Path(tempfile.mkdtemp(prefix="telhawk-bench-"))
        self.data_dir = self.home / "data"
        self.dlq_path = self.dlq_path or self.home / "dlq"
        for folder in (self.data_dir, self.dlq_path):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._template = write_template(self.home, self.ingest_handler)
        self.port = free_port()
        self._launch(self._template)

    def wait(self) -> Server:
        """Wait until it answers; a port taken meanwhile gets another port."""
        for attempt in range(3):
            try:
                self._wait_until_answering()
                return self
            except RuntimeError:
                if "Connection in use" not in self.output() or attempt == 2:
                    raise
                self.port = free_port()
                self._launch(self._template)
        return self

    def command(self, template: Path) -> list[str]:
        return [
            sys.executable, "-m", "local", "--template", str(template), "--host", HOST,
            "--port", str(self.port), "--workers", str(self.workers), "--threads", str(self.threads),
        ]

    def _launch(self, template: Path) -> None:
        command = self.command(template)
        environ = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
        environ.update(
            INGEST_DLQ_BASE_PATH=str(self.dlq_path),
            INGEST_STORAGE_DATA_DIR=str(self.data_dir),
            INGEST_STORAGE_BACKEND="local",
            INGEST_HEC_TOKENS=f"bench:{HEC_TOKEN}",
            INGEST_OPERATOR_TOKENS=f"bench-operator:{OPERATOR_TOKEN}",
            PYTHONUNBUFFERED="1",
        )
        environ.update(self.env)
        with (self.home / "emulator.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=environ, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def output(self) -> str:
        path = self.home / "emulator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_until_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"emulator exited before answering:\n{self.output()[-3000:]}")
            try:
                self.get("/services/collector/health", timeout=2)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"emulator did not answer in {START_TIMEOUT_S:.0f} s:\n{self.output()[-3000:]}"
                )
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        """One request on a new connection (as curl would make it)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
        return self.request("GET", path, headers=headers, timeout=timeout)

    def healthz(self) -> dict:
        import orjson

        status, body = self.get("/healthz")
        if status != 200:
            raise RuntimeError(f"/healthz answered {status}: {body[:300]!r}")
        return orjson.loads(body)

    def clear_data(self) -> None:
        """Drop stored events between runs: the rows of the embedded store (the database stays
        open in the workers, so it is emptied, not deleted), or the NDJSON baseline's files (the
        folders stay: that backend caches them)."""
        database = self.data_dir / "events.sqlite3"
        if database.exists():
            conn = sqlite3.connect(database, timeout=30, isolation_level=None)
            try:
                conn.execute("DELETE FROM events")
            finally:
                conn.close()
        for path in self.data_dir.glob("*/*.ndjson"):
            path.unlink(missing_ok=True)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # our own session: the master and its workers
                process.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


WSGI_WORKERS, WSGI_THREADS = 4, 2


@dataclass
class WsgiFloor(Server):
    """bench/floor_wsgi.py served as `functions-framework` serves a Flask function: gunicorn with
    gthread workers (WORKERS x THREADS; 4 x 2 is how the product was served on that stack)."""

    workers: int = WSGI_WORKERS
    threads: int = WSGI_THREADS

    @property
    def name(self) -> str:
        return f"WSGI floor {config_name(self.workers, self.threads)}"

    def command(self, template: Path) -> list[str]:
        self.env.update(WORKERS=str(self.workers), THREADS=str(self.threads))
        return [sys.executable, "-m", "functions_framework", "--target", "floor_wsgi",
                "--source", str(ROOT / "bench" / "floor_wsgi.py"), "--host", HOST, "--port", str(self.port)]


class ServerPool:
    """Servers shared by the benchmarks of one run, keyed by (workers, threads, settings)."""

    def __init__(self) -> None:
        self._servers: dict[tuple, Server] = {}

    def get(self, workers: int = DEFAULT_WORKERS, threads: int = DEFAULT_THREADS, *,
            ingest_handler: str | None = None, **env: str) -> Server:
        return self.get_many([(workers, threads)], ingest_handler=ingest_handler, **env)[0]

    def get_many(self, configs: list[tuple[int, int]], *, ingest_handler: str | None = None,
                 **env: str) -> list[Server]:
        """Servers for several (workers, threads), started side by side."""
        settings = (ingest_handler, tuple(sorted(env.items())))
        keys = [(workers, threads, *settings) for workers, threads in configs]
        fresh = []
        for key in keys:
            if key not in self._servers:
                self._servers[key] = Server(key[0], key[1], dict(env), ingest_handler=ingest_handler)
                self._servers[key].launch()
                fresh.append(self._servers[key])
        for server in fresh:
            server.wait()
        return [self._servers[key] for key in keys]

    def release(self, server: Server) -> None:
        for key, value in list(self._servers.items()):
            if value is server:
                del self._servers[key]
        server.close()

    def close(self) -> None:
        while self._servers:
            self._servers.popitem()[1].close()
