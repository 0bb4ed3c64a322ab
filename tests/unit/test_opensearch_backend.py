"""The OpenSearch backend against a scripted server (httpx.MockTransport): what each answer becomes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from telhawk_ingest.config import CoreSettings, StorageSettings
from telhawk_ingest.envelope import new_id
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.storage.base import STORED, TRY_DEADLINE, Item, Outcome, Status
from telhawk_ingest.storage.opensearch import OpenSearchBackend, index_template, parse_retry_after

URL = "http://opensearch.test:9200"
# 2023-11-14T22:13:20Z
T = 1_700_000_000.0
DAY = "2023.11.14"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeOpenSearch:
    """Answers the template PUT and `_bulk` as told, and keeps every request it saw."""

    def __init__(
        self,
        bulk: Handler | None = None,
        template: Handler | None = None,
        health: Handler | None = None,
    ) -> None:
        self.requests: list[httpx.Request] = []
        self.bulk = bulk or (lambda request: bulk_answer(request))
        self.template = template or (lambda request: httpx.Response(200, json={"acknowledged": True}))
        self.health = health or (lambda request: httpx.Response(200, json={"version": {"number": "2.19.6"}}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.startswith("/_index_template/"):
            return self.template(request)
        if request.url.path == "/_bulk":
            return self.bulk(request)
        if request.url.path == "/":
            return self.health(request)
        return httpx.Response(404, json={"error": {"type": "not_found"}, "status": 404})

    def bulk_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/_bulk"]

    def template_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.startswith("/_index_template/")]


def actions(request: httpx.Request) -> list[dict[str, Any]]:
    lines = request.content.decode().splitlines()
    return [orjson.loads(line) for line in lines[0::2]]


def documents(request: httpx.Request) -> list[dict[str, Any]]:
    lines = request.content.decode().splitlines()
    return [orjson.loads(line) for line in lines[1::2]]


def bulk_answer(request: httpx.Request, *results: dict[str, Any]) -> httpx.Response:
    """A real-shaped `_bulk` answer: the given per-item results, else 201 created for every item."""
    sent = actions(request)
    results = results or tuple({"status": 201, "result": "created"} for _ in sent)
    items = [
        {"create": {"_index": a["create"]["_index"], "_id": a["create"]["_id"], **result}}
        for a, result in zip(sent, results, strict=True)
    ]
    errors = any(result["status"] >= 300 for result in results)
    return httpx.Response(200, json={"took": 3, "errors": errors, "items": items})


def error(status: int, error_type: str, reason: str) -> dict[str, Any]:
    return {"status": status, "error": {"type": error_type, "reason": reason}}


def make_backend(server: Handler, **core: Any) -> OpenSearchBackend:
    return OpenSearchBackend(
        CoreSettings(url=URL, **core), StorageSettings(), transport=httpx.MockTransport(server)
    )


def item(index: str = "main", at: float = T, **document: Any) -> Item:
    return Item(
        id=new_id(), index=index, time=at, document={"class_uid": 3002, "time": int(at * 1000), **document}
    )


def batch(n: int) -> list[Item]:
    return [item(message=f"event {i}") for i in range(n)]


def answering(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def refusing(exc: type[httpx.TransportError], message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc(message, request=request)

    return handler


# Per-item outcomes of a successful bulk request.


def test_every_event_of_a_clean_bulk_is_stored():
    server = FakeOpenSearch()
    assert make_backend(server).store(batch(3)) == [STORED, STORED, STORED]


def test_an_event_already_stored_by_an_earlier_attempt_counts_as_stored():
    server = FakeOpenSearch(
        bulk=lambda r: bulk_answer(
            r, error(409, "version_conflict_engine_exception", "document already exists")
        )
    )
    assert make_backend(server).store(batch(1)) == [STORED]


def test_a_mixed_bulk_answer_gives_each_event_its_own_outcome_in_order():
    mapping_error = "failed to parse field [src_endpoint.port] of type [long]"
    server = FakeOpenSearch(
        bulk=lambda r: bulk_answer(
            r,
            {"status": 201, "result": "created"},
            error(409, "version_conflict_engine_exception", "[x]: version conflict, document already exists"),
            error(429, "es_rejected_execution_exception", "rejected execution of coordinating operation"),
            error(400, "mapper_parsing_exception", mapping_error),
        )
    )

    outcomes = make_backend(server).store(batch(4))

    assert outcomes == [
        STORED,
        STORED,
        Outcome(
            Status.RETRY,
            "opensearch could not take the event now: 429 es_rejected_execution_exception: "
            "rejected execution of coordinating operation",
            {
                "status": 429,
                "error_type": "es_rejected_execution_exception",
                "error_reason": "rejected execution of coordinating operation",
            },
        ),
        Outcome(
            Status.PERMANENT,
            f"opensearch rejected the event: 400 mapper_parsing_exception: {mapping_error}",
            {"status": 400, "error_type": "mapper_parsing_exception", "error_reason": mapping_error},
        ),
    ]


def test_item_mapping_error_goes_to_dlq_without_retry_and_names_the_cause():
    rejected = {
        "status": 400,
        "error": {
            "type": "mapper_parsing_exception",
            "reason": "failed to parse",
            "caused_by": {"type": "parse_exception", "reason": "The depth of the field has exceeded [20]"},
        },
    }
    server = FakeOpenSearch(bulk=lambda r: bulk_answer(r, rejected))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.PERMANENT
    assert outcome.error == (
        "opensearch rejected the event: 400 mapper_parsing_exception: failed to parse "
        "(caused by parse_exception: The depth of the field has exceeded [20])"
    )
    assert outcome.details == {
        "status": 400,
        "error_type": "mapper_parsing_exception",
        "error_reason": "failed to parse",
    }


def test_a_write_blocked_index_is_a_permanent_failure_for_its_events():
    server = FakeOpenSearch(
        bulk=lambda r: bulk_answer(
            r, error(403, "cluster_block_exception", "index [x] blocked by: [FORBIDDEN/8]")
        )
    )
    [outcome] = make_backend(server).store(batch(1))
    assert outcome.status is Status.PERMANENT
    assert outcome.details["error_type"] == "cluster_block_exception"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_item_the_server_could_not_take_now_is_retried_alone(status: int):
    server = FakeOpenSearch(
        bulk=lambda r: bulk_answer(
            r, {"status": 201}, error(status, "some_exception", "try later"), {"status": 200}
        )
    )

    outcomes = make_backend(server).store(batch(3))

    assert [o.status for o in outcomes] == [Status.STORED, Status.RETRY, Status.STORED]
    assert outcomes[1].details == {
        "status": status,
        "error_type": "some_exception",
        "error_reason": "try later",
    }


def test_an_item_without_a_status_is_retried_since_it_may_or_may_not_be_stored():
    server = FakeOpenSearch(
        bulk=lambda r: httpx.Response(200, json={"errors": False, "items": [{"create": {"status": 201}}, {}]})
    )
    assert [o.status for o in make_backend(server).store(batch(2))] == [Status.STORED, Status.RETRY]


# Whole-request failures.


def test_connection_refused_retries_every_event_and_says_why():
    server = FakeOpenSearch(bulk=refusing(httpx.ConnectError, "[Errno 111] Connection refused"))

    outcomes = make_backend(server).store(batch(2))

    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert outcomes[0].error == "transport error: ConnectError: [Errno 111] Connection refused"
    assert outcomes[0].details == {"error_type": "ConnectError"}


def test_an_unreachable_node_costs_one_timeout_per_try_not_two():
    unreachable = refusing(httpx.ConnectTimeout, "timed out")
    server = FakeOpenSearch(bulk=unreachable, template=unreachable)
    backend = make_backend(server)

    outcomes = backend.store(batch(2))

    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert outcomes[0].error == "transport error: ConnectTimeout: timed out"
    assert server.bulk_requests() == [] and len(server.template_requests()) == 1


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_timeouts_and_broken_connections_retry_every_event(exc: type[httpx.TransportError]):
    server = FakeOpenSearch(bulk=refusing(exc, ""))
    outcomes = make_backend(server).store(batch(2))
    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert outcomes[0].error == f"transport error: {exc.__name__}"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_busy_or_failing_server_retries_every_event(status: int):
    body = {"error": {"type": "es_rejected_execution_exception", "reason": "queue full"}, "status": status}
    server = FakeOpenSearch(bulk=answering(status, body))

    outcomes = make_backend(server).store(batch(2))

    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert outcomes[0].error == (
        "opensearch could not take the bulk request now: "
        f"{status} es_rejected_execution_exception: queue full"
    )
    assert outcomes[0].retry_after is None


def test_retry_after_in_seconds_is_passed_on_to_the_retry_policy():
    server = FakeOpenSearch(bulk=answering(429, {"error": "too many requests"}, {"Retry-After": "7"}))
    outcomes = make_backend(server).store(batch(2))
    assert [o.retry_after for o in outcomes] == [7.0, 7.0]


def test_retry_after_as_an_http_date_becomes_seconds_from_now():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server = FakeOpenSearch(bulk=answering(503, b"", {"Retry-After": when}))
    [outcome] = make_backend(server).store(batch(1))
    assert outcome.retry_after is not None
    assert 27 <= outcome.retry_after <= 30


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past: no wait
        ("-5", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_parsing(header: str | None, seconds: float | None):
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == seconds


@pytest.mark.parametrize(
    ("status", "error_type", "reason"),
    [
        (400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]"),
        (401, "security_exception", "missing authentication credentials for REST request [/_bulk]"),
        (403, "security_exception", "no permissions for [indices:data/write/bulk]"),
        (404, "index_not_found_exception", "no such index [telhawk-main-2023.11.14]"),
        (413, "content_too_long_exception", "request body is too large"),
    ],
)
def test_a_refused_bulk_request_sends_every_event_to_the_dlq(status: int, error_type: str, reason: str):
    server = FakeOpenSearch(
        bulk=answering(status, {"error": {"type": error_type, "reason": reason}, "status": status})
    )

    outcomes = make_backend(server).store(batch(2))

    assert [o.status for o in outcomes] == [Status.PERMANENT, Status.PERMANENT]
    assert outcomes[0].error == f"opensearch refused the bulk request: {status} {error_type}: {reason}"
    assert outcomes[0].details == {"status": status, "error_type": error_type, "error_reason": reason}


def test_a_refusal_without_a_json_body_still_names_the_status_and_what_the_proxy_said():
    page = b"<html><head><title>413 Request Entity Too Large</title></head>\n<body>nginx</body></html>"
    server = FakeOpenSearch(bulk=answering(413, page))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.PERMANENT
    assert outcome.error.startswith(
        "opensearch refused the bulk request: 413: <html><head><title>413 Request"
    )
    assert outcome.details == {
        "status": 413,
        "error_type": None,
        "error_reason": page.decode().replace("\n", " "),
    }


def test_an_iam_refusal_from_a_managed_cluster_shows_its_message():
    server = FakeOpenSearch(bulk=answering(403, {"Message": "User: anonymous is not authorized"}))
    [outcome] = make_backend(server).store(batch(1))
    assert outcome.error == "opensearch refused the bulk request: 403: User: anonymous is not authorized"


def test_any_other_server_error_is_retried_like_a_503():
    server = FakeOpenSearch(bulk=answering(501, {"error": {"type": "unsupported", "reason": "no"}}))
    assert [o.status for o in make_backend(server).store(batch(2))] == [Status.RETRY, Status.RETRY]


def test_a_redirect_is_permanent_and_points_at_core_url():
    server = FakeOpenSearch(bulk=answering(301, b"", {"Location": "https://opensearch.test:9200/_bulk"}))
    [outcome] = make_backend(server).store(batch(1))
    assert outcome.status is Status.PERMANENT
    assert outcome.error == (
        "opensearch redirected the bulk request (301 to https://opensearch.test:9200/_bulk); check core.url"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"took": 3, "errors": false}',
        b'{"took": 3, "errors": false, "items": [{"create": {"status": 201}}]}',  # one item for two events
        b"[]",
    ],
)
def test_a_success_answer_that_does_not_account_for_every_event_retries_them_all(body: bytes):
    server = FakeOpenSearch(bulk=answering(200, body))

    outcomes = make_backend(server).store(batch(2))

    assert [o.status for o in outcomes] == [Status.RETRY, Status.RETRY]
    assert outcomes[0].details == {"status": 200}


# What is sent.


def test_the_bulk_body_is_ndjson_with_a_create_action_per_event():
    server = FakeOpenSearch()
    events = [item(index="main", message="one"), item(index="firewall", message="two")]

    make_backend(server).store(events)

    [request] = server.bulk_requests()
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.content.endswith(b"\n")
    assert actions(request) == [
        {"create": {"_index": f"telhawk-main-{DAY}", "_id": events[0].id}},
        {"create": {"_index": f"telhawk-firewall-{DAY}", "_id": events[1].id}},
    ]
    assert documents(request) == [events[0].document, events[1].document]


def test_the_bulk_request_asks_only_for_each_events_status_and_error():
    # What a node answers under that filter (OpenSearch 2.19).
    answer = (b'{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409,"error":'
              b'{"type":"version_conflict_engine_exception","reason":"document already exists"}}},'
              b'{"create":{"status":400,"error":{"type":"mapper_parsing_exception",'
              b'"reason":"failed to parse"}}}]}')
    server = FakeOpenSearch(bulk=answering(200, answer))

    outcomes = make_backend(server).store(batch(3))

    [request] = server.bulk_requests()
    assert request.url.params["filter_path"] == "errors,error,status,items.*.status,items.*.error"
    assert [o.status for o in outcomes] == [Status.STORED, Status.STORED, Status.PERMANENT]
    assert outcomes[2].error == "opensearch rejected the event: 400 mapper_parsing_exception: failed to parse"


def test_events_go_to_the_index_of_their_own_utc_day():
    server = FakeOpenSearch()
    midnight = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    events = [item(at=midnight - 1), item(at=midnight), item(at=0.0)]

    make_backend(server).store(events)

    assert [a["create"]["_index"] for a in actions(server.bulk_requests()[0])] == [
        "telhawk-main-2023.11.14",
        "telhawk-main-2023.11.15",
        "telhawk-main-1970.01.01",
    ]


@pytest.mark.parametrize(
    ("hec_index", "prefix", "expected"),
    [
        ("web_logs", "telhawk-", f"telhawk-web_logs-{DAY}"),
        ("", "telhawk-", f"telhawk-main-{DAY}"),
        ("9-a_b", "", f"9-a_b-{DAY}"),
        ("x" * 80, "p" * 164, f"{'p' * 164}{'x' * 80}-{DAY}"),
    ],
)
def test_index_names_are_the_hec_index_as_it_is(hec_index: str, prefix: str, expected: str):
    backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix=prefix))
    name = backend.index_name(item(index=hec_index))
    assert name == expected
    assert len(name.encode()) <= 255


@pytest.mark.parametrize("hec_index", ["Web Logs", "a b", "MAİN", "_internal", "-x", "x" * 81, "a:b"])
def test_an_item_whose_index_is_not_an_index_name_fails_for_good_and_is_never_rewritten(hec_index: str):
    server = FakeOpenSearch()
    events = [item(message="fine"), item(index=hec_index)]

    outcomes = make_backend(server).store(events)

    assert [o.status for o in outcomes] == [Status.STORED, Status.PERMANENT]
    assert "is not an index name" in outcomes[1].error and outcomes[1].details == {"field": "index"}
    assert [a["create"]["_index"] for a in actions(server.bulk_requests()[0])] == [f"telhawk-main-{DAY}"]


@pytest.mark.parametrize("prefix", ["TelHawk-", "_x", ".hidden", "a b", "a:b", "p" * 165])
def test_an_index_prefix_opensearch_would_refuse_fails_at_start_up_instead_of_being_rewritten(prefix: str):
    with pytest.raises(ConfigError, match=r"storage\.index_prefix"):
        OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix=prefix))


def test_an_event_that_cannot_be_encoded_goes_to_the_dlq_and_the_rest_are_stored():
    server = FakeOpenSearch()
    events = [item(message="fine"), item(count=2**70), item(message="also fine")]

    outcomes = make_backend(server).store(events)

    assert [o.status for o in outcomes] == [Status.STORED, Status.PERMANENT, Status.STORED]
    assert outcomes[1].error.startswith("event cannot be encoded as JSON")
    assert [a["create"]["_id"] for a in actions(server.bulk_requests()[0])] == [events[0].id, events[2].id]


def test_an_empty_batch_sends_nothing():
    server = FakeOpenSearch()
    assert make_backend(server).store([]) == []
    assert server.requests == []


def test_credentials_are_sent_as_basic_auth():
    server = FakeOpenSearch()
    make_backend(server, username="ingest", password="s3cret").store(batch(1))
    expected = httpx.BasicAuth("ingest", "s3cret")._auth_header
    assert all(r.headers["authorization"] == expected for r in server.requests)


# The index template.


def test_the_template_is_put_once_before_the_first_bulk():
    server = FakeOpenSearch()
    backend = make_backend(server)

    backend.store(batch(1))
    backend.store(batch(1))
    backend.store(batch(1))

    assert [(r.method, r.url.path) for r in server.requests] == [
        ("PUT", "/_index_template/telhawk-ocsf"),
        ("POST", "/_bulk"),
        ("POST", "/_bulk"),
        ("POST", "/_bulk"),
    ]
    assert orjson.loads(server.requests[0].content) == index_template("telhawk-", replicas=0)


def test_a_template_that_could_not_be_sent_does_not_cost_events_and_is_tried_again():
    attempts: list[int] = []

    def flaky_template(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(200, json={"acknowledged": True})

    server = FakeOpenSearch(template=flaky_template)
    backend = make_backend(server)

    first = backend.store(batch(2))
    assert [o.status for o in first] == [Status.RETRY, Status.RETRY]  # retried, not lost
    assert backend.template_installed is False
    backend.store(batch(1))
    backend.store(batch(1))

    assert len(server.template_requests()) == 2
    assert backend.template_installed is True
    assert len(server.bulk_requests()) == 2


def test_a_template_the_cluster_refuses_is_not_asked_for_again_and_events_are_still_stored():
    forbidden = {"error": {"type": "security_exception", "reason": "no permissions"}, "status": 403}
    server = FakeOpenSearch(template=answering(403, forbidden))
    backend = make_backend(server)

    assert backend.store(batch(1)) == [STORED]
    assert backend.store(batch(1)) == [STORED]

    assert len(server.template_requests()) == 1
    assert backend.template_installed is False


def test_a_busy_cluster_gets_the_template_again_later():
    server = FakeOpenSearch(template=answering(503, {"error": "busy"}))
    backend = make_backend(server)
    backend.store(batch(1))
    backend.store(batch(1))
    assert len(server.template_requests()) == 2


def test_the_template_maps_ocsf_times_as_dates_and_keeps_free_form_data_out_of_the_mapping():
    template = index_template("telhawk-", replicas=2)

    assert template["index_patterns"] == ["telhawk-*"]
    settings = template["template"]["settings"]["index"]
    assert settings["number_of_replicas"] == 2
    assert settings["mapping"]["total_fields"]["limit"] > 0
    mappings = template["template"]["mappings"]
    assert mappings["date_detection"] is False
    properties = mappings["properties"]
    assert properties["time"]["type"] == "date"
    assert properties["time"]["format"].startswith("epoch_millis")
    assert properties["time_dt"]["type"] == "date"
    assert properties["unmapped"] == {"type": "object", "enabled": False}
    assert properties["raw_data"]["index"] is False
    dynamic = {name: rule for entry in mappings["dynamic_templates"] for name, rule in entry.items()}
    assert dynamic["ocsf_timestamps"]["mapping"]["format"].startswith("epoch_millis")
    assert dynamic["ocsf_datetimes"]["match"] == "*_dt"
    assert dynamic["strings"]["mapping"]["type"] == "keyword"


def test_replicas_are_configurable_for_the_template_sent():
    server = FakeOpenSearch()
    backend = OpenSearchBackend(
        CoreSettings(url=URL), StorageSettings(), transport=httpx.MockTransport(server), replicas=1
    )
    backend.store(batch(1))
    sent = orjson.loads(server.template_requests()[0].content)
    assert sent["template"]["settings"]["index"]["number_of_replicas"] == 1


def test_without_an_index_prefix_no_catch_all_template_is_installed():
    server = FakeOpenSearch()
    backend = OpenSearchBackend(
        CoreSettings(url=URL), StorageSettings(index_prefix=""), httpx.MockTransport(server)
    )
    assert backend.store(batch(1)) == [STORED]
    assert server.template_requests() == []


# Health and lifecycle.


def test_a_reachable_cluster_is_healthy():
    server = FakeOpenSearch()
    assert make_backend(server).healthy() is True
    assert [(r.method, r.url.path) for r in server.requests] == [("GET", "/")]


def test_an_unreachable_or_refusing_cluster_is_unhealthy():
    assert make_backend(FakeOpenSearch(health=refusing(httpx.ConnectError, "refused"))).healthy() is False
    assert make_backend(FakeOpenSearch(health=answering(401, {"error": "unauthorized"}))).healthy() is False
    assert make_backend(FakeOpenSearch(health=answering(503, b"starting"))).healthy() is False


def test_the_health_check_uses_a_short_timeout():
    server = FakeOpenSearch()
    make_backend(server, timeout_seconds=30).healthy()
    assert server.requests[0].extensions["timeout"]["read"] == 2.0


def test_bulk_requests_use_the_configured_timeout():
    server = FakeOpenSearch()
    make_backend(server, timeout_seconds=4).store(batch(1))
    assert server.bulk_requests()[0].extensions["timeout"]["read"] == 4



def test_a_try_deadline_cuts_the_template_put_and_the_bulk_to_what_is_left_of_it():
    server = FakeOpenSearch()
    token = TRY_DEADLINE.set(time.monotonic() + 3.0)
    try:
        make_backend(server, timeout_seconds=10).store(batch(1))
    finally:
        TRY_DEADLINE.reset(token)

    assert [r.url.path for r in server.requests] == ["/_index_template/telhawk-ocsf", "/_bulk"]
    for request in server.requests:
        assert request.extensions["timeout"]["read"] == pytest.approx(3.0, abs=0.5)


def test_close_is_safe_before_and_after_use():
    backend = make_backend(FakeOpenSearch())
    backend.close()
    backend.store(batch(1))
    backend.close()
    backend.close()


def test_the_backend_needs_a_storage_url():
    with pytest.raises(ConfigError, match=r"core\.url"):
        OpenSearchBackend(CoreSettings(), StorageSettings())
