"""How the emulator serves: gunicorn with uvicorn workers, as `functions-framework --asgi` does, plus
the settings a HEC endpoint needs against slow, hostile or unlucky clients (README, "Serving").

Here: `ServeOptions` (the server settings), `FairAcceptLoop` (an event loop that lets the workers
share new connections), `HeadLimitProtocol` (uvicorn's httptools protocol with a deadline and a
size limit for the request head), `DrainingServer` (uvicorn's server with a SIGTERM drain),
`EmulatorWorker` (the uvicorn worker that carries them) and `run`, the gunicorn launcher.

- HTTP parsing is uvicorn's httptools protocol (llhttp, in C: half the server CPU per request of
  the pure-Python h11 that uvicorn falls back to without it; README, "Performance").
- A request head (request line and headers) must arrive whole within `keep_alive` seconds of the
  connection opening or of the previous answer; otherwise the connection is closed. uvicorn
  itself arms no timer on a new connection and cancels its keep-alive timer at the first byte,
  so a client sending a header byte at a time could hold a connection for ever. A head is
  limited to MAX_HEAD_BYTES (answered 400 and closed beyond): llhttp sets no limit of its own.
- Bodies: `hec.body_read_timeout_seconds` in the application (telhawk_ingest.http).
- Overload: more than `max_in_flight` ingest requests in one worker (`hec.max_in_flight`) are
  answered 503 with HEC code 9 and `Retry-After` by the service (telhawk_ingest.shedding), and
  counted in `requests_shed` (uvicorn's own `limit_concurrency` answers plain text, uncounted).
- SIGTERM or SIGINT (Ctrl-C) drains a worker: requests already in the application finish, for
  `graceful_timeout` seconds and then the _AFTER_DRAIN_S uvicorn gives what still runs while it
  closes the listener and the idle connections (what is unfinished then is cancelled and answered
  503); every request that arrives meanwhile is answered 503 code 9 with `Retry-After` and
  `Connection: close`; the dispatcher's shutdown writes the counters. Further SIGTERM/SIGINT change
  nothing (Ctrl-C reaches the master and the workers, and the master then sends SIGTERM too);
  gunicorn's master kills what is left `graceful_timeout` + 5 seconds after the signal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from telhawk_ingest.credentials import redact_query_tokens

# Seconds uvicorn waits for what is still running once the drain is over, before cancelling it.
_AFTER_DRAIN_S = 1.0
# Seconds gunicorn's master waits for workers beyond the drain before it kills them.
_MASTER_MARGIN_S = 5


@dataclass(frozen=True)
class ServeOptions:
    """Server settings of the emulator (`python -m local --help` documents each)."""

    bind: str
    workers: int
    threads: int  # worker threads per process for blocking service calls
    timeout: int  # seconds without a heartbeat before gunicorn restarts a worker
    graceful_timeout: int  # seconds a SIGTERM'd worker gives requests in flight
    keep_alive: int  # seconds an idle connection stays open; also the deadline for a request head
    max_in_flight: int  # requests in the application at once, per worker, before 503 code 9
    log_level: str = "warning"
    access_log: bool = False


class FairAcceptLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop, taking one new connection each time the listening socket wakes it.

    asyncio accepts every queued connection at once (up to the backlog): when clients connect
    together, the first worker to wake takes them all and the other workers idle (the 8
    connections of a load test all landed in one worker of four). Taking one at a time lets the
    workers woken by the same readiness take the others, and a busy worker, not waiting on the
    socket, takes none.
    """

    def _accept_connection(self, protocol_factory: Any, sock: Any, sslcontext: Any = None,
                           server: Any = None, backlog: int = 100, *args: Any) -> None:
        super()._accept_connection(protocol_factory, sock, sslcontext, server, 1, *args)  # type: ignore[misc]


