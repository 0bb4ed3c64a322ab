"""Client times never create daily indices of their own on a real node (SPEC §3's window rule): a
request with a thousand distinct times, as events or as posted-back envelopes with made-up ids,
makes at most a few indices, and every document keeps its own time."""

from __future__ import annotations

import json

import pytest

from telhawk_ingest.envelope import new_id
from telhawk_ingest.hec import HecRequest
from tests.opensearch.conftest import HEC_TOKEN, count, dlq_records, ocsf_event

pytestmark = pytest.mark.opensearch

DAY = 86_400
EVENTS = 1000


def hec_request(objects: list[dict]) -> HecRequest:
    body = "\n".join(json.dumps(obj) for obj in objects).encode()
    headers = {"Authorization": f"Splunk {HEC_TOKEN}"}
    return HecRequest("POST", "/services/collector/event", headers, body=body)


def indices(client, prefix: str) -> list[str]:
    return sorted(row["index"] for row in client.get(f"/_cat/indices/{prefix}*?format=json").json())


def stored_times(client, prefix: str) -> list[float]:
    client.post(f"/{prefix}*/_refresh").raise_for_status()
    answer = client.post(f"/{prefix}*/_search", json={"size": EVENTS, "_source": ["hec.time"],
                                                      "query": {"match_all": {}}})
    answer.raise_for_status()
    return sorted(hit["_source"]["hec"]["time"] for hit in answer.json()["hits"]["hits"])


def test_a_thousand_client_times_make_at_most_a_few_daily_indices(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    events = [{"event": ocsf_event(), "sourcetype": "ocsf", "time": DAY * i} for i in range(EVENTS)]

    reply = service.hec(hec_request(events))

    assert (reply.status, reply.body) == (200, {"text": "Success", "code": 0})
    assert count(opensearch, index_prefix) == EVENTS and dlq_records(service) == []
    # One arrival day; a request running across midnight could touch two.
    assert 1 <= len(indices(opensearch, index_prefix)) <= 2
    assert stored_times(opensearch, index_prefix) == [DAY * i for i in range(EVENTS)]


def test_posted_envelopes_with_made_up_ids_and_times_make_at_most_a_few_daily_indices(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    envelopes = [{"id": new_id(now_ns=DAY * i * 10**9)[:24] + f"{i:012x}", "source": "replay",
                  "source_type": "ocsf", "format": "json", "payload": json.dumps(ocsf_event()),
                  "attributes": {"index": None, "fields": {}, "time": DAY * i}} for i in range(EVENTS)]

    reply = service.hec(hec_request(envelopes))

    assert (reply.status, reply.body) == (200, {"text": "Success", "code": 0})
    assert count(opensearch, index_prefix) == EVENTS and dlq_records(service) == []
    assert 1 <= len(indices(opensearch, index_prefix)) <= 2
    assert stored_times(opensearch, index_prefix) == [DAY * i for i in range(EVENTS)]
