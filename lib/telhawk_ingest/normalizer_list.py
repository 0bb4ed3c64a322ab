"""GET /api/v1/normalizers: what the service's registry routes, in match order (SPEC §11).

Here: `list_normalizers` (the operator call: any role, audited like the DLQ list) and
`describe` (the answer, from a Registry). Not here: the registry and its order
(normalizers/__init__.py, normalizers/loading.py).
"""

from __future__ import annotations

from typing import Any

from . import ocsf
from .normalizers import Registry, Route
from .service import Operator, Query, Service, parse_query


def list_normalizers(svc: Service, who: Operator, params: Query) -> dict[str, Any]:
    """The routes of `svc.registry` (`describe`); ApiError 400 for any query parameter (it takes
    none). Any operator role may call it; the call is written to the audit log."""
    query = parse_query(params, frozenset())
    answer = describe(svc.registry)
    svc.audit.record(who.name, "list_normalizers", answer["count"], query)
    return answer


def describe(registry: Registry) -> dict[str, Any]:
    """`{"normalizers": [...], "count": N, "plugin_failures": [...], "alias_failures": [...]}`.

    One entry per (format, source type or pattern), in the order lookup tries them: `position`
    (1-based), `match` (`exact` or `pattern`), `format`, `source_type` (the name or the glob),
    `ocsf_classes` (`[{"class_uid", "class_name"}]`, or null for a pass-through: any class, as
    sent), `normalizer` (the function's dotted name) and `origin` (`{"type": "builtin"}`,
    `{"type": "plugin", "entry_point", "distribution", "version"}` or
    `{"type": "alias", "alias_of"}`). `plugin_failures`: entry points that were refused
    (`entry_point`, `distribution`, `error`); `alias_failures`: aliases left out because their
    target is missing while a plugin failed to load (`alias`, `alias_of`, `error`).
    """
    routes = registry.routes()
    return {
        "normalizers": [_route(position, route) for position, route in enumerate(routes, start=1)],
        "count": len(routes),
        "plugin_failures": [failure.to_dict() for failure in registry.plugin_failures],
        "alias_failures": [failure.to_dict() for failure in registry.alias_failures],
    }


def _route(position: int, route: Route) -> dict[str, Any]:
    classes = None if route.ocsf_classes is None else [
        {"class_uid": uid, "class_name": ocsf.class_name(uid)} for uid in route.ocsf_classes]
    fn = route.normalizer
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return {
        "position": position,
        "match": route.match,
        "format": route.format,
        "source_type": route.source_type,
        "ocsf_classes": classes,
        "normalizer": f"{getattr(fn, '__module__', None) or '?'}.{name}",
        "origin": route.origin.to_dict(),
    }
