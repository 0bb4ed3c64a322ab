"""End-to-end fixtures: the real emulator (`python -m local`) as a subprocess on 127.0.0.1.

- `emulator`: one instance per test module, with a fresh DLQ folder and data folder and the dev
  config (local/config.yaml).
- `start_emulator(config=None, workers=2, threads=4, template=None, args=None, **env)`: more
  instances for one test, stopped when the test ends; `args` are more emulator options. `env`
  are settings variables (`INGEST_DLQ_ENABLED="false"`, `INGEST_OPENSEARCH_URL=...`); a value of
  None removes the variable. `config` is a settings mapping written to a YAML file, or the path
  of one.

Every instance starts from a clean environment: INGEST_*/CORE_* variables of the shell running
pytest are dropped, so only what a test passes reaches the service. Each instance's output goes to
a log file (`.log_path`, `.output()`), quoted when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from telhawk_ingest.stats import FLUSH_INTERVAL_S

ROOT = Path(__file__).resolve().parents[2]
DEV_CONFIG = ROOT / "local" / "config.yaml"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
# A SIGTERM'd worker drains for at most 15 s (--graceful-timeout) and gunicorn kills what is left
# 5 s later; allow a little more.
STOP_TIMEOUT_S = 25.0
_SCRUBBED_PREFIXES = ("INGEST_", "CORE_", "FUNCTION_")


class EmulatorStartError(RuntimeError):
    """The emulator exited or did not answer in time; the message quotes its output."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _first_token(config: Mapping[str, Any], env: Mapping[str, str], section: str) -> str | None:
    """The first token of a section, as the service resolves it (environment over file)."""
    from_env = env.get(f"INGEST_{section.upper()}_TOKENS")
    if from_env:
        return from_env.split(",")[0].partition(":")[2].strip() or None
    tokens = (config.get(section) or {}).get("tokens") or []
    return tokens[0]["token"] if tokens else None


@dataclass
class Emulator:
    """One running emulator. `env` holds the settings variables it was given (not the whole OS env)."""

    url: str
    dlq_path: Path
    data_dir: Path
    hec_token: str | None
    operator_token: str | None
    env: dict[str, str]
    log_path: Path
    port: int
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Launch and wait until it answers HTTP; a port taken meanwhile gets another port."""
        for attempt in range(3):
            self._launch()
            try:
                self._wait_until_answering()
                return
            except EmulatorStartError:
                # gunicorn retries a taken port for 5 s, then logs "Connection in use" and exits.
                port_taken = "Connection in use" in self.output()
                if not port_taken or attempt == 2:
                    raise
                self.port = _free_port()
                self.url = f"http://{HOST}:{self.port}"

    def stop(self) -> int | None:
        """SIGTERM (the workers drain: in-flight requests finish), then SIGKILL to the whole group."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # The group is the session started for this emulator (its master is not reaped
                # yet, so the id is still ours): it holds the workers and nothing else.
                os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=5)

    def healthz(self, settled: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        """GET /healthz, asked again until `settled(health)` holds or counters had time to arrive.

        Each worker writes its counters at most every stats.FLUSH_INTERVAL_S, so a count made by
        another worker may reach healthz that much later (README, "Counters").
        """
        deadline = time.monotonic() + 4 * FLUSH_INTERVAL_S + 1.0
        with httpx.Client(trust_env=False, timeout=10.0) as client:
            while True:
                health = client.get(f"{self.url}/healthz").json()
                if settled(health) or time.monotonic() > deadline:
                    return health
                time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again with the same settings, folders and (if still free) port."""
        self.stop()
        self.start()

    def _launch(self) -> None:
        command = [
            sys.executable,
            "-m",
            "local",
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.args,
        ]
        environ = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
        environ.update(self.env)
        environ["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        # trust_env=False: a proxy from the environment must never see requests meant for 127.0.0.1.
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    self.process = None
                    raise EmulatorStartError(
                        f"emulator exited with {code} before answering:\n{self.output()}"
                    )
                try:
                    client.get(f"{self.url}/healthz")
                    return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmulatorStartError(
                        f"emulator did not answer within {START_TIMEOUT_S:.0f} s:\n{self.output()}"
                    )
                time.sleep(0.1)


class EmulatorPool:
    """Starts emulators under one folder and stops every one of them at the end of a scope."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._running: list[Emulator] = []

    def start(
        self,
        *,
        config: Mapping[str, Any] | Path | None = None,
        workers: int = 2,
        threads: int = 4,
        template: Path | None = None,
        args: list[str] | None = None,
        **env: str | None,
    ) -> Emulator:
        home = self._tmp.mktemp("emulator")
        dlq_path, data_dir = home / "dlq", home / "data"
        for folder in (dlq_path, data_dir):
            folder.mkdir(mode=0o700)
        if isinstance(config, Mapping):
            config_path = home / "config.yaml"
            config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        else:
            config_path = config or DEV_CONFIG
        settings: dict[str, str | None] = {
            "INGEST_DLQ_BASE_PATH": str(dlq_path),
            "INGEST_STORAGE_DATA_DIR": str(data_dir),
            "INGEST_CONFIG_FILE": str(config_path),
            **env,
        }
        chosen = {k: v for k, v in settings.items() if v is not None}
        # Unset variables fall back to the emulator's own defaults (see local.emulator).
        loaded = yaml.safe_load(Path(chosen.get("INGEST_CONFIG_FILE", DEV_CONFIG)).read_text()) or {}
        port = _free_port()
        instance = Emulator(
            url=f"http://{HOST}:{port}",
            dlq_path=Path(chosen.get("INGEST_DLQ_BASE_PATH", ROOT / "var" / "dlq")),
            data_dir=Path(chosen.get("INGEST_STORAGE_DATA_DIR", ROOT / "var" / "data")),
            hec_token=_first_token(loaded, chosen, "hec"),
            operator_token=_first_token(loaded, chosen, "operator"),
            env=chosen,
            log_path=home / "emulator.log",
            port=port,
            args=[
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                *(["--template", str(template)] if template else []),
                *(args or []),
            ],
        )
        self._running.append(instance)
        instance.start()
        return instance

    def stop_all(self) -> None:
        while self._running:
            self._running.pop().stop()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The real emulator with the dev config and fresh folders, shared by one test module."""
    pool = EmulatorPool(tmp_path_factory)
    try:
        yield pool.start()
    finally:
        pool.stop_all()


@pytest.fixture
def start_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Factory: `start_emulator(INGEST_DLQ_ENABLED="false")` -> a running Emulator, stopped after the test."""
    pool = EmulatorPool(tmp_path_factory)
    try:
        yield pool.start
    finally:
        pool.stop_all()
