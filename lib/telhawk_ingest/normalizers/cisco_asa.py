"""Cisco ASA (and Firepower Threat Defense) syslog messages to OCSF: source type `cisco:asa`.

Here: one ASA syslog line per event (`%ASA-<level>-<message id>: <text>`, with or without the
header a device or a relay puts before it), sent raw, as a JSON string, or under a JSON object's
`message`. The message id picks the parser; the texts are those of Cisco's "Cisco Secure
Firewall ASA Series Syslog Messages" guide:

    Network Activity (4001)
      302013 302015   Built inbound|outbound TCP|UDP connection      Open, Allowed
      302014 302016   Teardown TCP|UDP connection                    Close (Reset for TCP Reset-I/O,
                                                                     Fail for SYN Timeout)
      302020 302021   Built / Teardown ICMP connection               Open, Allowed / Close
      106001 106006 106007 106014 106015 106021 106023 106100 313001 710003
                      denies (106100 also `permitted`)               Refuse, Denied, Blocked
                                                                     (106100 permitted: Open, Allowed)
    Authentication (3002)
      113004 113012   AAA user authentication Successful             Logon, Success
      113005 113015   AAA user authentication Rejected               Logon, Failure
      611101 611102   User authentication succeeded / failed         Logon (management access)
      605004 605005   Login denied / permitted                       Logon (SSH, HTTPS, Telnet, console)

AAA lines for authorization or accounting (113004/113005 name the AAA type) are activity Other,
named Authorization or Accounting. A message id not in this table raises NormalizationError
`cisco:asa message id <id> is not supported`; a known id whose text does not read as documented
raises one naming the id; a line without an `%ASA-` tag raises one saying so. Those events are
dead-lettered and can be replayed once the message is supported.

Mapping choices:
- Built lines name a direction: for `inbound` the `for` side (the foreign address) is
  `src_endpoint`, for `outbound` the `to` side (the local address). Teardown lines name none:
  their endpoints follow the line, `for` side as source, `to` side as destination, and
  `connection_info.uid` (the ASA connection id) joins them to the Built line.
- NAT (mapped) addresses that differ from the real ones, identity-firewall users, ACL hash codes
  and anything else OCSF has no place for go to `unmapped`; the whole line is `raw_data`.
- Action and disposition (security_control profile) on Built (Allowed) and deny lines (Denied,
  Blocked); the ACL name is `firewall_rule.name`. The device that logged, when the header names
  it, is `device` (host profile: a Firewall). The events declare the profiles they use.
- Severity from the ASA level: 0-1 Critical, 2 High, 3-4 Medium, 5 Low, 6-7 Informational;
  `metadata.log_level` keeps the ASA's own name, `metadata.event_code` the message id.
- Time: the header's timestamp (`Jan 12 2024 10:01:02` as the ASA writes it, or a relay's
  `Jan 12 10:01:02` without a year, or RFC 3339), read as UTC when it has no zone; without a
  header, the client's event time, else arrival.

Matching time is linear in the line: at most common.MAX_LINE_CHARS, no line break, and every
unbounded repeat is possessive (tests/unit/test_regex_construction.py checks each pattern here).
Not here: the registry (`__init__.py`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telhawk_ingest.envelope import Envelope, parse_time
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import common

SOURCE_TYPE = "cisco:asa"
PRODUCTS = {
    "ASA": {"name": "ASA", "vendor_name": "Cisco"},
    "FTD": {"name": "Firepower Threat Defense", "vendor_name": "Cisco"},
    "FWSM": {"name": "FWSM", "vendor_name": "Cisco"},
    "PIX": {"name": "PIX", "vendor_name": "Cisco"},
}
# ASA logging levels (Cisco's names) and the OCSF severity_id each maps to (module docstring).
LEVELS = ("emergencies", "alerts", "critical", "errors", "warnings", "notifications", "informational",
          "debugging")
SEVERITY = (5, 5, 4, 3, 3, 2, 1, 1)
# IANA protocol numbers of the protocols ASA names; others keep their name only.
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "icmp6": 58, "icmpv6": 58,
             "eigrp": 88, "ospf": 89, "pim": 103, "sctp": 132}
_PROTOCOL_NAMES = {number: name for name, number in reversed(PROTOCOLS.items())}
# TCP flag names as ASA prints them -> the bit OCSF's `connection_info.tcp_flags` uses (RFC 9293).
TCP_FLAGS = {"FIN": 1, "SYN": 2, "RST": 4, "PSH": 8, "ACK": 16, "URG": 32, "ECE": 64, "CWR": 128}
_DIRECTIONS = {"inbound": (1, "Inbound"), "outbound": (2, "Outbound")}
_FIREWALL = {"type_id": 9, "type": "Firewall"}

# The tag that starts every ASA message: `%ASA-6-302013:` (FTD: `%FTD-6-302013:`; some releases
# add a lower-case class, `%ASA-session-6-302013:`).
_TAG = re.compile(r"%(?P<product>ASA|FTD|FWSM|PIX)-(?:[a-z]++-)?+(?P<level>[0-7])-(?P<id>\d{6}):[ ]?+")
# What comes before the tag: `<166>`, a timestamp, the device name, separators.
_HEADER = re.compile(
    r"^(?:<\d{1,3}>)?+\s*+"
    r"(?:(?P<ts>(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2})(?: (?P<year>\d{4}))? (?P<hms>\d{2}:\d{2}:\d{2})"
    r"(?P<fraction>\.\d{1,6})?+"
    r"|(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?+(?:Z|[+-]\d{2}:?\d{2})?+))"
    r"(?::\s*+|\s++))?+"
    r"(?:(?P<host>[^\s:]++)\s*+:?\s*+)?+\Z"
)

_IF = r"[^\s:/]++"  # an interface name (nameif)
_IP = r"[^\s/()]++"  # an address: IPv4, IPv6 (colons included) or a name
# Identity-firewall users and security-group tags, `(LOCAL\alice, 0)`, after an address; never
# `(type 8, code 0)`, which belongs to the line.
_USERS = r"(?:\s*+\((?!type )[^)]*+\))*+"
_PARENS = re.compile(r"\(([^()]*+)\)")


@dataclass(slots=True)
class _Line:
    """One ASA line: the message and what every event built from it shares."""

    envelope: Envelope
    product: str
    level: int
    message_id: str
    message: str
    host: str | None
    time_ms: int
    original_time: str | None
    unmapped: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[re.Match[str], _Line], dict[str, Any]]


def normalize(envelope: Envelope) -> dict[str, Any]:
    """One Cisco ASA syslog line (raw, a JSON string, or a JSON object's `message`) as OCSF."""
    text, extra = common.event_line(envelope)
    common.single_line(text)
    tag = _TAG.search(text)
    if tag is None:
        raise NormalizationError(
            f"not a Cisco ASA syslog line: no %ASA-<level>-<message id>: tag in {_clip(text)}")
    message_id = tag["id"]
    parser = _BY_ID.get(message_id)
    if parser is None:
        raise NormalizationError(f"{SOURCE_TYPE} message id {message_id} is not supported",
                                 details={"message_id": message_id})
    line = _parse_line(envelope, text, tag, extra)
    pattern, build = parser
    match = pattern.match(line.message)
    if match is None:
        raise NormalizationError(
            f"{SOURCE_TYPE} message {message_id}: text not in Cisco's documented form: {_clip(line.message)}",
            details={"message_id": message_id})
    return build(match, line)


def _parse_line(envelope: Envelope, text: str, tag: re.Match[str], extra: dict[str, Any]) -> _Line:
    prefix = text[: tag.start()]
    header = _HEADER.match(prefix)
    unmapped = dict(extra)
    host = time_s = original = None
    if header is None:
        unmapped["syslog_header"] = prefix  # kept, never guessed at
    else:
        host = header["host"]
        original = header["ts"] or header["iso"]
        if header["iso"]:
            try:
                time_s = parse_time(header["iso"])
            except ValueError as exc:
                raise NormalizationError(f"invalid syslog timestamp {header['iso']!r}: {exc}") from exc
        elif header["ts"]:
            time_s = common.syslog_time(header["ts"], header["mon"], header["day"], header["hms"], envelope,
                                        header["year"]) + float(header["fraction"] or 0)
    if time_s is None:
        time_s = common.reference_time(envelope)
    return _Line(
        envelope=envelope, product=tag["product"], level=int(tag["level"]), message_id=tag["id"],
        message=text[tag.end():].strip(), host=host, time_ms=common.to_ms(time_s),
        original_time=original, unmapped=unmapped,
    )


def _clip(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# --- events ---------------------------------------------------------------------------------------


def _finish(event: dict[str, Any], line: _Line) -> dict[str, Any]:
    """What every event shares: time, message, metadata, device, raw_data, unmapped."""
    profiles = ["security_control"] if "action_id" in event or "firewall_rule" in event else []
    if line.host:
        event["device"] = {**_FIREWALL, **_address(line.host, "hostname")}
        profiles.append("host")
    event["time"] = line.time_ms
    event["message"] = line.message
    metadata = common.metadata(line.envelope, PRODUCTS[line.product], original_time=line.original_time,
                               profiles=profiles)
    metadata["event_code"] = line.message_id
    metadata["log_level"] = LEVELS[line.level]
    event["metadata"] = metadata
    event["raw_data"] = line.envelope.payload
    if line.unmapped:
        event["unmapped"] = line.unmapped
    return event


def _address(value: str, name_key: str = "hostname") -> dict[str, Any]:
    """`{"ip": value}` for an IP address, else `{name_key: value}`."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return {name_key: value}
    return {"ip": value}


def _endpoint(address: str | None, port: str | None = None, interface: str | None = None) -> dict[str, Any]:
    """A network endpoint; a non-numeric port is a service name (`ssh`, `https`)."""
    out: dict[str, Any] = _address(address) if address else {}
    if port:
        if port.isdigit():
            out["port"] = int(port)
        else:
            out["svc_name"] = port
    if interface:
        out["interface_name"] = interface
    return out


def _protocol(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    if name.isdigit():
        number = int(name)
        known = _PROTOCOL_NAMES.get(number)
        return {"protocol_num": number, **({"protocol_name": known} if known else {})}
    lower = name.lower()
    return {"protocol_name": lower, **({"protocol_num": PROTOCOLS[lower]} if lower in PROTOCOLS else {})}


def _network(
    line: _Line,
    *,
    activity_id: int,
    activity_name: str,
    src: dict[str, Any],
    dst: dict[str, Any],
    protocol: str | None,
    direction: str | None = None,
    allowed: bool | None = None,
    connection: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    event = common.classification(
        class_uid=4001, class_name="Network Activity", category_uid=4, category_name="Network Activity",
        activity_id=activity_id, activity_name=activity_name, severity_id=SEVERITY[line.level],
    )
    if allowed:
        event.update(action_id=1, action="Allowed", disposition_id=1, disposition="Allowed")
    elif allowed is not None:
        event.update(action_id=2, action="Denied", disposition_id=2, disposition="Blocked")
    if detail:
        event["status_detail"] = detail
    if src:
        event["src_endpoint"] = src
    if dst:
        event["dst_endpoint"] = dst
    direction_id, direction_name = _DIRECTIONS.get((direction or "").lower(), (0, "Unknown"))
    info: dict[str, Any] = {**_protocol(protocol), "direction_id": direction_id, "direction": direction_name}
    if connection:
        info["uid"] = connection
    event["connection_info"] = info
    return event


def _authentication(
    line: _Line,
    *,
    success: bool,
    user: str,
    activity: str = "authentication",
    src: dict[str, Any] | None = None,
    dst: dict[str, Any] | None = None,
    service: str,
    detail: str | None = None,
    logon_type: tuple[int, str] | None = None,
) -> dict[str, Any]:
    activity_id, activity_name = (1, "Logon") if activity == "authentication" else (99, activity.title())
    event = common.classification(
        class_uid=3002, class_name="Authentication", category_uid=3,
        category_name="Identity & Access Management", activity_id=activity_id, activity_name=activity_name,
        severity_id=SEVERITY[line.level],
    )
    event.update(common.status(1 if success else 2, detail))
    # Masked names (`*****`: ASA hides the names of failed attempts by default) are kept as logged.
    event["user"] = {"name": user}
    event["service"] = {"name": service}
    if src:
        event["src_endpoint"] = src
        event["is_remote"] = True
    if dst:
        event["dst_endpoint"] = dst
    if logon_type:
        event["logon_type_id"], event["logon_type"] = logon_type
    return event


def _users(line: _Line, key: str, text: str | None) -> None:
    """Identity-firewall users and tags found in `text` go to `unmapped[key]`."""
    found = _PARENS.findall(text or "")
    if found:
        line.unmapped[key] = [item.strip() for item in found]


def _nat(line: _Line, key: str, real: tuple[str, str | None], mapped: tuple[str | None, str | None]) -> None:
    if mapped[0] and mapped != real:
        line.unmapped[key] = _endpoint(mapped[0], mapped[1])


def _tcp_flags(line: _Line, flags: str | None, connection: dict[str, Any]) -> None:
    names = (flags or "").split()
    if not names:
        return
    if all(name in TCP_FLAGS for name in names):
        connection["tcp_flags"] = sum({TCP_FLAGS[name] for name in names})
    line.unmapped["tcp_flags"] = " ".join(names)


def _duration_ms(text: str) -> int | None:
    """`h:mm:ss` (hours may pass 24) as milliseconds; None for any other form."""
    parts = text.split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    hours, minutes, seconds = (int(part) for part in parts)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


# --- connections: 302013-302016, 302020, 302021 ---------------------------------------------------


def _oriented(direction: str | None, foreign: dict[str, Any], local: dict[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(source, destination): the foreign side starts inbound connections, the local side
    outbound ones; without a direction, the line's order (foreign first)."""
    return (local, foreign) if direction == "outbound" else (foreign, local)


def _sides(direction: str | None) -> tuple[str, str]:
    """The `unmapped` key prefixes of the foreign and the local side, as `_oriented` places them."""
    return ("dst", "src") if direction == "outbound" else ("src", "dst")


def _built(match: re.Match[str], line: _Line) -> dict[str, Any]:
    direction = match["dir"]
    foreign = _endpoint(match["fip"], match["fport"], match["fif"])
    local = _endpoint(match["lip"], match["lport"], match["lif"])
    foreign_key, local_key = _sides(direction)
    _nat(line, f"{foreign_key}_mapped", (match["fip"], match["fport"]), (match["fmip"], match["fmport"]))
    _nat(line, f"{local_key}_mapped", (match["lip"], match["lport"]), (match["lmip"], match["lmport"]))
    _users(line, f"{foreign_key}_users", match["fusers"])
    _users(line, f"{local_key}_users", match["lusers"])
    if match["rest"].strip():
        line.unmapped["rest"] = match["rest"].strip()
    src, dst = _oriented(direction, foreign, local)
    event = _network(line, activity_id=1, activity_name="Open", src=src, dst=dst, protocol=match["proto"],
                     direction=direction, allowed=True, connection=match["conn"])
    return _finish(event, line)


def _teardown_activity(reason: str) -> tuple[int, str]:
    if reason.startswith("TCP Reset"):
        return 3, "Reset"
    if reason.startswith("SYN Timeout"):
        return 4, "Fail"
    return 2, "Close"


def _teardown(match: re.Match[str], line: _Line) -> dict[str, Any]:
    _users(line, "src_users", match["fusers"])
    _users(line, "dst_users", match["lusers"])
    reason = (match["reason"] or "").strip()
    if reason.endswith(")") and "(" in reason:  # `[(user)]`, last in the line
        at = reason.rfind("(")
        line.unmapped["user"] = reason[at + 1:-1].strip()
        reason = reason[:at].strip()
    cause, sep, initiator = reason.rpartition(" from ")
    if sep and initiator and " " not in initiator:
        reason = cause
        line.unmapped["teardown_initiator"] = initiator
    activity_id, activity_name = _teardown_activity(reason)
    event = _network(line, activity_id=activity_id, activity_name=activity_name,
                     src=_endpoint(match["fip"], match["fport"], match["fif"]),
                     dst=_endpoint(match["lip"], match["lport"], match["lif"]),
                     protocol=match["proto"], connection=match["conn"], detail=reason or None)
    event["traffic"] = {"bytes": int(match["bytes"])}
    duration = _duration_ms(match["duration"])
    if duration is None:
        line.unmapped["duration"] = match["duration"]
    else:
        event["duration"] = duration
    return _finish(event, line)


_ICMP_REST = re.compile(r"^(?P<lusers>" + _USERS + r")(?:\s*+\(\d++\))?+"
                        r"(?: type (?P<type>\d++) code (?P<code>\d++))?+(?P<more>.*+)\Z")


def _icmp(match: re.Match[str], line: _Line) -> dict[str, Any]:
    direction = match["dir"]
    rest = _ICMP_REST.match(match["rest"])
    assert rest is not None  # every group of the pattern is optional
    foreign, local = _endpoint(match["faddr"]), _endpoint(match["laddr"])
    foreign_key, local_key = _sides(direction)
    _nat(line, f"{local_key}_mapped", (match["laddr"], None), (match["gaddr"], None))
    _users(line, f"{foreign_key}_users", match["fusers"])
    _users(line, f"{local_key}_users", rest["lusers"])
    line.unmapped["icmp_ids"] = {"faddr": int(match["fid"]), "gaddr": int(match["gid"]),
                                 "laddr": int(match["lid"])}
    if rest["type"] is not None:
        line.unmapped["icmp"] = {"type": int(rest["type"]), "code": int(rest["code"])}
    if rest["more"].strip():
        line.unmapped["rest"] = rest["more"].strip()
    src, dst = _oriented(direction, foreign, local)
    built = match["what"] == "Built"
    event = _network(line, activity_id=1 if built else 2, activity_name="Open" if built else "Close",
                     src=src, dst=dst, protocol=match["proto"], direction=direction,
                     allowed=True if built else None)
    return _finish(event, line)


# --- denies: 106001 106006 106007 106014 106015 106021 106023 106100 313001 710003 -----------------


def _deny(match: re.Match[str], line: _Line) -> dict[str, Any]:
    """The deny lines that name addresses (and ports) of both ends."""
    groups = match.groupdict()
    interface = groups.get("iface")
    if interface:
        interface = interface.rstrip(".")
    src = _endpoint(groups.get("sip"), groups.get("sport"), groups.get("sif") or interface)
    dst = _endpoint(groups.get("dip"), groups.get("dport"), groups.get("dif"))
    _users(line, "src_users", groups.get("susers"))
    _users(line, "dst_users", groups.get("dusers"))
    if groups.get("type") is not None:
        line.unmapped["icmp"] = {"type": int(groups["type"]), "code": int(groups["code"])}
    detail = groups.get("why")
    event = _network(line, activity_id=5, activity_name="Refuse", src=src, dst=dst,
                     protocol=groups.get("proto") or groups.get("pnum"), direction=groups.get("dir"),
                     allowed=False, detail=detail.strip() if detail else None)
    _tcp_flags(line, groups.get("flags"), event["connection_info"])
    if groups.get("acl"):
        event["firewall_rule"] = {"name": groups["acl"]}
    if groups.get("hash"):
        line.unmapped["acl_hash"] = groups["hash"]
    return _finish(event, line)


def _access_list(match: re.Match[str], line: _Line) -> dict[str, Any]:
    """106100: an ACL entry with `log` matched: permitted, denied, or est-allowed."""
    allowed = match["verdict"] != "denied"
    _users(line, "src_users", match["susers"])
    _users(line, "dst_users", match["dusers"])
    line.unmapped["acl_verdict"] = match["verdict"]
    line.unmapped["hit_interval"] = match["interval"]
    if match["hash"]:
        line.unmapped["acl_hash"] = match["hash"]
    event = _network(line, activity_id=1 if allowed else 5, activity_name="Open" if allowed else "Refuse",
                     src=_endpoint(match["sip"], match["sport"], match["sif"]),
                     dst=_endpoint(match["dip"], match["dport"], match["dif"]),
                     protocol=match["proto"], allowed=allowed)
    event["firewall_rule"] = {"name": match["acl"]}
    event["count"] = int(match["hits"])
    return _finish(event, line)


# --- authentication: 113004 113005 113012 113015 611101 611102 605004 605005 ----------------------


def _device(line: _Line) -> dict[str, Any] | None:
    return _address(line.host) if line.host else None


def _aaa(match: re.Match[str], line: _Line) -> dict[str, Any]:
    if match["server"]:
        line.unmapped["aaa_server"] = match["server"]
    else:
        line.unmapped["aaa_server"] = "LOCAL"  # the ASA's own user database
    why = match["why"].strip() if match["why"] else None
    return _finish(_authentication(
        line, success=match["result"] == "Successful", user=match["user"].strip(),
        activity=match["kind"], src=_endpoint(match["addr"]) if match["addr"] else None,
        dst=_device(line), service="aaa", detail=why,
    ), line)


def _management(match: re.Match[str], line: _Line) -> dict[str, Any]:
    address = match["addr"] or match["addr2"]
    return _finish(_authentication(
        line, success=match["result"] == "succeeded", user=match["user"].strip(),
        src=_endpoint(address) if address else None, dst=_device(line), service="management",
    ), line)


def _login(match: re.Match[str], line: _Line) -> dict[str, Any]:
    console = match["console"] is not None
    service = "console" if console else match["svc"]
    src = None if match["serial"] else _endpoint(match["sip"], match["sport"])
    dst = _device(line) if console else _endpoint(match["dip"], None, match["dif"])
    return _finish(_authentication(
        line, success=match["result"] == "permitted", user=match["user"], src=src, dst=dst,
        service=service, logon_type=(2, "Interactive") if console else (3, "Network"),
    ), line)


# --- message patterns, by message id --------------------------------------------------------------


_FOREIGN = rf"for (?P<fif>{_IF}):(?P<fip>{_IP})/(?P<fport>\d++)"
_LOCAL = rf"to (?P<lif>{_IF}):(?P<lip>{_IP})/(?P<lport>\d++)"
_FLAGS = r"flags (?P<flags>(?:[A-Z]++ ?+)*+) *+on interface (?P<iface>\S++)"
_FROM_TO = r"from (?P<sip>[^\s/]++)/(?P<sport>\d++) to (?P<dip>[^\s/]++)/(?P<dport>\d++)"

_MESSAGES: list[tuple[tuple[str, ...], re.Pattern[str], Builder]] = [
    (("302013", "302015"),
     re.compile(rf"^Built (?P<dir>inbound|outbound) (?P<proto>TCP|UDP|SCTP) connection (?P<conn>\d++) "
                rf"{_FOREIGN} \((?P<fmip>{_IP})/(?P<fmport>\d++)\)(?P<fusers>{_USERS}) "
                rf"{_LOCAL} \((?P<lmip>{_IP})/(?P<lmport>\d++)\)(?P<lusers>{_USERS})(?P<rest>.*+)\Z"),
     _built),
    (("302014", "302016"),
     re.compile(rf"^Teardown (?P<proto>TCP|UDP|SCTP) connection (?P<conn>\d++) "
                rf"{_FOREIGN}(?P<fusers>{_USERS}) {_LOCAL}(?P<lusers>{_USERS}) "
                r"duration (?P<duration>\S++) bytes (?P<bytes>\d++)(?: (?P<reason>.*+))?+\Z"),
     _teardown),
    (("302020", "302021"),
     re.compile(rf"^(?P<what>Built|Teardown) (?:(?P<dir>inbound|outbound) )?+(?P<proto>ICMP|ICMPv6) "
                rf"connection for faddr (?P<faddr>{_IP})/(?P<fid>\d++)(?P<fusers>{_USERS}) "
                rf"gaddr (?P<gaddr>{_IP})/(?P<gid>\d++) laddr (?P<laddr>{_IP})/(?P<lid>\d++)(?P<rest>.*+)\Z"),
     _icmp),
    (("106001",),
     re.compile(rf"^(?P<dir>Inbound) (?P<proto>TCP) connection denied {_FROM_TO} {_FLAGS}\Z"),
     _deny),
    (("106006", "106007"),
     re.compile(rf"^Deny (?P<dir>inbound|outbound) (?P<proto>UDP) {_FROM_TO}"
                r"(?: on interface (?P<iface>\S++)| due to (?P<why>.++))\Z"),
     _deny),
    (("106014",),
     re.compile(rf"^Deny (?P<dir>inbound|outbound) (?P<proto>icmp6?+) "
                rf"src (?P<sif>{_IF}):(?P<sip>{_IP})(?P<susers>{_USERS}) "
                rf"dst (?P<dif>{_IF}):(?P<dip>{_IP})(?P<dusers>{_USERS})"
                r"(?: \(type (?P<type>\d++), code (?P<code>\d++)\))?+\Z"),
     _deny),
    (("106015",),
     re.compile(rf"^Deny (?P<proto>TCP) \(no connection\) {_FROM_TO} {_FLAGS}\Z"),
     _deny),
    (("106021",),
     re.compile(r"^Deny (?P<proto>\S++) reverse path check from (?P<sip>\S++) to (?P<dip>\S++) "
                r"on interface (?P<iface>\S++)\Z"),
     _deny),
    (("106023",),
     re.compile(rf"^Deny (?:protocol (?P<pnum>\d++)|(?P<proto>\S++)) "
                rf"src (?P<sif>{_IF}):(?P<sip>{_IP})(?:/(?P<sport>\d++))?+(?P<susers>{_USERS}) "
                rf"dst (?P<dif>{_IF}):(?P<dip>{_IP})(?:/(?P<dport>\d++))?+(?P<dusers>{_USERS})"
                r"(?: \(type (?P<type>\d++), code (?P<code>\d++)\))?+"
                r" by access-group \"(?P<acl>[^\"]*+)\"(?: \[(?P<hash>[^\]]*+)\])?+\Z"),
     _deny),
    (("106100",),
     re.compile(rf"^access-list (?P<acl>\S++) (?P<verdict>permitted|denied|est-allowed) (?P<proto>\S++) "
                rf"(?P<sif>{_IF})/(?P<sip>{_IP})\((?P<sport>\d++)\)(?P<susers>{_USERS}) -> "
                rf"(?P<dif>{_IF})/(?P<dip>{_IP})\((?P<dport>\d++)\)(?P<dusers>{_USERS}) "
                r"hit-cnt (?P<hits>\d++) (?P<interval>first hit|\d++-second interval)"
                r"(?: \[(?P<hash>[^\]]*+)\])?+\Z"),
     _access_list),
    (("313001",),
     re.compile(r"^Denied (?P<proto>ICMP|ICMPv6) type=(?P<type>\d++), code=(?P<code>\d++) "
                r"from (?P<sip>\S++) on interface (?P<iface>\S++)\Z"),
     _deny),
    (("710003",),
     re.compile(rf"^(?P<proto>\S++) access denied by ACL from (?P<sip>[^\s/]++)/(?P<sport>\S++) "
                rf"to (?P<dif>{_IF}):(?P<dip>[^\s/]++)/(?P<dport>\S++)\Z"),
     _deny),
    (("113004", "113005", "113012", "113015"),
     re.compile(r"^AAA user (?P<kind>authentication|authorization|accounting) (?P<result>Successful|Rejected)"
                r"\s*+(?::\s*+reason\s*+=\s*+(?P<why>[^:]*+))?+"
                r":\s*+(?:server\s*+=\s*+(?P<server>[^\s,]++)|local database)"
                r"\s*+[,:]\s*+[Uu]ser\s*+=\s*+(?P<user>[^:]*+)"
                r"(?::\s*+user IP\s*+=\s*+(?P<addr>\S++))?+\s*+\Z"),
     _aaa),
    (("611101", "611102"),
     re.compile(r"^User authentication (?P<result>succeeded|failed):\s*+"
                r"(?:IP address: (?P<addr>[^,\s]++),\s*+|IP, (?P<addr2>[^\s:]++)\s*+:\s*+)?+"
                r"Uname: (?P<user>.++)\Z"),
     _management),
    (("605004", "605005"),
     re.compile(rf"^Login (?P<result>permitted|denied) "
                rf"from (?:(?P<sip>[^\s/]++)/(?P<sport>\S++)|(?P<serial>serial)) "
                rf"to (?:(?P<dif>{_IF}):(?P<dip>[^\s/]++)/(?P<svc>\S++)|(?P<console>console)) "
                r"for user \"(?P<user>[^\"]*+)\"\Z"),
     _login),
]
# Which message ids are read, and what the AAA ids expect of their text.
_BY_ID: dict[str, tuple[re.Pattern[str], Builder]] = {
    message_id: (pattern, build) for ids, pattern, build in _MESSAGES for message_id in ids
}
SUPPORTED_IDS: tuple[str, ...] = tuple(sorted(_BY_ID))
