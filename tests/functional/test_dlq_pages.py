"""The seed's replay loop (`jq -c '.events[].envelope'` posted back to HEC) against a listing with a
record too large for its page: that record is listed without its envelope, its line is refused
with a clear 400, and no partial copy is ever stored under its id, so the real event can still be
replayed whole (SPEC §11)."""

from __future__ import annotations

import json
from pathlib import Path

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest.storage.base import permanent
from tests.fakes import ScriptedBackend, every

EVENTS = Path(__file__).resolve().parents[1] / "events"
OCSF = json.loads((EVENTS / "ocsf_authentication.json").read_text())


def ocsf_event(message: str) -> str:
    return json.dumps({"event": {**OCSF, "message": message}, "sourcetype": "ocsf"})


def jq_envelopes(listing: dict) -> list[str]:
    """What `jq -c '.events[].envelope'` prints: one line per entry, `null` for a missing member."""
    return [json.dumps(entry.get("envelope"), separators=(",", ":")) for entry in listing["events"]]


def test_the_seed_replay_loop_never_stores_a_truncated_copy_under_the_real_id(make_client, monkeypatch):
    backend = ScriptedBackend(every(permanent("mapping conflict", status=400)))
    client = make_client(backend)
    big_message = "m" * 200_000
    answer = client.hec(ocsf_event("small one") + ocsf_event(big_message) + ocsf_event("small two"))
    assert answer.json()["dead_lettered"] == 3
    records = {r["envelope"]["id"]: r for r in client.dlq_records()}
    [big_id] = [i for i, r in records.items() if big_message in r["envelope"]["payload"]]
    monkeypatch.setattr(dlq_module, "LIST_PAGE_BYTES", 100_000)

    listing = client.operator("GET", "/api/v1/dlq").json()

    assert len(listing["events"]) == 3 and listing["next_cursor"] is None
    [truncated] = [e for e in listing["events"] if e.get("truncated")]
    assert "envelope" not in truncated and truncated["envelope_bytes"] > 200_000

    answers = [client.hec(line) for line in jq_envelopes(listing)]

    assert sorted(a.status_code for a in answers) == [200, 200, 400]
    [refused] = [a.json() for a in answers if a.status_code == 400]
    assert refused["code"] == 6 and "listed without its envelope" in refused["detail"]
    assert big_id not in {item.id for item in backend.stored}
    assert len(backend.stored) == 2

    # The whole record (as on disk) still replays, with its whole payload.
    assert client.hec(json.dumps(records[big_id]["envelope"])).json() == {"text": "Success", "code": 0}
    [stored] = [item for item in backend.stored if item.id == big_id]
    assert stored.document["message"] == big_message


def test_a_whole_listing_entry_posted_instead_of_its_envelope_gets_a_clear_400(client, monkeypatch):
    client.hec(json.dumps({"event": {"msg": "x" * 5000}, "sourcetype": "cisco_asa"}))
    monkeypatch.setattr(dlq_module, "LIST_PAGE_BYTES", 1000)
    [entry] = client.operator("GET", "/api/v1/dlq").json()["events"]
    assert entry["truncated"] is True

    answer = client.hec(json.dumps(entry))

    assert answer.status_code == 400
    assert answer.json()["code"] == 12
    assert "is a DLQ record" in answer.json()["detail"]
    assert len(client.dlq_records()) == 1
