from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from freezegun import freeze_time

from telhawk_ingest.config import DlqSettings, load_settings
from telhawk_ingest.dlq import (
    FILE_RE,
    LISTING_TRUST_S,
    REBASE_ON_REFUSAL_S,
    REBASE_S,
    STALE_TEMP_S,
    DeadLetterQueue,
    DlqFilter,
    check_id,
    make_record,
)
from telhawk_ingest.errors import ApiError, ConfigError, DLQUnavailable
from telhawk_ingest.stats import Counters

SEED_KEYS = ["timestamp", "envelope", "error", "reason", "attempts", "last_attempt"]


def envelope(n: int = 1, source_type: str = "cisco_asa") -> dict:
    return {"id": f"env-{n}", "source": "firewall", "source_type": source_type, "format": "json",
            "payload": '{"msg": "x"}', "attributes": {"host": "fw01"},
            "received_at": "2026-01-01T00:00:00.000Z"}


def record(n=1, reason="normalization_failed", error="boom", source_type="cisco_asa"):
    return make_record(envelope(n, source_type), reason, error, now=1_700_000_000.0 + n)


@pytest.fixture
def dlq(tmp_path: Path) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=0))


def test_a_record_is_one_file_with_the_seed_fields_first(dlq):
    entry_id = dlq.write(record(), now=1_699_040_123)

    files = os.listdir(dlq.path)
    assert files == [f"{entry_id}.json"]
    assert FILE_RE.match(files[0]) and files[0].startswith("failed_1699040123_")
    content = json.loads((dlq.path / files[0]).read_text())
    assert list(content)[:6] == SEED_KEYS
    assert content["envelope"] == envelope()
    assert content["reason"] == "normalization_failed"
    assert content["attempts"] == 1
    assert content["id"] == entry_id
    assert content["stage"] == "normalize"


def test_each_batch_written_is_logged_with_its_ids_and_reasons_never_its_text(dlq, caplog):
    with caplog.at_level(logging.INFO, "telhawk_ingest.dlq"):
        ids = dlq.write_many([record(1, error="secret text"), record(2, reason="storage_failed")])

    [logged] = [r for r in caplog.records if getattr(r, "event", None) == "dlq_write"]
    assert (logged.levelno, logged.getMessage()) == (logging.INFO, "dead-lettered 2 event(s)")
    assert (logged.ids, logged.reasons, logged.count) == (ids, ["normalization_failed", "storage_failed"], 2)
    assert "secret text" not in str(vars(logged))


def test_files_are_private_and_no_temp_file_is_left(dlq):
    dlq.write_many([record(1), record(2), record(3)])

    assert stat.S_IMODE(dlq.path.stat().st_mode) == 0o700
    for name in os.listdir(dlq.path):
        assert name.endswith(".json") and not name.startswith(".tmp")
        assert stat.S_IMODE((dlq.path / name).stat().st_mode) == 0o600


def test_names_are_unique_and_sorted_by_time_across_threads_and_processes(tmp_path):
    base = tmp_path / "dlq"

    def write_some(_: int) -> None:
        q = DeadLetterQueue(DlqSettings(base_path=base, min_free_bytes=0))
        for n in range(20):
            q.write(record(n), now=1_700_000_000)

    threads = [threading.Thread(target=write_some, args=(i,)) for i in range(4)]
    procs = [multiprocessing.get_context("fork").Process(target=write_some, args=(i,)) for i in range(2)]
    # The processes are forked before the threads start: a fork taken while another thread is
    # writing a log line copies that stream's lock held, and the child would wait on it forever.
    for t in [*procs, *threads]:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]

    names = os.listdir(base)
    assert len(names) == 120 and all(FILE_RE.match(n) for n in names)


