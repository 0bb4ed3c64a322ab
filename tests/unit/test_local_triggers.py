"""The emulator's queues, streams and schedules (local/triggers.py): what it reads from
template.yaml, and Lambda's partial-batch and redelivery semantics, against scripted handlers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from local import triggers as local_triggers
from local.emulator import read_functions
from local.triggers import LocalTriggers, Trigger, rate_seconds

ROOT = Path(__file__).resolve().parents[2]


def test_the_template_declares_a_queue_a_stream_and_two_schedules():
    triggers = {t.logical_id: t for spec in read_functions(ROOT / "template.yaml") for t in spec.triggers}

    queue = triggers["SqsIngest"]
    assert (queue.kind, queue.key, queue.source, queue.batch_size, queue.deliveries) == (
        "sqs", "IngestQueue", "local-ingest", 10, 5)
    stream = triggers["KinesisIngest"]
    assert (stream.kind, stream.source, stream.deliveries) == ("kinesis", "local-stream", 11)
    assert triggers["ScheduledRetention"].rate_seconds == 3600
    assert triggers["ScheduledReplay"].rate_seconds is None  # no expression by default: on demand


def test_rate_expressions():
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(1 day)") == 86400
    assert rate_seconds("cron(0 12 * * ? *)") is None


def scripted(tmp_path: Path, kind: str, answers: list) -> tuple[LocalTriggers, Trigger, list]:
    calls: list = []
    trigger = Trigger(kind, "Q", "Fn", tmp_path / "fn.py", "queue-name", batch_size=2, deliveries=3)
    local = LocalTriggers([trigger], spool=tmp_path / "queues")

    def handler(event, _context):
        calls.append([r.get("messageId") or r["kinesis"]["sequenceNumber"] for r in event["Records"]])
        answer = answers.pop(0) if answers else {"batchItemFailures": []}
        if isinstance(answer, Exception):
            raise answer
        return answer

    local._handlers[trigger.handler_source] = handler
    return local, trigger, calls


def test_only_the_reported_records_are_delivered_again_and_the_rest_redriven(tmp_path):
    local, trigger, calls = scripted(tmp_path, "sqs", [
        {"batchItemFailures": [{"itemIdentifier": "b"}]}, {"batchItemFailures": []},
        {"batchItemFailures": [{"itemIdentifier": "b"}]}, {"batchItemFailures": [{"itemIdentifier": "b"}]},
    ])
    answer = local.deliver(trigger, [{"id": i, "body": i} for i in "abc"])

    assert calls == [["a", "b"], ["c"], ["b"], ["b"]]  # batches of 2, then b alone, 3 deliveries
    assert answer["deliveries"] == 3 and answer["failed"] == ["b"]
    [moved] = answer["moved_to_dead_letters"]
    assert json.loads(Path(moved).read_text())["body"] == "b"
    assert Path(moved).parent == tmp_path / "queues" / "queue-name" / "dead-letters"


def test_a_handler_that_raises_fails_its_whole_batch(tmp_path):
    local, trigger, calls = scripted(tmp_path, "kinesis", [RuntimeError("boom")])
    answer = local.deliver(trigger, [{"data": "eA==", "sequence_number": "1"},
                                     {"data": "eQ==", "sequence_number": "2"}])

    assert calls == [["1", "2"], ["1", "2"]]
    assert answer["failed"] == [] and answer["deliveries"] == 2
    assert answer["invocations"][0] == {"error": "RuntimeError: boom"}


def test_sqs_records_carry_the_receive_count_and_string_attributes(tmp_path):
    seen: list = []
    trigger = Trigger("sqs", "Q", "Fn", tmp_path / "fn.py", "q", deliveries=2)
    local = LocalTriggers([trigger])
    local._handlers[trigger.handler_source] = lambda event, _c: (
        seen.append(event["Records"][0]) or {"batchItemFailures": [{"itemIdentifier": "m"}]})
    local.spool = tmp_path

    local.deliver(trigger, [{"id": "m", "body": "x", "attributes": {"sourcetype": "s"}}])

    assert [r["attributes"]["ApproximateReceiveCount"] for r in seen] == ["1", "2"]
    assert seen[0]["messageAttributes"]["sourcetype"]["stringValue"] == "s"
    assert seen[0]["eventSourceARN"] == "arn:aws:sqs:local:000000000000:q"


def test_a_stream_is_retried_from_the_first_failed_record_on(tmp_path):
    local, trigger, calls = scripted(tmp_path, "kinesis", [
        {"batchItemFailures": [{"itemIdentifier": "2"}]}, {"batchItemFailures": []},
    ])
    answer = local.deliver(trigger, [{"data": "eA==", "sequence_number": str(n)} for n in (1, 2, 3, 4)])

    # Batches of 2: [1, 2] fails at 2, so [3, 4] is not sent; then from 2 on.
    assert calls == [["1", "2"], ["2", "3"], ["4"]]
    assert answer["failed"] == [] and answer["deliveries"] == 2


def test_files_dropped_into_a_spool_are_delivered_once_and_removed(tmp_path):
    local, _trigger, calls = scripted(tmp_path, "sqs", [])
    incoming = tmp_path / "queues" / "queue-name" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "001.json").write_text(json.dumps({"messages": [{"id": "a", "body": "x"},
                                                                {"id": "b", "body": "y"}]}))
    (incoming / "002.json").write_text(json.dumps({"id": "c", "body": "z"}))  # one message alone
    (incoming / "003.json").write_text("not json")

    assert local.drain_spools() == 2
    assert calls == [["a", "b"], ["c"]]
    assert sorted(p.name for p in incoming.iterdir()) == []
    assert (tmp_path / "queues" / "queue-name" / "rejected" / "003.json").read_text() == "not json"
    assert local.drain_spools() == 0


def test_schedules_fire_on_their_rate_in_the_one_process_holding_the_lock(tmp_path, monkeypatch):
    import threading

    from local import triggers as local_triggers

    monkeypatch.setattr(local_triggers, "SPOOL_INTERVAL_S", 0.01)
    fired = threading.Event()
    times: list = []
    trigger = Trigger("schedule", "Every", "Every", tmp_path / "fn.py", "rate(1 minute)", rate_seconds=0.02)

    def handler(event, _context):
        times.append(event["time"])
        if len(times) >= 2:
            fired.set()

    first, second = LocalTriggers([trigger], spool=tmp_path), LocalTriggers([trigger], spool=tmp_path)
    for local in (first, second):
        local._handlers[trigger.handler_source] = handler
    lock = tmp_path / "state" / "local-schedules.lock"
    first.start_timers(lock)
    second.start_timers(lock)  # another worker: the lock is taken, it runs no timers
    try:
        assert fired.wait(10)
    finally:
        first.stop_timers()
    assert first._timer is not None and second._timer is None
    assert all(t.endswith("Z") for t in times)  # EventBridge's scheduled event time


def post(local: LocalTriggers, path: str, chunks: list[bytes], declared: int | None = None
         ) -> tuple[int, dict[str, str], dict]:
    """One POST straight into the endpoints' ASGI app: (status, headers, JSON answer)."""
    last = len(chunks) - 1
    pending = [{"type": "http.request", "body": c, "more_body": i < last} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return pending.pop(0)  # IndexError: more was read than the client sent

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    asyncio.run(local(scope, receive, send))
    return (sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]},
            json.loads(sent[1]["body"]))


def test_a_body_over_the_endpoints_limit_is_answered_413_reading_no_more_of_it(tmp_path, monkeypatch):
    local, trigger, calls = scripted(tmp_path, "sqs", [])
    monkeypatch.setattr(local_triggers, "MAX_BODY_BYTES", 100)
    message = json.dumps({"messages": [{"body": "x" * 40}]}).encode()

    declared = post(local, trigger.endpoint, [], declared=101)  # nothing of it is read
    streamed = post(local, trigger.endpoint, [b" " * 60, b" " * 60, b"never read"])
    taken = post(local, trigger.endpoint, [message[:30], message[30:]])

    assert declared[0] == streamed[0] == 413
    assert declared[1]["connection"] == streamed[1]["connection"] == "close"
    assert "larger than the maximum" in declared[2]["error"]
    assert (taken[0], taken[2]["records"], len(calls)) == (200, 1, 1)  # within the limit: delivered
    assert "connection" not in taken[1]
