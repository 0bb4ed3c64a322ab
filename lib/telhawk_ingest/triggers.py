"""Event-driven ingest: Pub/Sub messages (CloudEvents), SQS and Kinesis records (SPEC §12).

Every message goes through the same pipeline as an HTTP request: its data is parsed by the HEC
parser (hec.py: `parse_events` for `hec_format=event`, `parse_raw` for `raw`, the default), then
`Service.prepare` (normalize, validate) and `Service.finish` (store with retries, dead-letter).
Here: turning each platform's message shape into a `Message`, the envelope ids, the whole-message
`decode_failed` record, and each platform's answer.

- Token scope: `triggers.subscriptions` maps the subscription, queue or stream name to a
  `TriggerScope` (token name, default and allowed indexes); for a Pub/Sub CloudEvent whose
  subscription has no entry (Eventarc names its subscriptions itself), the topic's name. The
  publisher's attributes may name `sourcetype`, `source`, `host` and `index`, never the scope:
  an index outside it is what HEC answers code 7 for, and here dead-letters the whole message
  (`decode_failed`, `hec_code` 7).
- Envelope ids (`envelope_id`): UUIDv7-shaped, the publish time in the 48 time bits, a SHA-256 of
  (trigger, subscription, message id, position) in the other 74, so a message delivered again
  gets the same ids: storage keeps an event once (idempotent by `_id`, SPEC §6), and the DLQ entry
  of a triggered event is named after its envelope id and created only if absent (dlq.named_stem),
  so nothing is dead-lettered twice either.
- Bad input (data not base64, not UTF-8, not a HEC body, empty; an SQS record without a body; a
  CloudEvent of another type or without the Pub/Sub message) is dead-lettered whole: one record,
  reason `decode_failed`, stage `decode`, the data as its payload (`payload_b64` when not text),
  the message attributes as `fields`. Never an exception the platform would redeliver forever.
- The durability rule per platform (SPEC §2, §12): a message or record succeeds only when every
  event of it is stored or dead-lettered. Otherwise (the DLQ cannot take what must go there) the
  Pub/Sub function answers 503 with `Retry-After` (Pub/Sub delivers the message again), and a
  Lambda batch lists the record in `batchItemFailures` (the ReportBatchItemFailures contract).
- CloudWatch Logs subscription records on Kinesis (gzip JSON): each `logEvents` entry of a
  `DATA_MESSAGE` is one event (its `message` as a raw event, its `timestamp` as the time), the log
  group as `source`, the log stream as `host`, both also in `fields`; sourcetype
  `aws:cloudwatchlogs` unless the scope names one. `CONTROL_MESSAGE` records are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from . import stats
from .bodies import BodyTooLarge, receive_body
from .config import HecToken, TriggerScope
from .dlq import make_record
from .envelope import Envelope, parse_time, rfc3339
from .errors import DEFAULT_RETRY_AFTER, DLQUnavailable, HecError
from .hec import HecRequest, parse_events, parse_raw, read_body
from .logs import log_event
from .service import Prepared, Service, service

log = logging.getLogger(__name__)

TRIGGERS = ("pubsub", "sqs", "kinesis")
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
HEC_FORMATS = ("event", "raw")
CLOUDWATCH_SOURCETYPE = "aws:cloudwatchlogs"
# The message attributes that are HEC metadata (SPEC §12); the others go to `fields` only when the
# message is dead-lettered whole.
METADATA = ("sourcetype", "source", "host", "index")
_GZIP_MAGIC = b"\x1f\x8b"
# The attribute of a whole-message envelope keeping what `redecode` needs beyond the data and the
# attributes: the exact publish time (ms), the CloudEvent's topic, the platform-shape problem.
REDECODE = "redecode"
# RFC 3339 with more than microseconds (Pub/Sub sends nanoseconds): cut to six digits.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d++")


class Undecodable(Exception):
    """A message whose data cannot be turned into events; it is dead-lettered whole."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class DeliveryFailed(Exception):
    """A message could be neither stored nor dead-lettered: the platform must deliver it again."""


