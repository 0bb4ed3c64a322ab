"""Building blocks shared by the built-in normalizers: reading the payload, OCSF ids and metadata.

Here: getting the text line out of an envelope, the classification attributes every OCSF event
carries (class, category, activity, type, severity, status), `metadata`, endpoints and times.
Not here: anything about one source's format (one module per source family) or the registry
(`__init__.py`).
"""

from __future__ import annotations

import copy
import ipaddress
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from telhawk_ingest.envelope import Envelope, parse_time
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.ocsf import OCSF_VERSION

# The longest log line a line normalizer reads (linux_auth, aws_vpcflow), in characters: far
# above any sshd, PAM or flow log line (syslog daemons cut lines at 8 KiB by default), and a bound
# on the work one line can cost. A longer line raises NormalizationError: it is dead-lettered
# whole, never cut.
MAX_LINE_CHARS = 16 * 1024

# Keys under which log shippers put the original line when they wrap it in a JSON object
# (journald, Docker/Fluent Bit, CloudWatch Logs subscriptions, Splunk `_raw`), in that order.
LINE_KEYS = ("message", "MESSAGE", "log", "_raw", "line")

SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
STATUS_NAMES = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}


def parse_json(payload: str) -> Any:
    """The payload's JSON value; NormalizationError saying why when it is not JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise NormalizationError(f"payload is not valid JSON: {exc}") from exc


def payload_value(envelope: Envelope) -> Any:
    """The payload's JSON value: the one the HEC parser decoded, else decoded here.

    Read-only: until something reads `envelope.payload`, the text is serialized from this very
    value, so a normalizer that changed it would change the payload a DLQ record keeps. Copy
    what you need to modify.
    """
    if envelope.decoded is not None:
        return envelope.decoded
    return parse_json(envelope.payload)


def event_line(envelope: Envelope) -> tuple[str, dict[str, Any]]:
    """The log line an envelope carries, and any other fields that came with it.

    A raw envelope is the line itself. A JSON envelope is either a JSON string or an object
    holding the line under one of LINE_KEYS; its other keys are returned so the caller keeps them
    in `unmapped`. NormalizationError when the line is longer than MAX_LINE_CHARS.
    """
    if envelope.format != "json":
        return _line(envelope.payload), {}
    value = payload_value(envelope)
    if isinstance(value, str):
        return _line(value), {}
    if isinstance(value, dict):
        for key in LINE_KEYS:
            if isinstance(value.get(key), str):
                rest = {k: v for k, v in value.items() if k != key}
                return _line(value[key]), rest
        raise NormalizationError(
            f"JSON event has no log line: expected a string under one of {', '.join(LINE_KEYS)}"
        )
    raise NormalizationError(f"JSON event is a {type(value).__name__}, expected a string or an object")


def single_line(text: str) -> str:
    """`text` when it is a log line that is not blank and holds no line break (one event is one
    line); else NormalizationError saying which."""
    if not text.strip():
        raise NormalizationError("empty log line")
    if (at := text.find("\n")) >= 0:
        raise NormalizationError(f"log line has a line break at character {at}: one event is one line")
    return text


def _line(text: str) -> str:
    if len(text) > MAX_LINE_CHARS:
        raise NormalizationError(
            f"log line is {len(text)} characters, over the {MAX_LINE_CHARS} a line normalizer reads"
        )
    return text.rstrip("\r\n")


def classification(
    *,
    class_uid: int,
    class_name: str,
    category_uid: int,
    category_name: str,
    activity_id: int,
    activity_name: str,
    severity_id: int,
) -> dict[str, Any]:
    """The ids and captions every OCSF event starts with; `type_uid` is derived as OCSF defines."""
    return {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES.get(severity_id, "Other"),
    }


def network_activity(activity_id: int, activity_name: str) -> dict[str, Any]:
    """The classification of an informational OCSF Network Activity (4001) event."""
    return classification(
        class_uid=4001,
        class_name="Network Activity",
        category_uid=4,
        category_name="Network Activity",
        activity_id=activity_id,
        activity_name=activity_name,
        severity_id=1,
    )


def status(status_id: int, detail: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"status_id": status_id, "status": STATUS_NAMES[status_id]}
    if detail:
        out["status_detail"] = detail
    return out


def metadata(
    envelope: Envelope,
    product: dict[str, Any],
    *,
    original_time: str | None = None,
    log_version: str | None = None,
    profiles: list[str] | None = None,
) -> dict[str, Any]:
    """OCSF `metadata`: pinned version, product, where the event was logged and when it arrived.

    `log_name` is the HEC `source` (a file path such as /var/log/auth.log) or, without one, the
    source type; `logged_time` is when the ingest service received the event.
    """
    out: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": copy.deepcopy(product),  # callers pass shared constants
        "log_name": envelope.source or envelope.source_type,
    }
    if envelope.received_at:
        out["logged_time"] = to_ms(parse_time(envelope.received_at))
    if original_time is not None:
        out["original_time"] = original_time
    if log_version is not None:
        out["log_version"] = log_version
    if profiles:
        out["profiles"] = profiles
    return out


MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}


def syslog_time(
    stamp: str, month: str, day: str, hms: str, envelope: Envelope, year: str | None = None
) -> float:
    """Unix seconds of a BSD-syslog style stamp (`Nov  4 01:02:03`, or with a year as Cisco
    writes `Nov 4 2024 01:02:03`), read as UTC since the stamp carries no zone. Without a year,
    the year of the event time the client sent, else of arrival (`reference_time`), moved back
    one when that would put the event more than a day in the future (a December line that
    arrives in January). NormalizationError naming `stamp` when it is not a real date."""
    try:
        number = MONTHS.get(month)
        if number is None:
            raise ValueError(f"unknown month {month!r}")
        hour, minute, second = (int(part) for part in hms.split(":"))
        if year is not None:
            when = datetime(int(year), number, int(day), hour, minute, second, tzinfo=UTC)
        else:
            reference = datetime.fromtimestamp(reference_time(envelope), tz=UTC)
            when = datetime(reference.year, number, int(day), hour, minute, second, tzinfo=UTC)
            if when > reference + timedelta(days=1):
                when = when.replace(year=reference.year - 1)
    except ValueError as exc:
        raise NormalizationError(f"invalid syslog timestamp {stamp!r}: {exc}") from exc
    return when.timestamp()


def endpoint(address: str | None, port: int | None = None) -> dict[str, Any]:
    """A network endpoint: `ip` when the address is an IP address, else `hostname`."""
    out: dict[str, Any] = {}
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            out["hostname"] = address
        else:
            out["ip"] = address
    if port is not None:
        out["port"] = port
    return out


def reference_time(envelope: Envelope) -> float:
    """Unix seconds to date an event by: the client's event time, else arrival, else now."""
    if isinstance(envelope.time, int | float):
        return float(envelope.time)
    if envelope.received_at:
        try:
            return parse_time(envelope.received_at)
        except ValueError:
            pass
    return time.time()


def to_ms(seconds: float) -> int:
    """OCSF timestamps are integer milliseconds since the epoch."""
    return round(seconds * 1000)
