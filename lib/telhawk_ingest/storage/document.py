"""The stored document: the normalized OCSF event plus the HEC metadata it arrived with (SPEC §5, §6).

Every backend stores `{**event, "hec": {...}}`: the OCSF attributes exactly as normalization and
validation left them, and beside them a top-level `hec` object, so nothing the client sent is
dropped (SPEC §5) and it can be searched for (OpenSearch maps `hec.fields` as `flat_object`;
the embedded store answers `json_extract(document, '$.hec.host')`).

    hec.host, hec.source, hec.sourcetype, hec.index
        as the envelope holds them: `source` and `sourcetype` resolved (token defaults, `http:<token
        name>`), `host` and `index` null when neither the event nor the token gave one
    hec.fields    the event's indexed fields, an object (empty when none were sent)
    hec.time      the event time as the envelope attribute holds it, null when none was given
    hec.payload_b64
        only for a raw line that was not valid UTF-8: its exact bytes (SPEC §4)

`hec` cannot overwrite part of the event: OCSF defines no top-level `hec` attribute, so an event
that carries one fails validation and is dead-lettered with its payload before a document is built.
"""

from __future__ import annotations

from typing import Any

from ..envelope import Envelope

HEC_KEY = "hec"


def stored_document(event: dict[str, Any], envelope: Envelope) -> dict[str, Any]:
    """A new dict: `event`'s attributes and the envelope's HEC metadata under `hec`.

    `event` is not changed (a normalizer may hand back a shared or cached object).
    """
    attributes = envelope.attributes
    fields = attributes.get("fields")
    hec: dict[str, Any] = {
        "host": attributes.get("host"),
        "source": envelope.source,
        "sourcetype": envelope.source_type,
        "index": attributes.get("index"),
        "fields": fields if fields is not None else {},
        "time": attributes.get("time"),
    }
    if "payload_b64" in attributes:
        hec["payload_b64"] = attributes["payload_b64"]
    return {**event, HEC_KEY: hec}
