"""Fixtures for tests against a real OpenSearch node (every test here is marked `opensearch`).

- `opensearch`: an httpx client for the node at OPENSEARCH_URL (`make test` starts one). Without
  a node answering there the tests are skipped with the reason, except in CI (`CI` set), where
  they fail: a CI run must never go green without having talked to a real node.
- `index_prefix`: a prefix of the test's own (`it-<hex>-`); its indices and index template are
  deleted when the test ends, so tests never see each other's documents or mappings.
- `make_service(url, prefix, **core)`: a Service storing into OpenSearch, with its DLQ and state
  under the test's tmp_path.
- `LocalNode`: a node of a test's own, started with local/opensearch/start.sh on a free port, for
  tests that stop, restart or overload it without disturbing the shared one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from telhawk_ingest.config import Settings
from telhawk_ingest.envelope import Envelope, new_id, rfc3339
from telhawk_ingest.service import IngestResult, Service
from telhawk_ingest.storage.opensearch import OpenSearchBackend

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "local" / "opensearch"
EVENTS = ROOT / "tests" / "events"
HEC_TOKEN = "11111111-2222-4333-8444-555555555555"
# Generous: on a busy two-core CI runner a fresh node takes 10-20 s to reach yellow.
NODE_START_TIMEOUT_S = 120
NODE_STOP_TIMEOUT_S = 40


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def node_missing(reason: str) -> None:
    """Fail in CI, skip elsewhere; either way with the reason and how to get a node."""
    how = "run `make test`, which starts one, or set OPENSEARCH_URL to a running node"
    if in_ci():
        pytest.fail(f"CI needs a real OpenSearch node for this test: {reason} ({how})", pytrace=False)
    pytest.skip(f"no OpenSearch node: {reason} ({how})")


def answers(url: str) -> str | None:
    """None when the node at `url` answers `GET /` with a success; else what went wrong."""
    try:
        response = httpx.get(f"{url}/", timeout=5)
    except httpx.HTTPError as exc:
        return f"{url} does not answer ({type(exc).__name__}: {exc})"
    if not response.is_success:
        return f"{url} answered {response.status_code} to GET /"
    return None


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    url = os.environ.get("OPENSEARCH_URL", "").strip().rstrip("/")
    if not url:
        node_missing("OPENSEARCH_URL is not set")
    problem = answers(url)
    if problem:
        node_missing(problem)
    return url


@pytest.fixture(scope="session")
def opensearch(opensearch_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=opensearch_url, timeout=30) as client:
        yield client


@pytest.fixture
def index_prefix(opensearch: httpx.Client) -> Iterator[str]:
    prefix = f"it-{uuid.uuid4().hex[:10]}-"
    yield prefix
    drop_indices(opensearch, prefix)


def drop_indices(client: httpx.Client, prefix: str) -> None:
    """Delete the prefix's indices and template; blocks are lifted first so nothing is left behind."""
    client.put(f"/{prefix}*/_settings", json={"index.blocks.write": None})
    client.delete(f"/{prefix}*")
    client.delete(f"/_index_template/{prefix}ocsf")


def settings_for(tmp_path: Path, url: str, prefix: str, breaker: dict[str, Any] | None = None,
                 **core: Any) -> Settings:
    return Settings.model_validate({
        "hec": {"tokens": [{"name": "test", "token": HEC_TOKEN}]},
        "dlq": {"base_path": str(tmp_path / "dlq"), "min_free_bytes": 0},
        "core": {"url": url, "timeout_seconds": 5, **core},
        "storage": {"backend": "opensearch", "index_prefix": prefix,
                    **({"breaker": breaker} if breaker else {})},
        # These tests count what storage and the DLQ hold after an outage: self-healing, which
        # replays the DLQ once the breaker closes, is tested on its own (tests/functional).
        "replay": {"heal_on_recovery": False},
    })


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(url: str, prefix: str, transport: httpx.BaseTransport | None = None,
             breaker: dict[str, Any] | None = None, **core: Any) -> Service:
        settings = settings_for(tmp_path, url, prefix, breaker, **core)
        backend = OpenSearchBackend(settings.core, settings.storage, transport)
        service = Service(settings, backend=backend)
        made.append(service)
        return service

    yield make
    for service in made:
        service.backend.close()


