"""A replaying process for the multi-process replay tests (tests/unit/test_replay_processes.py).

`python -m tests.replay_worker <dlq dir> <data dir> <mode> [gate file]`, from the repository root.
It builds a Service over the DLQ directory and the embedded store under <data dir>, waits for the
gate file when one is named (so that two workers start together), then replays every entry, one
bounded call after another, and prints the JSON list of the entry ids it stored.

Modes: `all` replays until the cursor is null; `hang` stores the first batch
(storage.bulk_max_events = 10), then hangs inside the second store call, with that batch
claimed, until it is killed; it prints `hanging` first.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telhawk_ingest.config import Settings
from telhawk_ingest.dlq import NO_FILTER, DeadLetterQueue, make_record
from telhawk_ingest.envelope import new_id, rfc3339
from telhawk_ingest.replay import Replayer, ReplayRequest
from telhawk_ingest.service import Service
from telhawk_ingest.storage import make_backend
from telhawk_ingest.storage.base import Item, Outcome, StorageBackend

BATCH = 10


OCSF_EVENT = (Path(__file__).parent / "events" / "ocsf_authentication.json").read_text()


def ocsf_envelope(n: int = 0) -> dict[str, Any]:
    """An envelope as ingest writes it for a valid OCSF event (SPEC §4), with a fresh UUIDv7 id."""
    return {"id": new_id(), "source": "dc1", "source_type": "ocsf:authentication", "format": "json",
            "payload": OCSF_EVENT.replace('"Logon failed for erin"', f'"Logon failed for user{n}"'),
            "attributes": {"host": "dc1", "index": None, "fields": {}, "token_name": "test"},
            "received_at": rfc3339()}


def write_entries(dlq: DeadLetterQueue, n: int, reason: str = "storage_failed",
                  error: str = "storage failed: connection refused") -> list[str]:
    """`n` DLQ entries of valid OCSF events that failed with `reason`; their entry ids."""
    return dlq.write_many([make_record(ocsf_envelope(i), reason, error, attempts=4) for i in range(n)])


def settings(dlq: Path, data: Path) -> Settings:
    return Settings.model_validate({
        "dlq": {"base_path": str(dlq), "min_free_bytes": 0},
        "storage": {"backend": "local", "data_dir": str(data), "bulk_max_events": BATCH},
        "core": {"max_retries": 0},
    })


class HangOnSecondStore:
    """The embedded store, except that its second `store` call never returns."""

    name = "local"

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.calls = 0

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        self.calls += 1
        if self.calls == 2:
            print("hanging", flush=True)
            time.sleep(3600)  # killed by the test long before
        return self.inner.store(batch)

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        self.inner.close()


def main(argv: list[str]) -> int:
    dlq, data, mode = Path(argv[0]), Path(argv[1]), argv[2]
    config = settings(dlq, data)
    backend = make_backend(config)
    svc = Service(config, backend=HangOnSecondStore(backend) if mode == "hang" else backend)
    if len(argv) > 3:
        gate = Path(argv[3])
        (gate.parent / f"ready-{data.name}").touch()
        while not gate.exists():
            time.sleep(0.005)
    replayer = Replayer(svc)
    stored: list[str] = []
    cursor = None
    while True:
        result = replayer.run(ReplayRequest(filter=NO_FILTER, cursor=cursor))
        stored.extend(result.ids)
        cursor = result.next_cursor
        if cursor is None:
            break
    svc.counters.flush(sync=True)
    print(json.dumps(stored), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