def test_listing_is_oldest_first_and_pages_with_a_cursor(dlq):
    ids = [dlq.write(record(n), now=1_700_000_000 + n) for n in range(5)]

    page, total, cursor = dlq.list(limit=2)
    assert [r["id"] for r in page] == ids[:2] and total == 5 and cursor == ids[1]
    page, _, cursor = dlq.list(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ids[2:4]
    page, _, cursor = dlq.list(limit=2, cursor=cursor)
    assert [r["id"] for r in page] == ids[4:] and cursor is None


def test_listing_filters_by_reason_source_type_error_and_time(dlq):
    a = dlq.write(record(1, "normalization_failed", "no normalizer registered for x"), now=100)
    b = dlq.write(record(2, "storage_failed", "503 from storage", source_type="linux_secure"), now=200)

    assert [r["id"] for r in dlq.list(DlqFilter(reason="storage_failed"))[0]] == [b]
    assert [r["id"] for r in dlq.list(DlqFilter(source_type="cisco_asa"))[0]] == [a]
    assert [r["id"] for r in dlq.list(DlqFilter(error="normalizer"))[0]] == [a]
    assert [r["id"] for r in dlq.list(DlqFilter(since=150))[0]] == [b]
    assert [r["id"] for r in dlq.list(DlqFilter(until=150))[0]] == [a]


def test_a_corrupt_file_is_skipped_reported_and_kept_while_foreign_files_are_ignored(dlq):
    good = dlq.write(record(1), now=100)
    (dlq.path / "failed_150_" f"{'ab' * 16}.json").write_text('{"timestamp": "trunc')
    (dlq.path / "notes.txt").write_text("operator notes")
    (dlq.path / "failed_oops.json").write_text("{}")

    page, total, _ = dlq.list()
    stats = dlq.stats()

    assert [r["id"] for r in page] == [good] and total == 1
    assert stats["pending_files"] == 2
    assert stats["corrupt_files"] == [f"failed_150_{'ab' * 16}.json"]
    assert (dlq.path / f"failed_150_{'ab' * 16}.json").exists()


def test_purge_removes_every_entry_corrupt_ones_too_but_not_foreign_files(dlq):
    dlq.write_many([record(1), record(2)])
    (dlq.path / f"failed_150_{'cd' * 16}.json").write_text("garbage")
    (dlq.path / "README").write_text("keep me")

    assert dlq.purge() == 3
    assert os.listdir(dlq.path) == ["README"]


def test_purge_with_a_filter_removes_only_matching_entries(dlq):
    dlq.write(record(1, "normalization_failed"))
    keep = dlq.write(record(2, "storage_failed"))

    assert dlq.purge(DlqFilter(reason="normalization_failed")) == 1
    assert [r["id"] for r in dlq.list()[0]] == [keep]


def test_get_and_delete_one_entry(dlq):
    entry_id = dlq.write(record())

    assert dlq.get(entry_id)["envelope"]["id"] == "env-1"
    dlq.delete(entry_id)
    with pytest.raises(ApiError) as err:
        dlq.get(entry_id)
    assert err.value.status == 404


def test_sizes_and_names_before_a_time_are_read_for_the_entries_there(dlq):
    """What retention asks before deleting: the bytes of the entries it would remove (gone ones
    count zero) and the entries whose name's time is strictly before a cutoff."""
    first, second = dlq.write(record(1), now=1_700_000_100), dlq.write(record(2), now=1_700_000_200)
    sizes = [(dlq.path / f"{i}.json").stat().st_size for i in (first, second)]
    gone = dlq.write(record(3), now=1_700_000_300)
    dlq.delete(gone)

    assert dlq.size_of([first, gone, second]) == sum(sizes)
    assert dlq.size_of([gone]) == 0
    assert dlq.size_of([]) == 0
    assert dlq.ids_named_before(1_700_000_200) == [first]
    assert dlq.ids_named_before(1_700_000_200.5) == [first, second]


@pytest.mark.parametrize("bad", ["../etc/passwd", "failed_1_x/../../y", "failed_1_zz", "", "a" * 300])
def test_ids_that_are_not_entry_names_are_refused_before_touching_files(bad):
    with pytest.raises(ApiError) as err:
        check_id(bad)
    assert err.value.status == 400


def test_a_disabled_dlq_refuses_to_write(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(enabled=False, base_path=tmp_path / "dlq"))
    with pytest.raises(DLQUnavailable, match="disabled"):
        dlq.write(record())
    assert not (tmp_path / "dlq").exists()


def test_an_unwritable_dlq_refuses_to_write_and_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    dlq = DeadLetterQueue(DlqSettings(base_path=blocker / "dlq", min_free_bytes=0))
    with pytest.raises(DLQUnavailable, match=r"dlq.base_path: .*/file/dlq is not"):
        dlq.write(record())


def test_a_dlq_below_its_free_space_floor_refuses_to_write(tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=tmp_path / "dlq", min_free_bytes=2**62))
    with pytest.raises(DLQUnavailable, match="min_free_bytes"):
        dlq.write(record())


