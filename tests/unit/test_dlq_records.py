"""What a DLQ record holds, and which entry ids an operator may name."""

from __future__ import annotations

import pytest

from telhawk_ingest.dlq import check_id, make_record
from telhawk_ingest.errors import ApiError
from tests.unit.test_dlq import envelope


@pytest.mark.parametrize(("reason", "stage"), [
    ("normalization_failed", "normalize"), ("validation_failed", "validate"), ("storage_failed", "store"),
])
def test_a_record_holds_the_seeds_fields_then_its_id_stage_and_details(reason, stage, west_of_utc):
    record = make_record(envelope(), reason, "why", 4, {"status": 503}, now=1_700_006_400.25)

    assert record == {
        "timestamp": "2023-11-15T00:00:00.250Z",
        "envelope": envelope(),
        "error": "why",
        "reason": reason,
        "attempts": 4,
        "last_attempt": "2023-11-15T00:00:00.250Z",
        "id": "",
        "stage": stage,
        "details": {"status": 503},
    }


def test_a_record_made_now_is_stamped_now(waits):
    record = make_record(envelope(), "storage_failed", "503")
    assert record["timestamp"] == record["last_attempt"] == "2026-01-02T03:04:05.000Z"
    assert (record["attempts"], record["details"]) == (1, {})


def test_an_unknown_reason_is_refused():
    with pytest.raises(KeyError):
        make_record(envelope(), "lost", "no such reason")


@pytest.mark.parametrize("entry_id", ["failed_1700000000_" + "0123456789abcdef" * 2, "failed_0_" + "f" * 32])
def test_an_entry_name_is_its_own_id(entry_id):
    assert check_id(entry_id) == entry_id


def test_a_bad_id_is_refused_with_400_naming_it_cut_to_80_characters():
    with pytest.raises(ApiError) as caught:
        check_id("x" * 100)
    assert caught.value.status == 400
    assert str(caught.value) == (
        f"not a DLQ entry id: {'x' * 80!r} (expected failed_<seconds>_<32 hex digits or a UUID>)"
    )
