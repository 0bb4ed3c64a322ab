"""The opensearch backend against a real node: what is searchable, what is dead-lettered, and why.

Events are sent through the Service (HEC request or envelopes) into indices under a prefix of
the test's own; every fixture event is dated 2024-11-04, and envelopes made here arrive that day
(`envelope_of`), so they land in `<prefix>main-2024.11.04`. Events sent as HEC requests arrive now,
which is outside the day window of that date: they land in today's index.
"""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest

from telhawk_ingest.hec import HecRequest
from tests.opensearch.conftest import (
    HEC_TOKEN,
    count,
    dlq_records,
    envelope_of,
    ingest_at_once,
    ocsf_event,
    search_ids,
)

pytestmark = pytest.mark.opensearch

DAY = "2024.11.04"
FIXTURES = ("ocsf_authentication", "ocsf_network_activity", "ocsf_detection_finding")


def hec_request(events: list[dict]) -> HecRequest:
    """One HEC JSON request carrying every event, Splunk's concatenated-objects batch format."""
    body = "\n".join(json.dumps({"event": event, "sourcetype": "ocsf"}) for event in events)
    return HecRequest("POST", "/services/collector/event", {"Authorization": f"Splunk {HEC_TOKEN}"},
                      body=body.encode())


def fixture_events(n: int) -> list[dict]:
    return [ocsf_event(FIXTURES[k % len(FIXTURES)], message=f"event {k}") for k in range(n)]


def test_a_hec_batch_is_searchable_after_refresh_with_one_document_per_event(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)

    reply = service.hec(hec_request(fixture_events(30)))

    assert (reply.status, reply.body) == (200, {"text": "Success", "code": 0})
    ids = search_ids(opensearch, index_prefix)
    assert len(ids) == 30
    assert len(set(ids)) == 30
    assert count(opensearch, index_prefix) == 30
    assert dlq_records(service) == []


