"""The Lambda entry points answer API Gateway HTTP API events with the same code the emulator serves."""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
from types import ModuleType

from tests.functional.conftest import HEC_TOKEN, OPERATOR_TOKEN, ROOT
from tests.functional.test_ingest import CISCO


def function_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lambda_{name}", ROOT / "functions" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_api_event(method: str, path: str, body: bytes = b"", headers: dict | None = None,
                   query: str = "") -> dict:
    return {
        "version": "2.0", "routeKey": f"{method} {path}", "rawPath": path, "rawQueryString": query,
        "headers": {k.lower(): v for k, v in (headers or {}).items()},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "127.0.0.1",
                                    "protocol": "HTTP/1.1"}, "stage": "$default"},
        "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
    }


def test_a_gzipped_hec_request_through_lambda_is_dead_lettered_like_any_other(client):
    handler = function_module("ingest_event").handler
    event = http_api_event("POST", "/services/collector/event", gzip.compress(CISCO.encode()),
                           {"Authorization": f"Splunk {HEC_TOKEN}", "Content-Encoding": "gzip"})

    answer = handler(event, None)

    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["dead_lettered"] == 1
    assert client.dlq_records()[0]["reason"] == "normalization_failed"


def test_an_operator_call_through_lambda_checks_the_credential(client):
    handler = function_module("list_dlq").handler

    denied = handler(http_api_event("GET", "/api/v1/dlq"), None)
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    allowed = handler(http_api_event("GET", "/api/v1/dlq", headers=bearer), None)

    assert denied["statusCode"] == 401
    assert allowed["statusCode"] == 200 and json.loads(allowed["body"])["count"] == 0


def test_a_purge_through_lambda_with_a_parameter_it_does_not_take_deletes_nothing(client):
    client.hec(CISCO + CISCO)
    handler = function_module("purge_dlq").handler
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    answer = handler(http_api_event("DELETE", "/api/v1/dlq/purge", headers=bearer, query="limit=1"), None)

    assert answer["statusCode"] == 400 and "'limit'" in json.loads(answer["body"])["error"]
    assert len(client.dlq_records()) == 2


def rest_api_event(method: str, path: str, path_parameters: dict[str, str], headers: dict) -> dict:
    """An API Gateway REST API (v1) proxy event, as the private operator API sends them."""
    return {
        "resource": "/api/v1/dlq/{id+}", "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters, "stageVariables": None,
        "requestContext": {"resourcePath": "/api/v1/dlq/{id+}", "httpMethod": method, "path": f"/ops{path}",
                           "stage": "ops", "identity": {"sourceIp": "10.0.0.1"}},
        "body": None, "isBase64Encoded": False,
    }


def test_one_entry_through_lambda_takes_its_id_from_the_greedy_path_parameter(client):
    client.hec(CISCO)
    [record] = client.dlq_records()
    handler = function_module("dlq_entry").handler
    bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    shown = handler(rest_api_event("GET", f"/api/v1/dlq/{record['id']}", {"id": record["id"]}, bearer), None)
    traversal = handler(rest_api_event("DELETE", "/api/v1/dlq/../../etc/passwd",
                                       {"id": "../../etc/passwd"}, bearer), None)

    assert shown["statusCode"] == 200 and json.loads(shown["body"]) == record
    assert traversal["statusCode"] == 400 and "not a DLQ entry id" in json.loads(traversal["body"])["error"]
    assert client.dlq_records() == [record]
