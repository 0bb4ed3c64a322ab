"""Structured logs: one JSON object per line on stderr, for machines to read (README, "Logs").

Here: `configure` (called once per process at start-up: the emulator's workers, the Lambda entry
point, a function served alone) and `log_event`, which writes one event with its fields as
top-level JSON members. Events written this way (the `event` member):

| event | fields |
|---|---|
| `retry` | `attempt` (the try that failed, 1-based), `items`, `wait_seconds`, `reason` (its error) |
| `dlq_write` | `ids`, `reasons` (DLQ entry ids and their reason, in order), `count` |
| `breaker` | `breaker`, `state`, `previous`, `consecutive_failures`, `last_error` |
| `shed` | `in_flight`, `max_in_flight`, `path` |
| `rate_limited` | `token_name`, `events`, `events_per_second`, `retry_after` |
| `deadline`, `retry_budget` | `items`, `tries` (made), `reason` (the error they are dead-lettered with) |
| `operator` | `operator` (the token's name), `action`, `count`, `params` (the query) |
| `trigger_decode_failed`, `trigger_failed` | `trigger`, `message_id`, `subscription`, `reason` |
| `schedule` | `schedule` (retention, replay), `time` (the run's clock), `result` (the use case's answer) |

Never in a log line: a token, a password, an event's payload or its envelope. `log_event` drops
fields with those names, and the handler's filter removes them from any record (a library's
`extra=` included); messages and values are written by the service and name tokens by their
name only (SPEC §4: `token_name`). The JSON comes from python-json-logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Record attributes that must never reach a log line, whoever set them.
SECRET_FIELDS = frozenset({"token", "tokens", "authorization", "password", "payload", "payload_b64",
                           "envelope", "body", "document", "raw"})
JSON_FORMAT = "%(levelname)s %(name)s %(message)s"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("json", "text")
RENAMED = {"levelname": "level", "name": "logger"}
# Libraries whose INFO lines are one per outgoing HTTP request (every bulk, every token check).
QUIET = ("httpx", "httpcore", "httpx2")


class _Redact(logging.Filter):
    """Removes SECRET_FIELDS from a record before it is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in SECRET_FIELDS.intersection(record.__dict__):
            delattr(record, name)
        return True


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs; found again by its type, so configuring twice replaces it."""


def configure(level: str = "info", fmt: str = "json", stream: Any = None) -> logging.Handler:
    """Send the root logger's records to `stream` (default stderr) at `level` (debug, info,
    warning, error), as JSON lines (`fmt="json"`, the default) or plain text (`"text"`). Replaces
    the handler an earlier call installed, leaves other handlers alone. ValueError for an unknown
    level or format (config.LogSettings validates both first)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level: expected debug, info, warning or error, got {level!r}")
    handler = _Handler(stream or sys.stderr)
    if fmt == "json":
        # `time`: RFC 3339 in UTC, from the record's creation time.
        handler.setFormatter(JsonFormatter(JSON_FORMAT, rename_fields=RENAMED, timestamp="time"))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_Redact())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    return handler


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log `message` with `event` and `fields` as JSON members; fields named in SECRET_FIELDS are
    dropped. Cheap when `level` is not enabled."""
    if not logger.isEnabledFor(level):
        return
    extra = {name: value for name, value in fields.items() if name not in SECRET_FIELDS}
    extra["event"] = event
    logger.log(level, message, extra=extra, stacklevel=2)
