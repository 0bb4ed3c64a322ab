"""Start-up objects frozen out of the collector's full passes (heap.py), each in a fresh process: the
test process itself keeps collecting everything (tests/conftest.py turns freezing off)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEC_TOKEN = "8f3b2c1a-1111-4222-8333-123456789abc"


def run_python(code: str, tmp_path: Path) -> dict:
    """Run `code` in a new interpreter from the project's root with a temporary DLQ and store; the
    JSON object it prints last."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("INGEST_")},
           "PYTHONPATH": str(ROOT), "INGEST_DLQ_BASE_PATH": str(tmp_path / "dlq"),
           "INGEST_STORAGE_DATA_DIR": str(tmp_path / "data"), "INGEST_HEC_TOKENS": f"test:{HEC_TOKEN}"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freezing_keeps_what_exists_and_still_collects_garbage_made_later(tmp_path: Path) -> None:
    result = run_python("""
        import gc, json, weakref
        from telhawk_ingest.heap import freeze_startup

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return weakref.ref(a)

        early = cycle()  # garbage already: collected before the freeze, not frozen
        frozen = freeze_startup()
        late = cycle()
        gc.collect()
        print(json.dumps({"frozen": frozen, "early_freed": early() is None, "late_freed": late() is None}))
    """, tmp_path)

    assert result["frozen"] > 1000  # the interpreter's and the modules' objects
    assert result["early_freed"] and result["late_freed"]


def test_the_emulator_freezes_a_worker_once_it_has_started(tmp_path: Path) -> None:
    result = run_python("""
        import asyncio, gc, json
        from pathlib import Path
        from local.emulator import build_dispatcher, read_functions

        dispatcher = build_dispatcher(read_functions(Path("template.yaml")))
        loaded = gc.get_freeze_count()
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive():
            return next(messages)

        async def send(message):
            pass

        asyncio.run(dispatcher({"type": "lifespan"}, receive, send))
        print(json.dumps({"loaded": loaded, "started": gc.get_freeze_count()}))
    """, tmp_path)

    assert result["loaded"] == 0  # loading the functions freezes nothing
    assert result["started"] > 10_000  # the service, its schema and validators, the frameworks


def test_a_lambda_entry_point_freezes_after_its_first_invocation_only(tmp_path: Path) -> None:
    result = run_python(f"""
        import base64, gc, json
        from functions.ingest_event import handler

        body = json.dumps({{"event": "hello", "sourcetype": "syslog"}}).encode()
        event = {{
            "version": "2.0", "routeKey": "POST /services/collector/event",
            "rawPath": "/services/collector/event", "rawQueryString": "",
            "headers": {{"authorization": "Splunk {HEC_TOKEN}"}},
            "requestContext": {{"http": {{"method": "POST", "path": "/services/collector/event",
                                          "sourceIp": "127.0.0.1", "protocol": "HTTP/1.1"}},
                               "stage": "$default"}},
            "body": base64.b64encode(body).decode(), "isBase64Encoded": True,
        }}
        counts = [gc.get_freeze_count()]
        codes = []
        for n in range(2):
            codes.append(json.loads(handler(event, None)["body"])["code"])
            counts.append(gc.get_freeze_count())
            if n == 0:
                made_later = [object()]  # made between the invocations: never frozen
        tracked = any(o is made_later for o in gc.get_objects())  # frozen ones are not listed
        print(json.dumps({{"counts": counts, "codes": codes, "later_still_collected": tracked}}))
    """, tmp_path)

    before, first, second = result["counts"]
    assert result["codes"] == [0, 0]
    assert before == 0 and first > 10_000
    # Frozen once: a later invocation freezes nothing more (frozen objects freed by their reference
    # counts leave the count, so it may drop).
    assert second <= first
    assert result["later_still_collected"]
