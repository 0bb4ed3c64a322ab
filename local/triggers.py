"""The emulator's non-HTTP triggers: queues, streams and schedules from template.yaml, run locally
without any cloud SDK or cloud mock (SPEC §10, §12; README, "Triggers").

Here: reading each function's SQS, Kinesis and Schedule events from the template
(`read_triggers`), and `LocalTriggers`, the ASGI endpoints that deliver to those functions' Lambda
handlers in-process, as Lambda would:

- `POST /_local/queues/<queue logical id>` with `{"messages": [{"body": ..., "attributes": {...}}]}`
  sends messages to the queue: the emulator builds the SQS event Lambda would (records with
  `messageId`, `SentTimestamp`, string `messageAttributes`, the queue's ARN), invokes the function
  with batches of the event source's `BatchSize`, and delivers again the records the function
  names in `batchItemFailures` (all of them when it raises), up to the queue's
  `RedrivePolicy.maxReceiveCount` deliveries in all; what is still failing then is moved to the
  queue's dead-letter spool (`<DLQ folder>/../queues/<queue name>/dead-letters/<messageId>.json`),
  as SQS moves it to the redrive queue. The answer lists every delivery's response.
- `POST /_local/streams/<function logical id>` with `{"records": [{"data": <base64>}]}` does the
  same for a Kinesis event source (records with `sequenceNumber`, `approximateArrivalTimestamp`),
  except that a failure is retried as Lambda retries a shard: from the lowest failed sequence
  number on, later records included; records still failing after `MaximumRetryAttempts` + 1
  deliveries are reported as discarded.
- `POST /2015-03-31/functions/<function logical id>/invocations` invokes a function's Lambda
  handler with the posted event and answers what it returns (the Lambda Invoke API's path, as
  `sam local start-lambda` serves it): the published sample events can be posted as they are.
- `POST /_local/schedules/<function logical id>[?time=<RFC 3339 or unix seconds>]` fires a
  schedule now with an EventBridge scheduled event whose `time` is the given one (the run's
  clock: how tests inject time into the emulator's processes). `rate(...)` schedules also fire
  on their own, in one worker process only (the one holding `<state>/local-schedules.lock`);
  `cron(...)` ones only on demand.
- `GET /_local/triggers`: every trigger and its endpoint.
- Spool folders: a JSON file dropped into `<DLQ folder>/../queues/<queue or stream
  name>/incoming/` (locally `var/queues/local-ingest/incoming/`; write it elsewhere and rename it
  in) is delivered within a second as if posted to the queue's endpoint, then removed.

A Pub/Sub push subscription needs no endpoint here: its function has an HTTP route, served by
functions-framework as a CloudEvent function behind the push adapter (telhawk_ingest.triggers).
Local names: `${AWS::StackName}` is `local`, `${AWS::Region}` `local`, the account
`000000000000`, parameters their defaults; a Kinesis stream whose ARN parameter is empty is
`local-stream`.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.requests import ClientDisconnect

from telhawk_ingest.bodies import BodyTooLarge, receive_body

log = logging.getLogger(__name__)

LOCAL_STACK = "local"
LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"
LOCAL_STREAM = "local-stream"
PREFIX = "/_local/"
INVOKE_RE = re.compile(r"^/2015-03-31/functions/([A-Za-z0-9]+)/invocations$")
_RATE = re.compile(r"^rate\((\d++)\s++(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# How often the timer thread looks at the schedules and the spool folders (seconds).
SPOOL_INTERVAL_S = 1.0
# SQS's default when a queue has no redrive policy is to keep a message for ever; locally it is
# delivered this many times at most.
DEFAULT_MAX_RECEIVES = 5
# The largest body the local trigger endpoints read (posted messages, records, invocations); larger
# ones are answered 413 (before they are read when Content-Length says so). As the push route's.
MAX_BODY_BYTES = 16 * 1024 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Trigger:
    """One non-HTTP event of a function. `kind`: sqs, kinesis or schedule. `key`: the name in its
    endpoint (queue logical id, or function logical id). `source`: queue or stream name, or the
    schedule expression. `deliveries`: at most this many deliveries of a record."""

    kind: str
    key: str
    logical_id: str
    handler_source: Path
    source: str
    batch_size: int = 10
    deliveries: int = DEFAULT_MAX_RECEIVES
    rate_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        if self.kind == "schedule":
            return f"{PREFIX}schedules/{self.key}"
        return f"{PREFIX}{'queues' if self.kind == 'sqs' else 'streams'}/{self.key}"


def _resolve(value: Any, parameters: Mapping[str, Any]) -> Any:
    """A template value with Ref (to parameters and pseudo parameters) and Fn::Sub resolved locally."""
    pseudo = {"AWS::StackName": LOCAL_STACK, "AWS::Region": LOCAL_REGION, "AWS::AccountId": LOCAL_ACCOUNT,
              "AWS::Partition": "aws"}
    names = {**pseudo, **{k: (v or {}).get("Default", "") for k, v in parameters.items()}}
    if isinstance(value, dict) and "Ref" in value:
        return names.get(value["Ref"], value["Ref"])
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(names.get(m.group(1), m.group(0))), value["Fn::Sub"])
    return value


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of an EventBridge `rate(N unit)` expression; None for anything else."""
    match = _RATE.match(expression.strip())
    if not match:
        return None
    unit = match.group(2).rstrip("s")
    return int(match.group(1)) * _UNIT_SECONDS[unit]