def test_sending_the_same_envelopes_again_stores_no_duplicates_and_counts_them_as_stored(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    envelopes = [envelope_of(event) for event in fixture_events(25)]

    first = service.ingest(envelopes)
    again = service.ingest(envelopes)

    assert (first.stored, first.dead_lettered) == (25, 0)
    # The node answers 409 for every id it already holds; that is "already stored", not a failure.
    assert (again.stored, again.dead_lettered) == (25, 0)
    assert sorted(search_ids(opensearch, index_prefix)) == sorted(e.id for e in envelopes)
    assert dlq_records(service) == []


class LoseFirstBulkAnswer(httpx.BaseTransport):
    """Forwards to the node, but drops the answer to the first bulk after the node has applied it."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/_bulk" and not self.lost:
            response.read()
            response.close()
            self.lost += 1
            raise httpx.ReadError("connection reset before the bulk answer arrived", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_bulk_whose_answer_was_lost_is_retried_without_duplicating_a_document(
        opensearch, opensearch_url, index_prefix, make_service):
    transport = LoseFirstBulkAnswer()
    service = make_service(opensearch_url, index_prefix, transport, retry_delay_ms=10)
    envelopes = [envelope_of(event) for event in fixture_events(20)]

    result = service.ingest(envelopes)

    assert transport.lost == 1
    assert (result.stored, result.dead_lettered) == (20, 0)
    assert service.healthz()["storage"]["retries"] == 20
    ids = search_ids(opensearch, index_prefix)
    assert sorted(ids) == sorted(e.id for e in envelopes)


def test_a_field_that_is_a_string_in_one_event_and_an_object_in_the_next_dead_letters_only_the_second(
        opensearch, opensearch_url, index_prefix, make_service):
    # `enrichments[].data` is OCSF json_t: validation lets through a string as well as an object,
    # so this is a conflict real producers can cause. The first value seen fixes the field's type
    # for the day's index: a string maps it as a keyword, and an object then cannot be indexed.
    service = make_service(opensearch_url, index_prefix)
    as_text = ocsf_event(enrichments=[{"name": "geo", "value": "10.0.0.5", "data": "Amsterdam"}])
    as_object = ocsf_event(enrichments=[{"name": "geo", "value": "10.0.0.6", "data": {"city": "Oslo"}}])
    text_envelope, object_envelope = envelope_of(as_text), envelope_of(as_object)

    result = service.ingest([text_envelope, object_envelope])

    assert (result.stored, result.dead_lettered) == (1, 1)
    assert search_ids(opensearch, index_prefix) == [text_envelope.id]
    [record] = dlq_records(service)
    assert record["envelope"]["id"] == object_envelope.id
    assert record["reason"] == "storage_failed"
    assert record["stage"] == "store"
    assert record["attempts"] == 1
    assert record["details"]["status"] == 400
    assert record["details"]["error_type"] == "mapper_parsing_exception"
    assert "enrichments.data" in record["error"]


def test_a_write_blocked_index_dead_letters_every_event_at_once_without_retrying(
        opensearch, opensearch_url, index_prefix, make_service):
    # Sent now, far from their 2024 event time, the events go to today's index (both days, should
    # the test run across midnight UTC).
    days = {time.strftime("%Y.%m.%d", time.gmtime(time.time() + ahead)) for ahead in (0, 60)}
    for day in days:
        opensearch.put(f"/{index_prefix}main-{day}", json={"settings": {"index.blocks.write": True}}
                       ).raise_for_status()
    service = make_service(opensearch_url, index_prefix)

    reply = service.hec(hec_request(fixture_events(5)))

    # Every event is safe in the DLQ, so the client is told the request succeeded.
    assert (reply.status, reply.body) == (200, {"text": "Success", "code": 0, "accepted": 5,
                                                "dead_lettered": 5})
    records = dlq_records(service)
    assert len(records) == 5
    for record in records:
        assert record["reason"] == "storage_failed"
        assert record["attempts"] == 1
        assert record["details"]["status"] == 403
        assert record["details"]["error_type"] == "cluster_block_exception"
    assert service.healthz()["storage"]["retries"] == 0
    assert count(opensearch, index_prefix) == 0


def test_events_land_in_a_daily_index_named_after_the_prefix_hec_index_and_event_day(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)

    names = ("main", "web_logs", "Web Logs")
    result = service.ingest([envelope_of(ocsf_event(), index=name) for name in names])

    indices = opensearch.get(f"/_cat/indices/{index_prefix}*?format=json").json()
    names = sorted(row["index"] for row in indices)
    assert names == [f"{index_prefix}main-{DAY}", f"{index_prefix}web_logs-{DAY}"]
    # A name outside Splunk's rule is never rewritten into another index: it is dead-lettered.
    assert (result.stored, result.dead_lettered) == (2, 1)
    [record] = dlq_records(service)
    assert record["envelope"]["attributes"]["index"] == "Web Logs" and record["reason"] == "storage_failed"


def test_the_ocsf_template_makes_time_a_date_and_keeps_raw_data_and_unmapped_out_of_the_index(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    # One odd event: thousands of source keys kept in `unmapped`, a long raw line in `raw_data`.
    odd = ocsf_event(raw_data="Nov  4 01:02:03 dc1 " + "x" * 5000,
                     unmapped={f"vendor_key_{k}": k for k in range(5000)})

    result = service.ingest([envelope_of(ocsf_event()), envelope_of(odd)])

    assert (result.stored, result.dead_lettered) == (2, 0)
    index = f"{index_prefix}main-{DAY}"
    mapping = opensearch.get(f"/{index}/_mapping").json()[index]["mappings"]
    props = mapping["properties"]
    assert props["time"]["type"] == "date"
    assert props["raw_data"]["index"] is False
    assert props["unmapped"] == {"type": "object", "enabled": False}
    assert "properties" not in props["unmapped"]
    settings = opensearch.get(f"/{index}/_settings?flat_settings=true").json()[index]["settings"]
    assert settings["index.mapping.total_fields.limit"] == "2000"
    # What a user notices: time answers date range queries, raw_data is not searchable.
    opensearch.post(f"/{index}/_refresh").raise_for_status()
    in_day = {"query": {"range": {"time": {"gte": "2024-11-04", "lt": "2024-11-05"}}}}
    assert opensearch.post(f"/{index}/_count", json=in_day).json()["count"] == 2
    by_raw = opensearch.post(f"/{index}/_count", json={"query": {"term": {"raw_data": odd["raw_data"]}}})
    assert by_raw.status_code == 400
    assert "not indexed" in by_raw.text


def test_concurrent_first_batches_all_find_the_template_in_place(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    batches = [[envelope_of(copy.deepcopy(e)) for e in fixture_events(10)] for _ in range(4)]
    results = ingest_at_once(service, batches, timeout=60)

    assert [r.stored for r in results] == [10, 10, 10, 10]
    index = f"{index_prefix}main-{DAY}"
    props = opensearch.get(f"/{index}/_mapping").json()[index]["mappings"]["properties"]
    assert props["time"]["type"] == "date"
    assert count(opensearch, index_prefix) == 40