# Bytes of request line and headers a request may have (h11's default limit, Node's default).
MAX_HEAD_BYTES = 16 * 1024


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops and uvicorn answers 400 and closes."""


class HeadLimitProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for request heads.

    The deadline is uvicorn's keep-alive timer, armed when the connection opens and after each
    answer as uvicorn does, but not cancelled by the bytes of an unfinished head (uvicorn cancels
    it on any byte): only a whole head cancels it.
    """

    _awaiting_head = False
    _head_bytes = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                            self.timeout_keep_alive_handler)
        self._awaiting_head = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed the timer unless a pipelined request (its head already in) is starting.
        self._awaiting_head = self.timeout_keep_alive_task is not None

    def _unset_keepalive_if_required(self) -> None:
        if not self._awaiting_head:
            super()._unset_keepalive_if_required()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._awaiting_head = False
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining on the first SIGTERM/SIGINT instead of stopping at once."""

    def __init__(self, config: uvicorn.Config, dispatcher: Any, drain_seconds: float) -> None:
        super().__init__(config)
        self.dispatcher = dispatcher
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in uvicorn's captured signals: the worker then exits normally (status 0)
        # once drained, instead of raising the signal again at the end.
        if self.drain_until is None:
            self.drain_until = time.monotonic() + self.drain_seconds
            self.dispatcher.draining = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and not self.should_exit and (
            self.dispatcher.in_flight == 0 or time.monotonic() >= self.drain_until
        ):
            self.should_exit = True
        return await super().on_tick(counter)


class RedactQueryTokens(logging.Filter):
    """Rewrites a log record's message and text arguments so no `?token=` value reaches the log
    (credentials.redact_query_tokens): uvicorn's access line holds the path with its query string,
    where HEC's query-string authentication puts the token (README, "Credentials")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_query_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query_tokens(a) if isinstance(a, str) else a for a in record.args)
        return True


class EmulatorWorker(UvicornWorker):
    """The uvicorn worker of `functions-framework --asgi`, carrying ServeOptions.

    Set `options` on a subclass (`worker_class`) before gunicorn forks the workers. Its access log
    (`--access-log`) shows `?token=***`, never a token.
    """

    options: ServeOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, RedactQueryTokens) for f in access.filters):
            access.addFilter(RedactQueryTokens())

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (a class setting read by UvicornWorker)
        "loop": "local.serving:FairAcceptLoop",
        "http": HeadLimitProtocol,
        "lifespan": "on",
        "timeout_graceful_shutdown": _AFTER_DRAIN_S,
        # Nothing here reads client addresses; skip the per-request X-Forwarded-* rewrite.
        "proxy_headers": False,
    }

    async def _serve(self) -> None:
        # Blocking service calls run in the loop's default executor (telhawk_ingest.http).
        executor = ThreadPoolExecutor(self.options.threads, thread_name_prefix="service")
        asyncio.get_running_loop().set_default_executor(executor)
        self.config.app = self.wsgi
        server = DrainingServer(self.config, self.wsgi, self.options.graceful_timeout)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


class _GracefulArbiter(Arbiter):
    def handle_int(self) -> None:
        # Ctrl-C drains like SIGTERM (module docstring): a client is never left unsure whether
        # its events were taken.
        self.handle_term()


def run(options: ServeOptions, load: Callable[[], Any], on_ready: Callable[[str], None]) -> None:
    """Serve `load()` (called in each worker, after fork) with gunicorn and EmulatorWorker.

    Nothing the functions need is imported in the master: their clients, files and threads must
    be per process, so gunicorn calls `load` in every worker (no preload).
    """
    worker = type("Worker", (EmulatorWorker,), {"options": options})

    class EmulatorApplication(BaseApplication):
        def load_config(self) -> None:
            settings = {
                "bind": [options.bind],
                "workers": options.workers,
                "worker_class": worker,
                "timeout": options.timeout,
                "graceful_timeout": options.graceful_timeout + _MASTER_MARGIN_S,
                "keepalive": options.keep_alive,
                "preload_app": False,
                "proc_name": "telhawk-emulator",
                # gunicorn's control socket has one default path per user: emulators started side
                # by side (the tests, the benchmarks) would take it from each other.
                "control_socket_disable": True,
                "loglevel": options.log_level,
                "accesslog": "-" if options.access_log else None,
                "when_ready": lambda server: on_ready(str(server.LISTENERS[0])),
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

        def run(self) -> None:
            _GracefulArbiter(self).run()

    EmulatorApplication().run()

