from __future__ import annotations

import logging
import time

import backoff
import pytest

from telhawk_ingest.config import CoreSettings
from telhawk_ingest.retry import RetryPolicy, store_with_retries
from telhawk_ingest.storage.base import STORED, Status, permanent, retry
from tests.fakes import ScriptedBackend, every, item

POLICY = RetryPolicy()


def test_default_schedule_is_the_seeds_100_200_400_ms():
    assert POLICY.schedule() == [0.1, 0.2, 0.4]


def test_retryable_failures_wait_100_200_400_ms_then_give_up_after_four_attempts(waits):
    backend = ScriptedBackend(*[every(retry("503 from storage", status=503))] * 4)
    start = time.time()

    finals = store_with_retries(backend, [item(1)], POLICY)

    assert waits == [0.1, 0.2, 0.4]
    assert time.time() - start == pytest.approx(0.7)
    assert len(backend.calls) == 4
    assert finals[0].outcome.status is Status.RETRY
    assert finals[0].attempts == 4
    assert finals[0].outcome.error == "503 from storage"


def test_success_on_the_third_try_stops_retrying(waits):
    backend = ScriptedBackend(every(retry("503")), every(retry("503")))

    finals = store_with_retries(backend, [item(1)], POLICY)

    assert waits == [0.1, 0.2]
    assert finals[0].outcome.stored and finals[0].attempts == 3


def test_a_permanent_failure_is_not_retried(waits):
    backend = ScriptedBackend(every(permanent("400 bad request", status=400)))

    finals = store_with_retries(backend, [item(1)], POLICY)

    assert waits == []
    assert len(backend.calls) == 1
    assert finals[0].outcome.status is Status.PERMANENT and finals[0].attempts == 1


def test_only_the_retryable_items_are_sent_again(waits):
    def mixed(batch):
        return [STORED, retry("429 item", status=429), permanent("mapper_parsing_exception")]

    backend = ScriptedBackend(mixed)

    finals = store_with_retries(backend, [item(1), item(2), item(3)], POLICY)

    assert backend.calls == [["id-1", "id-2", "id-3"], ["id-2"]]
    assert [f.outcome.status for f in finals] == [Status.STORED, Status.STORED, Status.PERMANENT]
    assert [f.attempts for f in finals] == [1, 2, 1]


def test_retry_after_lengthens_the_wait_up_to_the_cap(waits):
    backend = ScriptedBackend(every(retry("429", retry_after=2.0)), every(retry("503", retry_after=60.0)))

    store_with_retries(backend, [item(1)], RetryPolicy(max_retry_after_seconds=5.0))

    assert waits == [2.0, 5.0]


def test_retry_after_never_shortens_the_backoff(waits):
    backend = ScriptedBackend(*[every(retry("429", retry_after=0.05))] * 3)

    store_with_retries(backend, [item(1)], POLICY)

    assert waits == [0.1, 0.2, 0.4]


def test_settings_change_the_schedule(waits):
    backend = ScriptedBackend(*[every(retry("503"))] * 10)

    finals = store_with_retries(backend, [item(1)], RetryPolicy(max_retries=5, delay_ms=50, multiplier=3))

    assert waits == pytest.approx([0.05, 0.15, 0.45, 1.35, 4.05])
    assert finals[0].attempts == 6


def test_zero_retries_means_one_attempt(waits):
    backend = ScriptedBackend(every(retry("503")))

    finals = store_with_retries(backend, [item(1)], RetryPolicy(max_retries=0))

    assert waits == [] and finals[0].attempts == 1


def test_jitter_stays_within_the_exponential_wait():
    policy = RetryPolicy(jitter=True)
    for _ in range(200):
        assert 0 <= policy.delay(3) <= 0.4


def test_a_backend_answering_the_wrong_number_of_results_loses_nothing(waits):
    backend = ScriptedBackend(lambda batch: [STORED])

    finals = store_with_retries(backend, [item(1), item(2)], POLICY)

    assert len(backend.calls) == 2  # both retried, then stored
    assert all(f.outcome.stored for f in finals)


def test_a_batch_stored_at_the_first_try_never_enters_the_backoff_machinery(monkeypatch):
    def unexpected(*args, **kwargs):
        raise AssertionError("backoff used without anything to retry")

    monkeypatch.setattr(backoff, "on_predicate", unexpected)
    finals = store_with_retries(ScriptedBackend(), [item(1), item(2)], POLICY)
    assert [(f.outcome.status, f.attempts) for f in finals] == [(Status.STORED, 1)] * 2