@dataclass(slots=True)
class Message:
    """One message or record, whatever platform it came from.

    `data`: its bytes (None when the platform's shape could not be decoded: `problem` says why and
    `original` keeps what arrived). `publish_ms`: the platform's publish time, unix milliseconds.
    `log_events`: the entries of a CloudWatch Logs DATA_MESSAGE (`log_meta` its group and stream).
    """

    trigger: str
    subscription: str
    message_id: str
    publish_ms: int
    data: bytes | None
    attributes: dict[str, str] = field(default_factory=dict)
    original: str = ""
    problem: str | None = None
    log_events: list[Any] | None = None
    log_meta: dict[str, str] = field(default_factory=dict)
    skip: bool = False  # a CloudWatch Logs CONTROL_MESSAGE: nothing to ingest
    topic: str = ""  # a Pub/Sub CloudEvent's topic: the scope's name when the subscription has none


@dataclass(slots=True)
class Delivery:
    """What became of one message: its events stored and dead-lettered, or why it failed."""

    message_id: str
    ok: bool
    events: int = 0
    stored: int = 0
    dead_lettered: int = 0
    error: str | None = None


def envelope_id(trigger: str, subscription: str, message_id: str, publish_ms: int,
                position: int | str) -> str:
    """The envelope id of the event at `position` of a message (SPEC §12): a UUIDv7 layout (RFC
    9562 §5.7) with `publish_ms` as its 48-bit time and the rest from a SHA-256 of (trigger,
    subscription, message id, position), so it is the same on every delivery of the message and
    sorts by publish time. `position` "message" names the whole-message (decode_failed) entry."""
    digest = hashlib.sha256(f"{trigger}\x00{subscription}\x00{message_id}\x00{position}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")  # 80 bits, 74 used
    value = ((publish_ms & 0xFFFF_FFFF_FFFF) << 80) | (0x7 << 76) | (((rand >> 62) & 0xFFF) << 64) \
        | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def _publish_ms(value: Any) -> int | None:
    """Unix milliseconds from RFC 3339 text (any fraction) or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(parse_time(_LONG_FRACTION.sub(r"\1", value)) * 1000)
    except ValueError:
        return None


def _body_key(raw: bytes | str) -> str:
    """A message id for a message that has none: a hash of what arrived, the same every time."""
    data = raw.encode() if isinstance(raw, str) else raw
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _last_part(name: str, separator: str = "/") -> str:
    return name.rsplit(separator, 1)[-1]


# -- platform shapes -> Message ---------------------------------------------------------------


def pubsub_message(body: Any, ce_attributes: Mapping[str, Any] | None = None) -> Message:
    """A Pub/Sub push body (`{"message": {...}, "subscription": "projects/p/subscriptions/s"}`,
    also the data of a `messagePublished` CloudEvent) as a Message; never raises. The CloudEvent's
    own `id` and `time` stand in for a message without `messageId` or `publishTime`."""
    ce = ce_attributes or {}
    original = body if isinstance(body, str) else orjson.dumps(body, default=str).decode()
    message = body.get("message") if isinstance(body, dict) else None
    subscription = body.get("subscription") if isinstance(body, dict) else None
    name = _last_part(subscription) if isinstance(subscription, str) and subscription else ""
    if not isinstance(message, dict):
        return Message("pubsub", name, str(ce.get("id") or _body_key(original)),
                       _publish_ms(ce.get("time")) or 0, None, original=original,
                       problem="no Pub/Sub message (expected {\"message\": {...}})")
    message_id = message.get("messageId") or message.get("message_id") or ce.get("id")
    publish_ms = _publish_ms(message.get("publishTime") or message.get("publish_time") or ce.get("time"))
    raw_attributes = message.get("attributes") or {}
    attributes = ({str(k): str(v) for k, v in raw_attributes.items()}
                  if isinstance(raw_attributes, dict) else {})
    out = Message("pubsub", name, str(message_id or _body_key(original)), publish_ms or 0, None, attributes,
                  original=str(message.get("data", "")))
    problems = []
    if not message_id:
        problems.append("no messageId")
    if publish_ms is None:
        problems.append("no readable publishTime")
    if not isinstance(raw_attributes, dict):
        problems.append("attributes is not an object")
    data = message.get("data")
    if not isinstance(data, str) or not data:
        problems.append("data is empty" if data in (None, "") else "data is not a string")
    else:
        try:
            out.data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            problems.append("data is not base64")
    if problems:
        out.problem = "; ".join(problems)
    return out


def cloud_event_message(attributes: Mapping[str, Any], data: Any) -> Message:
    """A CloudEvent (its context attributes and data, as functions-framework gives them) as a
    Message: a `messagePublished` event's data is the Pub/Sub push body; any other type, or data
    without a message, is a Message with a `problem` (dead-lettered whole)."""
    kind = attributes.get("type")
    if isinstance(data, bytes | bytearray):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            data = bytes(data).decode("utf-8", "replace")
    message = pubsub_message(data, attributes)
    source = attributes.get("source")
    if isinstance(source, str) and "/topics/" in source:  # //pubsub.googleapis.com/projects/p/topics/t
        message.topic = _last_part(source)
    if kind != PUBSUB_TYPE:
        message.problem = f"CloudEvent type {str(kind)[:100]!r} is not {PUBSUB_TYPE}"
        message.data = None
        # Kept whole: the event's context attributes and its data.
        message.original = orjson.dumps({"attributes": dict(attributes), "data": data}, default=str).decode()
    return message


def sqs_message(record: Mapping[str, Any]) -> Message:
    """An SQS record of a Lambda event: its body is the data (as a Pub/Sub message's, not base64),
    its message attributes (string values) the attributes, `SentTimestamp` the publish time."""
    system = record.get("attributes") or {}
    sent = system.get("SentTimestamp") or system.get("ApproximateFirstReceiveTimestamp")
    publish_ms = int(sent) if isinstance(sent, str) and sent.isdigit() else 0
    attributes: dict[str, str] = {}
    for name, value in (record.get("messageAttributes") or {}).items():
        if isinstance(value, dict):
            text = value.get("stringValue")
            text = value.get("binaryValue") if text is None else text
            if text is not None:
                attributes[str(name)] = str(text)
    queue = _last_part(str(record.get("eventSourceARN") or ""), ":")
    message_id = str(record.get("messageId") or _body_key(orjson.dumps(record, default=str)))
    body = record.get("body")
    out = Message("sqs", queue, message_id, publish_ms, None, attributes,
                  original=body if isinstance(body, str) else "")
    if not isinstance(body, str):
        out.problem = "the record has no body"
    elif not body:
        out.problem = "data is empty"
    else:
        out.data = body.encode()
    return out


def kinesis_message(record: Mapping[str, Any], max_bytes: int, max_ratio: int) -> Message:
    """A Kinesis record of a Lambda event: base64 data, the arrival time as the publish time, the
    shard and sequence number as the message id. Gzip data holding a CloudWatch Logs subscription
    message gives `log_events` (DATA_MESSAGE) or `skip` (CONTROL_MESSAGE); gzip is inflated within
    the HEC body limits (`hec.max_body_bytes`, `hec.max_decompression_ratio`)."""
    kinesis = record.get("kinesis") or {}
    stream = _last_part(str(record.get("eventSourceARN") or ""))
    sequence = kinesis.get("sequenceNumber")
    message_id = str(record.get("eventID") or sequence or _body_key(orjson.dumps(record, default=str)))
    arrival = kinesis.get("approximateArrivalTimestamp")
    publish_ms = int(arrival * 1000) if isinstance(arrival, int | float) else 0
    data = kinesis.get("data")
    out = Message("kinesis", stream, message_id, publish_ms, None,
                  original=data if isinstance(data, str) else "")
    if not isinstance(data, str) or not data:
        out.problem = "the record has no data"
        return out
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        out.problem = "data is not base64"
        return out
    out.data = raw
    if raw.startswith(_GZIP_MAGIC):
        _cloudwatch(out, raw, max_bytes, max_ratio)
    return out


def _cloudwatch(out: Message, raw: bytes, max_bytes: int, max_ratio: int) -> None:
    """Fill `out` from gzip data that should be a CloudWatch Logs subscription message."""
    try:
        text = read_body(HecRequest("POST", "/", {"content-encoding": "gzip"}, {}, raw), max_bytes, max_ratio)
        logs = orjson.loads(text)
    except HecError as err:
        out.problem = f"gzip data cannot be read: {err}"
        return
    except orjson.JSONDecodeError:
        out.problem = "gzip data is not a CloudWatch Logs message (not JSON)"
        return
    kind = logs.get("messageType") if isinstance(logs, dict) else None
    if kind == "CONTROL_MESSAGE":
        out.skip = True
    elif kind == "DATA_MESSAGE" and isinstance(logs.get("logEvents"), list):
        out.log_events = logs["logEvents"]
        out.log_meta = {key: str(logs.get(key) or "") for key in ("logGroup", "logStream", "owner")}
    else:
        out.problem = "gzip data is not a CloudWatch Logs DATA_MESSAGE or CONTROL_MESSAGE"


# -- the pipeline -----------------------------------------------------------------------------


def deliver(svc: Service, message: Message) -> Delivery:
    """Run one message through the pipeline (module docstring); never raises for bad input.

    `ok` is False only when some event could be neither stored nor dead-lettered (DLQUnavailable):
    the platform must deliver the message again. The pipeline's counters count its events under
    the message's trigger (stats.trigger: `stored_via_<t>`, `dlq_<reason>_via_<t>`); messages
    handed back count in `trigger_<t>_failures`.
    """
    if message.skip:
        return Delivery(message.message_id, True)
    return settle(svc, message, stage(svc, message))


def _labels(message: Message) -> dict[str, str]:
    """The log fields naming a message: its trigger (as the metrics' label) and its id."""
    return {"trigger": message.trigger, "message_id": message.message_id}


def stage(svc: Service, message: Message) -> Prepared:
    """`deliver`'s first half: the message's events parsed, normalized and validated (CPU only),
    or the whole message as one `decode_failed` record; DLQ entries named after envelope ids."""
    scope = _scope(svc, message)
    received_at = rfc3339(svc.clock())
    try:
        prepared = svc.prepare(_decode(svc, message, scope, received_at))
        prepared.named_entries = True
    except Undecodable as exc:
        log_event(log, logging.WARNING, "trigger_decode_failed",
                  f"{message.trigger} message cannot be decoded; dead-lettering it whole",
                  reason=str(exc)[:300], subscription=message.subscription, **_labels(message))
        whole = _whole_message(message, scope, received_at)
        record = make_record(whole.to_dict(), "decode_failed", str(exc), 1, exc.details, svc.clock())
        prepared = Prepared([whole], failed=[record], named_entries=True)
    return prepared


def _scope(svc: Service, message: Message) -> TriggerScope | None:
    """The token scope configured for the message's subscription, else its topic's (module docstring)."""
    scopes = svc.settings.triggers.subscriptions
    return scopes.get(message.subscription) or (scopes.get(message.topic) if message.topic else None)


def _decode(svc: Service, message: Message, scope: TriggerScope | None, received_at: str) -> list[Envelope]:
    """The message's events with their envelope ids; Undecodable when the platform's shape was
    wrong (`problem`), there is no scope, or the data is not what its `hec_format` says.

    The message's own problem comes first (another CloudEvent type, unreadable data): it is the most
    specific cause, and a scope would not change it; a missing scope matters to a readable one."""
    if message.problem is not None:
        raise Undecodable(message.problem)
    if scope is None:
        raise Undecodable(f"no token scope is configured for {message.trigger} subscription "
                          f"{message.subscription!r} (triggers.subscriptions)")
    return _envelopes(svc, message, scope, received_at)


def settle(svc: Service, message: Message, prepared: Prepared) -> Delivery:
    """`deliver`'s second half: store and dead-letter what `stage` gave (blocks)."""
    try:
        with stats.trigger(message.trigger):
            result = svc.finish(prepared)
    except DLQUnavailable as err:
        svc.counters.add(**{f"trigger_{message.trigger}_failures": 1})
        log_event(log, logging.ERROR, "trigger_failed",
                  f"{message.trigger} message not kept; the platform delivers it again",
                  reason=str(err), subscription=message.subscription, **_labels(message))
        return Delivery(message.message_id, False, len(prepared.envelopes), error=str(err))
    return Delivery(message.message_id, True, result.accepted, result.stored, result.dead_lettered)


def _envelopes(svc: Service, message: Message, scope: TriggerScope, received_at: str) -> list[Envelope]:
    """The message's events as envelopes with their deterministic ids; Undecodable when the data
    is not what its `hec_format` says (HEC's refusal, its code in the details)."""
    limits = svc.settings.hec

    def ids(position: int) -> str:
        return envelope_id(message.trigger, message.subscription, message.message_id, message.publish_ms,
                           position)

    attrs = message.attributes
    token = scope.token()
    try:
        if message.log_events is not None:
            envelopes = _log_envelopes(message, token, received_at, limits.max_events_per_request, ids)
        else:
            data = message.data or b""
            fmt = attrs.get("hec_format", "raw")
            if fmt not in HEC_FORMATS:
                raise Undecodable(f"hec_format {fmt[:40]!r} is not one of {', '.join(HEC_FORMATS)}")
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise Undecodable("data is not valid UTF-8") from None
            if not data.strip():
                raise Undecodable("data is empty")
            if len(data) > limits.max_body_bytes:
                raise Undecodable(f"data is larger than hec.max_body_bytes ({len(data)} bytes, "
                                  f"the maximum is {limits.max_body_bytes})")
            if fmt == "event":
                token = token.model_copy(update={
                    "default_sourcetype": attrs.get("sourcetype") or token.default_sourcetype,
                    "default_source": attrs.get("source") or token.default_source,
                    "default_index": attrs.get("index") or token.default_index})
                envelopes = parse_events(data, token, received_at, limits.max_events_per_request, ids)
                for envelope in envelopes:
                    envelope.attributes["host"] = envelope.attributes.get("host") or attrs.get("host") or None
            else:
                meta = {key: attrs[key] for key in METADATA if attrs.get(key)}
                req = HecRequest("POST", "/services/collector/raw", {}, meta, data)
                envelopes = parse_raw(data, req, token, received_at, limits.max_events_per_request, ids)
    except HecError as err:
        details: dict[str, Any] = {"hec_code": err.code}
        if err.invalid_event_number is not None:
            details["invalid_event_number"] = err.invalid_event_number
        raise Undecodable(f"not a HEC {attrs.get('hec_format', 'raw')} body: {err}", details) from None
    for envelope in envelopes:
        envelope.attributes["trigger"] = message.trigger
        envelope.attributes["message_id"] = message.message_id
    return envelopes


def _log_envelopes(message: Message, token: HecToken, received_at: str, max_events: int,
                   ids: Callable[[int], str]) -> list[Envelope]:
    """The events of a CloudWatch Logs DATA_MESSAGE, through the HEC JSON parser (module docstring)."""
    group, stream = message.log_meta.get("logGroup", ""), message.log_meta.get("logStream", "")
    fields = {"log_group": group, "log_stream": stream, "owner": message.log_meta.get("owner", "")}
    objects = []
    for entry in message.log_events or []:
        if not isinstance(entry, dict):
            raise Undecodable("a logEvents entry is not an object")
        obj: dict[str, Any] = {"event": entry.get("message"), "source": group or None, "host": stream or None,
                               "sourcetype": token.default_sourcetype or CLOUDWATCH_SOURCETYPE,
                               "fields": {**fields, "log_event_id": str(entry.get("id", ""))}}
        if isinstance(entry.get("timestamp"), int | float):
            obj["time"] = entry["timestamp"] / 1000
        objects.append(orjson.dumps(obj))
    if not objects:
        return []
    return parse_events(b"\n".join(objects), token, received_at, max_events, ids)


def _whole_message(message: Message, scope: TriggerScope | None, received_at: str) -> Envelope:
    """The envelope of a message dead-lettered whole (`decode_failed`): its data as the payload
    (with `payload_b64` when it is not UTF-8 text), what arrived when it could not be decoded at
    all, the attributes as `fields`."""
    attrs = message.attributes
    attributes: dict[str, Any] = {"host": attrs.get("host") or None, "index": None, "fields": dict(attrs),
                                  "token_name": scope.token_name if scope else None,
                                  "trigger": message.trigger, "message_id": message.message_id,
                                  "subscription": message.subscription,
                                  "published_at": rfc3339(message.publish_ms / 1000),
                                  REDECODE: {"publish_ms": message.publish_ms, "topic": message.topic,
                                             "problem": message.problem}}
    if message.data is None:
        payload = message.original
    else:
        try:
            payload = message.data.decode("utf-8")
        except UnicodeDecodeError:
            payload = message.data.decode("utf-8", "replace")
            attributes["payload_b64"] = base64.b64encode(message.data).decode("ascii")
    default_source = scope.default_source if scope else None
    return Envelope(
        id=envelope_id(message.trigger, message.subscription, message.message_id, message.publish_ms,
                       "message"),
        source=attrs.get("source") or default_source or f"{message.trigger}:{message.subscription}",
        source_type=attrs.get("sourcetype") or (scope.default_sourcetype if scope else None) or "httpevent",
        format="raw",
        payload=payload,
        attributes=attributes,
        received_at=received_at,
    )


# -- decoding a dead-lettered message again (replay) ------------------------------------------


def is_whole_message(record: Mapping[str, Any]) -> bool:
    """Whether a DLQ record holds a whole event-triggered message (`decode_failed`, SPEC §7)
    rather than one event: replay decodes such a record again (`redecode`)."""
    return record.get("reason") == "decode_failed"


def redecode(svc: Service, envelope: Envelope) -> list[Envelope]:
    """The events of a message dead-lettered whole (`_whole_message`'s envelope), decoded again
    with today's configuration exactly as its first delivery decodes it (`stage`): the scope of
    its subscription (or topic) in `triggers.subscriptions`, its attributes (the entry's
    `fields`) with `hec_format`, the HEC limits, a Kinesis record's CloudWatch Logs gzip. The
    envelope ids are the ones that delivery gives (`envelope_id` of trigger, subscription,
    message id, publish time and position) and `received_at` the first delivery's, so an event
    a redelivery already stored or dead-lettered is kept once.

    Raises Undecodable when the message still cannot be decoded: no scope, a problem of the
    platform's shape (no message, no messageId, data not base64...: nothing configuration
    changes), data that is not what its `hec_format` says, an index outside the scope; or an
    entry that does not record its message (written without `redecode`, or edited)."""
    attrs = envelope.attributes
    kept = attrs.get(REDECODE)
    names = (attrs.get("trigger"), attrs.get("subscription"), attrs.get("message_id"))
    if (not isinstance(kept, dict) or type(kept.get("publish_ms")) is not int
            or not all(isinstance(name, str) for name in names)):
        raise Undecodable(f"the entry does not record its message as it arrived ({REDECODE!r}); "
                          "it cannot be decoded again", {"entry": "not_redecodable"})
    fields = attrs.get("fields")
    problem = kept.get("problem")
    message = Message(str(names[0]), str(names[1]), str(names[2]), kept["publish_ms"], None,
                      {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {},
                      original=envelope.payload, problem=problem if isinstance(problem, str) else None,
                      topic=str(kept.get("topic") or ""))
    if message.problem is None or message.trigger == "kinesis":
        encoded = attrs.get("payload_b64")
        try:
            message.data = (base64.b64decode(encoded, validate=True) if isinstance(encoded, str)
                            else envelope.payload.encode())
        except (binascii.Error, ValueError):
            raise Undecodable("the entry's payload_b64 is not base64", {"entry": "not_redecodable"}) from None
        if message.trigger == "kinesis" and message.data.startswith(_GZIP_MAGIC):
            hec = svc.settings.hec
            message.problem = None  # the gzip is read again, within today's limits
            _cloudwatch(message, message.data, hec.max_body_bytes, hec.max_decompression_ratio)
    if message.skip:
        return []
    return _decode(svc, message, _scope(svc, message), envelope.received_at)


# -- Pub/Sub: CloudEvents through functions-framework -----------------------------------------


def on_cloud_event(attributes: Mapping[str, Any], data: Any, svc: Service | None = None) -> Delivery:
    """Handle one CloudEvent; DeliveryFailed when the message must be delivered again (the
    function then fails, and Pub/Sub redelivers it). Blocks (storage, DLQ)."""
    delivery = deliver(svc or service(), cloud_event_message(attributes, data))
    if not delivery.ok:
        raise DeliveryFailed(f"message {delivery.message_id} was not kept: {delivery.error}")
    return delivery


def push_to_cloud_event(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """A Pub/Sub push request (no CloudEvent headers, a `{"message": ..., "subscription": ...}`
    body) as a binary-mode CloudEvent: the `ce-*` headers of a `messagePublished` event (as
    Eventarc sends them) and the body unchanged as its JSON data, which is what
    functions-framework's ASGI path reads (it converts no push bodies itself). Anything else is
    returned as it came. `headers`: lower-case names."""
    content_type = headers.get("content-type", "")
    if "ce-specversion" in headers or content_type.startswith("application/cloudevents"):
        return dict(headers), body
    try:
        push = orjson.loads(body)
    except orjson.JSONDecodeError:
        return dict(headers), body
    if not isinstance(push, dict) or not isinstance(push.get("message"), dict):
        return dict(headers), body
    message = push["message"]
    subscription = str(push.get("subscription") or "")
    converted = {k: v for k, v in headers.items() if k != "content-type"}
    converted.update({
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": PUBSUB_TYPE,
        "ce-source": f"//pubsub.googleapis.com/{subscription}",
        "ce-id": str(message.get("messageId") or message.get("message_id") or _body_key(body)),
    })
    publish_time = message.get("publishTime") or message.get("publish_time")
    if isinstance(publish_time, str) and publish_time:
        converted["ce-time"] = publish_time
    return converted, body


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


# Pub/Sub's largest message (10 MB) as base64 in a push body, with room for its attributes.
MAX_PUSH_BYTES = 16 * 1024 * 1024


def push_adapter(app: AsgiApp, max_bytes: int = MAX_PUSH_BYTES) -> AsgiApp:
    """ASGI middleware in front of a functions-framework CloudEvent app: a Pub/Sub push body is
    handed on as a binary-mode CloudEvent (`push_to_cloud_event`); CloudEvents in binary or
    structured mode go through untouched. A body over `max_bytes` is answered 413, before any of
    it is read when its Content-Length says so."""

    async def adapted(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await app(scope, receive, send)
        try:
            pushed = await receive_body(receive, max_bytes, scope["headers"])
        except ClientDisconnect:
            return None
        except BodyTooLarge:
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")]})
            return await send({"type": "http.response.body", "body": b"body too large"})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        headers, body = push_to_cloud_event(headers, pushed)
        scope = {**scope, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]}
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return adapted


async def cloud_event_function(cloud_event: Any) -> None:
    """The body of the Pub/Sub CloudEvent function (functions/pubsub_ingest.py): the service
    call in a worker thread, so the event loop never waits on storage or the DLQ. A message that
    was not kept is answered 503 with `Retry-After` (SPEC §2's answer; Pub/Sub delivers it again),
    not functions-framework's 500; anything unexpected is still its logged 500."""
    from starlette.exceptions import HTTPException

    try:
        await asyncio.to_thread(on_cloud_event, cloud_event.get_attributes(), cloud_event.data)
    except DeliveryFailed as exc:
        raise HTTPException(503, detail=f"Server is busy: {exc}",
                            headers={"Retry-After": str(DEFAULT_RETRY_AFTER)}) from None


# -- Lambda event sources: SQS and Kinesis ----------------------------------------------------


def _combined(parts: list[Prepared]) -> Prepared:
    """Several messages' staged events as one (their DLQ entries named after envelope ids)."""
    combined = Prepared([], named_entries=True)
    for part in parts:
        combined.envelopes += part.envelopes
        combined.items += part.items
        combined.item_envelopes += part.item_envelopes
        combined.failed += part.failed
    return combined


def _batch(records: Any, to_message: Callable[[Mapping[str, Any]], Message], item_id: Callable[[Any], str],
           svc: Service, in_order: str | None = None) -> dict[str, Any]:
    """Deliver a Lambda batch; `{"batchItemFailures": [{"itemIdentifier": ...}]}` names exactly the
    records neither stored nor dead-lettered (Lambda's ReportBatchItemFailures contract). A
    record that raises unexpectedly is failed, never the whole batch.

    Every record is staged first; then the whole batch is stored and dead-lettered at once (one
    storage request, one DLQ write). Only when that cannot keep everything (DLQUnavailable) is
    each record settled on its own, to find which ones fail: what the combined try stored is
    stored again under the same ids, which changes nothing (SPEC §6), though `stored` counts it
    twice.

    `in_order`: where order matters, nothing after the first failed record is delivered: "rest"
    names every later record too (an SQS FIFO queue: Lambda's documented contract), "first" only
    the failed one (Kinesis: Lambda retries from the lowest failed sequence number anyway)."""
    items = records if isinstance(records, list) else []
    staged: list[tuple[Message, Prepared | None] | None] = []
    for record in items:
        try:
            message = to_message(record)
            staged.append((message, None if message.skip else stage(svc, message)))
        except Exception:
            log.exception("unexpected error reading a record; it will be delivered again")
            staged.append(None)
    if len(items) > 1 and all(entry is not None for entry in staged):
        parts = [(message, prepared) for message, prepared in filter(None, staged) if prepared is not None]
        try:
            with stats.trigger(parts[0][0].trigger if parts else "http"):
                svc.finish(_combined([prepared for _, prepared in parts]))
        except DLQUnavailable as err:
            log.warning("a batch of %d records cannot be kept whole (%s); settling them one by one",
                        len(items), err)
        else:
            return {"batchItemFailures": []}
    failures = []
    for number, (record, entry) in enumerate(zip(items, staged, strict=True)):
        try:
            ok = entry is not None and (entry[1] is None or settle(svc, entry[0], entry[1]).ok)
        except Exception:
            log.exception("unexpected error delivering a record; it will be delivered again")
            ok = False
        if not ok:
            failures.append({"itemIdentifier": item_id(record)})
            if in_order == "rest":
                failures += [{"itemIdentifier": item_id(later)} for later in items[number + 1:]]
            if in_order is not None:
                break
    return {"batchItemFailures": failures}


def handle_sqs(event: Mapping[str, Any], svc: Service | None = None) -> dict[str, Any]:
    """A Lambda SQS event (`{"Records": [...]}`) -> its partial batch response; item ids are the
    records' `messageId`. From a FIFO queue (`.fifo`), the first record that fails and every one
    after it are reported, undelivered, so the queue keeps their order."""
    records = event.get("Records")
    fifo = isinstance(records, list) and any(
        str(r.get("eventSourceARN", "")).endswith(".fifo") for r in records if isinstance(r, dict))
    return _batch(records, sqs_message, lambda r: str(r.get("messageId", "")), svc or service(),
                  "rest" if fifo else None)


def handle_kinesis(event: Mapping[str, Any], svc: Service | None = None) -> dict[str, Any]:
    """A Lambda Kinesis event -> its partial batch response: the sequence number of the first record
    that could not be kept, and nothing after it is delivered (Lambda retries the shard from that
    record; records before it are not delivered again, and any that are are kept once, by their
    ids)."""
    svc = svc or service()
    hec = svc.settings.hec
    return _batch(event.get("Records"),
                  lambda r: kinesis_message(r, hec.max_body_bytes, hec.max_decompression_ratio),
                  lambda r: str((r.get("kinesis") or {}).get("sequenceNumber", "")), svc, "first")


def cloud_event_endpoint(function: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette endpoint delivering CloudEvents (binary or structured mode) and Pub/Sub push
    bodies to a CloudEvent function, answering as functions-framework does: 200 "OK", 400 for a
    request that is no CloudEvent, the status of an HTTPException the function raised (503 for a
    message not kept), else 500 when it raised. Lambda serves the Pub/Sub
    function through it (lambda_adapter.lambda_handler), behind an HTTP route a push
    subscription posts to."""
    from cloudevents.http import from_http
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    async def endpoint(request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers, body = push_to_cloud_event(headers, await request.body())
        try:
            event = from_http(headers, body)
        except Exception as exc:
            return Response(f"Bad Request: not a CloudEvent: {exc!r}"[:500], status_code=400)
        try:
            await function(event)
        except HTTPException as exc:
            return Response(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
        except Exception:
            log.exception("the CloudEvent function failed; the message will be delivered again")
            return Response("Internal Server Error", status_code=500)
        return Response("OK")

    return endpoint
