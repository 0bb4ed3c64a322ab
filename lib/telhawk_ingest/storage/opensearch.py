"""The OpenSearch storage backend: `_bulk` over httpx, daily indices, the OCSF index template (SPEC §6).

Here: `OpenSearchBackend`, how an event's index is named, the index template, and how a bulk
answer becomes one Outcome per event. Not here: waiting and retrying (retry.py acts on the
Outcomes), building the document (storage/document.py: the OCSF event plus `hec`; it is
indexed as handed over), or the embedded store (local.py).

Index naming
    `<storage.index_prefix><HEC index>-YYYY.MM.DD`, e.g. `telhawk-main-2024.05.01`, the day taken
    from the item's day anchor (`Item.time`, UTC): the event's own time when it lies within
    `storage.day_window` of its arrival, else the arrival, which is the envelope id's time (SPEC §3;
    `storage.base.day_anchor`). The name is the same on every attempt: a retry, or a DLQ replay days
    later, goes to the index of the first attempt, where `create` with `_id` = envelope id finds the
    copy already there (409, counted as stored) instead of writing a second one into today's index.
    HEC index names follow Splunk's rule (config.INDEX_NAME: lower-case letters, digits, `_` and
    `-`, at most 80 characters), which OpenSearch accepts as they are; the HEC layer refuses any
    other name, and an item that carries one anyway is a permanent failure (`base.index_of`),
    never rewritten. An empty HEC index is `main`. The prefix must be an OpenSearch name part
    already (checked at start-up, not rewritten either), at most 164 characters, so a whole name
    stays within OpenSearch's 255 bytes.

Index template
    `_index_template/<prefix>ocsf`, matching `<prefix>*`, is PUT once per backend instance,
    lazily before the first bulk (see `index_template` for the mapping and why). A template
    failure never costs an event: the bulk goes ahead, and an index it creates meanwhile just
    gets dynamic mappings.

Outcomes where SPEC §6 is silent
    - A whole-request 5xx other than 500/502/503/504 (e.g. 501, 507) is retried like them, as an
      item 5xx is: the server side failed, and the retry budget is small and ends in the DLQ.
    - A whole-request 3xx is permanent: redirects are not followed (a bulk body re-posted to
      wherever a proxy points is not what `core.url` says), and a wrong `core.url` is not fixed
      by asking again.
    - A success status whose body does not account for every event, or an item entry without a
      status, is retried (see `_item_outcomes`).
    - An httpx error that is not a transport error (e.g. an answer body that cannot be decoded)
      is retried like one: the request may or may not have been applied.
    - An event whose document cannot be encoded as JSON is permanent and is not sent.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx
import orjson

from ..config import CoreSettings, StorageSettings
from ..errors import ConfigError
from .base import (
    DEFAULT_INDEX,
    STORED,
    Item,
    Outcome,
    encode_document,
    index_of,
    permanent,
    retry,
    storage_time,
    time_left,
    utc_day,
)

log = logging.getLogger(__name__)

# Whole-request statuses SPEC §6 names as transient: the node, or a proxy in front of it, is
# overloaded or restarting.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# What a `_bulk` answer keeps (`filter_path`): whether any item failed, each item's status and,
# for a failure, its error; a refused request's error and status. Nothing else of it is read, and
# an item's index, id, version, shard counts and sequence numbers were nine tenths of the answer,
# written by the node and parsed here for every event.
BULK_FILTER = {"filter_path": "errors,error,status,items.*.status,items.*.error"}

# healthy() feeds the HEC health endpoint, which must answer quickly even when storage hangs.
HEALTH_TIMEOUT_SECONDS = 2.0

# Bumped whenever index_template() changes, so an operator can see which one a cluster holds.
TEMPLATE_VERSION = 2

# OpenSearch refuses index names longer than 255 bytes; the date suffix takes 11 of them and a
# HEC index name at most 80 (config.INDEX_NAME), which leaves 164 for the prefix.
_MAX_INDEX_NAME_BYTES = 255
_DAY_SUFFIX_LEN = len("-YYYY.MM.DD")
_MAX_PREFIX_LEN = _MAX_INDEX_NAME_BYTES - _DAY_SUFFIX_LEN - 80
# What OpenSearch takes at the start of an index name: lower case, none of `\ / * ? " < > | , # :`
# or spaces, and no leading `_`, `-`, `+` or `.` (which would make it a hidden index).
_PREFIX = re.compile(r"(?:[a-z0-9][a-z0-9._-]*+)?")
# Error text from a non-JSON body (an HTML page from a proxy, "Unauthorized") is cut to this.
_MAX_BODY_SNIPPET = 200


def _event_day(item: Item) -> str:
    """The item's UTC day as YYYY.MM.DD; the same answer on every attempt for the same item."""
    day = utc_day(int(storage_time(item) // 86400))
    return f"{day.year:04d}.{day.month:02d}.{day.day:02d}"


def index_name(prefix: str, item: Item) -> str:
    """`<prefix><hec index>-YYYY.MM.DD` (module docstring), for an item whose index `base.index_of`
    accepts and a prefix the backend checked."""
    return f"{prefix}{item.index or DEFAULT_INDEX}-{_event_day(item)}"


@functools.lru_cache(maxsize=4096)
def _action_head(prefix: str, hec_index: str, day_number: int) -> bytes:
    """The start of a `create` action line, up to its `_id`, for items of one HEC index and UTC day
    (`int(storage_time // 86400)`): `index_name`'s name, made once per index and day, not per event."""
    day = utc_day(day_number)
    name = f"{prefix}{hec_index or DEFAULT_INDEX}-{day.year:04d}.{day.month:02d}.{day.day:02d}"
    return b'{"create":{"_index":' + orjson.dumps(name) + b',"_id":'


def index_template(
    prefix: str,
    *,
    replicas: int = 0,
    shards: int = 1,
    total_fields_limit: int = 2000,
    depth_limit: int = 20,
) -> dict[str, Any]:
    """The composable index template for OCSF events in indices named `<prefix>*`.

    Why each part:
    - `time` and every numeric `*_time` are OCSF timestamp_t (epoch milliseconds): dates with
      format epoch_millis, so range queries and date histograms work. `metadata.original_time`
      is a string in OCSF and stays a keyword, hence the match on numbers only.
    - `time_dt` and `*_dt` are OCSF datetime_t (RFC 3339 text). OCSF also allows a space instead
      of `T`, which OpenSearch's date parser does not, so these ignore malformed values: they
      only repeat a `*_time` field, and must not send an otherwise good event to the DLQ.
    - `raw_data` is kept in `_source` but not indexed: it can be large and is the source
      of the fields that are indexed. `unmapped`, and OCSF's free-form json_t attributes (`data`,
      `evidence`, ...) when they arrive as objects, are not parsed at all (`enabled: false`): they
      hold whatever the source sent, and one odd event there must not add hundreds of fields or
      change a field's type. (A disabled object also accepts a plain value, so `unmapped` may be
      a string.)
    - Date and numeric detection are off so a string that looks like a date or number does not
      fix that field's type for the day; other strings are keywords, and values longer than the
      ignore_above length stay in `_source` without being indexed (Lucene limits terms to 32 KiB).
    - `hec` (storage/document.py) is mapped explicitly. `hec.fields` holds keys the client
      chooses, so it is a `flat_object`: one field in the mapping whatever the keys, and a key
      that is a number in one event and text in the next is no conflict; `hec.fields.<key>` is
      still searchable. `hec.time` is kept as sent (seconds, or a value in a wrong unit), so it
      is a double that ignores malformed values rather than a date that could refuse the event.
      `hec.payload_b64` (the bytes of a raw line that was not UTF-8) is stored, not indexed.
    - The field count and object depth limits bound what any event can add; an event over them
      is refused with an item 400 and dead-lettered, and the index keeps working.
    - Replicas default to 0 so a single node is green; production clusters raise it.
    """
    # Documents carry epoch milliseconds; the second format lets queries say "2024-05-01".
    epoch_millis = {"type": "date", "format": "epoch_millis||strict_date_optional_time"}
    rfc3339 = {"type": "date", "format": "strict_date_optional_time||epoch_millis", "ignore_malformed": True}
    keyword = {"type": "keyword", "ignore_above": 2048}
    stored_only = {"type": "keyword", "index": False, "doc_values": False}
    opaque = {"type": "object", "enabled": False}
    timestamps = r"^(time|.+_time)$"
    return {
        "index_patterns": [f"{prefix}*"],
        # Above the 0 of most ad-hoc templates, so ours wins for these indices.
        "priority": 100,
        "version": TEMPLATE_VERSION,
        "_meta": {"description": "OCSF events stored by telhawk-ingest"},
        "template": {
            "settings": {
                "index": {
                    "number_of_shards": shards,
                    "number_of_replicas": replicas,
                    "mapping": {
                        "total_fields": {"limit": total_fields_limit},
                        "depth": {"limit": depth_limit},
                    },
                }
            },
            "mappings": {
                "dynamic": True,
                "date_detection": False,
                "numeric_detection": False,
                "properties": {
                    "time": epoch_millis,
                    "time_dt": rfc3339,
                    "message": {"type": "text", "fields": {"keyword": keyword}},
                    "raw_data": stored_only,
                    "unmapped": opaque,
                    "hec": {
                        "properties": {
                            "host": keyword,
                            "source": keyword,
                            "sourcetype": keyword,
                            "index": keyword,
                            "fields": {"type": "flat_object"},
                            "time": {"type": "double", "ignore_malformed": True},
                            "payload_b64": stored_only,
                        }
                    },
                },
                "dynamic_templates": [
                    {
                        "ocsf_timestamps": {
                            "match_pattern": "regex",
                            "match": timestamps,
                            "match_mapping_type": "long",
                            "mapping": epoch_millis,
                        }
                    },
                    {
                        "ocsf_fractional_timestamps": {
                            "match_pattern": "regex",
                            "match": timestamps,
                            "match_mapping_type": "double",
                            "mapping": epoch_millis,
                        }
                    },
                    {"ocsf_datetimes": {"match": "*_dt", "match_mapping_type": "string", "mapping": rfc3339}},
                    {
                        "ocsf_raw_data": {
                            "match": "raw_data",
                            "match_mapping_type": "string",
                            "mapping": stored_only,
                        }
                    },
                    {
                        "ocsf_free_form": {
                            "match_pattern": "regex",
                            "match": r"^(unmapped|data|evidence|supporting_data|access_result"
                            r"|scim_user_schema|scim_group_schema)$",
                            "match_mapping_type": "object",
                            "mapping": opaque,
                        }
                    },
                    {"strings": {"match_mapping_type": "string", "mapping": keyword}},
                ],
            },
        },
    }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date; None if absent or garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _exception_text(exc: Exception) -> str:
    """`ConnectError: [Errno 111] Connection refused`; httpx timeouts often carry no message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class _ServerError:
    """What OpenSearch (or a proxy in front of it) said about a failure, as far as it said anything."""

    status: int
    type: str | None = None
    reason: str | None = None
    # The nested cause: "failed to parse" alone does not say that a depth limit was hit.
    caused_by: str | None = None

    @classmethod
    def of(cls, status: int, error: Any) -> _ServerError:
        """From OpenSearch's `error`: an object, or a bare string on some paths."""
        if not isinstance(error, dict):
            return cls(status, reason=_str_or_none(error))
        cause = error.get("caused_by")
        caused_by = None
        if isinstance(cause, dict) and (cause.get("type") or cause.get("reason")):
            caused_by = ": ".join(str(part) for part in (cause.get("type"), cause.get("reason")) if part)
        return cls(status, _str_or_none(error.get("type")), _str_or_none(error.get("reason")), caused_by)

    @classmethod
    def of_response(cls, response: httpx.Response) -> _ServerError:
        status = response.status_code
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            snippet = " ".join(response.text.split())[:_MAX_BODY_SNIPPET]
            return cls(status, reason=snippet or None)
        if not isinstance(body, dict):
            return cls(status)
        if "error" in body:
            return cls.of(status, body["error"])
        # Amazon OpenSearch Service answers IAM failures with {"message": ...} or {"Message": ...}.
        return cls(status, reason=_str_or_none(body.get("message") or body.get("Message")))

    def __str__(self) -> str:
        """`400 mapper_parsing_exception: <reason> (caused by <type>: <reason>)`, as far as known."""
        text = f"{self.status} {self.type}" if self.type else str(self.status)
        text = f"{text}: {self.reason}" if self.reason else text
        return f"{text} (caused by {self.caused_by})" if self.caused_by else text

    def details(self) -> dict[str, Any]:
        return {"status": self.status, "error_type": self.type, "error_reason": self.reason}


def _request_outcome(response: httpx.Response) -> Outcome | None:
    """The outcome for every event when the whole request failed; None when the items tell."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    error = _ServerError.of_response(response)
    if status in RETRY_STATUSES or status >= 500:
        return retry(
            f"opensearch could not take the bulk request now: {error}",
            parse_retry_after(response.headers.get("retry-after")),
            **error.details(),
        )
    if 400 <= status < 500:
        return permanent(f"opensearch refused the bulk request: {error}", **error.details())
    location = response.headers.get("location")
    where = f" to {location}" if location else ""
    redirected = f"opensearch redirected the bulk request ({status}{where}); check core.url"
    return permanent(redirected, **error.details())


def _item_outcome(entry: Any) -> Outcome:
    """One event's outcome from its entry in the bulk answer, e.g. {"create": {"status": 201}}."""
    result = next(iter(entry.values())) if isinstance(entry, dict) and len(entry) == 1 else None
    status = result.get("status") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(status, int) or isinstance(status, bool):
        return retry("opensearch's bulk answer gives no status for this event; it may or may not be stored")
    action = next(iter(entry))
    if 200 <= status < 300:
        return STORED
    if status == 409 and action == "create":
        # The document with this _id is already there: an earlier attempt or replay stored it.
        return STORED
    error = _ServerError.of(status, result.get("error"))
    if status == 429 or status >= 500:
        return retry(f"opensearch could not take the event now: {error}", **error.details())
    if 400 <= status < 500:
        return permanent(f"opensearch rejected the event: {error}", **error.details())
    unexpected = f"opensearch answered {status} for the event; it may or may not be stored"
    return retry(unexpected, **error.details())


def _item_outcomes(response: httpx.Response, count: int) -> list[Outcome]:
    """Per-event outcomes from a successful bulk answer.

    An answer that does not account for every event (not JSON, no `items`, the wrong number of
    them) leaves us unable to tell which events were stored, so every event is retried. That is
    safe because every action is a `create` with the envelope id as `_id`: an event that did land
    answers 409 on the retry, which counts as stored, so nothing is duplicated or lost.
    """
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) != count:
        found = "no item list" if not isinstance(items, list) else f"{len(items)} items for {count} events"
        return [
            retry(
                f"opensearch answered {response.status_code} to the bulk request but with {found}; "
                "retrying, as create with the event id cannot store an event twice",
                status=response.status_code,
            )
        ] * count
    if _all_stored(items):
        return [STORED] * count
    return [_item_outcome(entry) for entry in items]


def _all_stored(items: list[Any]) -> bool:
    """Whether every entry is `{action: {"status": 2xx, ...}}`: what `_item_outcome` reads as
    stored, checked without building an Outcome per event."""
    for entry in items:
        if type(entry) is not dict or len(entry) != 1:
            return False
        for result in entry.values():
            status = result.get("status") if type(result) is dict else None
            if type(status) is not int or not 200 <= status < 300:
                return False
    return True


class OpenSearchBackend:
    """Stores batches with `_bulk` `create` actions; one Outcome per event, never an exception.

    One instance may serve several threads: the httpx client is created once, on first use, and
    httpx clients are safe to share.
    """

    name = "opensearch"

    def __init__(
        self,
        core: CoreSettings,
        storage: StorageSettings,
        transport: httpx.BaseTransport | None = None,
        *,
        replicas: int = 0,
    ) -> None:
        if not core.url:
            raise ConfigError(
                "core.url: required for the opensearch storage backend, e.g. http://127.0.0.1:9200"
            )
        prefix = storage.index_prefix
        if len(prefix) > _MAX_PREFIX_LEN or not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"storage.index_prefix: expected at most {_MAX_PREFIX_LEN} lower-case letters, digits, "
                f"'.', '_' and '-', not starting with '.', '_' or '-' (OpenSearch index names), "
                f"got {prefix[:_MAX_PREFIX_LEN + 10]!r}"
            )
        self.prefix = prefix
        self.template_name = f"{prefix}ocsf"
        self._template = index_template(prefix, replicas=replicas)
        self._core = core
        self._transport = transport
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        # Held while the template is PUT, so concurrent first batches wait for it rather than
        # racing it and creating the day's index with dynamic mappings.
        self._template_lock = threading.Lock()
        self._template_settled = False
        self.template_installed = False
        # (error type, text) of the last template PUT that could not reach the node at all.
        self._unreachable: tuple[str, str] | None = None

    def index_name(self, item: Item) -> str:
        return index_name(self.prefix, item)

    def store(self, batch: Sequence[Item]) -> list[Outcome]:
        """One `_bulk` request for the batch; one Outcome per item, in order (module docstring)."""
        if not batch:
            return []
        if not self.ensure_template() and self._unreachable is not None:
            # The node did not answer the template PUT: a bulk now would only wait out a second
            # timeout before failing the same way.
            error_type, text = self._unreachable
            return [retry(f"transport error: {text}", error_type=error_type)] * len(batch)
        # Each event becomes its NDJSON pair (`{"create": {"_index": ..., "_id": ...}}` and the
        # document), or its outcome when it cannot be encoded at all.
        parts: list[bytes] = []
        unsent: dict[int, Outcome] = {}
        prefix = self.prefix
        for position, item in enumerate(batch):
            index = index_of(item)
            source = index if isinstance(index, Outcome) else encode_document(item.document)
            if isinstance(source, Outcome):
                # No attempt can store such a document: it goes to the DLQ without holding up the rest.
                unsent[position] = source
                continue
            head = _action_head(prefix, item.index, int(storage_time(item) // 86400))
            parts += (head, orjson.dumps(item.id), b"}}\n", source, b"\n")
        if not unsent:
            return self._bulk(b"".join(parts), len(batch))
        count = len(batch) - len(unsent)
        sent = iter(self._bulk(b"".join(parts), count) if count else [])
        return [unsent[position] if position in unsent else next(sent) for position in range(len(batch))]

    def _bulk(self, body: bytes, count: int) -> list[Outcome]:
        try:
            response = self._http().post(
                "/_bulk", params=BULK_FILTER, content=body, headers={"Content-Type": "application/x-ndjson"},
                timeout=time_left(self._core.timeout_seconds),
            )
        except httpx.TransportError as exc:
            return [retry(f"transport error: {_exception_text(exc)}", error_type=type(exc).__name__)] * count
        except httpx.HTTPError as exc:
            # E.g. an answer whose body cannot be decoded: the request may have been applied or not,
            # and create with the event id makes asking again safe.
            failed = retry(f"bulk request failed: {_exception_text(exc)}", error_type=type(exc).__name__)
            return [failed] * count
        whole = _request_outcome(response)
        if whole is not None:
            return [whole] * count
        return _item_outcomes(response, count)

    def ensure_template(self) -> bool:
        """PUT the OCSF index template unless that is settled already; True once it is installed.

        A transport error or a 429/5xx leaves it to be tried again before the next bulk. Any other
        refusal (a 4xx: no permission to manage templates, a template the cluster rejects) is
        logged once and not retried: asking before every bulk would get the same answer, and
        events are stored either way, with dynamic mappings.
        """
        if self._template_settled:
            return self.template_installed
        with self._template_lock:
            if not self._template_settled:
                self._template_settled = self._put_template()
            return self.template_installed

    def _put_template(self) -> bool:
        """Try the PUT once; True when there is no point in trying again."""
        if not self.prefix:
            # With no prefix the pattern would be "*": every index in the cluster, system ones
            # included, would get these mappings.
            log.warning("storage.index_prefix is empty: not installing the OCSF index template")
            return True
        self._unreachable = None
        try:
            response = self._http().put(
                f"/_index_template/{self.template_name}",
                content=orjson.dumps(self._template),
                headers={"Content-Type": "application/json"},
                timeout=time_left(self._core.timeout_seconds),
            )
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TransportError):
                self._unreachable = (type(exc).__name__, _exception_text(exc))
            log.warning(
                "opensearch index template %s not installed (%s); will try again",
                self.template_name,
                _exception_text(exc),
            )
            return False
        if response.is_success:
            self.template_installed = True
            return True
        error = _ServerError.of_response(response)
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            log.warning(
                "opensearch index template %s not installed (%s); will try again", self.template_name, error
            )
            return False
        log.error(
            "opensearch refused index template %s (%s); storing events without it", self.template_name, error
        )
        return True

    def healthy(self) -> bool:
        """True when the cluster answers `GET /` with a success status within a short timeout.

        Reachability and credentials, nothing more: a red `_cluster/health` says some index has
        an unassigned shard, not that ours cannot take writes, and the per-item outcomes of the
        next bulk say that precisely.
        """
        timeout = min(self._core.timeout_seconds, HEALTH_TIMEOUT_SECONDS)
        try:
            response = self._http().get("/", timeout=timeout)
        except httpx.HTTPError as exc:
            log.debug("opensearch health check failed: %s", _exception_text(exc))
            return False
        return response.is_success

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _http(self) -> httpx.Client:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:
            if self._client is None:
                core = self._core
                auth = httpx.BasicAuth(core.username, core.password or "") if core.username else None
                self._client = httpx.Client(
                    base_url=core.url or "",
                    timeout=core.timeout_seconds,
                    auth=auth,
                    verify=core.verify_tls,
                    transport=self._transport,
                    headers={"Accept": "application/json"},
                )
            return self._client
