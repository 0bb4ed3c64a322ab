"""Directory fsyncs shared by concurrent threads (files.DirSync): every caller returns only after an
fsync that began after its call, concurrent callers share one, and a failed one fails everyone it
was for. Real directories and real fsyncs; the first fsync is held open so that the others arrive
during it, which is what makes sharing deterministic."""

from __future__ import annotations

import errno
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from telhawk_ingest import files
from telhawk_ingest.files import DirSync

CALLERS = 8
WAIT_S = 10.0


class Timeline:
    """Numbers calls, fsync starts and ends and returns in one order, and holds the first fsync
    until `held` other callers are waiting for their turn."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sync: DirSync, held: int,
                 fail_round: int | None = None, failure: Exception | None = None) -> None:
        self.events: list[tuple[int, str, int]] = []  # (sequence, kind, caller or fsync number)
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._fsyncs = itertools.count()
        real = files.fsync_dir

        def fsync_dir(path: Path) -> None:
            number = next(self._fsyncs)
            self.note("fsync start", number)
            if number == 0:
                waiters = sync._cond._waiters  # type: ignore[attr-defined]
                until = time.monotonic() + WAIT_S  # bounded: without sharing, no one waits here
                while len(waiters) < held and time.monotonic() < until:
                    threading.Event().wait(0.001)
            real(path)
            if number == fail_round:
                self.note("fsync end", number)
                raise failure or OSError(errno.EIO, os.strerror(errno.EIO), str(path))
            self.note("fsync end", number)

        monkeypatch.setattr(files, "fsync_dir", fsync_dir)

    def note(self, kind: str, who: int) -> None:
        with self._lock:
            self.events.append((next(self._next), kind, who))

    def at(self, kind: str, who: int) -> int:
        return next(seq for seq, k, w in self.events if k == kind and w == who)

    def fsyncs(self) -> list[tuple[int, int]]:
        """(start, end) of each fsync, in the timeline's numbering."""
        return [(self.at("fsync start", n), self.at("fsync end", n))
                for n in sorted({w for _, k, w in self.events if k == "fsync end"})]


def run_callers(sync: DirSync, timeline: Timeline, count: int) -> dict[int, BaseException | None]:
    """Caller 0 first (its fsync is held), then `count - 1` more while it is held."""
    outcomes: dict[int, BaseException | None] = {}

    def call(who: int) -> None:
        timeline.note("call", who)
        try:
            sync.sync()
            outcomes[who] = None
        except Exception as exc:
            outcomes[who] = exc
        timeline.note("return", who)

    first_then_rest(call, count, lambda: bool(timeline.events) and timeline.events[-1][1] == "fsync start")
    return outcomes


def first_then_rest(target: Callable[[int], None], count: int, held: Callable[[], bool]) -> None:
    """`target(0)` on a thread; once `held()` says it is where the test holds it, `target(1)` to
    `target(count - 1)` on threads of their own; then each is joined (WAIT_S at most)."""
    first = threading.Thread(target=target, args=(0,))
    first.start()
    while not held():
        threading.Event().wait(0.001)
    others = [threading.Thread(target=target, args=(n,)) for n in range(1, count)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(WAIT_S)


def test_a_lone_caller_gets_one_fsync_of_its_own_at_once(tmp_path, monkeypatch):
    sync = DirSync(tmp_path)
    timeline = Timeline(monkeypatch, sync, held=0)

    for who in range(3):
        timeline.note("call", who)
        sync.sync()
        timeline.note("return", who)

    assert len(timeline.fsyncs()) == 3
    for who, (start, end) in enumerate(timeline.fsyncs()):
        assert timeline.at("call", who) < start < end < timeline.at("return", who)


def test_callers_arriving_during_an_fsync_share_the_next_one_and_each_waits_for_one_begun_after_it(
        tmp_path, monkeypatch):
    sync = DirSync(tmp_path)
    timeline = Timeline(monkeypatch, sync, held=CALLERS - 1)

    outcomes = run_callers(sync, timeline, CALLERS)

    assert outcomes == dict.fromkeys(range(CALLERS))
    assert len(timeline.fsyncs()) == 2  # not one per caller
    for who in range(CALLERS):
        called, returned = timeline.at("call", who), timeline.at("return", who)
        assert any(called < start < end < returned for start, end in timeline.fsyncs()), who
    # the callers that came during the held fsync did not count on it: it began before them
    assert all(timeline.at("return", who) > timeline.fsyncs()[1][1] for who in range(1, CALLERS))


def test_a_failed_fsync_fails_every_caller_it_was_for_and_the_next_call_syncs_again(tmp_path, monkeypatch):
    sync = DirSync(tmp_path)
    timeline = Timeline(monkeypatch, sync, held=CALLERS - 1, fail_round=1)

    outcomes = run_callers(sync, timeline, CALLERS)

    assert outcomes[0] is None  # its own fsync (the held one) succeeded
    for who in range(1, CALLERS):
        error = outcomes[who]
        assert isinstance(error, OSError) and error.errno == errno.EIO, who
        assert (error.strerror, error.filename) == (os.strerror(errno.EIO), str(tmp_path))
    assert len({id(outcomes[who]) for who in range(1, CALLERS)}) == CALLERS - 1  # one per caller
    timeline.note("call", 99)
    sync.sync()
    timeline.note("return", 99)
    assert timeline.at("call", 99) < timeline.fsyncs()[-1][0]


def test_an_fsync_ended_by_an_exception_of_another_kind_fails_every_caller_it_was_for(tmp_path,
                                                                                    monkeypatch):
    sync = DirSync(tmp_path)
    timeline = Timeline(monkeypatch, sync, held=CALLERS - 1, fail_round=1, failure=RuntimeError("stopped"))

    outcomes = run_callers(sync, timeline, CALLERS)

    assert outcomes[0] is None
    [leader] = [who for who in range(1, CALLERS) if isinstance(outcomes[who], RuntimeError)]
    for who in set(range(1, CALLERS)) - {leader}:
        error = outcomes[who]
        assert isinstance(error, OSError), who
        assert (error.errno, error.strerror, error.filename) == (
            errno.EIO, "directory fsync did not complete", str(tmp_path))


def test_an_fsync_that_cannot_open_the_directory_raises_in_the_caller(tmp_path):
    sync = DirSync(tmp_path / "gone")

    with pytest.raises(OSError) as failed:
        sync.sync()

    assert failed.value.errno == errno.ENOENT
    (tmp_path / "gone").mkdir()
    sync.sync()  # nothing left stuck


def test_after_a_fork_the_child_does_not_wait_for_a_round_of_its_parent(tmp_path, monkeypatch):
    sync = DirSync(tmp_path)
    held = threading.Event()
    release = threading.Event()
    real = files.fsync_dir

    def slow(path: Path) -> None:
        held.set()
        release.wait(WAIT_S)
        real(path)

    monkeypatch.setattr(files, "fsync_dir", slow)
    parent = threading.Thread(target=sync.sync)
    parent.start()
    assert held.wait(WAIT_S)
    monkeypatch.setattr(files, "fsync_dir", real)
    pid = os.fork()
    if pid == 0:  # the child: its own round at once, though the parent's is still in flight
        code = 1
        signal.alarm(int(WAIT_S))  # a child waiting for its parent's round would hang: SIGALRM ends it
        try:
            sync.sync()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    parent.join(WAIT_S)
    assert os.waitstatus_to_exitcode(status) == 0
