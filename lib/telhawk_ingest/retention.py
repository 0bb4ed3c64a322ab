"""DLQ retention: expiring entries by age and keeping the DLQ within its limits (SPEC §9).

A use case that a person (`POST /api/v1/dlq/retention`), the command line or a schedule runs:
`run_retention(parts, now, dry_run)`. Every entry it deletes is counted (`dlq_expired`,
`dlq_dropped`) and audited, never silently; a dry run says what would be deleted and changes
nothing.

- Expiry, only when `dlq.max_age` is set: an entry whose first failure (its record's `timestamp`,
  SPEC §7; not the file's mtime, which a copy or a rewrite changes) lies more than `max_age` before
  `now` is deleted.
- Limits, only under `dlq.full_policy: drop_oldest`: while pending files or bytes are over
  `dlq.max_pending_files` / `dlq.max_pending_bytes`, the oldest entries are deleted. Under the
  default `refuse` nothing is dropped here: ingest answers 503 code 9 instead (SPEC §2).

One call does bounded work (`limit` entries deleted at most), so it fits a function timeout;
`"more": true` says another call has more to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .audit import AuditLog
from .config import Settings
from .dlq import PREVIEW_IDS, DeadLetterQueue, record_cap
from .stats import Counters

if TYPE_CHECKING:
    from .service import Operator, Query, Service

# At most this many entries deleted per call (a function timeout holds ~10,000 unlinks on EFS).
RETENTION_LIMIT = 10_000
# An entry's name carries the second it was written, at or after its first failure up to the
# storage phase's length (make_record is called before the DLQ names the file); only entries
# named before `cutoff + NAME_SLACK_S`, and those named after their envelope (whose name carries
# their message's publish time: dlq.ids_named_before), are read to compare their `timestamp`.
NAME_SLACK_S = 3600
# The audit names retention's deletions after the rule, or after the operator who ran it.
SCHEDULE_ACTOR = "retention"
# Who the audit names for entries dropped at ingest to make room (the setting, not a person).
FULL_POLICY_ACTOR = "dlq.full_policy"
RETENTION_PARAMS = frozenset({"dry_run"})


@dataclass(frozen=True, slots=True)
class RetentionParts:
    """What retention works on: the DLQ, the shared counters, the audit log and the two settings."""

    dlq: DeadLetterQueue
    counters: Counters
    audit: AuditLog
    max_age_seconds: float | None
    full_policy: str

    @classmethod
    def of(cls, svc: Service) -> RetentionParts:
        """The parts of a running `service.Service`."""
        return cls(svc.dlq, svc.counters, svc.audit, _max_age(svc.settings), svc.settings.dlq.full_policy)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionParts:
        """Parts built from settings alone (no storage backend): for the command line and schedules
        working on a DLQ directory directly."""
        counters = Counters(settings.state_path / "counters")
        dlq = DeadLetterQueue(settings.dlq, ledger=counters,
                              max_record_bytes=record_cap(settings.hec.max_body_bytes))
        return cls(dlq, counters, AuditLog(settings.state_path / "audit"), _max_age(settings),
                   settings.dlq.full_policy)


def _max_age(settings: Settings) -> float | None:
    age = settings.dlq.max_age
    return None if age is None else age.total_seconds()


def run_retention(parts: RetentionParts, now: float | None = None, dry_run: bool = False,
                  who: str = SCHEDULE_ACTOR, limit: int = RETENTION_LIMIT) -> dict[str, Any]:
    """Expire old entries, then drop the oldest while over the limits (module docstring).

    `now`: unix seconds (default: the clock). Returns `{"dry_run", "expired", "dropped",
    "expired_ids", "dropped_ids", "more", "max_age_seconds", "full_policy"}`: counts of entries
    deleted (or, dry, that would be), the first PREVIEW_IDS ids of each, and whether entries are
    left for another call. Audited as `dlq_retention` under `who` (also when dry).
    """
    now = time.time() if now is None else now
    dlq = parts.dlq
    expired = _expired(dlq, now - parts.max_age_seconds, limit) if parts.max_age_seconds else []
    more = len(expired) >= limit
    if not dry_run and expired:
        expired = dlq.remove(expired)
        parts.counters.add(dlq_expired=len(expired))
    dropped: list[str] = []
    if parts.full_policy == "drop_oldest" and not more:
        dropped = _over_limits(dlq, expired if dry_run else [], limit - len(expired))
        more = len(expired) + len(dropped) >= limit
        if not dry_run and dropped:
            dropped = dlq.remove(dropped)
            parts.counters.add(dlq_dropped=len(dropped))
    answer = {
        "dry_run": dry_run,
        "expired": len(expired),
        "dropped": len(dropped),
        "expired_ids": expired[:PREVIEW_IDS],
        "dropped_ids": dropped[:PREVIEW_IDS],
        "more": more,
        "max_age_seconds": parts.max_age_seconds,
        "full_policy": parts.full_policy,
    }
    parts.audit.record(who, "dlq_retention", len(expired) + len(dropped),
                       {key: answer[key] for key in ("dry_run", "expired", "dropped", "expired_ids",
                                                     "dropped_ids")})
    return answer


def _expired(dlq: DeadLetterQueue, cutoff: float, limit: int) -> list[str]:
    """Ids of entries whose first failure is before `cutoff`, oldest first, at most `limit`."""
    found = []
    for entry_id in dlq.ids_named_before(cutoff + NAME_SLACK_S):
        first = dlq.first_failure(entry_id)
        if first is not None and first < cutoff:
            found.append(entry_id)
            if len(found) >= limit:
                break
    return found


def _over_limits(dlq: DeadLetterQueue, going: list[str], limit: int) -> list[str]:
    """Ids of the oldest entries to delete so that pending files and bytes fit the limits,
    counting the entries in `going` as deleted already (a dry run's expired ones); at most `limit`."""
    stats = dlq.stats()
    files = stats["pending_files"] - len(going)
    nbytes = stats["pending_bytes"] - dlq.size_of(going)
    excess_files = files - dlq.max_pending_files if dlq.max_pending_files else 0
    excess_bytes = nbytes - dlq.max_pending_bytes if dlq.max_pending_bytes else 0
    return dlq.oldest(excess_files, excess_bytes, skip=frozenset(going))[:limit]


def record_dropped(counters: Counters, audit: AuditLog, ids: list[str]) -> None:
    """Count and audit entries deleted to make room for new ones (`dlq.full_policy: drop_oldest`
    at ingest; DeadLetterQueue's `on_drop`)."""
    counters.add(dlq_dropped=len(ids))
    audit.record(FULL_POLICY_ACTOR, "dlq_dropped", len(ids), {"ids": ids[:PREVIEW_IDS]})


def retention_call(svc: Service, who: Operator, params: Query) -> dict[str, Any]:
    """`POST /api/v1/dlq/retention[?dry_run=true]`: `run_retention` for an `admin` operator (403
    otherwise), audited under the operator's name; ApiError 400 for another query parameter."""
    from .service import parse_flag, parse_query  # service.py imports this module

    who.require_admin("retention")
    query = parse_query(params, RETENTION_PARAMS)
    return run_retention(RetentionParts.of(svc), svc.clock(), parse_flag(query, "dry_run"), who=who.name)
