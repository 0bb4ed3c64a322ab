"""A dead letter keeps its whole envelope, and sending that envelope back stores the same event."""

from __future__ import annotations

import json
import re

from telhawk_ingest.storage.base import retry
from tests.fakes import ScriptedBackend, every

SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
# An hour before arrival (the `waits` fixture freezes the clock at 2026-01-02T03:04:05Z): inside the
# storage day window, so the event's own time picks its day.
WHEN = 1_767_323_045 - 3600 + 0.5
EVENT = json.dumps({"event": SSHD, "sourcetype": "linux_secure", "host": "web01", "index": "auth",
                    "time": WHEN, "fields": {"dc": "eu-1"}})


def test_a_dead_letter_keeps_the_whole_envelope_and_a_replay_stores_it_under_the_same_id(make_client, waits):
    backend = ScriptedBackend(*[every(retry("503 Service Unavailable"))] * 4)
    client = make_client(backend)
    client.hec(EVENT)
    [record] = client.dlq_records()
    envelope = record["envelope"]

    assert set(envelope) == {"id", "source", "source_type", "format", "payload", "attributes", "received_at"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["received_at"])
    assert (envelope["source_type"], envelope["format"], envelope["payload"]) == ("linux_secure", "raw", SSHD)
    assert envelope["attributes"]["index"] == "auth" and envelope["attributes"]["host"] == "web01"

    answer = client.hec(json.dumps(envelope))

    assert answer.json() == {"text": "Success", "code": 0}
    [stored] = backend.stored
    assert (stored.id, stored.index, stored.time) == (envelope["id"], "auth", WHEN)
