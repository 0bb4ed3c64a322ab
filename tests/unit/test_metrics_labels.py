"""Latency labels (metrics.request_labels, metrics.timed): route templates, never raw paths."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from telhawk_ingest import metrics


@pytest.mark.parametrize(("scope", "labels"), [
    ({"method": "GET", "path": "/api/v1/dlq/failed_1_ab", "telhawk.function": "dlq_entry",
      "telhawk.route": "GET /api/v1/dlq/{id}"}, ("dlq_entry", "GET /api/v1/dlq/{id}")),
    # Lambda behind API Gateway, through Mangum: a REST API (operator) and an HTTP API (HEC) event.
    ({"method": "DELETE", "path": "/api/v1/dlq/failed_1_ab",
      "aws.event": {"httpMethod": "DELETE", "resource": "/api/v1/dlq/{id}"}},
     ("unknown", "DELETE /api/v1/dlq/{id}")),
    ({"method": "POST", "aws.event": {"routeKey": "POST /services/collector/event"}},
     ("unknown", "POST /services/collector/event")),
    # functions-framework alone: every path reaches the one function; the path is not a label.
    ({"method": "GET", "path": "/anything/at/all"}, ("unknown", "GET *")),
])
def test_the_route_is_a_template_never_the_path(scope, labels, monkeypatch):
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "FUNCTION_TARGET", "K_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    metrics._platform_function.cache_clear()
    try:
        assert metrics.request_labels(scope) == labels
    finally:
        metrics._platform_function.cache_clear()


def test_the_function_is_the_platforms_name_for_the_process(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "telhawk-Healthz-1X2Y")
    metrics._platform_function.cache_clear()
    try:
        assert metrics.request_labels({"method": "GET"}) == ("telhawk-Healthz-1X2Y", "GET *")
    finally:
        metrics._platform_function.cache_clear()


def samples(route: str, status_class: str) -> float:
    return sum(s.value for family in metrics.LATENCY.collect() for s in family.samples
               if s.name.endswith("_count") and s.labels["route"] == route
               and s.labels["status_class"] == status_class)


def test_a_handler_that_raises_is_counted_as_a_500_and_the_error_propagates():
    route = "GET /unit-test/raises"

    @metrics.timed
    async def handler(request: object) -> object:
        raise RuntimeError("boom")

    before = samples(route, "5xx")
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(handler(SimpleNamespace(scope={"method": "GET", "telhawk.route": route})))

    assert samples(route, "5xx") == before + 1


def test_a_handlers_answer_is_counted_by_its_status_class():
    route = "GET /unit-test/answers"

    @metrics.timed
    async def handler(request: object) -> object:
        return SimpleNamespace(status_code=429)

    before = samples(route, "4xx")
    answer = asyncio.run(handler(SimpleNamespace(scope={"method": "GET", "telhawk.route": route})))

    assert answer.status_code == 429
    assert samples(route, "4xx") == before + 1
