"""Real write failures under the local backend, run in a process of their own.

`python -m tests.local_faults MODE DATA_DIR` stores batches, makes the disk refuse writes for real
in the middle, lets it take them again, stores more, resends the refused batch as retry.py would,
then reads every row back and prints a JSON report on stdout. Modes:

- `fsize`: RLIMIT_FSIZE just above the WAL's size (SIGXFSZ ignored), so the WAL write of a big
  batch fails with EFBIG half way; then the limit is lifted.
- `full`: DATA_DIR is on a small filesystem of its own (a tmpfs mounted by the caller); a filler
  file takes every free block, so the big batch fails with ENOSPC; then the filler is deleted.
- `readonly`: as `full`, but the filesystem is remounted read-only, then read-write again (Linux
  remounts read-only only without files open for writing, so the backend is closed first; its
  next store opens the database again).

The test (tests/unit/test_local_storage.py) asserts on the report: every acknowledged id is
there exactly once, nothing refused is there before its resend, and the database is intact.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from telhawk_ingest.envelope import new_id
from telhawk_ingest.storage.base import Item
from telhawk_ingest.storage.local import DB_NAME, LocalBackend


def batch(count: int, pad: int) -> list[Item]:
    return [Item(new_id(), "main", time.time(), {"n": n, "pad": "x" * pad}) for n in range(count)]


def fill(directory: Path) -> Path:
    """A file taking every free block of `directory`'s filesystem."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def main(mode: str, data_dir: Path) -> dict[str, Any]:
    backend = LocalBackend(data_dir)
    acked: list[str] = []
    report: dict[str, Any] = {"mode": mode}

    def store(items: list[Item]) -> list[str]:
        outcomes = backend.store(items)
        acked.extend(item.id for item, outcome in zip(items, outcomes, strict=True) if outcome.stored)
        return sorted({o.status.value for o in outcomes})

    report["before"] = store(batch(20, 500))
    big = batch(200, 2000)  # about 400 KB of WAL: past any limit set below
    if mode == "fsize":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() fails with EFBIG
        wal = Path(f"{data_dir / DB_NAME}-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (wal.stat().st_size + 8192, resource.RLIM_INFINITY))
    elif mode == "full":
        filler = fill(data_dir.parent)
    else:
        backend.close()
        remount(data_dir.parent, "ro")
    report["healthy_during"] = backend.healthy()
    first = backend.store(big)
    report["during"] = sorted({o.status.value for o in first})
    report["error"] = first[0].error
    report["stored_during"] = [item.id for item, o in zip(big, first, strict=True) if o.stored]
    if mode == "fsize":
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    elif mode == "full":
        filler.unlink()
    else:
        remount(data_dir.parent, "rw")
    report["healthy_after"] = backend.healthy()
    report["after"] = store(batch(30, 500))
    refused = [item.id for item, o in zip(big, first, strict=True) if not o.stored]
    with sqlite3.connect(data_dir / DB_NAME) as conn:
        present = {row[0] for row in conn.execute("SELECT id FROM events")}
    report["refused_present_before_resend"] = sorted(set(refused) & present)
    report["resend"] = store(big)
    backend.close()
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        report["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
        ids = [row[0] for row in conn.execute("SELECT id FROM events")]
        # Every document must still parse: a torn write would show here first.
        conn.execute("SELECT count(json_extract(document, '$.n')) FROM events").fetchone()
    finally:
        conn.close()
    report["acked"] = len(acked)
    report["missing"] = sorted(set(acked) - set(ids))
    report["duplicates"] = len(ids) - len(set(ids))
    report["rows"] = len(ids)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))), flush=True)
    os._exit(0)  # daemon writer threads are idle; nothing is left to flush
