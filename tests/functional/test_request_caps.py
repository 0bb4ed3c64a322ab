"""The request caps through the real handler: a small request cannot make thousands of DLQ files, a
small gzip cannot inflate into millions of events or a huge DLQ record, and the answer is a HEC
body naming the limit, with nothing of the request kept (SPEC §2, §3, §9)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from telhawk_ingest.storage.local import LocalBackend

MiB = 1024 * 1024


def dlq_files(client) -> list:
    return sorted(client.service.settings.dlq.base_path.glob("failed_*.json"))


def test_a_70_kb_body_of_5001_events_is_refused_past_the_cap_leaving_no_dlq_files(make_client):
    client = make_client(hec={"max_events_per_request": 5000})
    body = '{"event":"x"}' * 5001  # httpevent has no normalizer: each would be a DLQ file

    answer = client.hec(body)

    assert answer.status_code == 413
    assert answer.json() == {
        "text": "Invalid data format", "code": 6,
        "detail": "more than 5000 events in one request (hec.max_events_per_request)"}
    assert dlq_files(client) == []
    assert client.service.counters.totals()["requests_rejected"] == 1


def test_the_same_body_at_the_cap_is_taken_whole(make_client):
    client = make_client(hec={"max_events_per_request": 50})

    answer = client.hec('{"event":"x"}' * 50)

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 50, "dead_lettered": 50}
    assert len(dlq_files(client)) == 50


def test_with_the_default_cap_100001_raw_lines_are_refused(client):
    answer = client.hec("a\n" * 100_001, path="/services/collector/raw")

    assert answer.status_code == 413 and answer.json()["code"] == 6
    assert "100000 events" in answer.json()["detail"]
    assert dlq_files(client) == []


@pytest.mark.parametrize(("case", "plain", "path"), [
    ("10 MiB of 'a\\n' to the raw endpoint", b"a\n" * (5 * MiB), "/services/collector/raw"),
    ("10 MiB of control bytes, one raw line", b"\x01" * (10 * MiB), "/services/collector/raw"),
    ("a 10 MiB JSON event of control bytes", b'{"event": "' + b"\\u0001" * (MiB + MiB // 2) + b'"}',
     "/services/collector/event"),
])
def test_a_small_gzip_inflating_past_the_ratio_is_refused_and_leaves_nothing(client, case, plain, path):
    packed = gzip.compress(plain)

    answer = client.hec(packed, path=path, headers={"Content-Encoding": "gzip"})

    assert answer.status_code == 413, case
    assert answer.json()["code"] == 6
    assert "hec.max_decompression_ratio" in answer.json()["detail"]
    assert dlq_files(client) == []


def test_two_mib_of_empty_gzip_members_are_refused_past_the_member_cap(client):
    answer = client.hec(gzip.compress(b"") * (2 * MiB // 20), headers={"Content-Encoding": "gzip"})

    assert answer.status_code == 400
    assert answer.json() == {"text": "Invalid data format", "code": 6,
                                 "detail": "gzip body has more than 10000 members (the maximum)"}


def test_a_body_of_many_small_gzip_members_within_the_cap_is_taken(client):
    sshd = (Path(__file__).resolve().parents[1] / "events" / "sshd.log").read_text().splitlines()[0]
    member = gzip.compress(json.dumps({"event": sshd, "sourcetype": "linux_secure"}).encode() + b"\n")

    answer = client.hec(member * 2000, headers={"Content-Encoding": "gzip"})

    assert answer.json() == {"text": "Success", "code": 0}
    assert len(list(LocalBackend(client.service.settings.storage.data_dir).documents())) == 2000