def read_triggers(template: Mapping[str, Any], logical_id: str, props: Mapping[str, Any],
                  source: Path) -> list[Trigger]:
    """The SQS, Kinesis and Schedule events of one function (module docstring for local names)."""
    resources = template.get("Resources") or {}
    parameters = template.get("Parameters") or {}
    found = []
    for event in (props.get("Events") or {}).values():
        if not isinstance(event, dict):
            continue
        kind, ep = event.get("Type"), event.get("Properties") or {}
        if kind == "SQS":
            queue_ref = ep.get("Queue")
            queue_id = queue_ref.get("Fn::GetAtt", [""])[0] if isinstance(queue_ref, dict) else str(queue_ref)
            queue = (resources.get(queue_id) or {}).get("Properties") or {}
            name = str(_resolve(queue.get("QueueName"), parameters) or queue_id)
            receives = ((queue.get("RedrivePolicy") or {}).get("maxReceiveCount")) or DEFAULT_MAX_RECEIVES
            found.append(Trigger("sqs", queue_id, logical_id, source, name, int(ep.get("BatchSize", 10)),
                                 int(receives)))
        elif kind == "Kinesis":
            arn = str(_resolve(ep.get("Stream"), parameters) or "")
            name = arn.rsplit("/", 1)[-1] if arn else LOCAL_STREAM
            retries = ep.get("MaximumRetryAttempts", DEFAULT_MAX_RECEIVES - 1)
            found.append(Trigger("kinesis", logical_id, logical_id, source, name,
                                 int(ep.get("BatchSize", 100)), int(retries) + 1))
        elif kind == "Schedule":
            expression = str(_resolve(ep.get("Schedule"), parameters) or "")
            found.append(Trigger("schedule", logical_id, logical_id, source, expression,
                                 rate_seconds=rate_seconds(expression)))
    return found


# --- delivery --------------------------------------------------------------------------------


def _load_handler(source: Path) -> Callable[[Any, Any], Any]:
    """The `handler` of a function file, loaded once under a module name of its own."""
    name = f"telhawk_local_{source.stem}"
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {source}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler  # type: ignore[no-any-return]


def sqs_record(trigger: Trigger, message: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """An SQS record as Lambda's SQS event source builds it, from a posted message."""
    body = message.get("body")
    attributes = message.get("attributes") or {}
    return {
        "messageId": str(message.get("id") or uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(message.get("sent_ms") or now_ms),
                       "SenderId": "local", "ApproximateFirstReceiveTimestamp": str(now_ms)},
        "messageAttributes": {str(k): {"stringValue": str(v), "stringListValues": [], "binaryListValues": [],
                                       "dataType": "String"} for k, v in attributes.items()},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{trigger.source}",
        "awsRegion": LOCAL_REGION,
    }


def kinesis_record(trigger: Trigger, record: Mapping[str, Any], sequence: int, now: float) -> dict[str, Any]:
    """A Kinesis record as Lambda's Kinesis event source builds it, from a posted record."""
    number = str(record.get("sequence_number") or f"{int(now * 1000):020d}{sequence:06d}")
    return {
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": str(record.get("partition_key") or "1"),
                    "sequenceNumber": number, "data": record.get("data"),
                    "approximateArrivalTimestamp": record.get("arrival") or now},
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{LOCAL_ACCOUNT}:role/local",
        "awsRegion": LOCAL_REGION,
        "eventSourceARN": f"arn:aws:kinesis:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stream/{trigger.source}",
    }


def scheduled_event(trigger: Trigger, when: float) -> dict[str, Any]:
    """An EventBridge scheduled event (`detail-type` "Scheduled Event") whose `time` is `when`."""
    from telhawk_ingest.envelope import rfc3339

    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": LOCAL_ACCOUNT, "time": rfc3339(when), "region": LOCAL_REGION,
            "resources": [f"arn:aws:events:{LOCAL_REGION}:{LOCAL_ACCOUNT}:rule/{trigger.key}"], "detail": {}}


