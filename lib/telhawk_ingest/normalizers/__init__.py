"""The normalizer registry: which function turns an envelope into an OCSF event (SPEC §5).

Here: `Registry` (its routes, their origin and OCSF classes), the `Normalizer` type, the
`NormalizerPlugin` that a plugin's entry point names, and `builtin_registry()` /
`default_registry()` with the built-ins. Not here: the normalizers themselves (one module per
source family next to this one), loading plugins and aliases (loading.py), trying one normalizer
on sample input (trial.py), or schema validation (ocsf.py).

Lookup, for an envelope's (format, source_type):
1. the exact (format, source_type) pair, case-sensitive as HEC sourcetypes are: built-in names,
   plugin names and configured aliases alike (an exact name has one route only, so the three
   never compete);
2. the patterns registered for that format, fnmatch-style (`fnmatchcase`), in registration order:
   the built-in patterns first, then the plugins' (loading.py says in which order); the first
   that matches wins.
There is no catch-all: an envelope that matches nothing fails with
`no normalizer registered for format=<format> source_type=<source_type>`.

Built-ins (`builtin_registry()`), each for both format `raw` and format `json`:

    exact    ocsf                           passthrough.ocsf_passthrough   any OCSF class
    exact    linux_secure                   linux_auth.normalize           sshd / pam_unix lines
    exact    linux:auth                     linux_auth.normalize
    exact    sshd                           linux_auth.normalize
    exact    syslog:sshd                    linux_auth.normalize
    exact    aws:vpcflow                    aws_vpcflow.normalize          VPC flow log v2 records
    exact    aws:cloudwatchlogs:vpcflow     aws_vpcflow.normalize
    exact    cisco:asa                      cisco_asa.normalize            ASA / FTD syslog messages
    pattern  ocsf:*                         passthrough.ocsf_passthrough   e.g. ocsf:authentication

`linux_secure`, `aws:cloudwatchlogs:vpcflow` and `cisco:asa` are the sourcetypes Splunk's add-ons
use, so existing forwarders work unchanged. Generic types such as `syslog` are deliberately absent:
most of what they carry is not authentication.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

from telhawk_ingest.envelope import Envelope, Format
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import aws_vpcflow, cisco_asa, linux_auth, passthrough

Normalizer = Callable[[Envelope], dict[str, Any]]

FORMATS: tuple[str, ...] = get_args(Format)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a route comes from: `builtin`; `plugin` (its entry point and distribution,
    loading.py); or `alias` (a configured `normalizers.aliases` name, `alias_of` its target)."""

    kind: Literal["builtin", "plugin", "alias"]
    entry_point: str | None = None
    distribution: str | None = None
    version: str | None = None
    alias_of: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """`{"type": kind, ...}` with only the fields that apply (GET /api/v1/normalizers)."""
        out: dict[str, Any] = {"type": self.kind}
        for name in ("entry_point", "distribution", "version", "alias_of"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def describe(self) -> str:
        """For messages: `built in`, `plugin entry point x (distribution d)`, `alias of y`."""
        if self.kind == "plugin":
            return f"plugin entry point {self.entry_point} (distribution {self.distribution})"
        if self.kind == "alias":
            return f"alias of {self.alias_of}"
        return "built in"


BUILTIN = Origin("builtin")


@dataclass(frozen=True, slots=True)
class Route:
    """One registered route. `source_type` is the exact name, or the glob for a `pattern` route.
    `ocsf_classes`: the class_uids its events can have; None when it passes events through as
    sent (any class)."""

    match: Literal["exact", "pattern"]
    format: str
    source_type: str
    normalizer: Normalizer
    origin: Origin = BUILTIN
    ocsf_classes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class NormalizerPlugin:
    """What an entry point of the `telhawk_ingest.normalizers` group names (loading.py, README
    "Adding a normalizer"): a normalizer and where it applies.

    `normalize(envelope) -> dict` returns one OCSF event or raises (NormalizationError for a
    clear message; any exception is the event's `normalization_failed`). `source_types` are exact
    names, `patterns` fnmatch globs tried after every exact name and the built-in patterns;
    at least one of the two. `formats`: `raw` and/or `json` (default both). `ocsf_classes`: the
    class_uids its events have (at least one; each known to the pinned OCSF version).
    """

    normalize: Normalizer
    source_types: Sequence[str] = ()
    patterns: Sequence[str] = ()
    ocsf_classes: Sequence[int] = ()
    formats: Sequence[str] = FORMATS


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin entry point that was not loaded: it routes nothing; the service runs without it."""

    entry_point: str
    distribution: str | None
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"entry_point": self.entry_point, "distribution": self.distribution, "error": self.error}


@dataclass(frozen=True, slots=True)
class AliasFailure:
    """A configured alias left out because its target is not registered while a plugin failed
    to load (loading.py): it may be that plugin's, and a broken plugin must not stop ingest."""

    alias: str
    alias_of: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "alias_of": self.alias_of, "error": self.error}


