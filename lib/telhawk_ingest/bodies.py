"""Reading an ASGI request's body with a bound: what HEC ingest (http.py), the Pub/Sub push adapter
(triggers.py) and the emulator's local trigger endpoints (local/triggers.py) share. Light on
imports, so the emulator's master process can use it without loading the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import ClientDisconnect


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body size an ASGI request's first `Content-Length` declares, None without one or when it
    is not a plain decimal number (the server then reads and counts the body itself)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyTooLarge(Exception):
    """A body passed its limit while being read (`receive_body`)."""


async def receive_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    """The whole request body from an ASGI `receive`, at most `limit` bytes.

    Raises BodyTooLarge as soon as more arrived (nothing more is read), ClientDisconnect when the
    client leaves first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
