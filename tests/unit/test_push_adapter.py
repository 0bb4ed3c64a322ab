"""The Pub/Sub push adapter in front of the CloudEvent function (triggers.push_adapter): a push body
is handed on whole as a binary-mode CloudEvent, a body over the cap is answered 413 without reaching
the function, and a client gone before its body ends reaches nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from telhawk_ingest.triggers import PUBSUB_TYPE, push_adapter

MESSAGE = {"data": "aGVsbG8=", "messageId": "m-1", "publishTime": "2026-03-01T10:00:00Z"}
PUSH = orjson.dumps({"message": MESSAGE, "subscription": "projects/p/subscriptions/s"})


def serve(chunks: list[dict[str, Any]], max_bytes: int = 1 << 20, declared: int | None = None
          ) -> tuple[list[dict[str, Any]], list]:
    """(what the adapter sent, [(scope, body) the function was given]); `declared`: the request's
    Content-Length."""
    sent: list[dict[str, Any]] = []
    called: list = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append((scope, (await receive())["body"]))

    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {"type": "http", "method": "POST", "headers": headers}
    asyncio.run(push_adapter(app, max_bytes)(scope, receive, send))
    return sent, called


def test_a_push_body_in_pieces_reaches_the_function_whole_as_a_cloud_event():
    sent, called = serve([{"type": "http.request", "body": PUSH[:10], "more_body": True},
                          {"type": "http.request", "body": PUSH[10:], "more_body": False}])

    assert sent == []
    [(scope, body)] = called
    headers = dict(scope["headers"])
    assert body == PUSH
    assert headers[b"ce-type"] == PUBSUB_TYPE.encode() and headers[b"ce-id"] == b"m-1"
    assert headers[b"ce-source"] == b"//pubsub.googleapis.com/projects/p/subscriptions/s"


def test_a_body_over_the_cap_is_answered_413_and_never_reaches_the_function():
    sent, called = serve([{"type": "http.request", "body": b"x" * 6, "more_body": True},
                          {"type": "http.request", "body": b"x" * 5, "more_body": True}], max_bytes=10)

    assert called == []
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert sent[1]["body"] == b"body too large"


def test_a_declared_body_over_the_cap_is_answered_413_before_a_byte_of_it_is_read():
    sent, called = serve([], max_bytes=10, declared=11)  # receive() would fail: nothing is queued

    assert called == []
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]


def test_a_body_of_exactly_the_cap_is_taken():
    sent, called = serve([{"type": "http.request", "body": PUSH, "more_body": False}], max_bytes=len(PUSH))
    assert sent == [] and called[0][1] == PUSH


def test_a_client_gone_before_its_body_ends_reaches_nothing():
    sent, called = serve([{"type": "http.request", "body": PUSH[:10], "more_body": True},
                          {"type": "http.disconnect"}])
    assert sent == [] and called == []
