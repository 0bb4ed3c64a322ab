from __future__ import annotations

import struct

from telhawk_ingest.stats import COUNTERS, Counters


def test_counters_of_several_instances_on_one_volume_add_up(tmp_path):
    a, b = Counters(tmp_path), Counters(tmp_path)
    a.add(stored=3, dlq_storage_failed=1)
    b.add(stored=2)

    totals = Counters(tmp_path).totals()
    assert totals["stored"] == 5 and totals["dlq_storage_failed"] == 1


def test_counters_survive_a_restart_and_the_next_process_adopts_the_file(tmp_path):
    first = Counters(tmp_path)
    first.add(stored=7)
    first.retire()

    second = Counters(tmp_path)
    second.add(stored=1)

    assert second.totals()["stored"] == 8
    assert len(list(tmp_path.iterdir())) == 1


def test_a_crashed_process_file_still_counts(tmp_path):
    crashed = Counters(tmp_path)
    crashed.add(dlq_validation_failed=4)
    # no retire(): the process died
    assert Counters(tmp_path).totals()["dlq_validation_failed"] == 4


def test_a_file_from_an_older_version_with_fewer_counters_still_reads(tmp_path):
    (tmp_path / "old.counters").write_bytes(struct.pack("<4sI2q", b"THC1", 2, 10, 1))
    totals = Counters(tmp_path).totals()
    assert totals["stored"] == 10 and totals[COUNTERS[1]] == 1 and totals[COUNTERS[-1]] == 0


def test_garbage_in_the_counters_directory_counts_as_zero(tmp_path):
    (tmp_path / "junk.counters").write_bytes(b"xx")
    assert Counters(tmp_path).totals()["stored"] == 0
