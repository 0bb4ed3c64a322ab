"""Lambda entry points for the functions (template.yaml's `Handler: functions/<name>.handler`).

On Lambda, API Gateway calls `handler(event, context)`; Mangum turns that event into an ASGI
request for a one-function Starlette app that calls the same functions-framework function the
emulator serves, so both paths run identical code. Binary bodies (gzip) arrive base64-encoded in
the event and reach the function as bytes. Not here: routing (API Gateway does it from the
template).

After every invocation the process's counters are written to their file: Lambda freezes the
process between invocations and may end it without notice, so the periodic flush (stats.py)
cannot be relied on there. After the first one, which builds the service, what the process has
built is frozen out of the garbage collector's full passes (heap.py), as an emulator worker's is
after start-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mangum import Mangum
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .config import load_settings
from .heap import freeze_startup
from .logs import configure
from .stats import flush_all

HttpFunction = Callable[[Request], Awaitable[Response]]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def lambda_handler(function: HttpFunction) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda entry point of one function. Its first invocation configures the process's logs
    (logs.py, from the `log` settings); importing it does nothing of the kind."""
    app = Starlette(routes=[Route("/", function, methods=METHODS),
                            Route("/{path:path}", function, methods=METHODS)])
    adapter = Mangum(app, lifespan="off")

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if not _logs_configured:
            _configure_logs()
        try:
            return adapter(event, context)
        finally:
            _after_invocation()

    return handler


def lambda_entry(handle: Callable[[Mapping[str, Any]], Any]) -> Callable[[dict[str, Any], Any], Any]:
    """The Lambda entry point of an event-source function (SQS, Kinesis, a schedule): `handle(event)`
    answers the invocation. As `lambda_handler`: logs configured at the first invocation, counters
    written after each."""

    def handler(event: dict[str, Any], _context: Any) -> Any:
        if not _logs_configured:
            _configure_logs()
        try:
            return handle(event)
        finally:
            _after_invocation()

    return handler


_logs_configured = False
_frozen = False


def _after_invocation() -> None:
    """The counters to their file; after the first invocation, the start-up objects frozen."""
    global _frozen
    flush_all()
    if not _frozen:
        _frozen = True
        freeze_startup()


def _configure_logs() -> None:
    global _logs_configured
    log_settings = load_settings().log
    configure(log_settings.level, log_settings.format)
    _logs_configured = True
