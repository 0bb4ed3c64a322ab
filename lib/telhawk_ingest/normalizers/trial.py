"""Trying a normalizer on sample input: what would ingest make of this event? (the CLI's `normalize`)

Here: `try_normalize` and `try_envelope`, which run the registry's lookup, the normalizer and OCSF
validation exactly as ingest does (SPEC §5), and answer with the event or the reason it would be
dead-lettered, so an operator can check a fix (a plugin, an alias) before replaying. Nothing is
stored, dead-lettered, counted or audited. Not here: the registry (`__init__.py`), the HTTP API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from telhawk_ingest import ocsf
from telhawk_ingest.envelope import Envelope, new_id, rfc3339
from telhawk_ingest.errors import PipelineError
from telhawk_ingest.normalizers import FORMATS, Registry


def try_normalize(
    registry: Registry,
    source_type: str,
    fmt: str,
    text: str,
    *,
    attributes: dict[str, Any] | None = None,
    validate: Callable[[dict[str, Any]], None] = ocsf.validate,
) -> dict[str, Any]:
    """Normalize and validate one event given as ingest would receive it.

    `fmt` is the envelope format: `raw` (`text` is the line) or `json` (`text` is the event's
    JSON text, e.g. `"%ASA-6-302013: ..."` with its quotes, or an object). `attributes`: HEC
    metadata such as `host` or `time` (unix seconds). Returns try_envelope's answer; raises
    ValueError for a format other than `raw` or `json`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    now = time.time()
    envelope = Envelope(id=new_id(), source="", source_type=source_type, format=fmt,  # type: ignore[arg-type]
                        payload=text, attributes=dict(attributes or {}), received_at=rfc3339(now))
    return try_envelope(registry, envelope, validate=validate)


def try_envelope(
    registry: Registry, envelope: Envelope, *, validate: Callable[[dict[str, Any]], None] = ocsf.validate
) -> dict[str, Any]:
    """Normalize and validate one envelope (e.g. a DLQ entry's) without storing anything.

    Answer: `{"ok", "event", "reason", "stage", "error", "details", "route"}`:
    - ok: true when the event would be stored; `event` is the OCSF event.
    - otherwise `reason` and `stage` are the DLQ's (`normalization_failed`/`normalize`,
      `validation_failed`/`validate`), `error` its text (SPEC §5) and `details` its details.
      `event` is the normalizer's output when it produced one (a validation failure shows what
      to fix), else null.
    - route: the route that matched (`match`, `source_type`, `format`, `origin`), null when none.
    """
    route = registry.route(envelope.format, envelope.source_type)
    answer: dict[str, Any] = {
        "ok": False, "event": None, "reason": None, "stage": None, "error": None, "details": None,
        "route": None if route is None else {"match": route.match, "source_type": route.source_type,
                                             "format": route.format, "origin": route.origin.to_dict()},
    }
    try:
        answer["event"] = registry.normalize(envelope)
        validate(answer["event"])
    except PipelineError as err:
        answer.update(reason=err.reason, stage=err.stage, error=err.message, details=err.details or None)
        return answer
    except Exception as exc:  # as ingest records it (Service.prepare)
        answer.update(reason="normalization_failed", stage="normalize",
                      error=f"unexpected {type(exc).__name__}: {exc}",
                      details={"exception": type(exc).__name__})
        return answer
    answer["ok"] = True
    return answer
