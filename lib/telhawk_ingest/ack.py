"""Splunk HEC indexer acknowledgement (SPEC §3): data channels, ack ids and the ack query.

Here: the data channel a request names (`channel`), the per-process counters that hand out ack
ids per channel (`AckIds`), and the body and answer of `POST /services/collector/ack`
(`parse_ack_query`, `ack_answer`). Pure apart from one lock: no Flask, no settings lookups.
Every refusal is a `HecError` with Splunk's code: 10 no channel, 11 not a GUID, 6 a malformed
ack query.

Not here: which token has acknowledgement on (`HecToken.ack`, and code 14 when it is off),
authentication, and when an id is handed out (service.py: only in a 200 answer, that is after
every event of the request is stored or fsync'd into the DLQ).

The protocol, from Splunk's "About HTTP Event Collector Indexer Acknowledgment" and the clients
that use it (Amazon Kinesis Data Firehose's Splunk destination first):

- With acknowledgement on for a token, every request to the ingest endpoints and to
  `/services/collector/ack` names a data channel, a GUID the client chooses: the
  `X-Splunk-Request-Channel` header or the `channel` query parameter.
- A success answer adds `"ackId": N`; ids count per channel from 0, one per request.
- `POST /services/collector/ack` with `{"acks": [0, 1]}` answers `{"acks": {"0": true, "1": true}}`.

Decisions:

- Every id asked about is true. Splunk answers false until a request is indexed; here an id only
  exists in a 200 answer, and a 200 already means durable (SPEC §2). So answering needs no record
  of the ids handed out: it holds across restarts, worker processes and instances, which share
  nothing. An id no request got (guessed, or from before a restart) is true too: it confirms no
  data that is not safe, since there is none behind it.
- Ids are counted per process and per channel, from 0 as Splunk does. After a restart, in another
  worker process or on another instance, a channel's ids start again at 0: a client can hold two
  requests with the same id, and both are true. The counters are bounded: at most MAX_CHANNELS
  channels per process, the least recently used one forgotten first (channels are chosen by
  clients, so their number is not ours to trust); a forgotten channel starts again at 0.
- A channel is a GUID in its 8-4-4-4-12 hexadecimal form, in either case; the case is not part
  of it (one GUID, one channel). A non-blank header wins over the query parameter.
- An ack query is a JSON object whose `acks` is an array of at most MAX_ACKS_PER_QUERY whole
  numbers from 0; other keys are ignored; the answer names each id once.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

import orjson

from .errors import HecError
from .hec import HecRequest

CHANNEL_HEADER = "x-splunk-request-channel"
CHANNEL_PARAM = "channel"
# Channels whose next ack id one process remembers; ~200 bytes each, so about 2 MB at most.
MAX_CHANNELS = 10_000
# Ack ids in one query; a client asks only about its requests still waiting for an answer.
MAX_ACKS_PER_QUERY = 10_000

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUERY_SHAPE = 'expected {"acks": [ack ids]}'


def channel(req: HecRequest) -> str:
    """The request's data channel, lower-cased; HecError 10 when absent, 11 when not a GUID."""
    value = (req.header(CHANNEL_HEADER) or "").strip() or (req.query.get(CHANNEL_PARAM) or "").strip()
    if not value:
        raise HecError(10, detail="send X-Splunk-Request-Channel: <GUID> or ?channel=<GUID>")
    if _GUID.fullmatch(value) is None:
        raise HecError(11, detail="the data channel must be a GUID (8-4-4-4-12 hexadecimal digits)")
    return value.lower()


class AckIds:
    """Hands out ack ids: per channel 0, 1, 2, ...; thread-safe; at most `max_channels` channels."""

    def __init__(self, max_channels: int = MAX_CHANNELS) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self._max_channels = max_channels
        self._next: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def next_id(self, channel: str) -> int:
        """The channel's next id; the channel becomes the most recently used one."""
        with self._lock:
            ack_id = self._next.pop(channel, 0)
            self._next[channel] = ack_id + 1
            if len(self._next) > self._max_channels:
                self._next.popitem(last=False)
        return ack_id

    def __len__(self) -> int:
        return len(self._next)


def parse_ack_query(body: bytes) -> list[int]:
    """The ids of an ack query body `{"acks": [0, 1, ...]}`; HecError 6 when it is not that shape."""
    try:
        query = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HecError(6, detail=f"the ack query is not JSON: {_QUERY_SHAPE}") from None
    acks = query.get("acks") if type(query) is dict else None
    if type(acks) is not list:
        raise HecError(6, detail=_QUERY_SHAPE)
    if len(acks) > MAX_ACKS_PER_QUERY:
        raise HecError(6, detail=f"at most {MAX_ACKS_PER_QUERY} ack ids per query, got {len(acks)}")
    # type() rather than isinstance(): true and false are ints to isinstance.
    if any(type(ack_id) is not int or ack_id < 0 for ack_id in acks):
        raise HecError(6, detail="ack ids are whole numbers from 0")
    return acks


def ack_answer(ack_ids: list[int]) -> dict[str, Any]:
    """`{"acks": {"<id>": true, ...}}`: every id handed out here was durable when handed out."""
    return {"acks": dict.fromkeys(map(str, ack_ids), True)}