def limited(base: Path, ledger: Counters | None = None, **limits: int) -> DeadLetterQueue:
    return DeadLetterQueue(DlqSettings(base_path=base, min_free_bytes=0, **limits), ledger=ledger)


def test_a_dlq_at_its_file_limit_refuses_to_write_at_once(tmp_path):
    dlq = limited(tmp_path / "dlq", max_pending_files=2)
    dlq.write_many([record(1), record(2)])

    with pytest.raises(DLQUnavailable, match="max_pending_files=2"):
        dlq.write(record(3))
    assert not dlq.accepting() and "max_pending_files=2" in dlq.stats()["refusal"]


def test_before_refusing_the_directory_is_listed_again_and_still_refuses_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("telhawk_ingest.dlq.REBASE_ON_REFUSAL_S", 0.0)  # every listing is old enough
    dlq = limited(tmp_path / "dlq", max_pending_files=2)
    ids = dlq.write_many([record(1), record(2)])
    limited(tmp_path / "dlq").remove(ids[:1])  # another process: not in this one's last listing

    third = dlq.write(record(3))  # the listing again finds room for exactly this one
    with pytest.raises(DLQUnavailable, match="max_pending_files=2"):
        dlq.write(record(4))

    assert sorted(os.listdir(tmp_path / "dlq")) == sorted(f"{i}.json" for i in (ids[1], third))


def test_a_batch_that_would_pass_the_file_limit_is_refused_whole(tmp_path):
    dlq = limited(tmp_path / "dlq", max_pending_files=2)

    with pytest.raises(DLQUnavailable, match=r"max_pending_files=2 files \(0 pending, 3 more\)"):
        dlq.write_many([record(1), record(2), record(3)])

    assert os.listdir(dlq.path) == []
    assert dlq.write_many([record(1), record(2)]) and len(os.listdir(dlq.path)) == 2


def test_entries_reserved_and_not_yet_written_count_against_the_limit(tmp_path):
    dlq = limited(tmp_path / "dlq", max_pending_files=3)

    with dlq.reserve([record(1), record(2)]) as held:
        with pytest.raises(DLQUnavailable, match=r"\(2 pending, 2 more\)"):
            dlq.reserve([record(3), record(4)])
        assert dlq.refusal(1) is None and dlq.refusal(2) is not None
        held.add([record(3)])
        assert not dlq.accepting()
        assert os.listdir(dlq.path) == []  # nothing written until write()
        held.write()

    assert len(os.listdir(dlq.path)) == 3 and not dlq.accepting()


def test_a_reservation_left_unwritten_is_released(tmp_path):
    dlq = limited(tmp_path / "dlq", max_pending_files=2)

    with dlq.reserve([record(1), record(2)]):
        assert not dlq.accepting()

    assert dlq.accepting() and os.listdir(dlq.path) == []


def file_bytes(dlq: DeadLetterQueue) -> int:
    return sum(p.stat().st_size for p in dlq.path.glob("failed_*.json"))


