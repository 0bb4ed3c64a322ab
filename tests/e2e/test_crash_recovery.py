"""Crash recovery over real HTTP: the served product SIGKILLed mid-load, restarted, read back.

The emulator (gunicorn master and workers, each in the process group conftest starts it in) runs
with the embedded store and the DLQ in temporary folders. A few client threads post batches of
events that each carry a unique marker: sshd lines and OCSF events, which are stored, and events
of a sourcetype without a normalizer, which are dead-lettered. Meanwhile the whole process group
is killed with SIGKILL a few times, as a power cut or the OOM killer would, and restarted.

SPEC §2: every event of a request answered 200 is found afterwards exactly once, stored or
dead-lettered, never both and never twice; every DLQ file parses and every stored record reads.
A request that got no answer was not acknowledged: the client may send its events again (here
it sends fresh ones instead), so such an event may be anywhere or nowhere, but never twice.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.readback import dlq_records, stored_documents

pytestmark = pytest.mark.e2e

EVENTS = Path(__file__).resolve().parents[1] / "events"
OCSF_AUTH: dict[str, Any] = json.loads((EVENTS / "ocsf_authentication.json").read_text())
MARKER = re.compile(r"m\d{2}\d{7}x")

KILLS = 3
CLIENTS = 3
LOAD_BEFORE_KILL_S = (1.0, 1.6, 1.3)  # seconds of load before each kill, fixed for repeatability
LOAD_AFTER_LAST_S = 1.0
MAX_REQUESTS_PER_CLIENT = 3000
DEADLINE_S = 50.0  # the whole load phase, restarts included


def marker(client: int, number: int) -> str:
    """Unique per event; fixed width, so no marker is part of another."""
    return f"m{client:02d}{number:07d}x"


def event_for(mark: str, kind: int) -> dict[str, Any]:
    """A HEC event carrying `mark`: 0 an sshd line, 1 an OCSF event (both stored), 2 dead-lettered."""
    if kind == 0:
        line = f"Nov  4 01:02:03 web01 sshd[1234]: Accepted password for u{mark} from 10.0.0.5 port 22 ssh2"
        return {"event": line, "sourcetype": "linux_secure", "host": "web01"}
    if kind == 1:
        event = {**OCSF_AUTH, "metadata": {**OCSF_AUTH["metadata"], "uid": mark}}
        return {"event": event, "sourcetype": "ocsf"}
    return {"event": {"msg": f"Built outbound TCP connection {mark}"}, "sourcetype": "cisco_asa"}


@dataclass
class Ledger:
    """What the clients were told: markers acknowledged (200), markers sent without a 200."""

    acked: set[str] = field(default_factory=set)
    unacked: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, marks: list[str], outcome: str, acked: bool) -> None:
        with self.lock:
            (self.acked if acked else self.unacked).update(marks)
            self.answers[outcome] += 1


def post_load(emu: Any, number: int, ledger: Ledger, stop: threading.Event) -> None:
    """One client posting until told to stop: batches of 1 to 9 events, every tenth one of 40 (a
    write that spans several pages), each event with a fresh marker; never a resend."""
    sequence = itertools.count()
    with httpx.Client(trust_env=False, timeout=10.0) as http:
        for request in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set():
                return
            size = 40 if request % 10 == 9 else 1 + (request * 7 + number) % 9
            marks = [marker(number, next(sequence)) for _ in range(size)]
            body = "\n".join(json.dumps(event_for(m, (request + i) % 3)) for i, m in enumerate(marks))
            try:
                answer = http.post(f"{emu.url}/services/collector/event", content=body,
                                   headers={"Authorization": f"Splunk {emu.hec_token}"})
            except httpx.TransportError as exc:
                ledger.record(marks, f"no answer ({type(exc).__name__})", acked=False)
                time.sleep(0.05)  # the service is down: wait for it as a client would
                continue
            code = answer.json().get("code") if answer.headers.get("content-type", "").startswith(
                "application/json") else None
            ledger.record(marks, f"HTTP {answer.status_code} code {code}", acked=answer.status_code == 200)


def kill_group(emu: Any) -> None:
    """SIGKILL the emulator's whole process group, master and workers at once, and reap the master."""
    process, emu.process = emu.process, None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def where_markers_are(emu: Any) -> tuple[dict[str, list[str]], int, int]:
    """marker -> places it was found ("stored"/"dlq", once per record), and the record counts."""
    places: dict[str, list[str]] = defaultdict(list)
    documents = stored_documents(emu.data_dir)
    records = dlq_records(emu.dlq_path)
    for place, texts in (
        ("stored", [orjson.dumps(doc["_source"]).decode() for doc in documents]),
        ("dlq", [record["envelope"]["payload"] for record in records]),
    ):
        for text in texts:
            found = set(MARKER.findall(text))
            assert len(found) == 1, f"a {place} record carries {len(found)} markers, not one: {text[:300]}"
            places[found.pop()].append(place)
    return places, len(documents), len(records)


def test_sigkill_of_the_whole_service_under_load_loses_and_duplicates_no_acknowledged_event(
    start_emulator, record_property
):
    emu = start_emulator(workers=2, threads=4, INGEST_STORAGE_BACKEND="local", INGEST_DLQ_MIN_FREE_BYTES="0")
    assert emu.process is not None and os.getpgid(emu.process.pid) == emu.process.pid, (
        "the emulator must lead its own process group, so that killpg reaches its workers too"
    )
    ledger, stop = Ledger(), threading.Event()
    clients = [threading.Thread(target=post_load, args=(emu, n, ledger, stop), daemon=True)
               for n in range(CLIENTS)]
    started = time.monotonic()
    acked_between_kills = []
    try:
        for thread in clients:
            thread.start()
        for pause in LOAD_BEFORE_KILL_S[:KILLS]:
            before = len(ledger.acked)
            time.sleep(pause)
            acked_between_kills.append(len(ledger.acked) - before)
            kill_group(emu)
            assert time.monotonic() - started < DEADLINE_S, "the load phase ran past its time bound"
            emu.start()
        time.sleep(LOAD_AFTER_LAST_S)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in clients), "a client thread did not stop"
    emu.stop()  # graceful: in-flight requests finish; read back at rest

    places, stored, dead = where_markers_are(emu)
    record_property("answers", dict(ledger.answers))
    record_property("acknowledged", len(ledger.acked))
    print(f"answers {dict(ledger.answers)}; acknowledged {len(ledger.acked)}, not acknowledged "
          f"{len(ledger.unacked)}; stored {stored}, dead-lettered {dead}; acknowledged per phase "
          f"{acked_between_kills}")

    # Every phase acknowledged something: each restart brought the service back.
    assert all(n > 0 for n in acked_between_kills), f"acknowledged per phase: {acked_between_kills}"
    bad_answers = {k: n for k, n in ledger.answers.items()
                   if k.startswith("HTTP") and k not in ("HTTP 200 code 0", "HTTP 503 code 9")}
    assert not bad_answers, f"answers other than 200 and 503 code 9: {bad_answers}"
    unknown = set(places) - ledger.acked - ledger.unacked
    assert not unknown, f"markers never sent were found: {sorted(unknown)[:10]}"
    lost = sorted(m for m in ledger.acked if m not in places)
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:10]}"
    twice = {m: p for m, p in places.items() if len(p) > 1}
    assert not twice, f"{len(twice)} events kept more than once, e.g. {dict(list(twice.items())[:10])}"
