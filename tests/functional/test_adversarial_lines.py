"""Lines built to be expensive, through the real ingest handler: refused per event with a clear
error, kept whole in the DLQ, and their neighbours stored."""

from __future__ import annotations

import json

from telhawk_ingest.normalizers.common import MAX_LINE_CHARS
from tests.functional.test_ingest import SSHD, stored_docs


def test_a_line_over_the_cap_is_dead_lettered_whole_and_its_neighbour_stored(client):
    long_line = SSHD + ": " + "K" * MAX_LINE_CHARS

    answer = client.hec(f"{long_line}\n{SSHD}\n", path="/services/collector/raw",
                        params={"sourcetype": "linux_secure"})

    assert answer.json()["code"] == 0
    assert len(stored_docs(client)) == 1
    [record] = client.dlq_records()
    assert record["reason"] == "normalization_failed"
    assert record["error"] == (f"log line is {len(long_line)} characters, over the {MAX_LINE_CHARS} "
                               "a line normalizer reads")
    assert record["envelope"]["payload"] == long_line


def test_the_quadratic_sshd_line_is_dead_lettered_with_the_reason(client):
    text = "Failed password for u from a port 1: " + "from a port 1: " * 1000 + "\nX"

    answer = client.hec(json.dumps({"event": text, "sourcetype": "linux_secure"}))

    assert answer.json()["code"] == 0
    [record] = client.dlq_records()
    assert record["error"].startswith("log line has a line break at character")
    assert record["envelope"]["payload"] == text


def test_an_asa_line_built_to_backtrack_is_dead_lettered_and_its_neighbour_stored(client):
    built = ("%ASA-6-302013: Built inbound TCP connection 8 for outside:198.51.100.7/51234 "
             "(198.51.100.7/51234) to inside:192.168.10.20/443 (203.0.113.20/443)")
    costly = "%ASA-4-106023: Deny tcp src outside:1.2.3.4/1" + "(a)" * 5000 + " dst"

    answer = client.hec(f"{costly}\n{built}\n", path="/services/collector/raw",
                        params={"sourcetype": "cisco:asa"})

    assert answer.json()["code"] == 0
    assert len(stored_docs(client)) == 1
    [record] = client.dlq_records()
    assert record["error"].startswith("cisco:asa message 106023: text not in Cisco's documented form")
    assert record["envelope"]["payload"] == costly