def test_a_batch_that_would_pass_the_byte_limit_is_refused_whole_and_pending_bytes_are_exact(tmp_path):
    probe = limited(tmp_path / "probe")
    probe.write(record(1))
    one = file_bytes(probe)
    dlq = limited(tmp_path / "dlq", max_pending_bytes=2 * one + one // 2)

    dlq.write(record(1))
    with pytest.raises(DLQUnavailable, match=f"max_pending_bytes={2 * one + one // 2} bytes"):
        dlq.write_many([record(2), record(3)])
    dlq.write(record(2))

    assert len(os.listdir(dlq.path)) == 2
    assert dlq.stats()["pending_bytes"] == file_bytes(dlq)
    assert dlq.refusal(1, one) is not None and dlq.refusal(1, one // 3) is None


def test_a_process_starting_on_a_full_dlq_counts_files_and_bytes_it_did_not_write(tmp_path):
    first = limited(tmp_path / "dlq")
    first.write_many([record(1), record(2), record(3)])
    (first.path / f"failed_1700000009_{'ab' * 16}.json").write_bytes(b"corrupt, still pending")

    cold = limited(tmp_path / "dlq", max_pending_files=5)

    assert cold.stats()["pending_bytes"] == file_bytes(first)
    assert cold.refusal(1) is None
    with pytest.raises(DLQUnavailable, match=r"\(4 pending, 2 more\)"):
        cold.write_many([record(4), record(5)])


def test_an_entry_purged_while_pending_bytes_are_counted_leaves_the_others_counted(tmp_path, monkeypatch):
    base = tmp_path / "dlq"
    limited(base).write_many([record(1), record(2), record(3)])
    fresh = limited(base)  # knows no size yet: each file is stat'ed once
    real_lstat = os.lstat
    purged: list[str] = []

    def lstat(path: os.PathLike | str, *args: object, **kwargs: object) -> os.stat_result:
        if str(path).endswith(".json") and not purged:
            purged.append(str(path))
            os.unlink(path)  # another process purged it after the listing
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    pending = fresh.stats(verify_budget_s=0)["pending_bytes"]

    assert purged and pending == sum(p.stat().st_size for p in base.glob("failed_*.json"))


def test_writes_by_another_process_count_at_once_through_the_ledger_without_listing_again(
        tmp_path, monkeypatch):
    shared = tmp_path / "dlq" / ".state" / "counters"
    mine = limited(tmp_path / "dlq", Counters(shared), max_pending_files=4)
    other = limited(tmp_path / "dlq", Counters(shared), max_pending_files=4)
    mine.write(record(1))
    other.write(record(2))
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real_listdir(p))

    other.write(record(3))

    assert mine.refusal(1) is None
    with pytest.raises(DLQUnavailable, match=r"\(3 pending, 2 more\)"):
        mine.write_many([record(4), record(5)])
    assert listed == []


def test_a_purge_makes_room_at_once_here_and_within_a_second_elsewhere(tmp_path):
    shared = tmp_path / "dlq" / ".state" / "counters"
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        here = limited(tmp_path / "dlq", Counters(shared), max_pending_files=2)
        elsewhere = limited(tmp_path / "dlq", Counters(shared), max_pending_files=2)
        here.write_many([record(1), record(2)])
        assert not elsewhere.accepting()

        assert here.purge() == 2
        assert here.accepting()
        assert not elsewhere.accepting()  # it looked at the directory less than a second ago
        frozen.tick(REBASE_ON_REFUSAL_S)
        assert not elsewhere.accepting()  # exactly a second ago: not over it
        frozen.tick(0.1)
        assert elsewhere.accepting()


def test_entries_placed_without_the_ledger_count_from_the_next_listing_rebase_s_on(tmp_path):
    """An operator copying entry files in (no process recorded them) is seen once the listing the
    limits use is over REBASE_S old."""
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        dlq = limited(tmp_path / "dlq", max_pending_files=2)
        assert dlq.accepting()
        for n in (1, 2):
            (dlq.path / f"failed_{n}_{'0' * 32}.json").write_bytes(json.dumps(record(n)).encode())

        frozen.tick(REBASE_S)
        assert dlq.accepting()
        frozen.tick(0.1)
        assert dlq.refusal() == (
            "the DLQ would hold more than dlq.max_pending_files=2 files (2 pending, 1 more)")


def test_a_ledger_file_adopted_by_a_new_process_can_make_the_estimate_high_never_low(tmp_path):
    shared = tmp_path / "dlq" / ".state" / "counters"
    with freeze_time("2026-01-02T03:04:05Z") as frozen:
        first_ledger = Counters(shared)
        limited(tmp_path / "dlq", first_ledger).write_many([record(1), record(2)])
        first_ledger.retire()  # a clean exit: the next process adopts its file
        watcher = limited(tmp_path / "dlq", Counters(shared), max_pending_files=4)
        assert watcher.refusal(2) is None  # 2 pending

        limited(tmp_path / "dlq", Counters(shared)).write(record(3))  # adopts, renames, adds 1

        assert watcher.refusal(2) is not None  # 3 pending: refusing 2 more is right
        assert watcher.refusal(1) is not None  # counted high until it looks again
        frozen.tick(REBASE_ON_REFUSAL_S + 0.1)
        assert watcher.refusal(1) is None


def test_the_limits_default_to_the_documented_values_and_0_means_none():
    settings = load_settings(env={})
    assert (settings.dlq.max_pending_files, settings.dlq.max_pending_bytes, settings.dlq.min_free_bytes) \
        == (1_000_000, 20 * 2**30, 64 * 2**20)
    unlimited = load_settings(env={"INGEST_DLQ_MAX_PENDING_FILES": "0", "INGEST_DLQ_MAX_PENDING_BYTES": "0"})
    assert (unlimited.dlq.max_pending_files, unlimited.dlq.max_pending_bytes) == (0, 0)


@pytest.mark.parametrize(("var", "value"), [("INGEST_DLQ_MAX_PENDING_BYTES", "-1"),
                                            ("INGEST_DLQ_MAX_PENDING_FILES", "lots")])
def test_a_bad_limit_stops_start_up_naming_the_key(var, value):
    key = var.removeprefix("INGEST_").lower().replace("dlq_", "dlq.", 1)
    with pytest.raises(ConfigError, match=f"{key} \\(from {var}\\)"):
        load_settings(env={var: value})


def test_private_dir_creates_every_missing_level_0700_and_returns_the_path(tmp_path):
    from telhawk_ingest.files import private_dir

    made = private_dir(tmp_path / "a" / "b" / "c")

    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()
    for level in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700


def age(path: Path, seconds: float = 5.0) -> None:
    """Set a directory's mtime into the past, as if nothing had changed there for a while."""
    old = path.stat().st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(old, old))


