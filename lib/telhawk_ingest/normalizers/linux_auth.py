"""Linux authentication logs (/var/log/auth.log, /var/log/secure): sshd and pam_unix lines to OCSF.

Here: the syslog header (RFC 3164 `Nov  4 01:02:03 host sshd[1234]: ...`, or the RFC 3339 stamp
newer rsyslog writes) and the message patterns that become
- Authentication (3002): Accepted/Failed <method>, Invalid user, maximum attempts exceeded, not
  allowed, ROOT LOGIN REFUSED, Disconnected from user, closed/reset before authentication, and
  pam_unix session opened/closed and authentication failures (any PAM service: sshd, su, sudo...);
- Network Activity (4001): connection lines that name no user (Connection from/closed by/reset
  by, Disconnected from <ip>, Received disconnect, Did not receive identification string...),
  because OCSF Authentication requires a user and these have none.
A line that matches no pattern raises NormalizationError saying so: the event is dead-lettered
rather than stored as an "unknown" Authentication with an invented user, and can be replayed once
a pattern is added. Not here: the registry (which source types reach this module, `__init__.py`).

Time: the syslog timestamp, read as UTC (RFC 3164 carries no zone); its missing year is the year
of the event time the client sent, else of arrival, moved back one year when that would put the
event more than a day in the future (a December line that arrives in January). Lines without a
header take the client's event time, else arrival time. The whole payload is kept in `raw_data`;
parsed values OCSF has no place for go to `unmapped`.

Matching time is linear in the line, by construction (the structure is checked by
tests/unit/test_regex_construction.py for every pattern in the package):
- a line is at most common.MAX_LINE_CHARS long and has no line break (one event is one line;
  either fault raises NormalizationError and the event is dead-lettered whole);
- every unbounded repeat is possessive (`*+`, `++`): it never gives back what it took, so no
  pattern re-reads text through a second path;
- the one exception is a lazy `.*?` for a user name, which may hold spaces. The engine tries
  each place the name could end, and from each, the rest of the pattern reads only the next
  token or two before failing (the tokens after different places do not overlap), or reaches
  the end of the line (the patterns end at the end of the text) and succeeds: one pass in all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telhawk_ingest.envelope import Envelope, parse_time
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import common

OPENSSH = {"name": "OpenSSH", "vendor_name": "OpenBSD"}
LINUX_PAM = {"name": "Linux-PAM"}

_SYSLOG = re.compile(
    r"^(?:<\d{1,3}>)?"
    r"(?P<ts>(?P<mon>[A-Z][a-z]{2})\s++(?P<day>\d{1,2})\s++(?P<hms>\d{2}:\d{2}:\d{2})"
    r"|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d++)?+(?:Z|[+-]\d{2}:?\d{2}))"
    r"\s++(?P<host>\S++)\s++(?P<program>[^\s\[:]++)(?:\[(?P<pid>\d++)\])?+:\s?+(?P<message>.*+)\Z"
)
_PREAUTH = " [preauth]"
# sshd names the method as negotiated; GSSAPI is Kerberos, the others have no OCSF protocol id.
_KERBEROS_METHODS = {"gssapi-with-mic", "gssapi-keyex", "gssapi"}
_FAILURE_SEVERITY = 2  # Low: one failure needs no action, a run of them might


@dataclass(slots=True)
class _Line:
    """One parsed log line and what every event built from it shares."""

    envelope: Envelope
    message: str
    program: str | None
    pid: int | None
    host: str | None
    time_ms: int
    original_time: str | None
    unmapped: dict[str, Any] = field(default_factory=dict)


def normalize(envelope: Envelope) -> dict[str, Any]:
    """One Linux auth log line (raw, a JSON string, or a JSON object's `message`) as OCSF."""
    text, extra = common.event_line(envelope)
    common.single_line(text)
    line = _parse_line(envelope, text, extra)
    message = line.message.removesuffix(_PREAUTH)
    for pattern, build in _PATTERNS:
        match = pattern.match(message)
        if match:
            return build(match, line)
    if line.program:
        raise NormalizationError(f"unrecognised {line.program} message: {_clip(line.message)}")
    raise NormalizationError(f"not a Linux auth log line: {_clip(text)}")


def _parse_line(envelope: Envelope, text: str, extra: dict[str, Any]) -> _Line:
    host = envelope.attributes.get("host")
    header = _SYSLOG.match(text)
    if not header:
        return _Line(
            envelope=envelope,
            message=text.strip(),
            program=None,
            pid=None,
            host=host,
            time_ms=common.to_ms(common.reference_time(envelope)),
            original_time=None,
            unmapped=dict(extra),
        )
    return _Line(
        envelope=envelope,
        message=header["message"].strip(),
        program=header["program"],
        pid=int(header["pid"]) if header["pid"] else None,
        host=header["host"],
        time_ms=common.to_ms(_syslog_time(header, envelope)),
        original_time=header["ts"],
        unmapped=dict(extra),
    )


def _syslog_time(header: re.Match[str], envelope: Envelope) -> float:
    if not header["mon"]:
        try:
            return parse_time(header["ts"])
        except ValueError as exc:
            raise NormalizationError(f"invalid syslog timestamp {header['ts']!r}: {exc}") from exc
    return common.syslog_time(header["ts"], header["mon"], header["day"], header["hms"], envelope)


def _clip(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _port(value: str | None) -> int | None:
    return int(value) if value else None


# --- events ---------------------------------------------------------------------------------------


def _common(line: _Line, product: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": line.time_ms,
        "message": line.message,
        "metadata": common.metadata(line.envelope, product, original_time=line.original_time),
        "raw_data": line.envelope.payload,
    }
    if line.unmapped:
        out["unmapped"] = line.unmapped
    return out


def _authentication(
    line: _Line,
    *,
    activity_id: int,
    activity_name: str,
    status_id: int,
    user: dict[str, Any],
    service: str,
    product: dict[str, Any],
    src: dict[str, Any] | None = None,
    detail: str | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    event = common.classification(
        class_uid=3002,
        class_name="Authentication",
        category_uid=3,
        category_name="Identity & Access Management",
        activity_id=activity_id,
        activity_name=activity_name,
        severity_id=_FAILURE_SEVERITY if status_id == 2 else 1,
    )
    event.update(common.status(status_id, detail))
    event["user"] = user
    # OCSF wants a service or a dst_endpoint; the service is always known, the host usually.
    event["service"] = {"name": service}
    if line.host:
        event["dst_endpoint"] = {"hostname": line.host}
    if src:
        event["src_endpoint"] = src
        event["is_remote"] = True
    if method:
        kerberos = method in _KERBEROS_METHODS
        event["auth_protocol_id"] = 2 if kerberos else 99
        event["auth_protocol"] = "Kerberos" if kerberos else method
    if line.program and line.pid is not None:
        event["logon_process"] = {"name": line.program, "pid": line.pid}
    event.update(_common(line, product))
    return event


def _network(
    line: _Line,
    *,
    activity_id: int,
    activity_name: str,
    src: dict[str, Any],
    dst: dict[str, Any] | None = None,
    status_id: int | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    event = common.network_activity(activity_id, activity_name)
    if status_id is not None:
        event.update(common.status(status_id, detail))
    elif detail:
        event["status_detail"] = detail
    event["src_endpoint"] = src
    dst = dict(dst or {})
    if line.host:
        dst["hostname"] = line.host
    if dst:
        event["dst_endpoint"] = dst
    # sshd logs the server side of the connection, so it is always inbound TCP.
    event["connection_info"] = {"protocol_name": "tcp", "protocol_num": 6, "direction_id": 1,
                                "direction": "Inbound"}
    event["app_name"] = line.program or "sshd"
    event.update(_common(line, OPENSSH))
    return event


# --- message patterns, tried in order -------------------------------------------------------------

Builder = Callable[[re.Match[str], _Line], dict[str, Any]]


def _ssh_extras(match: re.Match[str], line: _Line) -> None:
    groups = match.groupdict()
    if groups.get("proto"):
        line.unmapped.setdefault("ssh_protocol", groups["proto"])
    if groups.get("key"):
        line.unmapped.setdefault("ssh_key", groups["key"])


def _accepted(match: re.Match[str], line: _Line) -> dict[str, Any]:
    _ssh_extras(match, line)
    return _authentication(
        line, activity_id=1, activity_name="Logon", status_id=1, user={"name": match["user"]},
        service="sshd", product=OPENSSH, src=common.endpoint(match["addr"], _port(match["port"])),
        method=match["method"],
    )


def _failed(match: re.Match[str], line: _Line) -> dict[str, Any]:
    _ssh_extras(match, line)
    detail = f"Failed {match['method']}" + (" for invalid user" if match["invalid"] else "")
    return _authentication(
        line, activity_id=1, activity_name="Logon", status_id=2, user={"name": match["user"]},
        service="sshd", product=OPENSSH, src=common.endpoint(match["addr"], _port(match["port"])),
        detail=detail, method=match["method"],
    )


def _refused(detail: str) -> Builder:
    """sshd refused the logon outright, before checking any credential."""

    def build(match: re.Match[str], line: _Line) -> dict[str, Any]:
        _ssh_extras(match, line)
        groups = match.groupdict()
        why = f"{detail} because {groups['why']}" if groups.get("why") else detail
        return _authentication(
            line, activity_id=1, activity_name="Logon", status_id=2,
            user={"name": groups.get("user") or "root"}, service="sshd", product=OPENSSH,
            src=common.endpoint(match["addr"], _port(groups.get("port"))), detail=why,
        )

    return build


_PREAUTH_ENDINGS = {
    "Disconnected from": "Disconnect",
    "Disconnecting": "Disconnect",
    "Connection closed by": "Connection Closed",
    "Connection reset by": "Connection Reset",
}


def _user_disconnect(match: re.Match[str], line: _Line) -> dict[str, Any]:
    src = common.endpoint(match["addr"], _port(match["port"]))
    if match["kind"] == "user":  # the end of an authenticated session
        return _authentication(
            line, activity_id=2, activity_name="Logoff", status_id=1, user={"name": match["user"]},
            service="sshd", product=OPENSSH, src=src, detail=match["why"],
        )
    # The connection ended while the user was still authenticating: no logon happened.
    return _authentication(
        line, activity_id=99, activity_name=_PREAUTH_ENDINGS[match["what"]], status_id=2,
        user={"name": match["user"]}, service="sshd", product=OPENSSH, src=src,
        detail=match["why"] or f"{match['what']} {match['kind']} before authentication completed",
    )


_CONNECTION_ACTIVITY = {
    "Disconnected from": (2, "Close", False),
    "Connection closed by": (2, "Close", False),
    "Received disconnect from": (2, "Close", False),
    "Connection reset by": (3, "Reset", False),
    "Did not receive identification string from": (4, "Fail", True),
    "Timeout before authentication for": (4, "Fail", True),
    "Unable to negotiate with": (4, "Fail", True),
}


def _connection_event(match: re.Match[str], line: _Line) -> dict[str, Any]:
    activity_id, activity_name, failed = _CONNECTION_ACTIVITY[match["what"]]
    detail = match["rest"].lstrip(": ").strip() or None
    return _network(
        line, activity_id=activity_id, activity_name=activity_name,
        src=common.endpoint(match["addr"], _port(match["port"])),
        status_id=2 if failed else None, detail=detail,
    )


def _connection_from(match: re.Match[str], line: _Line) -> dict[str, Any]:
    if match["rdomain"]:
        line.unmapped.setdefault("rdomain", match["rdomain"].strip('"'))
    return _network(
        line, activity_id=1, activity_name="Open",
        src=common.endpoint(match["addr"], _port(match["port"])),
        dst=common.endpoint(match["daddr"], _port(match["dport"])),
    )


# `name=value`; the name starts where a word starts, so a long word without `=` is read once,
# not once from each of its characters.
_PAM_FIELD = re.compile(r"(?<!\w)(\w++)=(\S*+)")


def _pam_fields(text: str) -> dict[str, str]:
    return dict(_PAM_FIELD.findall(text))


def _pam_session(match: re.Match[str], line: _Line) -> dict[str, Any]:
    opened = match["what"] == "opened"
    user = {"name": match["user"]}
    if match["uid"]:
        user["uid"] = match["uid"]
    event = _authentication(
        line, activity_id=1 if opened else 2, activity_name="Logon" if opened else "Logoff",
        status_id=1, user=user, service=match["service"], product=LINUX_PAM,
        detail=f"session {match['what']}",
    )
    # "by alice(uid=1000)" is who started the session (su, sudo); sshd shows only "(uid=0)".
    actor = {k: v for k, v in (("name", match["by"]), ("uid", match["by_uid"])) if v}
    if actor:
        event["actor"] = {"user": actor}
    return event


def _pam_failure(match: re.Match[str], line: _Line) -> dict[str, Any]:
    fields = _pam_fields(match["fields"])
    line.unmapped.setdefault("pam", fields)
    name = fields.get("user")
    if not name:
        # PAM logs no user= when the account does not exist; sshd's own "Invalid user" line
        # carries the attempted name, so this one is left to the DLQ rather than invented.
        raise NormalizationError(
            "pam_unix authentication failure names no user; OCSF Authentication needs one"
        )
    event = _authentication(
        line, activity_id=1, activity_name="Logon", status_id=2, user={"name": name},
        service=match["service"] or line.program or "pam", product=LINUX_PAM,
        src=common.endpoint(fields.get("rhost")) or None, detail="authentication failure",
    )
    if match["count"]:
        event["count"] = int(match["count"])
    return event


_USER = r"(?P<user>.*?)"  # the one lazy field (module docstring)
_FROM = r"from (?P<addr>\S++)"
_PORT = r"port (?P<port>\d++)"
_PROTO = r"(?: (?P<proto>ssh\d?+))?+"
_KEY = r"(?:: (?P<key>.++))?+"

_PATTERNS: list[tuple[re.Pattern[str], Builder]] = [
    (re.compile(rf"^Accepted (?P<method>\S++) for {_USER} {_FROM} {_PORT}{_PROTO}{_KEY}\Z"), _accepted),
    (re.compile(rf"^Failed (?P<method>\S++) for (?:(?P<invalid>invalid user) )?{_USER} "
                rf"{_FROM} {_PORT}{_PROTO}{_KEY}\Z"),
     _failed),
    (re.compile(rf"^Invalid user {_USER} {_FROM}(?: {_PORT})?+\Z"), _refused("Invalid user")),
    (re.compile(rf"^(?:error: )?maximum authentication attempts exceeded for (?:invalid user )?{_USER} "
                rf"{_FROM} {_PORT}{_PROTO}\Z"),
     _refused("maximum authentication attempts exceeded")),
    (re.compile(rf"^User (?P<user>\S++) {_FROM} not allowed because (?P<why>.++)\Z"),
     _refused("not allowed")),
    (re.compile(r"^ROOT LOGIN REFUSED FROM (?P<addr>\S++)(?: port (?P<port>\d++))?+\Z"),
     _refused("root login refused")),
    (re.compile(rf"^(?P<what>{'|'.join(_PREAUTH_ENDINGS)}) "
                rf"(?P<kind>user|invalid user|authenticating user) {_USER} (?P<addr>\S++) {_PORT}"
                r"(?:: (?P<why>.++))?+\Z"),
     _user_disconnect),
    (re.compile(rf"^(?P<what>{'|'.join(_CONNECTION_ACTIVITY)}) (?P<addr>\S++) {_PORT}(?P<rest>.*+)\Z"),
     _connection_event),
    (re.compile(rf"^Connection {_FROM} {_PORT} on (?P<daddr>\S++) port (?P<dport>\d++)"
                r"(?: rdomain (?P<rdomain>.*+))?+\Z"),
     _connection_from),
    (re.compile(r"^pam_unix\((?P<service>[^:)]++):session\): session (?P<what>opened|closed) for user "
                r"(?P<user>[^\s(]++)(?:\(uid=(?P<uid>\d++)\))?+"
                r"(?: by (?P<by>[^\s(]*+)(?:\(uid=(?P<by_uid>\d++)\))?+)?+\s*+\Z"),
     _pam_session),
    (re.compile(r"^(?:pam_unix\((?P<service>[^:)]++):auth\): authentication failure"
                r"|PAM (?P<count>\d++) more authentication failures?); (?P<fields>.*+)\Z"),
     _pam_failure),
]
