"""What one request may cost (SPEC §3, §9): events per request and the decompression ratio are capped
while the body is read and parsed, and gzip decompression is linear in the body with a cap on
members. Checked by structure (what was built, what was fed to zlib), never by wall time."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from typing import Any

import pytest

from telhawk_ingest import hec
from telhawk_ingest.config import HecToken, load_settings
from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import HecError
from telhawk_ingest.hec import MAX_GZIP_MEMBERS, HecRequest, parse_events, parse_raw, read_body

TOKEN = HecToken(name="web", token="11111111-2222-3333-4444-555555555555")
MiB = 1024 * 1024
GZIP = {"Content-Encoding": "gzip"}


def request(body: bytes, headers: dict[str, str] | None = None) -> HecRequest:
    return HecRequest("POST", "/services/collector/event", headers or {}, body=body)


def refused(call: Any, *args: Any, **kwargs: Any) -> HecError:
    with pytest.raises(HecError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_the_caps_default_to_spec_values_and_can_be_set():
    hec_settings = load_settings(env={}).hec
    assert (hec_settings.max_events_per_request, hec_settings.max_decompression_ratio) == (100_000, 100)
    env = {"INGEST_HEC_MAX_EVENTS_PER_REQUEST": "5000", "INGEST_HEC_MAX_DECOMPRESSION_RATIO": "20"}
    hec_settings = load_settings(env=env).hec
    assert (hec_settings.max_events_per_request, hec_settings.max_decompression_ratio) == (5000, 20)


# -- events per request --------------------------------------------------------------------------


class CountingEnvelopes:
    """Counts envelopes built while parsing: the cap must stop the parser, not follow it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        real = Envelope.__init__

        def counting(envelope: Envelope, *args: Any, **kwargs: Any) -> None:
            self.built += 1
            real(envelope, *args, **kwargs)

        monkeypatch.setattr(Envelope, "__init__", counting)


@pytest.mark.parametrize(("shape", "body"), [
    ("one object per line", b'{"event":"x"}\n' * 5001),
    ("concatenated objects", b'{"event":"x"}' * 5001),
    ("objects over several lines", b'{"event":\n"x"}\n' * 5001),
    ("objects with spaces between", b'{"event":"x"}  ' * 5001),
])
def test_a_json_body_of_more_events_than_the_cap_is_refused_having_built_at_most_one_more(
        monkeypatch, shape, body):
    built = CountingEnvelopes(monkeypatch)

    error = refused(parse_events, body, TOKEN, "r", max_events=5000)

    assert (error.status, error.code) == (413, 6), shape
    assert error.detail == "more than 5000 events in one request (hec.max_events_per_request)"
    assert built.built <= 5001


def test_a_json_body_of_exactly_the_cap_is_taken():
    assert len(parse_events(b'{"event":"x"}\n' * 5000, TOKEN, "r", max_events=5000)) == 5000


def test_a_raw_body_of_more_lines_than_the_cap_is_refused_having_built_at_most_one_more(monkeypatch):
    # The issue's example: 10 MiB of "a\n" is 5.2 million events; the default cap is 100,000.
    built = CountingEnvelopes(monkeypatch)

    error = refused(parse_raw, b"a\n" * (5 * MiB), request(b""), TOKEN, "r", max_events=100_000)

    assert (error.status, error.code) == (413, 6)
    assert error.detail == "more than 100000 events in one request (hec.max_events_per_request)"
    assert built.built <= 100_001


def test_blank_raw_lines_do_not_count_and_cost_no_envelopes(monkeypatch):
    built = CountingEnvelopes(monkeypatch)

    envelopes = parse_raw(b"\r\n \n\t\n" * 200_000 + b"a\n" * 10 + b" \n", request(b""), TOKEN, "r",
                          max_events=10)

    assert [e.payload for e in envelopes] == ["a"] * 10 and built.built == 10