def test_an_unchanged_directory_is_not_listed_again(dlq, monkeypatch):
    dlq.write_many([record(1), record(2)])
    age(dlq.path)
    first = dlq.stats()
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real_listdir(p))

    again = dlq.stats()
    page, total, _ = dlq.list()

    assert listed == []
    assert again["pending_files"] == first["pending_files"] == 2 and total == 2 and len(page) == 2


def test_a_listing_is_reused_only_when_taken_over_listing_trust_s_after_the_last_change(dlq, monkeypatch):
    """A directory's mtime has a coarse clock: a change in the same tick as a listing leaves it as it
    was. A listing taken LISTING_TRUST_S or less after the mtime may have missed such a change."""
    other = DeadLetterQueue(DlqSettings(base_path=dlq.path, min_free_bytes=0))
    dlq.write(record(1))
    mtime = dlq.path.stat().st_mtime_ns
    bound = int(LISTING_TRUST_S * 1e9)

    def add_in_the_same_tick(n: int) -> None:
        other.write(record(n))
        os.utime(dlq.path, ns=(mtime, mtime))

    monkeypatch.setattr(time, "time_ns", lambda: mtime + bound)
    assert dlq.stats()["pending_files"] == 1
    add_in_the_same_tick(2)
    assert dlq.stats()["pending_files"] == 2  # listed again: the first listing was not trusted

    monkeypatch.setattr(time, "time_ns", lambda: mtime + bound + 1)
    assert dlq.stats()["pending_files"] == 2
    add_in_the_same_tick(3)
    assert dlq.stats()["pending_files"] == 2  # trusted: the mtime alone says nothing changed


def test_a_file_written_by_another_instance_is_seen_at_once(dlq, tmp_path):
    dlq.write(record(1))
    age(dlq.path)
    dlq.stats()
    other = DeadLetterQueue(DlqSettings(base_path=dlq.path, min_free_bytes=0))

    other.write(record(2))

    assert dlq.stats()["pending_files"] == 2
    assert dlq.list()[1] == 2


