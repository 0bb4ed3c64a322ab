"""Normalizers against adversarial lines: the worst time per line, and per request at the body limit.

Each registered normalizer (linux auth for sshd/linux_secure, VPC flow, Cisco ASA, OCSF pass-through) gets
lines built to make a backtracking matcher re-read its input: long runs of what a pattern's
variable part may take, followed by something that makes the match fail at the very end. A
linear matcher's time grows like the line; a super-linear one's grows like its square or worse.
Printed per case: the time for one line at a few sizes up to and past the line cap
(common.MAX_LINE_CHARS), the growth from the smallest to the cap, and the time a request at
the body limit full of the worst line would cost. `CASES` is shared with the tests
(tests/unit/test_regex_construction.py), which check the growth stays linear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from telhawk_ingest.config import HecSettings
from telhawk_ingest.envelope import Envelope, Format
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import default_registry
from telhawk_ingest.normalizers.common import MAX_LINE_CHARS

from .common import Context, say, table


@dataclass(frozen=True, slots=True)
class Case:
    """One adversarial input family: `make(n)` builds a payload of about `n` characters."""

    name: str
    normalizer: str
    source_type: str
    format: Format
    make: Callable[[int], str]

    def envelope(self, n: int) -> Envelope:
        return Envelope(id="0193f3a0-0000-7000-8000-000000000000", source="bench",
                        source_type=self.source_type, format=self.format, payload=self.make(n),
                        attributes={"host": "h"}, received_at="2024-11-05T00:00:00.000Z")


def _repeat(head: str, unit: str, tail: str) -> Callable[[int], str]:
    return lambda n: head + unit * max(1, (n - len(head) - len(tail)) // len(unit)) + tail


def _json_string(make: Callable[[int], str]) -> Callable[[int], str]:
    return lambda n: json.dumps(make(n))


def _vpc_long_number(n: int) -> str:
    return f"2 123456789012 eni-1 10.0.0.1 10.0.0.2 {'9' * max(1, n - 80)} 443 6 1 40 1 2 ACCEPT OK"


CASES: list[Case] = [
    # The line a quadratic sshd pattern spent 1.8 s on at 60 KB: every "from a port 1" is a place
    # the user name could end, and the key after it ran to a line break before failing.
    Case("failed-key-then-newline", "linux_auth", "linux_secure", "json",
         _json_string(_repeat("Failed password for u from a port 1: ", "from a port 1: ", "\nX"))),
    Case("failed-no-ending", "linux_auth", "linux_secure", "raw",
         _repeat("Failed password for u", " from a port 1 x", "")),
    Case("invalid-user-many-froms", "linux_auth", "linux_secure", "raw",
         _repeat("Invalid user ", "a from b ", "c")),
    Case("disconnect-user-of-spaces", "linux_auth", "linux_secure", "raw",
         _repeat("Disconnected from user ", "a ", "x")),
    Case("accepted-user-of-spaces", "linux_auth", "linux_secure", "raw",
         _repeat("Nov  4 01:02:03 web01 sshd[1]: Accepted password for ", "x ", "y")),
    Case("pam-word-without-equals", "linux_auth", "linux_secure", "raw",
         _repeat("pam_unix(sshd:auth): authentication failure; ", "a", "")),
    Case("syslog-header-of-spaces", "linux_auth", "linux_secure", "raw",
         _repeat("Nov  4 01:02:03", " ", "h")),
    Case("vpc-many-fields", "aws_vpcflow", "aws:vpcflow", "raw", _repeat("2", " 1", "")),
    Case("vpc-long-number", "aws_vpcflow", "aws:vpcflow", "raw", _vpc_long_number),
    # Cisco ASA: the tag is searched for anywhere in the line, so many almost-tags; then each
    # variable part of a message pattern run long and failing at the very end.
    Case("asa-almost-tags", "cisco_asa", "cisco:asa", "raw", _repeat("", "%ASA-6-30201 ", "")),
    Case("asa-tag-long-class", "cisco_asa", "cisco:asa", "raw", _repeat("%ASA-", "a", "")),
    Case("asa-header-of-spaces", "cisco_asa", "cisco:asa", "raw",
         _repeat("Jan 12 2024 10:01:02", " ", "%ASA-6-611101: User authentication succeeded: Uname: a")),
    Case("asa-users-without-end", "cisco_asa", "cisco:asa", "raw",
         _repeat("%ASA-4-106023: Deny tcp src outside:1.2.3.4/1", "(a)", " dst")),
    Case("asa-flags-of-words", "cisco_asa", "cisco:asa", "raw",
         _repeat("%ASA-2-106001: Inbound TCP connection denied from 1.2.3.4/1 to 5.6.7.8/2 flags ",
                 "SYN ", "x")),
    Case("asa-aaa-reason-of-colons", "cisco_asa", "cisco:asa", "raw",
         _repeat("%ASA-6-113005: AAA user authentication Rejected : reason = ", "a : ", "")),
    Case("asa-teardown-reason-of-froms", "cisco_asa", "cisco:asa", "json",
         _json_string(_repeat("%ASA-6-302014: Teardown TCP connection 1 for o:1.1.1.1/1 to i:2.2.2.2/2 "
                              "duration 0:00:01 bytes 1 ", "x from y ", "("))),
    Case("asa-address-of-colons", "cisco_asa", "cisco:asa", "raw",
         _repeat("%ASA-6-302013: Built inbound TCP connection 1 for outside:", ":", "")),
    Case("ocsf-string-of-escapes", "passthrough", "ocsf", "raw",
         _repeat('{"class_uid": 3002, "message": "', '\\"', '"}')),
    Case("ocsf-many-keys", "passthrough", "ocsf", "raw", _repeat('{"a": 1', ', "a": 1', "}")),
    Case("ocsf-unclosed-nesting", "passthrough", "ocsf", "raw", _repeat("", '{"a": [', "")),
]


def once(case: Case, n: int) -> None:
    """Normalize one line of `case` at size `n`; a NormalizationError is an expected outcome."""
    try:
        default_registry().normalize(case.envelope(n))
    except NormalizationError:
        pass


def best_time(case: Case, n: int, repeats: int = 5, min_seconds: float = 0.002) -> float:
    """Seconds for one line: the best of `repeats` samples, each looping long enough (at least
    `min_seconds`) that the clock's resolution and one-off costs do not dominate."""
    envelope_loops = 1
    start = time.perf_counter()
    once(case, n)
    first = time.perf_counter() - start
    if first < min_seconds:
        envelope_loops = max(1, int(min_seconds / max(first, 1e-7)))
    best = first
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(envelope_loops):
            once(case, n)
        best = min(best, (time.perf_counter() - start) / envelope_loops)
    return best