def ocsf_event(name: str = "ocsf_authentication", **changes: Any) -> dict[str, Any]:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


def envelope_of(event: dict[str, Any], index: str = "main") -> Envelope:
    """An already-OCSF event as the HEC layer would hand it over: source type `ocsf`, a fresh id.

    The id and `received_at` carry the event's own time as its arrival, as if it had been received
    then, so the event is stored on its own day.
    """
    return Envelope(
        id=new_id(now_ns=int(event["time"]) * 1_000_000),
        source="integration-test",
        source_type="ocsf",
        format="json",
        payload=json.dumps(event),
        attributes={"index": index, "host": "it-host", "fields": {}, "token_name": "test"},
        received_at=rfc3339(event["time"] / 1000),
    )


def search_ids(client: httpx.Client, prefix: str, size: int = 10_000) -> list[str]:
    """Every document id under the prefix after a refresh; duplicates would show up twice."""
    client.post(f"/{prefix}*/_refresh").raise_for_status()
    answer = client.post(f"/{prefix}*/_search", json={"size": size, "_source": False,
                                                       "query": {"match_all": {}}})
    answer.raise_for_status()
    return [hit["_id"] for hit in answer.json()["hits"]["hits"]]


def count(client: httpx.Client, prefix: str) -> int:
    client.post(f"/{prefix}*/_refresh").raise_for_status()
    answer = client.get(f"/{prefix}*/_count")
    answer.raise_for_status()
    return int(answer.json()["count"])


def dlq_records(service: Service) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(service.settings.dlq.base_path.glob("failed_*.json"))]


# --- a node of the test's own ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeError(RuntimeError):
    """start.sh or stop.sh failed; the message quotes their output."""


@dataclass
class LocalNode:
    """A single-node OpenSearch run by local/opensearch/start.sh and stop.sh on 127.0.0.1:`port`.

    Each start is a fresh, empty node (start.sh's behaviour); `settings` are `-Ekey=value` node
    settings used on every start.
    """

    run_dir: Path
    port: int = field(default_factory=free_port)
    settings: tuple[str, ...] = ()
    running: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "OPENSEARCH_PORT": str(self.port), "OPENSEARCH_HOME_DIR": str(self.run_dir),
                "OPENSEARCH_START_TIMEOUT": str(NODE_START_TIMEOUT_S - 10)}

    def _run(self, script: str, *args: str, timeout: float) -> None:
        try:
            done = subprocess.run([str(LAUNCHER / script), *args], env=self._env(), capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"{script} did not finish within {timeout}s: {exc.output}") from exc
        if done.returncode != 0:
            raise NodeError(f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run("start.sh", *self.settings, timeout=NODE_START_TIMEOUT_S)
        self.running = True

    def stop(self) -> None:
        self._run("stop.sh", timeout=NODE_STOP_TIMEOUT_S)
        self.running = False


def launcher_problem() -> str | None:
    """Why local/opensearch/start.sh cannot start a node here, or None."""
    if shutil.which("java") is None:
        return "java is not on PATH (Java 17+ is needed to run a node of the test's own)"
    if shutil.which("curl") is None:
        return "curl is not on PATH (start.sh waits for the node with it)"
    built = (LAUNCHER / "target" / "lib").is_dir() and (LAUNCHER / "target" / "classes").is_dir()
    if not built and shutil.which("mvn") is None:
        return "mvn is not on PATH and local/opensearch is not built yet"
    return None


def ingest_at_once(service: Service, batches: list[list[Envelope]], timeout: float) -> list[IngestResult]:
    """Ingest every batch from its own thread, all released together: concurrent first requests."""
    results: list[IngestResult] = []
    start = threading.Barrier(len(batches))

    def send(batch: list[Envelope]) -> None:
        start.wait(timeout=10)
        results.append(service.ingest(batch))

    threads = [threading.Thread(target=send, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
