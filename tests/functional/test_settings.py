"""Settings reach behaviour: each one changes what a client or an operator sees."""

from __future__ import annotations

import json

from telhawk_ingest.storage.base import retry
from tests.fakes import ScriptedBackend, every

SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
SSHD_EVENT = json.dumps({"event": SSHD, "sourcetype": "linux_secure", "host": "web01"})


def test_max_retries_0_dead_letters_after_the_first_try(make_client, waits):
    backend = ScriptedBackend(*[every(retry("503 Service Unavailable"))] * 4)
    client = make_client(backend, core={"max_retries": 0})

    answer = client.hec(SSHD_EVENT)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    assert len(backend.calls) == 1 and waits == []
    [record] = client.dlq_records()
    assert record["attempts"] == 1 and record["error"] == "503 Service Unavailable"


def test_the_retry_schedule_follows_the_core_settings(make_client, waits):
    backend = ScriptedBackend(*[every(retry("503", retry_after=30.0))] * 10)
    client = make_client(backend, core={
        "max_retries": 4, "retry_delay_ms": 10, "retry_multiplier": 3, "retry_max_delay_ms": 200,
        "max_retry_after_seconds": 0.05,
    })

    client.hec(SSHD_EVENT)

    # 10, 30, 90 ms, then capped at 200 ms; the storage's Retry-After counts for 50 ms at most.
    assert waits == [0.05, 0.05, 0.09, 0.2]
    assert client.dlq_records()[0]["attempts"] == 5
