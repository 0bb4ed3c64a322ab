"""The emulator's event loop takes queued connections one at a time, so workers share them."""

from __future__ import annotations

import asyncio
import socket

from local.serving import FairAcceptLoop


class CountingSocket(socket.socket):
    """A listening socket that counts the connections taken from its queue."""

    taken = 0

    def accept(self):
        accepted = super().accept()
        self.taken += 1
        return accepted


class Hangup(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        transport.close()


def taken_in_one_wake_up(loop: asyncio.AbstractEventLoop, queued: int) -> int:
    listener = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    clients = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        clients = [socket.create_connection(listener.getsockname()) for _ in range(queued)]
        # What the loop runs when the listening socket is readable (backlog as create_server passes it).
        loop._accept_connection(Hangup, listener, None, None, 100)
        taken = listener.taken
        loop.run_until_complete(asyncio.sleep(0.05))  # the accepted connections are set up and closed
        return taken
    finally:
        for client in clients:
            client.close()
        listener.close()
        loop.close()


def test_asyncio_takes_every_queued_connection_at_once_the_fair_loop_one():
    assert taken_in_one_wake_up(asyncio.SelectorEventLoop(), 3) == 3
    assert taken_in_one_wake_up(FairAcceptLoop(), 3) == 1
