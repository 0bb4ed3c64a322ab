"""One DLQ entry: showing and deleting it by id (SPEC §11).

`GET /api/v1/dlq/{id}` answers the record itself (SPEC §7); `DELETE /api/v1/dlq/{id}` removes it
(`admin` role) and answers `{"status": "deleted", "id": ...}`. An id that is not an entry name
(dlq.check_id: a slash, `..`, anything but `failed_<seconds>_<32 hex>`) is refused with 400 before
any filesystem call, whatever the router decoded it from (`..%2F..%2Fetc%2Fpasswd`); an unknown id
is 404. Both are audited.
"""

from __future__ import annotations

from typing import Any

from .dlq import check_id
from .errors import ApiError
from .service import Operator, Query, Service, parse_query

# Neither call takes a query parameter (SPEC §8: anything else is refused, nothing done).
ENTRY_PARAMS: frozenset[str] = frozenset()


def entry_call(svc: Service, who: Operator, method: str, entry_id: str, params: Query) -> dict[str, Any]:
    """`show_entry` for GET, `delete_entry` for DELETE (ApiError 405 for another method)."""
    if method == "GET":
        return show_entry(svc, who, entry_id, params)
    if method == "DELETE":
        return delete_entry(svc, who, entry_id, params)
    raise ApiError(405, f"{method} is not allowed here; use GET or DELETE")


def show_entry(svc: Service, who: Operator, entry_id: str, params: Query) -> dict[str, Any]:
    """The record of one entry (any role). ApiError 400 for a parameter or an id that is not an
    entry name, 404 when there is no such entry, 409 when its file is corrupt."""
    parse_query(params, ENTRY_PARAMS)
    record = svc.dlq.get(check_id(entry_id))
    svc.audit.record(who.name, "show_dlq_entry", 1, {"id": entry_id})
    return record


def delete_entry(svc: Service, who: Operator, entry_id: str, params: Query) -> dict[str, Any]:
    """Delete one entry (`admin` role, else 403), counted in `dlq_deleted`. ApiError 400 for a
    parameter or an id that is not an entry name, 404 when there is no such entry. A corrupt
    entry is deleted like any other (only its name, never what a link points to)."""
    who.require_admin("deleting a DLQ entry")
    parse_query(params, ENTRY_PARAMS)
    svc.dlq.delete(check_id(entry_id))
    svc.counters.add(dlq_deleted=1)
    svc.audit.record(who.name, "delete_dlq_entry", 1, {"id": entry_id})
    return {"status": "deleted", "id": entry_id}
