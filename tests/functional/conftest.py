"""In-process harness: the real handlers (functions-framework ASGI apps, behind the emulator's
dispatcher and route table) over a Service on temp paths, driven by Starlette's test client."""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from local.emulator import build_dispatcher, read_functions
from telhawk_ingest import service as service_module
from telhawk_ingest.config import Settings
from telhawk_ingest.service import Service
from telhawk_ingest.storage.base import StorageBackend

ROOT = Path(__file__).resolve().parents[2]
HEC_TOKEN = "11111111-2222-4333-8444-555555555555"
OPERATOR_TOKEN = "operator-token-for-tests-0001"


@pytest.fixture(scope="session")
def app() -> TestClient:
    """Every function of template.yaml on one in-process ASGI app, routed as the emulator routes."""
    return TestClient(build_dispatcher(read_functions(ROOT / "template.yaml")), follow_redirects=False)


def settings_for(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    data: dict[str, Any] = {
        "hec": {"tokens": [{"name": "test", "token": HEC_TOKEN}]},
        "operator": {"tokens": [{"name": "ops", "token": OPERATOR_TOKEN}]},
        "dlq": {"base_path": str(tmp_path / "dlq"), "min_free_bytes": 0},
        "storage": {"backend": "local", "data_dir": str(tmp_path / "data")},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


@dataclass
class Client:
    """Sends requests through the route table to the handlers, and reads the DLQ directory."""

    app: TestClient
    service: Service

    def hec(self, body: bytes | str, path: str = "/services/collector/event", *,
            token: str | None = HEC_TOKEN, scheme: str = "Splunk", gzipped: bool = False,
            method: str = "POST", **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers.setdefault("Authorization", f"{scheme} {token}")
        data = body.encode() if isinstance(body, str) else body
        if gzipped:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return self.app.request(method, path, content=data, headers=headers, **kw)

    def operator(self, method: str, path: str, token: str | None = OPERATOR_TOKEN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.app.request(method, path, headers=headers, **kw)

    def dlq_records(self) -> list[dict[str, Any]]:
        import json

        base = self.service.settings.dlq.base_path
        return [json.loads(p.read_text()) for p in sorted(base.glob("failed_*.json"))]


@pytest.fixture
def make_client(app: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., Client]]:
    made: list[Service] = []

    def make(backend: StorageBackend | None = None, **sections: dict[str, Any]) -> Client:
        svc = Service(settings_for(tmp_path, **sections), backend=backend)
        made.append(svc)
        monkeypatch.setattr(service_module, "_service", svc)
        return Client(app, svc)

    yield make
    for svc in made:
        svc.backend.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@contextmanager
def fresh_client(app: TestClient) -> Iterator[Client]:
    """A Service on its own empty temp folders, installed as the one the handlers use, for tests
    that need a new one per example (Hypothesis). On the way out its counters are retired, so the
    counters' flusher thread writes nothing into the folders while they are being removed."""
    with tempfile.TemporaryDirectory(prefix="telhawk-fresh-") as home:
        svc = Service(settings_for(Path(home)))
        saved, service_module._service = service_module._service, svc
        try:
            yield Client(app, svc)
        finally:
            service_module._service = saved
            svc.backend.close()
            svc.counters.retire()