def test_parsing_past_the_cap_holds_memory_for_the_cap_not_for_the_body():
    body = b'{"event":"x"}\n' * (10 * MiB // 14)  # ~750,000 events at the 10 MiB body limit
    tracemalloc.start()
    try:
        refused(parse_events, body[:1_400_000], TOKEN, "r", max_events=1000)
        small_cap = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        refused(parse_events, body, TOKEN, "r", max_events=1000)
        whole_body = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # orjson's first try at the whole body reserves memory in proportion to it (its decoder's
    # buffer); the envelopes are what the cap bounds: 750,000 of them would take ~350 MB.
    assert whole_body < 16 * len(body)
    assert whole_body - small_cap < 14 * (len(body) - 1_400_000)


# -- the decompression ratio ---------------------------------------------------------------------


def test_a_small_gzip_that_inflates_past_the_ratio_is_refused_before_the_body_limit():
    # The issue's examples: 10 MiB of "a\n" and of "\x01" gzip to about 10 KB each.
    for plain in (b"a\n" * (5 * MiB), b"\x01" * (10 * MiB)):
        packed = gzip.compress(plain)
        assert len(packed) < 20_000

        error = refused(read_body, request(packed, GZIP), 10 * MiB, 100)

        assert (error.status, error.code) == (413, 6)
        assert error.detail == (f"decompressed body is more than 100 times its compressed size of "
                                f"{len(packed)} bytes (hec.max_decompression_ratio)")


def test_a_gzip_body_inflating_to_exactly_the_ratio_is_taken():
    packed = gzip.compress(b'{"event": "x"}\n' * 1000)
    plain = gzip.decompress(packed)
    ratio = -(-len(plain) // len(packed))  # the smallest ratio that takes it

    assert read_body(request(packed, GZIP), 10 * MiB, ratio) == plain
    assert refused(read_body, request(packed, GZIP), 10 * MiB, ratio - 1).status == 413


def test_the_body_limit_still_applies_below_the_ratio():
    packed = gzip.compress(bytes(2 * MiB))
    error = refused(read_body, request(packed, GZIP), MiB, 10_000)
    assert error.detail == f"decompressed body is larger than the maximum of {MiB} bytes"


# -- multi-member gzip: linear, and capped ---------------------------------------------------------


class FedToZlib:
    """Wraps zlib.decompressobj to count the bytes handed to it and copied out of it as input
    (`unused_data`, `unconsumed_tail`): the work decompression does besides inflating."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        counter = self

        class Inflater:
            def __init__(self, wbits: int) -> None:
                self._real = zlib.decompressobj(wbits)

            def decompress(self, data: Any, max_length: int = 0) -> bytes:
                counter.bytes += len(data)
                return self._real.decompress(data, max_length)

            @property
            def eof(self) -> bool:
                return self._real.eof

            @property
            def unused_data(self) -> bytes:
                counter.bytes += len(self._real.unused_data)
                return self._real.unused_data

            @property
            def unconsumed_tail(self) -> bytes:
                counter.bytes += len(self._real.unconsumed_tail)
                return self._real.unconsumed_tail

        class Zlib:
            MAX_WBITS = zlib.MAX_WBITS
            error = zlib.error
            decompressobj = Inflater

        monkeypatch.setattr(hec, "zlib", Zlib)


def members(n: int) -> bytes:
    return gzip.compress(b'{"event": "a"}\n') * n


def test_many_gzip_members_cost_work_in_proportion_to_the_body(monkeypatch):
    fed = FedToZlib(monkeypatch)
    work = []
    for n in (2000, 8000):
        fed.bytes = 0
        body = members(n)
        assert read_body(request(body, GZIP), 10 * MiB, 100) == b'{"event": "a"}\n' * n
        work.append(fed.bytes)
        # Copying the rest of the body once per member (quadratic) would be ~n/2 times the body.
        assert fed.bytes < 8 * len(body)
    assert work[1] < 4 * 1.5 * work[0]  # four times the members, at most ~four times the work


def test_the_issues_example_empty_members_are_refused_past_the_member_cap_after_linear_work(monkeypatch):
    fed = FedToZlib(monkeypatch)
    body = gzip.compress(b"") * (2 * MiB // 20)  # 2 MiB of empty 20-byte members

    error = refused(read_body, request(body, GZIP), 10 * MiB, 100)

    assert (error.status, error.code) == (400, 6)
    assert error.detail == f"gzip body has more than {MAX_GZIP_MEMBERS} members (the maximum)"
    assert fed.bytes < 8 * MAX_GZIP_MEMBERS * 20


def test_a_body_of_exactly_the_member_cap_is_taken():
    assert read_body(request(members(MAX_GZIP_MEMBERS), GZIP), 10 * MiB, 100) == \
        b'{"event": "a"}\n' * MAX_GZIP_MEMBERS


@pytest.mark.parametrize(("case", "body", "detail"), [
    ("zero padding after the last member", members(3) + bytes(100), None),
    ("garbage after a member", members(3) + b"garbage", "unexpected bytes after the compressed data"),
    ("a member cut short", members(3) + gzip.compress(b'{"event": "b"}')[:-5], "truncated"),
    ("a member that is not gzip", members(2) + b"\x1f\x8b\x08\x00garbage-garbage", "not valid gzip"),
])
def test_the_bytes_after_a_member_are_judged_as_before(case, body, detail):
    if detail is None:
        assert read_body(request(body, GZIP), 10 * MiB, 100) == b'{"event": "a"}\n' * 3, case
        return
    error = refused(read_body, request(body, GZIP), 10 * MiB, 100)
    assert (error.status, error.code) == (400, 6) and detail in error.detail, case