class Registry:
    """Maps (format, source_type) to a normalizer: exact names first, then patterns in order."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], Route] = {}
        self._patterns: list[Route] = []
        # What could not be registered (loading.py), reported by GET /api/v1/normalizers.
        self.plugin_failures: list[PluginFailure] = []
        self.alias_failures: list[AliasFailure] = []

    def register(self, format: str, source_type: str, fn: Normalizer, *, origin: Origin = BUILTIN,
                 ocsf_classes: Sequence[int] | None = None) -> None:
        """Route exactly this (format, source_type); registering a pair twice is a mistake."""
        _check_format(format)
        if (format, source_type) in self._exact:
            raise ValueError(
                f"a normalizer is already registered for format={format} source_type={source_type}"
            )
        self._exact[(format, source_type)] = Route("exact", format, source_type, fn, origin,
                                                   _classes(ocsf_classes))

    def register_pattern(self, format: str, pattern: str, fn: Normalizer, *, origin: Origin = BUILTIN,
                         ocsf_classes: Sequence[int] | None = None) -> None:
        """Route source types matching the glob `pattern`, after exact names and earlier patterns."""
        _check_format(format)
        if any(r.format == format and r.source_type == pattern for r in self._patterns):
            raise ValueError(f"a normalizer is already registered for format={format} pattern={pattern}")
        self._patterns.append(Route("pattern", format, pattern, fn, origin, _classes(ocsf_classes)))

    def route(self, format: str, source_type: str) -> Route | None:
        """The route an envelope with this format and source type would take, if any."""
        found = self._exact.get((format, source_type))
        if found is not None:
            return found
        for candidate in self._patterns:
            if candidate.format == format and fnmatchcase(source_type, candidate.source_type):
                return candidate
        return None

    def lookup(self, format: str, source_type: str) -> Normalizer | None:
        """The normalizer an envelope with this format and source type would get, if any."""
        found = self.route(format, source_type)
        return None if found is None else found.normalizer

    def routes(self) -> list[Route]:
        """Every route in match order: the exact names (in registration order), then the patterns
        in the order they are tried."""
        return [*self._exact.values(), *self._patterns]

    def normalize(self, envelope: Envelope) -> dict[str, Any]:
        """The envelope as an OCSF event; NormalizationError when nothing matches or the normalizer fails."""
        fn = self.lookup(envelope.format, envelope.source_type)
        if fn is None:
            raise NormalizationError(
                f"no normalizer registered for format={envelope.format} source_type={envelope.source_type}",
                details={"format": envelope.format, "source_type": envelope.source_type},
            )
        try:
            event = fn(envelope)
        except NormalizationError:
            raise
        except Exception as exc:
            # Any failure of a normalizer is this event's failure, not the request's: it goes to
            # the DLQ with the message, and the next event is unaffected.
            raise NormalizationError(str(exc) or type(exc).__name__) from exc
        if not isinstance(event, dict):
            raise NormalizationError(
                f"normalizer for format={envelope.format} source_type={envelope.source_type} "
                f"returned {type(event).__name__}, not an event object"
            )
        return event


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def _classes(ocsf_classes: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if ocsf_classes is None else tuple(ocsf_classes)


@functools.cache
def default_registry() -> Registry:
    """The built-in normalizers, built once per process (tests and benchmarks use it). The
    service's registry adds plugins and aliases to these: loading.load_registry."""
    return builtin_registry()


# The built-ins in the order the module docstring lists: (source type, normalizer, OCSF classes).
_NETWORK_ACTIVITY, _AUTHENTICATION = 4001, 3002
_BUILTIN_EXACT: list[tuple[str, Normalizer, tuple[int, ...] | None]] = [
    ("ocsf", passthrough.ocsf_passthrough, None),
    ("linux_secure", linux_auth.normalize, (_AUTHENTICATION, _NETWORK_ACTIVITY)),
    ("linux:auth", linux_auth.normalize, (_AUTHENTICATION, _NETWORK_ACTIVITY)),
    ("sshd", linux_auth.normalize, (_AUTHENTICATION, _NETWORK_ACTIVITY)),
    ("syslog:sshd", linux_auth.normalize, (_AUTHENTICATION, _NETWORK_ACTIVITY)),
    ("aws:vpcflow", aws_vpcflow.normalize, (_NETWORK_ACTIVITY,)),
    ("aws:cloudwatchlogs:vpcflow", aws_vpcflow.normalize, (_NETWORK_ACTIVITY,)),
    ("cisco:asa", cisco_asa.normalize, (_NETWORK_ACTIVITY, _AUTHENTICATION)),
]
_BUILTIN_PATTERNS: list[tuple[str, Normalizer, tuple[int, ...] | None]] = [
    ("ocsf:*", passthrough.ocsf_passthrough, None),
]


def builtin_registry() -> Registry:
    """A new registry with every built-in normalizer, in the order the module docstring lists."""
    registry = Registry()
    for source_type, fn, classes in _BUILTIN_EXACT:
        for format in FORMATS:
            registry.register(format, source_type, fn, ocsf_classes=classes)
    for pattern, fn, classes in _BUILTIN_PATTERNS:
        for format in FORMATS:
            registry.register_pattern(format, pattern, fn, ocsf_classes=classes)
    return registry
