"""Reading an ASGI request's body with a bound: what HEC ingest (http.py), the Pub/Sub push adapter
(triggers.py) and the emulator's local trigger endpoints (local/triggers.py) share. Light on
imports, so the emulator's master process can use it without loading the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import ClientDisconnect


class BodyTooLarge(Exception):
    """A body over its limit (`receive_body`): `declared` is the Content-Length that said so before
    anything was read, None when the body passed the limit while being read."""

    def __init__(self, declared: int | None = None) -> None:
        super().__init__(declared)
        self.declared = declared


async def receive_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int,
                       headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """The whole request body from an ASGI `receive`, at most `limit` bytes; `headers`: the
    request's (the ASGI scope's), whose Content-Length is checked first.

    Raises BodyTooLarge before anything is read when the Content-Length is over `limit`, and as
    soon as more arrived otherwise (nothing more is read); ClientDisconnect when the client leaves
    first.
    """
    declared = _declared_length(headers)
    if declared is not None and declared > limit:
        raise BodyTooLarge(declared)
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


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body size the first `Content-Length` declares, None without one or when it is not a
    plain decimal number (the body is then counted as it is read)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
