"""An example telhawk-ingest normalizer plugin: key=value firewall lines to OCSF Network Activity.

The lines look like

    action=deny proto=tcp src=198.51.100.7 sport=51234 dst=10.1.1.10 dport=22 rule=block-ssh

(sent to HEC raw, as a JSON string, or under a JSON object's `message`), with source type
`example:kv_firewall`. `action` is `allow` or `deny`; `src` and `dst` are required; the other
keys are optional; keys this module does not know are kept in `unmapped`.

`PLUGIN` is what the `telhawk_ingest.normalizers` entry point in pyproject.toml names.
"""

from __future__ import annotations

from typing import Any

from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import NormalizerPlugin, common

SOURCE_TYPE = "example:kv_firewall"
PRODUCT = {"name": "Example KV Firewall", "vendor_name": "Example"}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
# action -> (activity_id, activity_name, action_id, action, disposition_id, disposition)
ACTIONS = {
    "allow": (1, "Open", 1, "Allowed", 1, "Allowed"),
    "deny": (5, "Refuse", 2, "Denied", 2, "Blocked"),
}
KNOWN = {"action", "proto", "src", "sport", "dst", "dport", "rule", "time"}


def normalize(envelope: Envelope) -> dict[str, Any]:
    """One key=value firewall line as an OCSF Network Activity (4001) event.

    Raises NormalizationError (the event is dead-lettered, `normalization_failed`) when the line
    has no `action=allow|deny`, no `src` or `dst`, or a port or time that is not a number.
    """
    text, extra = common.event_line(envelope)  # raw, JSON string or {"message": ...}; 16 KiB cap
    fields = dict(part.partition("=")[::2] for part in text.split() if "=" in part)
    action = fields.get("action")
    if action not in ACTIONS:
        raise NormalizationError(f"action: expected allow or deny, got {action!r}")
    for key in ("src", "dst"):
        if not fields.get(key):
            raise NormalizationError(f"{key}: missing; every line names its source and destination")

    activity_id, activity_name, action_id, action_name, disposition_id, disposition = ACTIONS[action]
    event = common.network_activity(activity_id, activity_name)
    event.update(action_id=action_id, action=action_name, disposition_id=disposition_id,
                 disposition=disposition)
    event["src_endpoint"] = common.endpoint(fields["src"], _number(fields, "sport"))
    event["dst_endpoint"] = common.endpoint(fields["dst"], _number(fields, "dport"))
    proto = fields.get("proto", "").lower()
    connection: dict[str, Any] = {"direction_id": 0, "direction": "Unknown"}
    if proto:
        connection["protocol_name"] = proto
        if proto in PROTOCOLS:
            connection["protocol_num"] = PROTOCOLS[proto]
    event["connection_info"] = connection
    if fields.get("rule"):
        event["firewall_rule"] = {"name": fields["rule"]}
    seconds = _number(fields, "time")
    event["time"] = common.to_ms(seconds if seconds is not None else common.reference_time(envelope))
    # action, disposition and firewall_rule belong to OCSF's security_control profile.
    event["metadata"] = common.metadata(envelope, PRODUCT, profiles=["security_control"])
    event["raw_data"] = envelope.payload
    unmapped = {**extra, **{k: v for k, v in fields.items() if k not in KNOWN}}
    if unmapped:
        event["unmapped"] = unmapped
    return event


def _number(fields: dict[str, str], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if not value.isdigit():
        raise NormalizationError(f"{key}: {value!r} is not a number")
    return int(value)


PLUGIN = NormalizerPlugin(
    normalize=normalize,
    source_types=[SOURCE_TYPE],
    ocsf_classes=[4001],
)
