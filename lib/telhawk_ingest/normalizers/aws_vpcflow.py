"""AWS VPC Flow Logs, version 2 default format, to OCSF Network Activity (4001).

Here: one space-separated record per event,
`version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end
action log-status`, sent raw or wrapped in JSON (a string, or an object's `message` as CloudWatch
Logs subscriptions deliver it). Custom formats (versions 3-5) name their fields in a header line
that a single record does not carry, so they, and the header line itself, raise
NormalizationError. Not here: the registry (`__init__.py`).

Mapping, following the OCSF examples for VPC Flow Logs: `time` and `start_time` from `start`,
`end_time` from `end`; ACCEPT is activity Traffic, action Allowed; REJECT is activity Refuse,
action Denied; `log-status` is `status_code`; `cloud` names AWS and the account. The record
carries no flow direction, so the interface cannot be placed on either endpoint and stays in
`unmapped.interface_id`. NODATA and SKIPDATA records carry no flow at all: they become activity
Other with the reporting interface as `src_endpoint.interface_uid`, the only endpoint there is
(OCSF requires one). The events use the `cloud` and `security_control` profiles and say so in
`metadata.profiles`.
"""

from __future__ import annotations

from typing import Any

from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import common

FIELDS = (
    "version", "account-id", "interface-id", "srcaddr", "dstaddr", "srcport", "dstport",
    "protocol", "packets", "bytes", "start", "end", "action", "log-status",
)
PRODUCT = {"name": "Amazon VPC", "vendor_name": "AWS", "feature": {"name": "Flowlogs"}}
PROFILES = ["cloud", "security_control"]

# IANA protocol numbers seen in flow logs; others keep only `protocol_num`.
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp",
                  132: "sctp"}

# action -> (activity_id, activity_name, action_id, action, disposition_id, disposition)
_ACTIONS = {
    "ACCEPT": (6, "Traffic", 1, "Allowed", 1, "Allowed"),
    "REJECT": (5, "Refuse", 2, "Denied", 2, "Blocked"),
}
_NO_FLOW = {
    "NODATA": "no network traffic to or from the interface during the aggregation interval",
    "SKIPDATA": "some flow records were skipped during the aggregation interval",
}


def normalize(envelope: Envelope) -> dict[str, Any]:
    """One VPC flow log record as an OCSF Network Activity event."""
    text, extra = common.event_line(envelope)
    values = text.split()
    if values[:2] == ["version", "account-id"]:
        raise NormalizationError("VPC flow log header line, not a flow record")
    if len(values) != len(FIELDS):
        raise NormalizationError(
            f"expected the {len(FIELDS)} fields of the VPC flow log version 2 default format, "
            f"got {len(values)}"
        )
    record = dict(zip(FIELDS, values, strict=True))
    if record["version"] != "2":
        raise NormalizationError(
            f"VPC flow log version {record['version']!r}: only the version 2 default format is supported"
        )
    log_status = record["log-status"]
    start, end = _number(record, "start"), _number(record, "end")
    unmapped = dict(extra)

    if log_status in _NO_FLOW:
        event = common.network_activity(99, log_status)
        event["status_detail"] = _NO_FLOW[log_status]
        event["src_endpoint"] = {"interface_uid": record["interface-id"]}
    elif log_status == "OK":
        if record["action"] not in _ACTIONS:
            raise NormalizationError(f"action: {record['action']!r} is neither ACCEPT nor REJECT")
        activity_id, activity_name, action_id, action, disposition_id, disposition = (
            _ACTIONS[record["action"]]
        )
        event = common.network_activity(activity_id, activity_name)
        event.update(
            action_id=action_id, action=action, disposition_id=disposition_id, disposition=disposition
        )
        event["src_endpoint"] = common.endpoint(record["srcaddr"], _number(record, "srcport"))
        event["dst_endpoint"] = common.endpoint(record["dstaddr"], _number(record, "dstport"))
        protocol = _number(record, "protocol")
        connection: dict[str, Any] = {"direction_id": 0, "direction": "Unknown"}
        if protocol is not None:
            connection["protocol_num"] = protocol
            if protocol in PROTOCOL_NAMES:
                connection["protocol_name"] = PROTOCOL_NAMES[protocol]
        event["connection_info"] = connection
        event["traffic"] = {
            key: value
            for key, value in (("packets", _number(record, "packets")), ("bytes", _number(record, "bytes")))
            if value is not None
        }
        unmapped["interface_id"] = record["interface-id"]
    else:
        raise NormalizationError(f"log-status: {log_status!r} is not OK, NODATA or SKIPDATA")

    event["status_code"] = log_status
    if start is not None:
        event["time"] = event["start_time"] = common.to_ms(start)
    else:
        event["time"] = common.to_ms(common.reference_time(envelope))
    if end is not None:
        event["end_time"] = common.to_ms(end)
    cloud: dict[str, Any] = {"provider": "AWS"}
    if record["account-id"] != "-":
        cloud["account"] = {"uid": record["account-id"]}
    event["cloud"] = cloud
    event["metadata"] = common.metadata(envelope, PRODUCT, log_version="2", profiles=list(PROFILES))
    event["raw_data"] = envelope.payload
    if unmapped:
        event["unmapped"] = unmapped
    return event


def _number(record: dict[str, str], name: str) -> int | None:
    """An integer field; `-` is AWS's "not applicable"."""
    value = record[name]
    if value == "-":
        return None
    try:
        return int(value)
    except ValueError:
        raise NormalizationError(f"{name}: {value!r} is not a number") from None