def test_a_corrupt_file_appearing_later_is_reported_and_counted_out(dlq):
    dlq.write(record(1))
    age(dlq.path)
    assert dlq.stats()["corrupt_files"] == []
    bad = f"failed_1700000001_{'ef' * 16}.json"
    (dlq.path / bad).write_text("{")

    assert dlq.stats()["corrupt_files"] == [bad]
    assert dlq.list()[1] == 1
    (dlq.path / bad).unlink()
    assert dlq.stats()["corrupt_files"] == []


# -- temp files left by a killed writer --------------------------------------------------------------

def leftover(base: Path, age_s: float, seconds: int = 1_700_000_000) -> Path:
    """A temp file as a writer killed between create and rename leaves it, `age_s` seconds old."""
    base.mkdir(mode=0o700, exist_ok=True)
    path = base / f".tmp-failed_{seconds}_{os.urandom(16).hex()}"
    path.write_bytes(b'{"timestamp": "2026-01-01T00:00:00Z", "envel')  # cut off mid-write
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_start_up_removes_temp_files_old_enough_to_belong_to_no_writer(tmp_path):
    base = tmp_path / "dlq"
    old = [leftover(base, STALE_TEMP_S + 60), leftover(base, 3 * 86400)]
    young = [leftover(base, STALE_TEMP_S - 60), leftover(base, 0.5)]
    foreign = base / ".tmp-something-else"
    foreign.write_text("not ours")
    os.utime(foreign, (1, 1))

    dlq = DeadLetterQueue(DlqSettings(base_path=base, min_free_bytes=0))

    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young) and foreign.exists()
    assert dlq.stats()["temp_files"] == 2


def test_temp_files_are_counted_in_health_until_removed_and_never_listed_or_pending(dlq):
    dlq.write(record(1))
    left = leftover(dlq.path, 5)

    stats = dlq.stats()

    assert (stats["temp_files"], stats["pending_files"]) == (1, 1)
    assert dlq.list()[1] == 1
    left.unlink()
    assert dlq.stats()["temp_files"] == 0


def test_a_disabled_dlq_touches_no_temp_file(tmp_path):
    old = leftover(tmp_path / "dlq", 3 * STALE_TEMP_S)

    DeadLetterQueue(DlqSettings(enabled=False, base_path=tmp_path / "dlq"))

    assert old.exists()


# -- several processes against one small limit ---------------------------------------------------------

PROCESSES, THREADS, BATCH = 4, 2, 3
HAMMER_DEADLINE_S = 20.0


def hammer(base: Path, cap: int, start: multiprocessing.synchronize.Event,
           results: multiprocessing.Queue) -> None:
    """One process: THREADS threads write batches of BATCH until the directory cannot take one more
    batch (a refusal with fewer than BATCH places left on disk), or the deadline passes."""
    dlq = limited(base, Counters(base / ".state" / "counters"), max_pending_files=cap)
    written: list[int] = []
    refused: list[int] = []
    deadline = time.monotonic() + HAMMER_DEADLINE_S

    def run() -> None:
        start.wait()
        while time.monotonic() < deadline:
            try:
                written.append(len(dlq.write_many([record(n) for n in range(BATCH)])))
            except DLQUnavailable:
                refused.append(1)
                if len(list(base.glob("failed_*.json"))) + BATCH > cap:
                    return

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((sum(written), len(refused)))


@pytest.mark.parametrize("cap", [10, 50])
def test_processes_sharing_a_dlq_on_one_host_never_pass_its_limit_together(tmp_path, cap):
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    base = tmp_path / "dlq"
    limited(base)  # the directory, before the processes race to create it
    procs = [ctx.Process(target=hammer, args=(base, cap, start, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=HAMMER_DEADLINE_S + 30) for _ in procs]
    for p in procs:
        p.join(timeout=10)

    on_disk = len(list(base.glob("failed_*.json")))
    reported, refusals = sum(o[0] for o in outcomes), sum(o[1] for o in outcomes)
    print(f"cap {cap}: {on_disk} files from {PROCESSES}x{THREADS} writers, {refusals} refusals")
    assert on_disk == reported  # every write that answered success is there, and nothing else
    assert cap - BATCH < on_disk <= cap  # filled up, and never past the limit
