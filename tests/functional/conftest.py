"""In-process harness: the real handlers (functions-framework apps) over a Service on temp paths."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from telhawk_ingest import service as service_module
from telhawk_ingest.config import Settings
from telhawk_ingest.service import Service
from telhawk_ingest.storage.base import StorageBackend

ROOT = Path(__file__).resolve().parents[2]
HEC_TOKEN = "11111111-2222-4333-8444-555555555555"
OPERATOR_TOKEN = "operator-token-for-tests-0001"
FUNCTIONS = ("ingest_event", "list_dlq", "purge_dlq", "healthz")


@pytest.fixture(scope="session")
def apps() -> dict[str, Any]:
    return {
        name: functions_framework.create_app(name, str(ROOT / "functions" / f"{name}.py"), "http")
        .test_client()
        for name in FUNCTIONS
    }


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
    """Sends requests to the handler the route table would pick, and reads the DLQ directory."""

    apps: dict[str, Any]
    service: Service

    def _app(self, path: str) -> Any:
        if path.startswith("/services/collector"):
            return self.apps["ingest_event"]
        if path == "/healthz":
            return self.apps["healthz"]
        if path == "/api/v1/dlq/purge":
            return self.apps["purge_dlq"]
        return self.apps["list_dlq"]

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
        return self._app(path).open(path, method=method, data=data, headers=headers, **kw)

    def operator(self, method: str, path: str, token: str | None = OPERATOR_TOKEN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self._app(path).open(path, method=method, headers=headers, **kw)

    def dlq_records(self) -> list[dict[str, Any]]:
        import json

        base = self.service.settings.dlq.base_path
        return [json.loads(p.read_text()) for p in sorted(base.glob("failed_*.json"))]


@pytest.fixture
def make_client(apps: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., Client]]:
    made: list[Service] = []

    def make(backend: StorageBackend | None = None, **sections: dict[str, Any]) -> Client:
        svc = Service(settings_for(tmp_path, **sections), backend=backend)
        made.append(svc)
        monkeypatch.setattr(service_module, "_service", svc)
        return Client(apps, svc)

    yield make
    for svc in made:
        svc.backend.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()