def _received(record: dict[str, Any], count: int) -> dict[str, Any]:
    """An SQS record as its `count`-th delivery carries it."""
    return {**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": str(count)}}


def _item_id(trigger: Trigger, record: Mapping[str, Any]) -> str:
    return str(record["messageId"] if trigger.kind == "sqs" else record["kinesis"]["sequenceNumber"])


class LocalTriggers:
    """The endpoints of the module docstring, for the triggers of every function in the template."""

    def __init__(self, triggers: list[Trigger], spool: Path | None = None) -> None:
        self.triggers = triggers
        self.by_endpoint = {t.endpoint: t for t in triggers}
        self.by_function = {t.logical_id: t for t in triggers}
        self.spool = spool
        self._handlers: dict[Path, Callable[[Any, Any], Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def handler(self, source: Path) -> Callable[[Any, Any], Any]:
        with self._lock:
            if source not in self._handlers:
                self._handlers[source] = _load_handler(source)
            return self._handlers[source]

    def owns(self, path: str) -> bool:
        return path.startswith(PREFIX) or INVOKE_RE.match(path) is not None

    # -- the ASGI side ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope.get("path") or "/", scope["method"]
        try:
            body = await receive_body(receive, MAX_BODY_BYTES, scope.get("headers") or ())
        except ClientDisconnect:
            return None
        except BodyTooLarge:  # answered without reading (the rest of) the body
            too_large = {"error": f"the body is larger than the maximum of {MAX_BODY_BYTES} bytes"}
            return await _respond(send, 413, too_large, close=True)
        query = dict(_query(scope))
        try:
            status, answer = await self._answer(method, path, body, query)
        except Exception as exc:
            log.exception("local trigger endpoint %s failed", path)
            status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        await _respond(send, status, answer)

    async def _answer(self, method: str, path: str, body: bytes, query: Mapping[str, str]
                      ) -> tuple[int, Any]:
        if path == f"{PREFIX}triggers" and method in ("GET", "HEAD"):
            return 200, {"triggers": [self.describe(t) for t in self.triggers]}
        invoke = INVOKE_RE.match(path)
        trigger = self.by_function.get(invoke.group(1)) if invoke else self.by_endpoint.get(path)
        if trigger is None:
            return 404, {"error": f"no local trigger at {path}",
                         "triggers": [t.endpoint for t in self.triggers]}
        if method != "POST":
            return 405, {"error": "use POST"}
        try:
            posted = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "the body must be JSON"}
        if invoke:
            return 200, await asyncio.to_thread(self.handler(trigger.handler_source), posted, None)
        if trigger.kind == "schedule":
            when = _time(query.get("time")) if query.get("time") else time.time()
            return 200, await asyncio.to_thread(self.fire, trigger, when)
        key = "messages" if trigger.kind == "sqs" else "records"
        items = posted.get(key) if isinstance(posted, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            wanted = f'{{"{key}": [{{"{"body" if key == "messages" else "data"}": ...}}]}}'
            return 400, {"error": f"expected {wanted}"}
        return 200, await asyncio.to_thread(self.deliver, trigger, items)

    def describe(self, trigger: Trigger) -> dict[str, Any]:
        return {"kind": trigger.kind, "function": trigger.logical_id, "source": trigger.source,
                "endpoint": trigger.endpoint, "rate_seconds": trigger.rate_seconds,
                "invoke": f"/2015-03-31/functions/{trigger.logical_id}/invocations"}

    # -- delivering ------------------------------------------------------------------------

    def deliver(self, trigger: Trigger, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Deliver posted messages or records with the event source's batching, partial-failure
        and redelivery semantics (module docstring); blocks until each record is kept or out of
        deliveries."""
        now = time.time()
        if trigger.kind == "sqs":
            records = [sqs_record(trigger, item, int(now * 1000)) for item in items]
        else:
            records = [kinesis_record(trigger, item, n, now) for n, item in enumerate(items)]
        handler = self.handler(trigger.handler_source)
        invocations: list[dict[str, Any]] = []
        pending = records
        received = 0
        while pending and received < trigger.deliveries:
            received += 1
            failed: list[dict[str, Any]] = []
            for start in range(0, len(pending), trigger.batch_size):
                batch = pending[start:start + trigger.batch_size]
                sent = [_received(record, received) for record in batch] if trigger.kind == "sqs" else batch
                try:
                    response = handler({"Records": sent}, None)
                    reported = (response or {}).get("batchItemFailures", [])
                    ids = {str(f.get("itemIdentifier")) for f in reported}
                except Exception as exc:  # the whole batch fails, as on Lambda
                    log.exception("local %s delivery to %s raised", trigger.kind, trigger.logical_id)
                    response = {"error": f"{type(exc).__name__}: {exc}"}
                    ids = {_item_id(trigger, r) for r in batch}
                invocations.append(response)
                if trigger.kind == "kinesis" and ids:
                    # Lambda retries the shard from the lowest failed sequence number: that record
                    # and everything after it, in this batch and the ones not sent yet.
                    first = min(i for i, r in enumerate(batch) if _item_id(trigger, r) in ids)
                    failed += pending[start + first:]
                    break
                failed += [r for r in batch if _item_id(trigger, r) in ids]
            pending = failed
        moved = [self._dead_letter(trigger, record) for record in pending] if trigger.kind == "sqs" else []
        return {"function": trigger.logical_id, "source": trigger.source, "records": len(records),
                "deliveries": received, "invocations": invocations,
                "failed": [_item_id(trigger, r) for r in pending],
                "moved_to_dead_letters": moved}

    def _dead_letter(self, trigger: Trigger, record: Mapping[str, Any]) -> str:
        """Move a record out of deliveries into the queue's dead-letter spool (SQS redrive)."""
        folder = self.spool_root() / trigger.source / "dead-letters"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{record['messageId']}.json"
        path.write_text(json.dumps(record))
        return str(path)

    def fire(self, trigger: Trigger, when: float) -> Any:
        return self.handler(trigger.handler_source)(scheduled_event(trigger, when), None)

    # -- schedules on their rate -----------------------------------------------------------

    def spool_root(self) -> Path:
        """Where queue and stream spools and dead letters live: `<DLQ folder>/../queues`."""
        from telhawk_ingest.service import service

        return self.spool or service().settings.dlq.base_path.parent / "queues"

    def drain_spools(self) -> int:
        """Deliver what was dropped into each queue's or stream's spool folder,
        `<spool root>/<queue or stream name>/incoming/*.json` (each file: `{"messages": [...]}` for
        a queue, `{"records": [...]}` for a stream, or one message or record), oldest name first,
        with `deliver`'s semantics; a delivered file is removed, one that is not JSON of that shape
        is moved to `rejected/`. Returns the files delivered."""
        done = 0
        for trigger in self.triggers:
            if trigger.kind == "schedule":
                continue
            folder = self.spool_root() / trigger.source
            try:
                names = sorted(n for n in os.listdir(folder / "incoming") if n.endswith(".json"))
            except FileNotFoundError:
                continue
            key = "messages" if trigger.kind == "sqs" else "records"
            for name in names:
                path = folder / "incoming" / name
                try:
                    posted = json.loads(path.read_bytes())
                except FileNotFoundError:
                    continue
                except ValueError:
                    posted = None
                items = posted.get(key, [posted]) if isinstance(posted, dict) else None
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    (folder / "rejected").mkdir(parents=True, exist_ok=True, mode=0o700)
                    os.replace(path, folder / "rejected" / name)
                    log.error("local spool: %s is not a JSON %s file; moved to rejected/", path, key)
                    continue
                self.deliver(trigger, items)
                path.unlink(missing_ok=True)
                done += 1
        return done

    def start_timers(self, lock_path: Path) -> None:
        """In a daemon thread of the one process that holds `lock_path` (flock: gunicorn's other
        workers skip it): fire `rate(...)` schedules on their rate, and drain the spools every
        SPOOL_INTERVAL_S."""
        timed = [t for t in self.triggers if t.kind == "schedule" and t.rate_seconds]
        spooled = any(t.kind != "schedule" for t in self.triggers)
        if not (timed or spooled) or self._timer is not None:
            return
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("local schedules: cannot open %s: %s", lock_path, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return  # another worker runs the timers
        self._timer = threading.Thread(target=self._run_timers, args=(timed, fd), daemon=True,
                                       name="local-schedules")
        self._timer.start()

    def _run_timers(self, timed: list[Trigger], fd: int) -> None:
        due = {t.key: time.monotonic() + (t.rate_seconds or 0) for t in timed}
        try:
            while not self._stop.wait(SPOOL_INTERVAL_S):
                for trigger in timed:
                    if time.monotonic() >= due[trigger.key]:
                        due[trigger.key] = time.monotonic() + (trigger.rate_seconds or 0)
                        try:
                            self.fire(trigger, time.time())
                        except Exception:
                            log.exception("local schedule %s failed", trigger.key)
                try:
                    self.drain_spools()
                except Exception:
                    log.exception("local spools: draining failed")
        finally:
            os.close(fd)

    def stop_timers(self) -> None:
        self._stop.set()


async def _respond(send: Send, status: int, answer: Any, close: bool = False) -> None:
    data = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:  # answered without reading the body: the connection cannot take another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _query(scope: Mapping[str, Any]) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"")
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []


def _time(text: str) -> float:
    from telhawk_ingest.envelope import parse_time

    return parse_time(text)
