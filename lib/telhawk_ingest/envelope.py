"""The envelope: one received event as the pipeline carries it and the DLQ stores it (SPEC §4).

Here: the Envelope type, its id (UUIDv7, assigned once at ingest and reused as the storage
document `_id`), and RFC 3339 time helpers. Not here: parsing HEC requests (hec.py) or what
happens to an envelope (service.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Format = Literal["json", "raw"]


def new_id(now_ns: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit unix milliseconds, then 74 random bits, as lower-case text.

    Time-ordered, so ids sort by arrival, and unique across processes without coordination. The
    random bits come from `random`, which Python reseeds in every forked child; ids need to be
    unique, not secret, and this keeps id generation off the syscall path of every event.

    Formatting a 128-bit number for every event was a quarter of building its envelope, so the
    text is put together from parts: the time's, kept while the millisecond lasts, and 19 random
    hex digits taken from a pool drawn a few hundred ids at a time (`next` on a list iterator is
    atomic, so no two threads ever get the same digits; a forked child drops the pool it inherited,
    whose digits its parent hands out too).
    """
    global _time_part
    ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    known, head = _time_part
    if ms != known:
        field = ms & 0xFFFF_FFFF_FFFF
        head = f"{field >> 16:08x}-{field & 0xFFFF:04x}-7"
        _time_part = (ms, head)
    try:
        digits = next(_digits)
    except StopIteration:
        digits = next(_draw())
    # 12 random bits, the variant (0b10) with 2 random bits, 12 + 48 random bits.
    return f"{head}{digits[:3]}-{_VARIANT[digits[3]]}{digits[4:7]}-{digits[7:]}"


def _draw() -> Iterator[str]:
    """A fresh pool of random digits for new_id: POOL_IDS times 19 hex digits (76 random bits,
    of which the variant digit keeps 2)."""
    global _digits
    text = random.randbytes(POOL_IDS * 19 // 2 + 1).hex()
    _digits = iter([text[start:start + 19] for start in range(0, POOL_IDS * 19, 19)])
    return _digits


def _forget_digits() -> None:
    global _digits
    _digits = iter(())


POOL_IDS = 256
# A hex digit -> the variant digit with its low 2 bits: 8, 9, a or b, each as likely.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
_time_part: tuple[int, str] = (-1, "")  # (unix milliseconds, "tttttttt-tttt-7")
_digits: Iterator[str] = iter(())
os.register_at_fork(after_in_child=_forget_digits)


def id_time(envelope_id: str) -> float | None:
    """Unix seconds in a UUIDv7 id (its 48-bit millisecond field, RFC 9562 §5.7), else None.

    Any other id (another UUID version or variant, anything not shaped like a UUID) gives None.
    """
    if len(envelope_id) != 36 or envelope_id[14] != "7" or envelope_id[19] not in "89abAB":
        return None
    millis = envelope_id[:8] + envelope_id[9:13]
    # int() would also take a sign, underscores, spaces or non-ASCII digits.
    if envelope_id[8] != "-" or not (millis.isalnum() and millis.isascii()):
        return None
    try:
        return int(millis, 16) / 1000
    except ValueError:
        return None


def rfc3339(ts: float | None = None) -> str:
    """UTC time as RFC 3339 with millisecond precision and a `Z` suffix, e.g.
    `2024-11-04T01:02:03.456Z`; the milliseconds are those of the time rounded to microseconds, as
    datetime rounds it."""
    global _last_second
    ts = time.time() if ts is None else ts
    whole = int(ts)
    fraction = ts - whole  # exact for any float of this range
    # Most calls fall in the second of the one before: its text is kept. Near the end of a second
    # (or before 1970) rounding may carry into the next one: datetime decides there.
    if ts >= 0 and fraction < 0.999:
        second, text = _last_second
        if second != whole:
            text = datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            _last_second = (whole, text)
        return f"{text}{round(fraction * 1e6) // 1000:03d}Z"
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


# (unix second, its text up to the decimal point) of rfc3339's last call; replaced whole.
_last_second: tuple[int, str] = (-1, "")


def parse_time(value: str | float | int) -> float:
    """Unix seconds from RFC 3339 text, or from unix seconds as a number or numeric string.

    RFC 3339 §5.6 lets `T` and `Z` be lower case; text without a zone is taken as UTC.
    Raises ValueError for text that is neither."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class Envelope:
    """One event as received; `payload` is its text (SPEC §4): a raw line or string as sent, any
    other JSON value as the client wrote it.

    The text may be left to compute on first read of `payload` (`payload=None`): from `text`, a
    function that returns it (the HEC parser passes one that slices the event out of the request
    body), else by serializing `decoded`. Most events are stored and never need the text: only a
    DLQ record reads it, and serializing every event only to drop it was a tenth of the ingest time.
    """

    __slots__ = ("_payload", "_text", "attributes", "decoded", "format", "id", "received_at", "source",
                 "source_type")

    def __init__(
        self,
        id: str,
        source: str,
        source_type: str,
        format: Format,
        payload: str | None,
        attributes: dict[str, Any] | None = None,
        received_at: str = "",
        decoded: Any = None,
        text: Callable[[], str] | None = None,
    ) -> None:
        if payload is None and decoded is None and text is None:
            raise ValueError("an envelope needs its payload text, a way to get it, or its decoded value")
        self.id = id
        self.source = source
        self.source_type = source_type
        self.format: Format = format
        self._payload = payload
        self._text = text
        self.attributes: dict[str, Any] = {} if attributes is None else attributes
        self.received_at = received_at
        # The payload's JSON value when the parser already decoded it, so normalizers need not
        # decode it again; never serialized, and never set for envelopes read back from the DLQ.
        self.decoded = decoded

    @property
    def payload(self) -> str:
        if self._payload is None:
            # Idempotent, so two threads racing here store the same text.
            self._payload = self._text() if self._text is not None else orjson.dumps(self.decoded).decode()
        return self._payload

    @payload.setter
    def payload(self, value: str) -> None:
        self._payload = value

    def __repr__(self) -> str:
        return (
            f"Envelope(id={self.id!r}, source={self.source!r}, source_type={self.source_type!r}, "
            f"format={self.format!r}, payload={self.payload!r}, attributes={self.attributes!r}, "
            f"received_at={self.received_at!r})"
        )

    @property
    def index(self) -> str | None:
        return self.attributes.get("index")

    @property
    def time(self) -> float | None:
        """Event time in unix seconds when the client gave one."""
        return self.attributes.get("time")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "source_type": self.source_type,
            "format": self.format,
            "payload": self.payload,
            "attributes": self.attributes,
            "received_at": self.received_at,
        }
