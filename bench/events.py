"""What the benchmarks send: HEC bodies of realistic events that get stored, and DLQ records.

- `ocsf`: the OCSF 1.5.0 samples of tests/events (authentication, detection finding, network
  activity), sourcetype `ocsf`, each padded with a longer `message` to about 1 KB per HEC object.
- `sshd`: the sshd/PAM lines of tests/events/sshd.log, sourcetype `linux_secure`: short lines
  (about 150 B per HEC object) that the service normalizes into OCSF events of about 0.9 KB.

Every body is newline-delimited concatenated objects, as forwarders send them, and every event
normalizes and validates, so the load measures the success path (the benchmark checks afterwards
that nothing was dead-lettered).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "tests" / "events"
OCSF_SAMPLES = ("ocsf_authentication.json", "ocsf_detection_finding.json", "ocsf_network_activity.json")
TARGET_OBJECT_BYTES = 1024
KINDS = ("ocsf", "sshd")


def _pad_message(event: dict, envelope: dict, size: int) -> None:
    """Lengthen `message` until the serialized HEC object is about `size` bytes."""
    base = event.get("message") or "bench event"
    event["message"] = base
    missing = size - len(orjson.dumps(envelope))
    if missing > 0:
        filler = " ".join(f"k{i}=v{i}" for i in range(missing))  # word-like, not one long run
        event["message"] = (base + " " + filler)[: len(base) + missing]


def ocsf_objects(count: int, when: float | None = None) -> list[dict]:
    """`count` HEC objects carrying OCSF events, rotating through the samples, ~1 KB each."""
    samples = [orjson.loads((EVENTS / name).read_bytes()) for name in OCSF_SAMPLES]
    when = time.time() if when is None else when
    out = []
    for i in range(count):
        event = orjson.loads(orjson.dumps(samples[i % len(samples)]))
        event.setdefault("metadata", {})["uid"] = f"bench-{i:06d}"
        envelope = {"event": event, "sourcetype": "ocsf", "time": round(when, 3)}
        _pad_message(event, envelope, TARGET_OBJECT_BYTES)
        out.append(envelope)
    return out


def sshd_objects(count: int, when: float | None = None) -> list[dict]:
    """`count` HEC objects carrying sshd/PAM syslog lines, rotating through tests/events/sshd.log."""
    lines = [line for line in (EVENTS / "sshd.log").read_text().splitlines() if line.strip()]
    when = time.time() if when is None else when
    return [
        {"event": lines[i % len(lines)], "sourcetype": "linux_secure", "host": "bench-host",
         "time": round(when, 3)}
        for i in range(count)
    ]


def objects(kind: str, count: int) -> list[dict]:
    return ocsf_objects(count) if kind == "ocsf" else sshd_objects(count)


def bodies(kind: str, per_body: int, distinct: int = 8) -> list[bytes]:
    """`distinct` request bodies of `per_body` newline-delimited HEC objects each."""
    pool = objects(kind, per_body * distinct)
    return [
        b"\n".join(orjson.dumps(obj) for obj in pool[k * per_body : (k + 1) * per_body])
        for k in range(distinct)
    ]


def mean_object_bytes(body: bytes, per_body: int) -> float:
    return (len(body) - (per_body - 1)) / per_body


# --- DLQ records ---------------------------------------------------------------------------


def dlq_record(size: int = TARGET_OBJECT_BYTES) -> dict:
    """A validation_failed DLQ record (its `id` still empty) serialized to about `size` bytes."""
    from telhawk_ingest.dlq import make_record
    from telhawk_ingest.envelope import new_id, rfc3339

    event = orjson.loads((EVENTS / OCSF_SAMPLES[1]).read_bytes())
    event["class_uid"] = 999999
    event["message"] = "bench"
    envelope = {
        "id": new_id(),
        "source": "http:bench",
        "source_type": "ocsf",
        "format": "json",
        "payload": "",
        "attributes": {"host": "bench-host", "index": "main", "fields": {}, "token_name": "bench"},
        "received_at": rfc3339(),
    }
    record = make_record(envelope, "validation_failed", "class_uid: 999999 is not an OCSF 1.5.0 class", 1,
                         {"path": "class_uid"})
    record["id"] = f"failed_{int(time.time())}_{os.urandom(16).hex()}"  # the length it will have
    envelope["payload"] = orjson.dumps(event).decode()
    missing = size - len(orjson.dumps(record))
    if missing > 0:
        event["message"] = ("bench " + " ".join(f"k{i}=v{i}" for i in range(missing)))[: 5 + missing]
        envelope["payload"] = orjson.dumps(event).decode()
    record["id"] = ""
    return record
