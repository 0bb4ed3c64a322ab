"""Events that are already OCSF: parsed and handed to validation exactly as sent (SPEC §5).

Here: the normalizer for source types `ocsf` and `ocsf:<anything>`, any class. Nothing is added,
renamed or dropped, so what is stored is what the producer sent, and a producer's mistake shows
up as a validation failure naming the attribute. Not here: validation itself (ocsf.py).
"""

from __future__ import annotations

from typing import Any

from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers.common import payload_value


def ocsf_passthrough(envelope: Envelope) -> dict[str, Any]:
    """The payload's JSON object, unchanged; raw lines must hold JSON text too."""
    event = payload_value(envelope)
    if not isinstance(event, dict):
        raise NormalizationError(f"OCSF event must be a JSON object, got {_json_type(event)}")
    return event


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
