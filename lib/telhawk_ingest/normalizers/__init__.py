"""The normalizer registry: which function turns an envelope into an OCSF event (SPEC §5).

Here: `Registry`, the `Normalizer` type, and `default_registry()` with the built-ins. Not here:
the normalizers themselves (one module per source family next to this one) or schema validation
(ocsf.py).

Lookup, for an envelope's (format, source_type):
1. the exact (format, source_type) pair, case-sensitive as HEC sourcetypes are;
2. the patterns registered for that format, fnmatch-style (`fnmatchcase`), in registration order;
   the first that matches wins.
There is no catch-all: an envelope that matches nothing fails with
`no normalizer registered for format=<format> source_type=<source_type>`.

Built-ins (`default_registry()`), each for both format `raw` and format `json`:

    exact    ocsf                           passthrough.ocsf_passthrough   any OCSF class
    exact    linux_secure                   linux_auth.normalize           sshd / pam_unix lines
    exact    linux:auth                     linux_auth.normalize
    exact    sshd                           linux_auth.normalize
    exact    syslog:sshd                    linux_auth.normalize
    exact    aws:vpcflow                    aws_vpcflow.normalize          VPC flow log v2 records
    exact    aws:cloudwatchlogs:vpcflow     aws_vpcflow.normalize
    pattern  ocsf:*                         passthrough.ocsf_passthrough   e.g. ocsf:authentication

`linux_secure` and `aws:cloudwatchlogs:vpcflow` are the sourcetypes Splunk's add-ons use, so
existing forwarders work unchanged. Generic types such as `syslog` are deliberately absent:
most of what they carry is not authentication.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, get_args

from telhawk_ingest.envelope import Envelope, Format
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import aws_vpcflow, linux_auth, passthrough

Normalizer = Callable[[Envelope], dict[str, Any]]

FORMATS: tuple[str, ...] = get_args(Format)


class Registry:
    """Maps (format, source_type) to a normalizer: exact names first, then patterns in order."""

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], Normalizer] = {}
        self._patterns: list[tuple[str, str, Normalizer]] = []

    def register(self, format: str, source_type: str, fn: Normalizer) -> None:
        """Route exactly this (format, source_type); registering a pair twice is a mistake."""
        _check_format(format)
        if (format, source_type) in self._exact:
            raise ValueError(
                f"a normalizer is already registered for format={format} source_type={source_type}"
            )
        self._exact[(format, source_type)] = fn

    def register_pattern(self, format: str, pattern: str, fn: Normalizer) -> None:
        """Route source types matching the glob `pattern`, after exact names and earlier patterns."""
        _check_format(format)
        if any(f == format and p == pattern for f, p, _ in self._patterns):
            raise ValueError(f"a normalizer is already registered for format={format} pattern={pattern}")
        self._patterns.append((format, pattern, fn))

    def lookup(self, format: str, source_type: str) -> Normalizer | None:
        """The normalizer an envelope with this format and source type would get, if any."""
        fn = self._exact.get((format, source_type))
        if fn is not None:
            return fn
        for pattern_format, pattern, candidate in self._patterns:
            if pattern_format == format and fnmatchcase(source_type, pattern):
                return candidate
        return None

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


@functools.cache
def default_registry() -> Registry:
    """The process's registry, built once: every built-in normalizer."""
    return builtin_registry()


def builtin_registry() -> Registry:
    """A new registry with every built-in normalizer, in the order the module docstring lists."""
    registry = Registry()
    exact: list[tuple[str, Normalizer]] = [
        ("ocsf", passthrough.ocsf_passthrough),
        ("linux_secure", linux_auth.normalize),
        ("linux:auth", linux_auth.normalize),
        ("sshd", linux_auth.normalize),
        ("syslog:sshd", linux_auth.normalize),
        ("aws:vpcflow", aws_vpcflow.normalize),
        ("aws:cloudwatchlogs:vpcflow", aws_vpcflow.normalize),
    ]
    patterns: list[tuple[str, Normalizer]] = [
        ("ocsf:*", passthrough.ocsf_passthrough),
    ]
    for format in FORMATS:
        for source_type, fn in exact:
            registry.register(format, source_type, fn)
        for pattern, fn in patterns:
            registry.register_pattern(format, pattern, fn)
    return registry