def outcome(case: Case, n: int) -> str:
    try:
        default_registry().normalize(case.envelope(n))
    except NormalizationError as exc:
        return exc.message[:48]
    return "normalized"


def run(ctx: Context) -> None:
    sizes = [1024, 4096, MAX_LINE_CHARS - 64, 4 * MAX_LINE_CHARS]
    body_limit = HecSettings().max_body_bytes
    say(f"normalizers: one adversarial line at {', '.join(f'{s:,}' for s in sizes)} characters "
        f"(line cap {MAX_LINE_CHARS:,}); best of 5")
    rows = []
    worst: dict[str, tuple[float, str]] = {}
    for case in CASES:
        times = [best_time(case, n, repeats=3 if ctx.quick else 5) for n in sizes]
        at_cap = times[2]
        lines = body_limit // (MAX_LINE_CHARS - 64)
        rows.append([case.name, case.normalizer, *(f"{t * 1e6:,.0f} µs" for t in times),
                     f"{at_cap / times[0]:.1f}x", f"{at_cap * lines * 1000:,.0f} ms",
                     outcome(case, sizes[2])])
        if at_cap > worst.get(case.normalizer, (0.0, ""))[0]:
            worst[case.normalizer] = (at_cap, case.name)
    say(table(rows, ["case", "normalizer", *(f"{s:,} ch" for s in sizes), "growth to cap",
                     f"{body_limit // 2**20} MiB body", "outcome at the cap"]))
    say("  growth to cap: time at the cap over time at 1,024 characters (linear: about "
        f"{(MAX_LINE_CHARS - 64) / 1024:.0f}x or less; quadratic: its square)")
    for normalizer, (seconds, name) in worst.items():
        ctx.add(f"normalizers: worst line at the cap, {normalizer}", f"{seconds * 1e6:,.0f} µs ({name})")
