"""Events per second through the queue paths against HTTP ingest, in the same run, same emulator.

Three paths, each carrying 100 OCSF events (~1 KB each) per request, alternated in rounds so that
machine noise falls on all of them alike:
- `http`: POST /services/collector/event, one HEC batch of 100 events;
- `sqs`: POST /_local/queues/IngestQueue, 10 messages of 10 events each (`hec_format=event`),
  which the emulator delivers to the SQS function's Lambda handler as one batch: each record is
  stored (or dead-lettered) on its own before the batch answers, as on Lambda;
- `pubsub`: POST /triggers/pubsub, one Pub/Sub push body of 100 events (base64 data), through
  the push adapter and functions-framework's CloudEvent function.
`CONNECTIONS` client threads per path, one request per connection (as curl would make them).
"""

from __future__ import annotations

import base64
import threading
import time
from itertools import count

import orjson

from . import events
from .common import Context, fmt_int, median, say, table
from .server import HEC_TOKEN, Server

EVENTS_PER_REQUEST = 100
MESSAGES_PER_BATCH = 10
CONNECTIONS = 4
SCOPES = "{local-ingest: {token_name: bench-queue, default_index: main}, bench: {token_name: bench-pubsub}}"


def _payloads() -> dict[str, tuple[str, list[bytes], dict[str, str]]]:
    """path name -> (URL path, request bodies, headers)."""
    objects = events.ocsf_objects(EVENTS_PER_REQUEST * 4)
    hec = [b"\n".join(orjson.dumps(o) for o in objects[k::4]) for k in range(4)]
    per_message = EVENTS_PER_REQUEST // MESSAGES_PER_BATCH

    def message(k: int, m: int) -> dict:
        chunk = objects[k::4][m * per_message:(m + 1) * per_message]
        body = b"\n".join(orjson.dumps(o) for o in chunk).decode()
        return {"body": body, "attributes": {"hec_format": "event"}}

    queue = [orjson.dumps({"messages": [message(k, m) for m in range(MESSAGES_PER_BATCH)]}) for k in range(4)]
    return {
        "http": ("/services/collector/event", hec, {"Authorization": f"Splunk {HEC_TOKEN}"}),
        "sqs": ("/_local/queues/IngestQueue", queue, {"Content-Type": "application/json"}),
        "pubsub": ("/triggers/pubsub", hec, {"Content-Type": "application/json"}),
    }


_ids = count()


def _push(body: bytes) -> bytes:
    """A Pub/Sub push body around `body`, with a message id of its own."""
    message = {"data": base64.b64encode(body).decode(), "attributes": {"hec_format": "event"},
               "messageId": f"bench-{next(_ids)}", "publishTime": "2026-01-01T00:00:00Z"}
    return orjson.dumps({"message": message, "subscription": "projects/bench/subscriptions/bench"})


def _load(server: Server, name: str, path: str, bodies: list[bytes], headers: dict[str, str],
          seconds: float) -> float:
    """Events per second over `seconds` with CONNECTIONS threads; failures raise."""
    done = [0]
    errors: list[str] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(offset: int) -> None:
        i = offset
        while time.monotonic() < stop and not errors:
            body = bodies[i % len(bodies)]
            status, answer = server.request("POST", path, _push(body) if name == "pubsub" else body, headers,
                                            timeout=120)
            if status != 200 or (name == "sqs" and orjson.loads(answer)["failed"]):
                errors.append(f"{name}: {status} {answer[:200]!r}")
                return
            with lock:
                done[0] += EVENTS_PER_REQUEST
            i += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return done[0] / (time.monotonic() - started)


def run(ctx: Context) -> None:
    say("queue: events/s through the SQS and Pub/Sub paths against HTTP ingest (100 OCSF events per request, "
        f"{CONNECTIONS} connections)")
    server = ctx.pool.get(INGEST_TRIGGERS_SUBSCRIPTIONS=SCOPES)
    payloads = _payloads()
    rounds = 2 if ctx.quick else 3
    seconds = max(1.0, ctx.seconds / 2)
    for name, (path, bodies, headers) in payloads.items():  # warm up every path once
        _load(server, name, path, bodies, headers, min(ctx.warmup, 1.0) or 0.3)
    rates: dict[str, list[float]] = {name: [] for name in payloads}
    for _ in range(rounds):
        for name, (path, bodies, headers) in payloads.items():
            rates[name].append(_load(server, name, path, bodies, headers, seconds))
    http = median(rates["http"])
    rows = [[name, fmt_int(median(r)), f"{median(r) / http:.2f}"] for name, r in rates.items()]
    say(table(rows, ["path", "events/s (median)", "vs http"]))
    for name, r in rates.items():
        ctx.add(f"queue: {name} events/s", fmt_int(median(r)))
    server.clear_data()
