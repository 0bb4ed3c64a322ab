"""HEC bodies at their edges: encodings, the size limit, broken gzip, and paths with query strings."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from telhawk_ingest.errors import HecError
from telhawk_ingest.hec import endpoint_kind, read_body
from tests.unit.test_hec import gzip_bomb, request

MB = 1024 * 1024


def refusal(body: bytes, headers: dict[str, str], limit: int = MB) -> HecError:
    with pytest.raises(HecError) as caught:
        read_body(request(body, headers), limit)
    return caught.value


def test_a_body_of_exactly_the_limit_is_accepted():
    assert read_body(request(b"x" * 100), 100) == b"x" * 100


@pytest.mark.parametrize("encoding", ["identity", " Identity ", ""])
def test_an_identity_body_is_taken_as_sent(encoding):
    assert read_body(request(b'{"event": "a"}', {"Content-Encoding": encoding}), MB) == b'{"event": "a"}'


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "X-GZIP "])
def test_gzip_is_accepted_under_both_of_its_names(encoding):
    body = gzip.compress(b'{"event": "a"}')
    assert read_body(request(body, {"Content-Encoding": encoding}), MB) == b'{"event": "a"}'


def test_an_unsupported_encoding_is_named_in_the_refusal_cut_to_40_characters():
    assert refusal(b"x", {"Content-Encoding": "br"}).body() == {
        "text": "Invalid data format", "code": 6,
        "detail": "unsupported Content-Encoding 'br'; expected gzip or none",
    }
    long = "a" * 60
    assert refusal(b"x", {"Content-Encoding": long}).detail == (
        f"unsupported Content-Encoding {'a' * 40!r}; expected gzip or none"
    )


def test_an_empty_body_marked_gzip_is_empty():
    assert read_body(request(b"", {"Content-Encoding": "gzip"}), MB) == b""


def test_a_zlib_stream_is_not_gzip():
    error = refusal(zlib.compress(b'{"event": "a"}'), {"Content-Encoding": "gzip"})
    assert (error.code, error.status) == (6, 400)
    assert error.detail == "body is not valid gzip: Error -3 while decompressing data: incorrect header check"


def test_a_truncated_gzip_body_says_so():
    error = refusal(gzip.compress(b'{"event": "a"}' * 100)[:-12], {"Content-Encoding": "gzip"})
    assert (error.code, error.detail) == (6, "body is not valid gzip: compressed data is truncated")


def test_zero_padding_after_the_last_member_is_ignored():
    body = gzip.compress(b'{"event": "a"}') + bytes(16)
    assert read_body(request(body, {"Content-Encoding": "gzip"}), MB) == b'{"event": "a"}'


@pytest.mark.parametrize("trailer", [b"garbage", b"\x00X", b"XX", b" \n"])
def test_anything_but_zero_padding_after_the_gzip_data_is_refused(trailer):
    error = refusal(gzip.compress(b'{"event": "a"}') + trailer, {"Content-Encoding": "gzip"})
    assert error.body() == {
        "text": "Invalid data format", "code": 6,
        "detail": "body is not valid gzip: unexpected bytes after the compressed data",
    }


def test_the_limit_counts_every_gzip_member_together():
    member = gzip.compress(b"x" * 600)
    assert read_body(request(member, {"Content-Encoding": "gzip"}), 1000) == b"x" * 600

    error = refusal(member + member, {"Content-Encoding": "gzip"}, 1000)

    assert (error.code, error.status) == (6, 413)
    assert error.detail == "decompressed body is larger than the maximum of 1000 bytes"


def test_a_gzip_bomb_after_a_first_member_still_costs_no_more_than_the_limit_in_memory():
    body = gzip.compress(bytes(2 * MB)) + gzip_bomb(64 * MB)
    tracemalloc.start()
    try:
        error = refusal(body, {"Content-Encoding": "gzip"}, 4 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.status == 413
    # The 4 MB allowed, plus zlib's working memory; not another 2 MB for each member already read.
    assert peak < 8 * MB


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/services/collector/event?channel=abc", "event"),
        ("/services/collector/raw?channel=a?b", "raw"),
        ("/services/collector/health/?x=1", "health"),
        ("/services/collector/event /x", None),
    ],
)
def test_a_query_string_does_not_change_the_endpoint(path, kind):
    assert endpoint_kind(path) == kind
