"""Indexer acknowledgement over real HTTP: the emulator serves the ack route from template.yaml."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

pytestmark = pytest.mark.e2e

ACK_TOKEN = "00000000-0000-4000-8000-0000000000ac"
PLAIN_TOKEN = "00000000-0000-4000-8000-000000000001"
CHANNEL = "FE0ECFAD-13D5-401B-847D-77833BD77131"
OTHER_CHANNEL = "7c6b5a49-3827-4160-9f8e-7d6c5b4a3928"
SSHD = "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5 port {port} ssh2"
CONFIG = {
    "hec": {"tokens": [
        {"name": "firehose", "token": ACK_TOKEN, "ack": True, "default_sourcetype": "linux_secure"},
        {"name": "plain", "token": PLAIN_TOKEN},
    ]},
    "operator": {"tokens": [{"name": "ops", "token": "operator-token-for-e2e-0001"}]},
}


def event(port: int) -> str:
    return json.dumps({"event": SSHD.format(port=port), "sourcetype": "linux_secure"})


def post(client: httpx.Client, path: str, body: str, channel: str | None = CHANNEL,
         token: str = ACK_TOKEN, params: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Authorization": f"Splunk {token}"}
    if channel is not None:
        headers["X-Splunk-Request-Channel"] = channel
    return client.post(path, content=body, headers=headers, params=params)


def poll(client: httpx.Client, ack_ids: list[int], channel: str = CHANNEL) -> httpx.Response:
    return post(client, "/services/collector/ack", json.dumps({"acks": ack_ids}), channel)


def stored(emu, expected: int) -> int:
    """The stored count of every worker, once it reaches `expected` or counters had time to arrive
    (each worker writes its counters within stats.FLUSH_INTERVAL_S)."""
    return emu.healthz(lambda health: health["stored"] >= expected)["stored"]


def test_a_channel_gets_increasing_ack_ids_the_ack_endpoint_confirms_them_and_a_restart_restarts_them(
    start_emulator,
):
    emu = start_emulator(config=CONFIG, workers=1)
    with httpx.Client(base_url=emu.url, trust_env=False, timeout=30) as client:
        answers = [post(client, "/services/collector/event", event(n)) for n in range(3)]
        assert [(a.status_code, a.json()) for a in answers] == [
            (200, {"text": "Success", "code": 0, "ackId": n}) for n in range(3)]
        raw = post(client, "/services/collector/raw", SSHD.format(port=9) + "\n", channel=None,
                   params={"channel": OTHER_CHANNEL})
        assert raw.json() == {"text": "Success", "code": 0, "ackId": 0}

        assert poll(client, [0, 1, 2]).json() == {"acks": {"0": True, "1": True, "2": True}}
        assert poll(client, [0], OTHER_CHANNEL).json() == {"acks": {"0": True}}
        missing = post(client, "/services/collector/event", event(10), channel=None)
        assert (missing.status_code, missing.json()["code"]) == (400, 10)
        disabled = post(client, "/services/collector/ack", '{"acks": [0]}', token=PLAIN_TOKEN)
        assert (disabled.status_code, disabled.json()) == (400, {"text": "ACK is disabled", "code": 14})
        assert stored(emu, 4) == 4

    emu.restart()
    with httpx.Client(base_url=emu.url, trust_env=False, timeout=30) as client:
        # A new process counts again from 0; the ids of the first one are still confirmed.
        assert post(client, "/services/collector/event", event(11)).json()["ackId"] == 0
        assert poll(client, [0, 1, 2]).json() == {"acks": {"0": True, "1": True, "2": True}}
    assert stored(emu, 5) == 5


def test_with_several_workers_every_ack_id_handed_out_is_confirmed_by_any_worker(start_emulator):
    emu = start_emulator(config=CONFIG, workers=2, threads=2)
    ack_ids = []
    for n in range(8):
        # A new connection per request, so requests spread over the worker processes.
        with httpx.Client(base_url=emu.url, trust_env=False, timeout=30) as client:
            answer = post(client, "/services/collector/event", event(n))
            assert answer.status_code == 200, answer.text
            ack_ids.append(answer.json()["ackId"])

    # Each worker counts the channel on its own: an id repeats at most once per worker.
    assert max(Counter(ack_ids).values()) <= 2
    for _ in range(4):
        with httpx.Client(base_url=emu.url, trust_env=False, timeout=30) as client:
            assert poll(client, sorted(set(ack_ids))).json() == {
                "acks": {str(i): True for i in sorted(set(ack_ids))}}
    assert stored(emu, 8) == 8
