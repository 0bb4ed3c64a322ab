"""Structured logs (logs.py): one JSON object per line for every retry, DLQ write, breaker change,
shed request and operator action; never a token, never a payload."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from telhawk_ingest.config import load_settings
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.logs import configure
from telhawk_ingest.storage.base import retry
from tests.fakes import ScriptedBackend, every
from tests.functional.conftest import HEC_TOKEN, OPERATOR_TOKEN

CANARY = "canary-payload-5f0c2a"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Logs configured as at start-up, into a buffer; the root logger put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure("info", "json", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def sshd(port: int) -> str:
    line = f"Nov  4 01:02:03 web01 sshd[1234]: Accepted password for {CANARY} from 10.0.0.5 port {port} ssh2"
    return json.dumps({"event": line, "sourcetype": "linux_secure", "host": "web01"})


def test_retries_dlq_writes_breaker_changes_shedding_and_operator_calls_are_json_lines_without_secrets(
        make_client, waits, log_lines):
    backend = ScriptedBackend(*[every(retry("503 from storage", status=503))] * 2)
    client = make_client(backend, storage={"breaker": {"failures": 2, "cooldown_seconds": 30}})
    client.hec(sshd(1))  # two failed tries: a retry, the breaker opens, a DLQ write
    client.hec(json.dumps({"event": {"msg": CANARY}, "sourcetype": "cisco_asa"}))  # normalization_failed
    svc = client.service
    svc.in_flight.limit = 1
    svc.in_flight.enter()
    client.hec(sshd(2))  # shed
    svc.in_flight.leave()
    client.operator("GET", "/api/v1/dlq", params={"reason": "storage_failed"})
    client.operator("GET", "/api/v1/dlq", token="not-an-operator-token-000")
    logging.getLogger("somewhere.else").warning("careless", extra={"token": HEC_TOKEN, "payload": CANARY})

    text = log_lines.getvalue()
    lines = events(log_lines)
    by_event = {}
    for line in lines:
        by_event.setdefault(line.get("event"), []).append(line)

    [retried] = by_event["retry"]
    assert (retried["attempt"], retried["wait_seconds"], retried["reason"]) == (1, 0.1, "503 from storage")
    assert [(b["previous"], b["state"]) for b in by_event["breaker"]] == [("closed", "open")]
    assert by_event["breaker"][0]["level"] == "WARNING"
    writes = by_event["dlq_write"]
    assert [w["reasons"] for w in writes] == [["storage_failed"], ["normalization_failed"]]
    assert all(w["ids"][0].startswith("failed_") and w["count"] == 1 for w in writes)
    [shed] = by_event["shed"]
    assert (shed["in_flight"], shed["max_in_flight"], shed["path"]) == (1, 1, "/services/collector/event")
    operator = by_event["operator"]
    assert [(o["operator"], o["action"]) for o in operator] == [("ops", "list_dlq"), (None, "denied")]
    assert operator[0]["params"] == {"reason": "storage_failed"}
    assert all(line["time"].startswith("2026-01-02T03:04:0") for line in lines)
    careless = [line for line in lines if line["message"] == "careless"]
    assert careless and "token" not in careless[0] and "payload" not in careless[0]
    for secret in (HEC_TOKEN, OPERATOR_TOKEN, "not-an-operator-token-000", CANARY):
        assert secret not in text


def test_the_text_format_is_one_plain_line_per_record(log_lines):
    stream = io.StringIO()
    configure("warning", "text", stream)

    logging.getLogger("telhawk_ingest.x").info("not shown")
    logging.getLogger("telhawk_ingest.x").warning("shown")

    assert stream.getvalue().endswith(" WARNING telhawk_ingest.x: shown\n")
    assert "not shown" not in stream.getvalue()
    assert log_lines.getvalue() == ""  # configuring again replaced the handler, did not add one


def test_log_settings_are_validated_at_start_up_naming_the_key(monkeypatch):
    monkeypatch.delenv("INGEST_CONFIG_FILE", raising=False)
    monkeypatch.setenv("INGEST_LOG_FORMAT", "xml")

    with pytest.raises(ConfigError, match=r"log\.format"):
        load_settings()


def test_unknown_levels_and_formats_are_refused():
    with pytest.raises(ValueError, match="log level"):
        configure("loud", "json", io.StringIO())
    with pytest.raises(ValueError, match="log format"):
        configure("info", "xml", io.StringIO())


def test_a_lambda_entry_point_configures_the_logs_from_the_settings_on_its_first_call(
        client, log_lines, monkeypatch):
    from telhawk_ingest import lambda_adapter, logs
    from tests.functional.test_lambda import function_module, http_api_event

    monkeypatch.delenv("INGEST_CONFIG_FILE", raising=False)
    monkeypatch.setenv("INGEST_LOG_LEVEL", "warning")
    monkeypatch.setenv("INGEST_LOG_FORMAT", "text")
    monkeypatch.setattr(lambda_adapter, "_logs_configured", False)
    handler = function_module("healthz").handler

    assert handler(http_api_event("GET", "/healthz"), None)["statusCode"] == 200

    [ours] = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    assert type(ours.formatter) is logging.Formatter  # text, not JSON
    assert logging.getLogger().level == logging.WARNING
    assert lambda_adapter._logs_configured


def test_the_process_service_configures_the_logs_when_it_is_built(log_lines, monkeypatch, tmp_path):
    from telhawk_ingest import logs
    from telhawk_ingest import service as service_module

    monkeypatch.delenv("INGEST_CONFIG_FILE", raising=False)
    monkeypatch.setenv("INGEST_DLQ_BASE_PATH", str(tmp_path / "dlq"))
    monkeypatch.setenv("INGEST_STORAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INGEST_STORAGE_BACKEND", "local")
    monkeypatch.setenv("INGEST_LOG_LEVEL", "error")
    monkeypatch.setattr(service_module, "_service", None)

    svc = service_module.service()
    try:
        [ours] = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
        assert isinstance(ours.formatter, logs.JsonFormatter)
        assert logging.getLogger().level == logging.ERROR
    finally:
        svc.backend.close()
        svc.counters.retire()
