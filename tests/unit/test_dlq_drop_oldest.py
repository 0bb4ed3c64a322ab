"""dlq.full_policy: drop_oldest at the DLQ itself: two DLQ objects sharing a folder and a ledger (as
two processes do) keep it within its limit, delete oldest first, and report every deletion."""

from __future__ import annotations

import threading
from pathlib import Path

from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue
from telhawk_ingest.stats import Counters
from tests.unit.test_dlq import record

LIMIT = 5


def dropping(base: Path, ledger: Counters, heard: list[str]) -> DeadLetterQueue:
    settings = DlqSettings(base_path=base, min_free_bytes=0, max_pending_files=LIMIT,
                           full_policy="drop_oldest")
    return DeadLetterQueue(settings, ledger=ledger, on_drop=heard.extend)


def test_two_dlqs_on_one_folder_stay_within_the_limit_and_report_each_entry_they_drop(tmp_path):
    base = tmp_path / "dlq"
    ledger = Counters(tmp_path / "counters")
    heard: list[str] = []
    first, second = dropping(base, ledger, heard), dropping(base, ledger, heard)
    written: list[str] = []
    lock = threading.Lock()

    def writer(dlq: DeadLetterQueue, start: int) -> None:
        for n in range(start, start + 15):
            entry_id = dlq.write(record(n), now=1_700_000_000 + n)
            with lock:
                written.append(entry_id)

    threads = [threading.Thread(target=writer, args=(q, i * 100)) for i, q in enumerate((first, second))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    left = sorted(p.stem for p in base.glob("failed_*.json"))
    assert len(written) == 60  # every write was taken: room was made, never a refusal
    assert len(left) <= LIMIT
    assert sorted(heard) == sorted(set(written) - set(left))  # every missing entry was reported, once
    assert len(heard) == len(set(heard))


def test_the_oldest_go_first(tmp_path):
    heard: list[str] = []
    dlq = dropping(tmp_path / "dlq", Counters(tmp_path / "counters"), heard)
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(LIMIT + 2)]

    assert heard == ids[:2]
    assert sorted(p.stem for p in dlq.path.glob("failed_*.json")) == ids[2:]
    assert dlq.refusal() is None and dlq.accepting()
