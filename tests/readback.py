"""Reading back what the service kept: the embedded store's documents and the DLQ's records.

The one place the verification suites (tests/functional/test_promise_properties.py and
tests/e2e/test_crash_recovery.py) count what was stored and what was dead-lettered, so the
counting follows the embedded store whatever its on-disk form: it goes through the `local`
backend's own reader, `documents()`, which yields `{"_id", "_index", "_source"}` per stored copy.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from telhawk_ingest.config import Settings
from telhawk_ingest.storage import make_backend

DLQ_GLOB = "failed_*.json"


class UnreadableRecord(AssertionError):
    """A stored document or a DLQ file that cannot be read back; the message names it."""


def stored_documents(data_dir: Path) -> list[dict[str, Any]]:
    """Every document the embedded store under `data_dir` holds, one entry per stored copy.

    A document stored twice appears twice. Raises UnreadableRecord when the store holds a record
    its own reader cannot parse (a torn write), naming the data directory.
    """
    settings = Settings.model_validate({"storage": {"backend": "local", "data_dir": str(data_dir)}})
    backend = make_backend(settings)
    try:
        return list(backend.documents())  # type: ignore[attr-defined]
    # A torn line of an append file (a JSONDecodeError is a ValueError) or a damaged database file.
    except (ValueError, sqlite3.DatabaseError) as exc:
        raise UnreadableRecord(f"a stored record under {data_dir} cannot be read back: {exc}") from exc
    finally:
        backend.close()


def dlq_records(dlq_path: Path) -> list[dict[str, Any]]:
    """Every DLQ record (`failed_*.json`) under `dlq_path`, oldest name first.

    Raises UnreadableRecord naming the first file that is not a JSON object.
    """
    records = []
    for path in sorted(Path(dlq_path).glob(DLQ_GLOB)):
        try:
            record = json.loads(path.read_bytes())
        except ValueError as exc:
            raise UnreadableRecord(f"DLQ file {path.name} does not parse: {exc}") from exc
        if not isinstance(record, dict):
            raise UnreadableRecord(f"DLQ file {path.name} holds {type(record).__name__}, not a record")
        records.append(record)
    return records
