"""The stored document's `hec` object, and how the OpenSearch template maps it."""

from __future__ import annotations

from telhawk_ingest.envelope import Envelope, new_id
from telhawk_ingest.storage.document import stored_document
from telhawk_ingest.storage.opensearch import index_template


def envelope(**attributes) -> Envelope:
    return Envelope(new_id(), "src", "linux_secure", "raw", "line",
                    {"host": "h", "index": "main", "fields": {"a": 1}, "token_name": "t", **attributes})


def test_the_builder_returns_a_new_document_and_leaves_the_event_alone():
    event = {"class_uid": 3002, "user": {"name": "alice"}}

    document = stored_document(event, envelope())

    assert document == {"class_uid": 3002, "user": {"name": "alice"},
                        "hec": {"host": "h", "source": "src", "sourcetype": "linux_secure", "index": "main",
                                "fields": {"a": 1}, "time": None}}
    assert event == {"class_uid": 3002, "user": {"name": "alice"}}


def test_time_is_kept_as_the_envelope_holds_it_and_payload_b64_only_when_there():
    hec = stored_document({}, envelope(time=1718905365392963, payload_b64="6Q=="))["hec"]

    assert (hec["time"], hec["payload_b64"]) == (1718905365392963, "6Q==")
    assert "payload_b64" not in stored_document({}, envelope())["hec"]
    assert stored_document({}, envelope(fields=None))["hec"]["fields"] == {}


def test_the_template_maps_hec_fields_as_one_flat_object_and_hec_time_leniently():
    hec = index_template("telhawk-")["template"]["mappings"]["properties"]["hec"]["properties"]

    assert hec["fields"] == {"type": "flat_object"}
    assert hec["time"] == {"type": "double", "ignore_malformed": True}
    assert {hec[key]["type"] for key in ("host", "source", "sourcetype", "index")} == {"keyword"}
    assert hec["payload_b64"]["index"] is False
