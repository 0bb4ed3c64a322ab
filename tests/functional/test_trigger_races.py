"""Parallel Lambda invocations handed the same SQS record (a visibility timeout that ran out while
the first was still running): each reports the record kept, one DLQ entry is written, and it is
counted once (SPEC §7, §12). Real DLQ files, the real handler."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from telhawk_ingest.triggers import handle_sqs

ROOT = Path(__file__).resolve().parents[2]
SCOPES = {"subscriptions": {"my-queue": {"token_name": "sqs-queue", "default_index": "main"}}}


def test_parallel_invocations_with_one_failing_record_report_no_failures_and_write_one_entry(make_client):
    client = make_client(triggers=SCOPES)
    event = json.loads((ROOT / "tests" / "events" / "aws" / "sqs_event.json").read_text())
    event["Records"] = event["Records"][:1]  # "Test message.": no normalizer takes it
    barrier = threading.Barrier(8)
    answers: list[dict] = []

    def invoke() -> None:
        barrier.wait()
        answers.append(handle_sqs(event, client.service))

    threads = [threading.Thread(target=invoke) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [{"batchItemFailures": []}] * 8
    [record] = client.dlq_records()
    assert record["envelope"]["attributes"]["message_id"] == event["Records"][0]["messageId"]
    client.service.counters.flush()
    totals = client.service.counters.totals()
    assert totals["trigger_sqs_failures"] == 0
    assert totals["dlq_normalization_failed"] == 1
