"""HEC metadata in OpenSearch: `hec` beside the OCSF attributes, `hec.fields` as a flat_object."""

from __future__ import annotations

import json

import pytest

from telhawk_ingest.hec import HecRequest
from tests.opensearch.conftest import HEC_TOKEN, count, dlq_records, ocsf_event

pytestmark = pytest.mark.opensearch


def hec_request(*objects: dict) -> HecRequest:
    body = "\n".join(json.dumps(obj) for obj in objects)
    return HecRequest("POST", "/services/collector/event", {"Authorization": f"Splunk {HEC_TOKEN}"},
                      body=body.encode())


def search(client, prefix: str, query: dict) -> list[dict]:
    client.post(f"/{prefix}*/_refresh").raise_for_status()
    answer = client.post(f"/{prefix}*/_search", json={"query": query})
    answer.raise_for_status()
    return [hit["_source"] for hit in answer.json()["hits"]["hits"]]


def test_fields_with_different_keys_and_clashing_types_are_stored_and_searchable(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    first = {"event": ocsf_event(message="first"), "sourcetype": "ocsf", "host": "web01",
             "fields": {"cluster_name": "prod-eu", "port": 443}}
    second = {"event": ocsf_event(message="second"), "sourcetype": "ocsf", "host": "web02",
              "fields": {"port": "https", "tags": ["blue", "red"]}}

    reply = service.hec(hec_request(first, second))

    assert (reply.status, reply.body) == (200, {"text": "Success", "code": 0})
    assert count(opensearch, index_prefix) == 2
    assert dlq_records(service) == []
    [found] = search(opensearch, index_prefix, {"term": {"hec.fields.cluster_name": "prod-eu"}})
    assert found["message"] == "first"
    assert found["hec"]["fields"] == {"cluster_name": "prod-eu", "port": 443}
    [by_text] = search(opensearch, index_prefix, {"term": {"hec.fields.port": "https"}})
    assert by_text["message"] == "second"
    [by_host] = search(opensearch, index_prefix, {"term": {"hec.host": "web02"}})
    assert by_host["hec"]["fields"]["tags"] == ["blue", "red"]


def test_hec_fields_is_one_flat_object_in_the_mapping_whatever_the_keys(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    events = [{"event": ocsf_event(message=f"n{k}"), "sourcetype": "ocsf", "fields": {f"key_{k}": k}}
              for k in range(50)]

    assert service.hec(hec_request(*events)).status == 200

    mappings = opensearch.get(f"/{index_prefix}*/_mapping").json()
    [index] = mappings.values()
    hec = index["mappings"]["properties"]["hec"]["properties"]
    assert hec["fields"] == {"type": "flat_object"}
    assert hec["host"]["type"] == "keyword"
    assert count(opensearch, index_prefix) == 50


def test_an_hec_time_in_the_wrong_unit_is_kept_as_sent_and_stored(
        opensearch, opensearch_url, index_prefix, make_service):
    service = make_service(opensearch_url, index_prefix)
    event = {"event": ocsf_event(message="micro"), "sourcetype": "ocsf", "time": 1718905365392963}

    assert service.hec(hec_request(event)).status == 200

    [found] = search(opensearch, index_prefix, {"term": {"message": "micro"}})
    assert found["hec"]["time"] == 1718905365392963
    assert dlq_records(service) == []
