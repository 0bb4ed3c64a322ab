"""The OpenSearch backend at its edges: odd answers, the exact template, TLS, logs, the server's time zone."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
import trustme

from telhawk_ingest.config import CoreSettings, StorageSettings
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.storage import opensearch
from telhawk_ingest.storage.base import STORED, Item, Status
from telhawk_ingest.storage.opensearch import (
    TEMPLATE_VERSION,
    OpenSearchBackend,
    index_template,
    parse_retry_after,
)
from tests.unit.test_opensearch_backend import (
    URL,
    FakeOpenSearch,
    actions,
    answering,
    batch,
    bulk_answer,
    item,
    make_backend,
    refusing,
)

LOGGER = "telhawk_ingest.storage.opensearch"


# The index day does not depend on the server's time zone.


def test_the_index_day_is_the_utc_day_on_a_server_west_of_utc(west_of_utc):
    backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings())
    early = Item(id="id-1", index="main", time=1_700_006_400.0, document={})  # 2023-11-15T00:00:00Z

    assert backend.index_name(early) == "telhawk-main-2023.11.15"


def test_an_unusable_time_takes_the_utc_day_in_the_uuid7_id_on_a_server_west_of_utc(west_of_utc):
    # A UUIDv7 made at 2023-11-15T00:00:00Z.
    millis = 1_700_006_400_000
    event_id = f"{millis >> 16:08x}-{millis & 0xFFFF:04x}-7000-8000-000000000000"
    backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings())

    assert backend.index_name(Item(id=event_id, index="main", time=float("inf"), document={})) == (
        "telhawk-main-2023.11.15"
    )


@pytest.mark.parametrize("event_id", ["id-1", "12345678-1234-4234-8234-123456789abc"])
def test_an_unusable_time_and_an_id_without_a_time_go_to_the_first_day_of_1970(event_id, west_of_utc):
    backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings())

    assert backend.index_name(Item(id=event_id, index="main", time=float("nan"), document={})) == (
        "telhawk-main-1970.01.01"
    )



@pytest.mark.parametrize(("event_time", "day"), [
    (-1.0, "1969.12.31"),                      # a second before the epoch is the day before it
    (-86_400.5, "1969.12.30"),
    (-62_135_596_800.0, "0001.01.01"),         # the first second a UTC date names
    (253_402_300_799.999, "9999.12.31"),       # the last millisecond one names
])
def test_a_time_before_1970_or_at_the_ends_of_the_calendar_takes_its_own_utc_day(event_time, day):
    server = FakeOpenSearch()
    backend = make_backend(server)
    early = Item(id="id-1", index="main", time=event_time, document={})

    assert backend.index_name(early) == f"telhawk-main-{day}"
    assert backend.store([early]) == [STORED]
    [action] = actions(server.bulk_requests()[0])
    assert action == {"create": {"_index": f"telhawk-main-{day}", "_id": "id-1"}}


def test_a_retry_after_date_without_a_zone_is_read_as_utc(west_of_utc):
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 -0000", now=now) == 30.0


# Per-event answers that SPEC §6 does not name.


def test_an_event_answered_with_a_boolean_status_is_retried_as_having_no_status():
    items = [{"create": {"status": True}}, {"create": {"result": "created"}}]
    server = FakeOpenSearch(bulk=answering(200, {"errors": False, "items": items}))

    outcomes = make_backend(server).store(batch(2))

    assert [(o.status, o.error) for o in outcomes] == [(
        Status.RETRY, "opensearch's bulk answer gives no status for this event; it may or may not be stored",
    )] * 2


@pytest.mark.parametrize("entry", [
    {"create": "created"},                                      # a result that is not an object
    {"create": ["created"]},
    "created",                                                  # an entry that is not an object
    {},
    {"create": {"status": 201}, "index": {"status": 201}},      # two results for one event
])
def test_an_event_whose_answer_entry_is_misshapen_is_retried_as_having_no_status(entry):
    items = [{"create": {"status": 201}}, entry]
    server = FakeOpenSearch(bulk=answering(200, {"errors": False, "items": items}))

    outcomes = make_backend(server).store(batch(2))

    assert outcomes[0] is STORED
    assert (outcomes[1].status, outcomes[1].error) == (
        Status.RETRY, "opensearch's bulk answer gives no status for this event; it may or may not be stored",
    )


@pytest.mark.parametrize("status", [200, 201, 299])
def test_an_answer_storing_every_event_is_read_without_an_outcome_per_event(status, monkeypatch):
    # The common answer of a large batch is read in one pass; any other goes event by event.
    read_one_by_one: list[Any] = []
    monkeypatch.setattr(opensearch, "_item_outcome", lambda entry: read_one_by_one.append(entry) or STORED)
    server = FakeOpenSearch(bulk=lambda r: bulk_answer(r, *[{"status": status}] * 3))

    assert make_backend(server).store(batch(3)) == [STORED] * 3
    assert read_one_by_one == []

    server.bulk = lambda r: bulk_answer(r, {"status": status}, {"status": 409})
    assert make_backend(server).store(batch(2)) == [STORED] * 2
    assert len(read_one_by_one) == 2


@pytest.mark.parametrize("status", [100, 300, 304])
def test_an_event_answered_with_an_unexpected_status_is_retried_and_says_so(status):
    answer = {"status": status, "error": {"type": "odd_exception", "reason": "odd"}}
    server = FakeOpenSearch(bulk=lambda r: bulk_answer(r, answer))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.RETRY
    assert outcome.error == f"opensearch answered {status} for the event; it may or may not be stored"
    assert outcome.details == {"status": status, "error_type": "odd_exception", "error_reason": "odd"}


def test_an_event_answered_500_is_retried_as_a_server_failure():
    answer = {"status": 500, "error": {"type": "internal_error", "reason": "boom"}}
    server = FakeOpenSearch(bulk=lambda r: bulk_answer(r, answer))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.RETRY
    assert outcome.error == "opensearch could not take the event now: 500 internal_error: boom"


@pytest.mark.parametrize(
    ("error", "text", "details"),
    [
        ({"type": "x_exception"}, "400 x_exception", {"error_type": "x_exception", "error_reason": None}),
        ("no handler", "400: no handler", {"error_type": None, "error_reason": "no handler"}),
        ({"type": 42, "reason": ["not", "text"]}, "400", {"error_type": None, "error_reason": None}),
        ({"type": "mapper_parsing_exception", "reason": "failed to parse",
          "caused_by": {"type": "illegal_argument_exception"}},
         "400 mapper_parsing_exception: failed to parse (caused by illegal_argument_exception)",
         {"error_type": "mapper_parsing_exception", "error_reason": "failed to parse"}),
        ({"type": "mapper_parsing_exception", "reason": "failed to parse",
          "caused_by": {"reason": "depth limit exceeded"}},
         "400 mapper_parsing_exception: failed to parse (caused by depth limit exceeded)",
         {"error_type": "mapper_parsing_exception", "error_reason": "failed to parse"}),
        ({"type": "mapper_parsing_exception", "caused_by": {"other": 1}}, "400 mapper_parsing_exception",
         {"error_type": "mapper_parsing_exception", "error_reason": None}),
    ],
    ids=["type only", "bare string", "not text", "cause type", "cause reason", "cause without either"],
)
def test_a_rejected_event_names_as_much_of_the_error_as_opensearch_gave(error, text, details):
    server = FakeOpenSearch(bulk=lambda r: bulk_answer(r, {"status": 400, "error": error}))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.PERMANENT
    assert outcome.error == f"opensearch rejected the event: {text}"
    assert outcome.details == {"status": 400, **details}


@pytest.mark.parametrize(
    ("body", "found"),
    [(b"not json", "no item list"), (b'{"items": [{"create": {"status": 201}}]}', "1 items for 2 events")],
)
def test_a_success_answer_that_does_not_account_for_every_event_says_what_it_lacked(body, found):
    server = FakeOpenSearch(bulk=answering(200, body))

    outcomes = make_backend(server).store(batch(2))

    assert [o.error for o in outcomes] == [
        f"opensearch answered 200 to the bulk request but with {found}; "
        "retrying, as create with the event id cannot store an event twice"
    ] * 2


# Whole-request answers.


def test_a_failing_bulk_request_keeps_what_opensearch_said_in_the_details():
    body = {"error": {"type": "cluster_block_exception", "reason": "blocked"}, "status": 503}
    server = FakeOpenSearch(bulk=answering(503, body))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.details == {"status": 503, "error_type": "cluster_block_exception",
                               "error_reason": "blocked"}


@pytest.mark.parametrize(("status", "location", "where"), [
    (300, "http://elsewhere:9200/_bulk", " to http://elsewhere:9200/_bulk"),
    (307, None, ""),
])
def test_a_redirect_is_permanent_with_or_without_a_location(status, location, where):
    headers = {"Location": location} if location else {}
    server = FakeOpenSearch(bulk=answering(status, {"error": "moved"}, headers))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.PERMANENT
    assert outcome.error == f"opensearch redirected the bulk request ({status}{where}); check core.url"
    assert outcome.details == {"status": status, "error_type": None, "error_reason": "moved"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [({"message": "The security token included in the request is invalid."},
      "The security token included in the request is invalid."),
     ([1, 2], None)],
)
def test_a_refused_bulk_request_keeps_the_status_and_any_message(body, reason):
    server = FakeOpenSearch(bulk=answering(403, body))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.status is Status.PERMANENT
    assert outcome.details == {"status": 403, "error_type": None, "error_reason": reason}


def test_an_answer_that_cannot_be_decoded_retries_every_event_and_says_why():
    def undecodable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\x00not gzip", headers={"Content-Encoding": "gzip"})

    outcomes = make_backend(FakeOpenSearch(bulk=undecodable)).store(batch(2))

    assert [(o.status, o.details) for o in outcomes] == [(Status.RETRY, {"error_type": "DecodingError"})] * 2
    assert outcomes[0].error.startswith("bulk request failed: DecodingError: ")


def test_an_unreachable_node_says_which_transport_error_for_every_event():
    unreachable = refusing(httpx.ConnectError, "[Errno 111] Connection refused")
    server = FakeOpenSearch(bulk=unreachable, template=unreachable)

    outcomes = make_backend(server).store(batch(2))

    assert [o.details for o in outcomes] == [{"error_type": "ConnectError"}] * 2
    assert outcomes[0].error == "transport error: ConnectError: [Errno 111] Connection refused"


def test_an_event_that_cannot_be_encoded_is_marked_as_such():
    [outcome] = make_backend(FakeOpenSearch()).store([item(count=2**70)])

    assert outcome.status is Status.PERMANENT
    assert outcome.details == {"error_type": "json_encode_error", "field": "count"}
    assert outcome.error.startswith("event cannot be encoded as JSON: count: ")


def test_a_batch_of_only_unencodable_events_sends_no_bulk_request():
    server = FakeOpenSearch()

    outcomes = make_backend(server).store([item(count=2**70), item(count=2**71)])

    assert [o.status for o in outcomes] == [Status.PERMANENT] * 2
    assert server.bulk_requests() == []


# What is sent.


def test_every_request_asks_for_json_and_says_what_it_sends():
    server = FakeOpenSearch()
    backend = make_backend(server)

    backend.store(batch(1))
    backend.healthy()

    assert [r.headers["accept"] for r in server.requests] == ["application/json"] * 3
    [template] = server.template_requests()
    [bulk] = server.bulk_requests()
    assert template.headers["content-type"] == "application/json"
    assert bulk.headers["content-type"] == "application/x-ndjson"


def test_a_user_without_a_password_is_sent_with_an_empty_one():
    server = FakeOpenSearch()

    make_backend(server, username="ingest").store(batch(1))

    assert server.requests[0].headers["authorization"] == httpx.BasicAuth("ingest", "")._auth_header


# The prefix.


def test_a_valid_index_prefix_is_used_as_is_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix="siem-"))

    assert backend.prefix == "siem-" and caplog.records == []


def test_an_index_prefix_of_164_characters_is_the_longest_accepted():
    # 255 bytes per OpenSearch index name, less "-YYYY.MM.DD" and an 80-character HEC index.
    longest = OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix="p" * 164))
    assert longest.prefix == "p" * 164
    with pytest.raises(ConfigError, match=r"storage\.index_prefix: expected at most 164 "):
        OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix="p" * 165))
    # A longer one is shown cut 10 characters past the limit.
    with pytest.raises(ConfigError) as long:
        OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix="p" * 1000))
    assert str(long.value).endswith(f", got {'p' * 174!r}")


def test_the_missing_url_error_shows_an_example():
    with pytest.raises(ConfigError) as caught:
        OpenSearchBackend(CoreSettings(), StorageSettings())
    assert str(caught.value) == (
        "core.url: required for the opensearch storage backend, e.g. http://127.0.0.1:9200"
    )


# The index template: what is logged, when it is asked for again.


def test_an_empty_prefix_warns_once_that_no_template_is_installed(caplog):
    server = FakeOpenSearch()
    backend = OpenSearchBackend(CoreSettings(url=URL), StorageSettings(index_prefix=""),
                                httpx.MockTransport(server))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert backend.store(batch(1)) == [STORED]
        assert backend.store(batch(1)) == [STORED]

    assert [r.getMessage() for r in caplog.records] == [
        "storage.index_prefix is empty: not installing the OCSF index template"
    ]


def test_an_unreachable_node_is_logged_as_a_template_to_try_again(caplog):
    server = FakeOpenSearch(template=refusing(httpx.ConnectError, "refused"))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        make_backend(server).store(batch(1))

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "opensearch index template telhawk-ocsf not installed (ConnectError: refused); "
                          "will try again"),
    ]


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_node_gets_the_template_again_and_the_wait_is_logged(status, caplog):
    answers = [answering(status, {"error": {"type": "busy_exception", "reason": "later"}}),
               answering(200, {"acknowledged": True})]
    server = FakeOpenSearch(template=lambda r: answers.pop(0)(r))
    backend = make_backend(server)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        backend.store(batch(1))
        backend.store(batch(1))
        backend.store(batch(1))

    assert len(server.template_requests()) == 2 and backend.template_installed is True
    assert [r.getMessage() for r in caplog.records] == [
        f"opensearch index template telhawk-ocsf not installed ({status} busy_exception: later); "
        "will try again"
    ]


def test_a_refused_template_is_logged_once_as_an_error(caplog):
    refusal = {"error": {"type": "security_exception", "reason": "no"}}
    server = FakeOpenSearch(template=answering(403, refusal))

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        make_backend(server).store(batch(1))

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "opensearch refused index template telhawk-ocsf (403 security_exception: no); "
                        "storing events without it"),
    ]


def test_a_failed_health_check_is_logged_at_debug_level(caplog):
    backend = make_backend(FakeOpenSearch(health=refusing(httpx.ConnectError, "refused")))

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert backend.healthy() is False

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "opensearch health check failed: ConnectError: refused")
    ]


# The template itself: version 2 of the mapping (version 1 had no explicit `hec` object). Changing
# any part changes how events are indexed and searched; bump TEMPLATE_VERSION with it, so an operator
# can tell which one a cluster holds.

EPOCH_MILLIS = {"type": "date", "format": "epoch_millis||strict_date_optional_time"}
RFC3339 = {"type": "date", "format": "strict_date_optional_time||epoch_millis", "ignore_malformed": True}
KEYWORD = {"type": "keyword", "ignore_above": 2048}
STORED_ONLY = {"type": "keyword", "index": False, "doc_values": False}
OPAQUE = {"type": "object", "enabled": False}
OURS = {
    "ocsf_timestamps": {"match_pattern": "regex", "match": "^(time|.+_time)$", "match_mapping_type": "long",
                        "mapping": EPOCH_MILLIS},
    "ocsf_fractional_timestamps": {"match_pattern": "regex", "match": "^(time|.+_time)$",
                                   "match_mapping_type": "double", "mapping": EPOCH_MILLIS},
    "ocsf_datetimes": {"match": "*_dt", "match_mapping_type": "string", "mapping": RFC3339},
    "ocsf_raw_data": {"match": "raw_data", "match_mapping_type": "string", "mapping": STORED_ONLY},
    "ocsf_free_form": {
        "match_pattern": "regex",
        "match": "^(unmapped|data|evidence|supporting_data|access_result"
                 "|scim_user_schema|scim_group_schema)$",
        "match_mapping_type": "object",
        "mapping": OPAQUE,
    },
    "strings": {"match_mapping_type": "string", "mapping": KEYWORD},
}


def test_the_template_is_version_2_and_outranks_ad_hoc_templates():
    template = index_template("siem-")

    assert TEMPLATE_VERSION == 2
    assert template["index_patterns"] == ["siem-*"]
    assert template["priority"] == 100
    assert template["version"] == TEMPLATE_VERSION
    assert template["_meta"] == {"description": "OCSF events stored by telhawk-ingest"}


def test_the_template_settings_default_to_one_shard_no_replica_and_bounded_mappings():
    assert index_template("siem-")["template"]["settings"] == {"index": {
        "number_of_shards": 1,
        "number_of_replicas": 0,
        "mapping": {"total_fields": {"limit": 2000}, "depth": {"limit": 20}},
    }}
    custom = index_template("siem-", replicas=2, shards=3, total_fields_limit=500, depth_limit=8)
    assert custom["template"]["settings"]["index"] == {
        "number_of_shards": 3,
        "number_of_replicas": 2,
        "mapping": {"total_fields": {"limit": 500}, "depth": {"limit": 8}},
    }


def test_the_template_maps_each_known_ocsf_field_as_documented():
    mappings = index_template("siem-")["template"]["mappings"]

    assert mappings["dynamic"] is True
    assert mappings["date_detection"] is False and mappings["numeric_detection"] is False
    properties = mappings["properties"]
    assert properties["time"] == EPOCH_MILLIS
    assert properties["time_dt"] == RFC3339
    assert properties["message"] == {"type": "text", "fields": {"keyword": KEYWORD}}
    assert properties["raw_data"] == STORED_ONLY
    assert properties["unmapped"] == OPAQUE
    assert properties["hec"] == {"properties": {
        "host": KEYWORD, "source": KEYWORD, "sourcetype": KEYWORD, "index": KEYWORD,
        "fields": {"type": "flat_object"},
        "time": {"type": "double", "ignore_malformed": True},
        "payload_b64": STORED_ONLY,
    }}
    assert set(properties) == {"time", "time_dt", "message", "raw_data", "unmapped", "hec"}


def test_the_template_maps_other_fields_by_rules_tried_in_order_with_plain_strings_last():
    entries = index_template("siem-")["template"]["mappings"]["dynamic_templates"]
    rules = [next(iter(entry.items())) for entry in entries]

    assert all(len(entry) == 1 for entry in entries)
    ours = [(name, rule) for name, rule in rules if name in OURS]
    assert ours == list(OURS.items())
    assert rules[-1] == ("strings", OURS["strings"])


def test_the_template_put_is_the_template_as_json():
    server = FakeOpenSearch()

    make_backend(server).store(batch(1))

    [put] = server.template_requests()
    assert put.method == "PUT" and put.url.path == "/_index_template/telhawk-ocsf"
    assert orjson.loads(put.content) == index_template("telhawk-")


# core.verify_tls against a real HTTPS server with a certificate no system trusts.


class _Node(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(b'{"version": {"number": "2.19.6"}}')

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(b'{"acknowledged": true}')

    def do_POST(self) -> None:
        lines = self.rfile.read(int(self.headers["Content-Length"])).splitlines()
        items = [{"create": {**orjson.loads(line)["create"], "status": 201}} for line in lines[0::2]]
        self._answer(orjson.dumps({"took": 1, "errors": False, "items": items}))

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def https_node() -> Iterator[str]:
    """An OpenSearch-shaped HTTPS server on 127.0.0.1 whose certificate comes from a throwaway CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_verify_tls_false_stores_on_a_node_with_an_untrusted_certificate(https_node):
    backend = OpenSearchBackend(CoreSettings(url=https_node, verify_tls=False, timeout_seconds=5),
                                StorageSettings())
    try:
        assert backend.healthy() is True
        assert backend.store(batch(2)) == [STORED, STORED]
    finally:
        backend.close()


def test_verify_tls_true_refuses_a_node_with_an_untrusted_certificate(https_node):
    backend = OpenSearchBackend(CoreSettings(url=https_node, timeout_seconds=5), StorageSettings())
    try:
        assert backend.healthy() is False
        [outcome] = backend.store(batch(1))
        assert outcome.status is Status.RETRY and "CERTIFICATE_VERIFY_FAILED" in outcome.error
    finally:
        backend.close()


# Module constants, through what they decide.


def test_what_a_proxy_says_is_cut_to_200_characters():
    page = b"<html>" + b"x" * 500 + b"</html>"
    server = FakeOpenSearch(bulk=answering(502, page))

    [outcome] = make_backend(server).store(batch(1))

    assert outcome.details["error_reason"] == ("<html>" + "x" * 500)[:200]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_whole_request_statuses_that_are_retried(status):
    [outcome] = make_backend(FakeOpenSearch(bulk=answering(status, {"error": "busy"}))).store(batch(1))
    assert outcome.status is Status.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 428, 430, 499])
def test_whole_request_statuses_that_are_permanent(status):
    [outcome] = make_backend(FakeOpenSearch(bulk=answering(status, {"error": "no"}))).store(batch(1))
    assert outcome.status is Status.PERMANENT
