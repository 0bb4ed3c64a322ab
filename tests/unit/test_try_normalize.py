"""try_normalize / try_envelope: what ingest would make of one event, without storing anything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telhawk_ingest.config import NormalizerSettings
from telhawk_ingest.dlq import make_record
from telhawk_ingest.envelope import Envelope
from telhawk_ingest.normalizers import builtin_registry, default_registry
from telhawk_ingest.normalizers.loading import load_registry
from telhawk_ingest.normalizers.trial import try_envelope, try_normalize
from tests.unit.test_normalizers import envelope

ASA_LINE = ("%ASA-6-113005: AAA user authentication Rejected : reason = Invalid password : "
            "server = 10.1.1.5 : user = bob : user IP = 198.51.100.7")


def test_a_line_that_normalizes_answers_the_valid_event_and_the_route_it_took():
    answer = try_normalize(default_registry(), "cisco:asa", "raw", ASA_LINE, attributes={"host": "fw"})

    assert answer["ok"] is True
    assert (answer["reason"], answer["stage"], answer["error"], answer["details"]) == (None, None, None, None)
    assert answer["event"]["user"] == {"name": "bob"} and answer["event"]["raw_data"] == ASA_LINE
    assert answer["event"]["metadata"]["log_name"] == "cisco:asa"
    assert answer["route"] == {"match": "exact", "source_type": "cisco:asa", "format": "raw",
                               "origin": {"type": "builtin"}}


def test_a_json_event_is_given_as_its_json_text():
    answer = try_normalize(default_registry(), "cisco:asa", "json", json.dumps(ASA_LINE))

    assert answer["ok"] is True and answer["route"]["format"] == "json"


def test_no_normalizer_answers_the_dlq_reason_and_the_seed_error_text():
    answer = try_normalize(default_registry(), "cisco_asa", "json", json.dumps(ASA_LINE))

    assert answer == {
        "ok": False, "event": None, "reason": "normalization_failed", "stage": "normalize",
        "error": "no normalizer registered for format=json source_type=cisco_asa",
        "details": {"format": "json", "source_type": "cisco_asa"}, "route": None,
    }


def test_an_unsupported_message_answers_the_normalizers_error():
    answer = try_normalize(default_registry(), "cisco:asa", "raw", "%ASA-6-999999: new")

    assert (answer["ok"], answer["reason"], answer["error"]) == (
        False, "normalization_failed", "cisco:asa message id 999999 is not supported")


def test_a_validation_failure_answers_the_path_and_shows_the_event_to_fix():
    bad = {"class_uid": 3002, "category_uid": 3, "activity_id": 1, "type_uid": 300201, "severity_id": 1,
           "time": 1, "metadata": {"version": "1.5.0", "product": {"name": "x"}}, "user": {"name": "a"},
           "src_endpoint": {"port": "abc"}, "service": {"name": "s"}}

    answer = try_normalize(default_registry(), "ocsf:authentication", "json", json.dumps(bad))

    assert (answer["ok"], answer["reason"], answer["stage"]) == (False, "validation_failed", "validate")
    assert answer["error"] == "src_endpoint.port: 'abc' is not of type 'integer'"
    assert answer["event"] == bad
    assert answer["route"]["match"] == "pattern" and answer["route"]["source_type"] == "ocsf:*"


def test_an_unexpected_fault_in_validation_is_answered_as_ingest_records_it():
    def broken(event: dict[str, Any]) -> None:
        raise KeyError("class_uid")

    answer = try_normalize(default_registry(), "cisco:asa", "raw", ASA_LINE, validate=broken)

    assert (answer["ok"], answer["reason"], answer["error"]) == (
        False, "normalization_failed", "unexpected KeyError: 'class_uid'")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="format must be one of json, raw, got 'xml'"):
        try_normalize(default_registry(), "cisco:asa", "xml", ASA_LINE)


def test_a_dead_lettered_envelope_can_be_checked_against_a_fix_before_replaying_it():
    """The seed's workflow: a cisco_asa event failed; with the alias it would be stored."""
    failed = envelope(json.dumps(ASA_LINE), "cisco_asa", "json")
    record = make_record(failed.to_dict(), "normalization_failed", "no normalizer", 1, {}, 1_700_000_000)
    kept = Envelope(**record["envelope"])

    before = try_envelope(builtin_registry(), kept)
    after = try_envelope(load_registry(NormalizerSettings(aliases={"cisco_asa": "cisco:asa"})), kept)

    assert before["ok"] is False and before["error"].startswith("no normalizer registered")
    assert after["ok"] is True and after["event"]["status_detail"] == "Invalid password"
    assert after["route"]["origin"] == {"type": "alias", "alias_of": "cisco:asa"}