def test_attempts_count_the_tries_each_item_was_in(waits):
    backend = ScriptedBackend(
        lambda batch: [retry("503"), permanent("400"), retry("503")],
        lambda batch: [retry("503"), STORED],
    )
    finals = store_with_retries(backend, [item(1), item(2), item(3)], POLICY)
    assert [(f.outcome.status, f.attempts) for f in finals] == [
        (Status.STORED, 3), (Status.PERMANENT, 1), (Status.STORED, 2),
    ]


def test_every_core_retry_setting_reaches_the_policy():
    core = CoreSettings(max_retries=5, retry_delay_ms=50, retry_multiplier=3, retry_max_delay_ms=1_000,
                        jitter=True, max_retry_after_seconds=2.5)

    assert RetryPolicy.from_settings(core) == RetryPolicy(
        max_retries=5, delay_ms=50, multiplier=3.0, max_delay_ms=1_000, jitter=True,
        max_retry_after_seconds=2.5,
    )


def test_the_default_settings_give_the_default_policy():
    assert RetryPolicy.from_settings(CoreSettings()) == POLICY


def test_on_retry_hears_how_many_items_wait_and_for_how_long(waits):
    backend = ScriptedBackend(every(retry("503")), lambda batch: [STORED, retry("503")])
    heard: list[tuple[int, float]] = []

    store_with_retries(backend, [item(1), item(2)], POLICY, lambda n, wait: heard.append((n, wait)))

    assert heard == [(2, 0.1), (1, 0.2)]
    assert waits == [0.1, 0.2]


def test_each_retry_logs_one_line_saying_what_waits_and_for_how_long(waits, caplog):
    backend = ScriptedBackend(every(retry("503")), every(retry("503")))

    with caplog.at_level(logging.DEBUG):
        store_with_retries(backend, [item(1), item(2), item(3)], POLICY)

    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("telhawk_ingest.retry", logging.INFO, "storage retry: 3 item(s), try 1 failed, waiting 0.100s: 503"),
        ("telhawk_ingest.retry", logging.INFO, "storage retry: 3 item(s), try 2 failed, waiting 0.200s: 503"),
    ]
    # The same as fields of the JSON line (logs.py): attempt, wait and reason.
    assert [(r.event, r.attempt, r.items, r.wait_seconds, r.reason) for r in caplog.records] == [
        ("retry", 1, 3, 0.1, "503"), ("retry", 2, 3, 0.2, "503")]


def test_a_backend_that_keeps_answering_the_wrong_number_of_results_is_reported_as_such(waits):
    backend = ScriptedBackend(*[lambda batch: [STORED]] * 4)

    finals = store_with_retries(backend, [item(1), item(2)], POLICY)

    assert len(backend.calls) == 4
    assert [(f.outcome.status, f.outcome.error, f.attempts) for f in finals] == [
        (Status.RETRY, "storage returned a wrong number of results", 4),
    ] * 2


def test_a_backend_that_raises_is_logged_with_its_name_and_traceback_and_its_items_retried(waits, caplog):
    def broken(batch):
        raise RuntimeError("disk driver bug")

    backend = ScriptedBackend(broken)

    with caplog.at_level(logging.ERROR, logger="telhawk_ingest.retry"):
        finals = store_with_retries(backend, [item(1)], POLICY)

    [line] = [r for r in caplog.records if r.name == "telhawk_ingest.retry"]
    assert (line.levelno, line.getMessage()) == (
        logging.ERROR, "storage backend scripted raised instead of reporting outcomes")
    assert line.exc_info is not None and line.exc_info[0] is RuntimeError
    assert len(backend.calls) == 2 and finals[0].outcome.stored


def test_by_default_waits_stop_growing_at_30_s_and_a_retry_after_counts_up_to_5_s():
    assert POLICY.delay(20) == 30.0
    assert POLICY.delay(1, retry_after=60.0) == 5.0
    assert {POLICY.delay(3) for _ in range(20)} == {0.4}  # no jitter unless asked for


def test_with_the_first_try_already_made_the_backend_is_asked_only_for_the_retries(waits):
    backend = ScriptedBackend()

    first = [STORED, retry("503 from storage")]
    finals = store_with_retries(backend, [item(1), item(2)], POLICY, first=first)

    assert backend.calls == [["id-2"]] and waits == [0.1]
    assert [(f.outcome.stored, f.attempts) for f in finals] == [(True, 1), (True, 2)]


def test_a_first_try_with_the_wrong_number_of_outcomes_is_retried_whole(waits):
    backend = ScriptedBackend()

    finals = store_with_retries(backend, [item(1), item(2)], POLICY, first=[STORED])

    assert backend.calls == [["id-1", "id-2"]]
    assert [(f.outcome.stored, f.attempts) for f in finals] == [(True, 2), (True, 2)]
