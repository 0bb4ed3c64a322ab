"""Envelope ids and time stamps: UUIDv7 ids unique across threads and forked processes, RFC 3339
text as datetime writes it."""

from __future__ import annotations

import os
import random
import threading
import uuid
from datetime import UTC, datetime

import pytest

from telhawk_ingest import envelope
from telhawk_ingest.envelope import POOL_IDS, id_time, new_id, rfc3339

NOW_NS = 1_767_323_045_123_456_789  # 2026-01-02T03:04:05.123456789Z


def test_ids_are_uuid7_text_with_the_millisecond_given_and_never_repeat():
    ids = [new_id(now_ns=NOW_NS) for _ in range(5 * POOL_IDS + 7)]  # several pools

    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert id_time(text) == 1_767_323_045.123
    # Each of the 74 random bits (below the version, around the variant) takes both values.
    bits = [uuid.UUID(text).int for text in ids]
    random_mask = (1 << 76) - 1 & ~(0b11 << 62)
    assert all(any(b >> k & 1 for b in bits) and not all(b >> k & 1 for b in bits)
               for k in range(76) if random_mask >> k & 1)


def test_ids_show_the_random_bytes_of_their_pool_in_order_and_a_pool_draws_only_what_they_use(monkeypatch):
    pools: list[bytes] = []

    def randbytes(n: int) -> bytes:
        pools.append(os.urandom(n))
        return pools[-1]

    monkeypatch.setattr(random, "randbytes", randbytes)
    envelope._forget_digits()
    ids = [new_id(now_ns=NOW_NS) for _ in range(2 * POOL_IDS)]

    assert len(pools) == 2
    for pool, drawn in zip(pools, (ids[:POOL_IDS], ids[POOL_IDS:]), strict=True):
        assert POOL_IDS * 19 <= 2 * len(pool) <= POOL_IDS * 19 + 2  # 19 hex digits an id, no more
        digits = pool.hex()
        for k, text in enumerate(drawn):
            mine = digits[19 * k:19 * k + 19]
            shown = text.replace("-", "")[13:]  # after the 12 digits of the time and the version
            # The variant digit (10xx) keeps the low 2 bits of its random digit.
            assert (shown[:3], int(shown[3], 16), shown[4:]) == (mine[:3], 8 | int(mine[3], 16) & 3, mine[4:])


def test_threads_drawing_ids_at_once_never_get_the_same_one():
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(out: list[str]) -> None:
        out.extend(new_id(now_ns=NOW_NS) for _ in range(3 * POOL_IDS))

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every = [text for out in drawn for text in out]
    assert len(set(every)) == len(every) == 8 * 3 * POOL_IDS


def test_a_forked_child_never_hands_out_its_parents_ids():
    new_id()  # the parent's pool is started, so the child inherits one in use
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids go to the parent, then it leaves at once
        try:
            os.write(write, "\n".join(new_id(now_ns=NOW_NS) for _ in range(POOL_IDS)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parents = {new_id(now_ns=NOW_NS) for _ in range(POOL_IDS)}
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)

    assert len(childs) == POOL_IDS and not parents & childs


def test_the_pool_a_forked_child_forgets_is_never_drawn_from_again():
    # What a forked child runs first (os.register_at_fork): the ids its parent may still hand out
    # are dropped, so the child's next id is the first of a pool of its own.
    state = random.getstate()
    try:
        random.seed(5)
        envelope._forget_digits()
        first = new_id(now_ns=NOW_NS)  # the first id of the pool that seed 5 draws
        random.seed(5)
        envelope._forget_digits()
        assert new_id(now_ns=NOW_NS) == first  # that pool drawn again, not the second id of the old one
    finally:
        random.setstate(state)
        envelope._forget_digits()


@pytest.mark.parametrize("ts", [
    0.0, 0.0005, 0.9984999, 0.9985, 0.9989999, 0.999, 0.9994999, 0.9995, 0.9999995, 1.0,
    1_730_682_123.4995, 1_730_682_123.9999996, 253_402_300_799.999, -0.5, -1.2345,
])
def test_rfc3339_writes_what_datetime_writes_at_every_edge_of_a_second(ts: float):
    dt = datetime.fromtimestamp(ts, tz=UTC)
    assert rfc3339(ts) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def test_rfc3339_works_out_the_text_of_a_second_once_for_the_times_in_it(monkeypatch):
    computed: list[float] = []

    class Counting(datetime):
        @classmethod
        def fromtimestamp(cls, ts: float, tz=None) -> datetime:  # type: ignore[override]
            computed.append(ts)
            return datetime.fromtimestamp(ts, tz)

    monkeypatch.setattr(envelope, "datetime", Counting)
    monkeypatch.setattr(envelope, "_last_second", (-1, ""))
    texts = [rfc3339(second + fraction) for second in (0, 1_730_682_123) for fraction in (0.0, 0.25, 0.998)]

    assert texts == ["1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00.250Z", "1970-01-01T00:00:00.998Z",
                     "2024-11-04T01:02:03.000Z", "2024-11-04T01:02:03.250Z", "2024-11-04T01:02:03.998Z"]
    assert computed == [0, 1_730_682_123]  # from the epoch on, once a second


def test_rfc3339_writes_what_datetime_writes_for_any_time():
    rng = random.Random(7)
    for _ in range(20_000):
        ts = rng.uniform(0, 4_102_444_800) if rng.random() < 0.5 else rng.randrange(2**32) + rng.choice(
            [0.0005, 0.4995, 0.9985, 0.999, 0.9995])
        dt = datetime.fromtimestamp(ts, tz=UTC)
        assert rfc3339(ts) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z", ts
