"""Every error the service raises on purpose, and what each one means for the caller.

    IngestError
    ├── ConfigError          bad configuration; raised at start-up, names the key
    ├── HecError             answered to a HEC client with a code from Splunk's table;
    │                        nothing from that request was ingested (never dead-lettered)
    ├── ApiError             answered to an operator (401, 403, 400, 404, 405)
    ├── PipelineError        one event failed a stage; it is dead-lettered with a reason
    │   ├── NormalizationError   reason normalization_failed, stage normalize
    │   └── SchemaError          reason validation_failed, stage validate
    └── DLQUnavailable       the DLQ cannot take an event that could not be stored:
                             the request is refused with 503 code 9 so the client keeps it

Storage failures are not exceptions: a backend reports one Outcome per event
(storage/base.py), and retry.py decides. HTTP status and HEC codes are mapped in one place:
`HecError.status` here, turned into responses by `http.py`.
"""

from __future__ import annotations

from typing import Any

# Splunk's HEC status table: code -> (HTTP status, text).
HEC_CODES: dict[int, tuple[int, str]] = {
    0: (200, "Success"),
    1: (403, "Token disabled"),
    2: (401, "Token is required"),
    3: (401, "Invalid authorization"),
    4: (403, "Invalid token"),
    5: (400, "No data"),
    6: (400, "Invalid data format"),
    7: (400, "Incorrect index"),
    8: (500, "Internal server error"),
    9: (503, "Server is busy"),
    10: (400, "Data channel is missing"),
    11: (400, "Invalid data channel"),
    12: (400, "Event field is required"),
    13: (400, "Event field cannot be blank"),
    14: (400, "ACK is disabled"),
    15: (400, "Error in handling indexed fields"),
    16: (400, "Query string authorization is not enabled"),
    17: (200, "HEC is healthy"),
    18: (503, "HEC is unhealthy, queues are full"),
}

# Seconds a client is asked to wait before resending after a 503.
DEFAULT_RETRY_AFTER = 5


class IngestError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(IngestError):
    """A configuration value is missing or wrong; the message names the key and what was expected."""


class HecError(IngestError):
    """A request-level answer to a HEC client, carrying its code from Splunk's table."""

    def __init__(
        self,
        code: int,
        *,
        invalid_event_number: int | None = None,
        detail: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        default_status, text = HEC_CODES[code]
        super().__init__(detail or text)
        self.code = code
        self.text = text
        self.status = status or default_status
        self.invalid_event_number = invalid_event_number
        self.detail = detail
        self.retry_after = retry_after if retry_after is not None else (
            DEFAULT_RETRY_AFTER if self.status == 503 else None
        )

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "code": self.code}
        if self.invalid_event_number is not None:
            out["invalid-event-number"] = self.invalid_event_number
        if self.detail:
            out["detail"] = self.detail
        return out


class ApiError(IngestError):
    """An answer to an operator call: a status and a message that says what was wrong. A 503
    carries `retry_after` seconds (default DEFAULT_RETRY_AFTER), sent as `Retry-After` as for
    HEC's 503 code 9 (RFC 9110 §10.2.3)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after if retry_after is not None else (
            DEFAULT_RETRY_AFTER if status == 503 else None
        )

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "status": self.status}


class PipelineError(IngestError):
    """One event failed a pipeline stage; the event goes to the DLQ with this reason."""

    reason = "pipeline_failed"
    stage = "pipeline"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NormalizationError(PipelineError):
    """No normalizer matched the event, or the normalizer raised."""

    reason = "normalization_failed"
    stage = "normalize"


class SchemaError(PipelineError):
    """The normalized event does not conform to the OCSF schema of its class."""

    reason = "validation_failed"
    stage = "validate"


class DLQUnavailable(IngestError):
    """The DLQ is disabled, full or not writable while an event could not be stored."""

    def as_hec_error(self) -> HecError:
        return HecError(9, detail=str(self))
