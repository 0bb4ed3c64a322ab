"""Deliveries of one event-triggered message racing to dead-letter the same entry (SPEC §7, §12):
every one succeeds, one file is written, and the ledger counts it once."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, _temp_names, make_record
from telhawk_ingest.errors import DLQUnavailable
from telhawk_ingest.stats import COUNTERS, Counters
from telhawk_ingest.triggers import envelope_id

EID = envelope_id("pubsub", "local-logs", "race-1", 1_796_032_800_000, 0)


def triggered_record() -> dict:
    envelope = {"id": EID, "source": "s", "source_type": "x", "format": "raw", "payload": "@@@bad",
                "attributes": {}, "received_at": "2026-11-30T10:00:00.000Z"}
    return make_record(envelope, "decode_failed", "data is not base64")


def dead_letter(dlq: DeadLetterQueue) -> tuple[list[str], set[str]]:
    """One delivery's write: the ids it answers with, and those it found already in place."""
    with dlq.reserve([triggered_record()], named=True) as held:
        return held.write(), set(held.existing)


def entries(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("failed_"))


def test_threads_writing_one_named_entry_at_once_all_succeed_with_one_file(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    barrier = threading.Barrier(10)
    answers: list[tuple[list[str], set[str]]] = []
    errors: list[Exception] = []

    def deliver() -> None:
        barrier.wait()
        try:
            answers.append(dead_letter(dlq))
        except DLQUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    [stem] = {ids[0] for ids, _ in answers}
    assert entries(tmp_path / "dlq") == [f"{stem}.json"]
    assert sum(1 for _, existing in answers if not existing) == 1  # one delivery wrote it
    assert _temp_names(os.listdir(tmp_path / "dlq")) == []
    ledger = dict(zip(("admitted", "written", "returned"), _ledger(dlq), strict=True))
    assert ledger == {"admitted": 10, "written": 1, "returned": 9}
    assert dlq.stats()["pending_files"] == 1 and dlq.stats()["temp_files"] == 0


def _ledger(dlq: DeadLetterQueue) -> list[int]:
    totals = [0] * len(COUNTERS)
    for _, values in dlq._ledger.snapshot().values():
        totals = [a + b for a, b in zip(totals, values, strict=True)]
    at = {name: totals[COUNTERS.index(name)] for name in COUNTERS}
    return [at["dlq_files_admitted"], at["dlq_files_written"], at["dlq_files_returned"]]


def _process_delivery(directory: str, counters: str, barrier: multiprocessing.synchronize.Barrier,
                      out: multiprocessing.Queue) -> None:
    dlq = DeadLetterQueue(DlqSettings(base_path=directory, min_free_bytes=0, max_pending_files=100),
                          ledger=Counters(Path(counters)))
    results = []
    inner = threading.Barrier(3)

    def deliver() -> None:
        inner.wait()
        try:
            ids, existing = dead_letter(dlq)
            results.append(("ok", ids[0], bool(existing)))
        except DLQUnavailable as exc:
            results.append(("error", str(exc), False))

    barrier.wait()
    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    dlq._ledger.flush()
    out.put(results)


def test_processes_writing_one_named_entry_at_once_all_succeed_with_one_file(tmp_path):
    context = multiprocessing.get_context("fork")
    directory, counters = tmp_path / "dlq", tmp_path / "counters"
    DeadLetterQueue(DlqSettings(base_path=directory, min_free_bytes=0))  # the folder exists first
    barrier, out = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_process_delivery, args=(str(directory), str(counters), barrier, out))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [item for _ in workers for item in out.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)

    assert [r for r in results if r[0] != "ok"] == []
    [stem] = {r[1] for r in results}
    assert entries(directory) == [f"{stem}.json"]
    assert sum(1 for r in results if not r[2]) == 1
    assert _temp_names(os.listdir(directory)) == []
    totals = Counters(counters).totals()
    ledger = [totals[f"dlq_files_{name}"] for name in ("admitted", "written", "returned")]
    assert ledger == [12, 1, 11]


def test_a_redelivery_with_one_entry_new_returns_the_bytes_of_the_one_already_written(tmp_path):
    counters = Counters(tmp_path / "counters")
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0), ledger=counters)
    first = triggered_record()
    dead_letter(dlq)
    second = make_record({**first["envelope"], "id": envelope_id("pubsub", "local-logs", "race-1",
                                                                 1_796_032_800_000, 1), "payload": "x" * 500},
                         "decode_failed", "data is not base64")
    with dlq.reserve([triggered_record(), second], named=True) as held:
        ids = held.write()
        assert held.existing == {ids[0]}

    sizes = [(dlq.path / f"{i}.json").stat().st_size for i in ids]
    totals = counters.totals()
    assert [totals[f"dlq_{kind}_returned"] for kind in ("files", "bytes")] == [1, sizes[0]]
    assert [totals[f"dlq_{kind}_written"] for kind in ("files", "bytes")] == [2, sum(sizes)]


def test_a_named_entrys_temp_file_is_counted_and_removed_when_stale(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    stem = f"failed_1796032800_{EID}"
    left = tmp_path / "dlq" / f".tmp-{stem}.0123456789abcdef"
    left.write_bytes(b"{")
    assert _temp_names(os.listdir(tmp_path / "dlq")) == [left.name]
    assert dlq.stats()["temp_files"] == 1
    os.utime(left, (1_000_000, 1_000_000))
    assert dlq.remove_stale_temp_files() == [left.name]
    assert not left.exists()


def test_the_temp_files_writers_use_are_counted_and_removed_when_a_killed_writer_leaves_them(
        tmp_path, monkeypatch):
    """Each delivery of a named entry writes its own temp file (deliveries racing never share one);
    whatever temp name a writer uses, one left by a writer killed before its rename is counted in
    health and removed at start-up once stale."""
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))
    used: list[str] = []
    real = dlq_module.write_synced

    def spy(path: Path, data: bytes) -> int:
        used.append(path.name)
        return real(path, data)

    monkeypatch.setattr(dlq_module, "write_synced", spy)
    dead_letter(dlq)
    dead_letter(dlq)
    dlq.write(make_record({"source_type": "x"}, "storage_failed", "503"))

    assert len(set(used)) == 3 and all(name.startswith(".tmp-failed_") for name in used)
    for name in used:
        (dlq.path / name).write_bytes(b"{")
        os.utime(dlq.path / name, (1_000_000, 1_000_000))
    assert dlq.stats()["temp_files"] == 3
    assert sorted(dlq.remove_stale_temp_files()) == sorted(used)
