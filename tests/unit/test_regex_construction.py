"""No normalizer or parser is super-linear in its input, by construction.

Three checks. The construction: every regular expression in the package, found by importing
every module, is parsed and must have no unbounded repeat that can give back what it took (all
are possessive) except at most one lazy repeat of a single character, in a pattern anchored at
the end of the text (linux_auth's docstring gives the argument why that stays linear); and no
module compiles a pattern where this test cannot see it. The cap: a line normalizer refuses a
line over common.MAX_LINE_CHARS, and a line with a line break, and the event keeps its whole
payload in the DLQ. The growth: every adversarial input of bench/normalizers.py, at two sizes
eight times apart, costs at most 24 times as much at the larger (linear: about 8; the quadratic
patterns this replaced: 55 to 100). Best of several samples, so a loaded machine does not decide.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from re import _constants as sre
from re import _parser as sre_parse
from typing import Any

import pytest

import telhawk_ingest
from bench.normalizers import CASES, Case, best_time
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import default_registry
from telhawk_ingest.normalizers.common import MAX_LINE_CHARS
from tests.unit.test_normalizers import envelope, failure, normalized

PACKAGE = Path(telhawk_ingest.__file__).parent
_SINGLE_CHARACTER = {sre.ANY, sre.IN, sre.LITERAL, sre.NOT_LITERAL, sre.CATEGORY}
_CALLS_WITH_A_PATTERN = {"match", "search", "fullmatch", "findall", "finditer", "sub", "subn", "split"}


def modules() -> list[Any]:
    found = [telhawk_ingest]
    for info in pkgutil.walk_packages(telhawk_ingest.__path__, "telhawk_ingest."):
        found.append(importlib.import_module(info.name))
    return found


def patterns_in(value: Any) -> Iterator[re.Pattern[Any]]:
    if isinstance(value, re.Pattern):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from patterns_in(item)


def package_patterns() -> list[tuple[str, re.Pattern[Any]]]:
    out = []
    for module in modules():
        for name, value in vars(module).items():
            for pattern in patterns_in(value):
                out.append((f"{module.__name__}.{name}", pattern))
    return out


PATTERNS = package_patterns()


def problems(pattern: re.Pattern[Any]) -> list[str]:
    """Why the pattern could backtrack super-linearly; empty when its construction is sound."""
    found: list[str] = []
    lazy: list[str] = []

    def walk(items: Any, inside_repeat: bool) -> None:
        for op, av in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
                _low, high, item = av
                unbounded = high == sre.MAXREPEAT
                if unbounded and op == sre.MAX_REPEAT:
                    found.append(f"a greedy unbounded repeat that can give back: {list(item)!r}")
                if unbounded and op == sre.MIN_REPEAT:
                    lazy.append(repr(list(item)))
                    if inside_repeat:
                        found.append("a lazy repeat inside another repeat")
                    if len(item) != 1 or item[0][0] not in _SINGLE_CHARACTER:
                        found.append(f"a lazy repeat of more than one character: {list(item)!r}")
                walk(item, inside_repeat or high > 1)
            elif op == sre.SUBPATTERN:
                walk(av[-1], inside_repeat)
            elif op == sre.ATOMIC_GROUP:
                walk(av, inside_repeat)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                walk(av[1], inside_repeat)
            elif op == sre.BRANCH:
                for branch in av[1]:
                    walk(branch, inside_repeat)
            elif op == sre.GROUPREF_EXISTS:
                found.append("a conditional group")

    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    walk(parsed, False)
    if len(lazy) > 1:
        found.append(f"{len(lazy)} lazy repeats (at most one)")
    if lazy and list(parsed)[-1] != (sre.AT, sre.AT_END_STRING):
        found.append("a lazy repeat in a pattern not anchored at the end of the text (\\Z)")
    return found


def test_the_package_patterns_are_found():
    names = {name.removeprefix("telhawk_ingest.") for name, _ in PATTERNS}
    expected = {"hec._TOKEN", "hec._NUMBER", "jsontext._STRING", "normalizers.linux_auth._PATTERNS",
                "normalizers.linux_auth._SYSLOG", "normalizers.linux_auth._PAM_FIELD",
                "normalizers.cisco_asa._MESSAGES", "normalizers.cisco_asa._TAG",
                "normalizers.cisco_asa._HEADER", "normalizers.cisco_asa._ICMP_REST",
                "normalizers.cisco_asa._PARENS"}
    assert expected <= names
    assert len(PATTERNS) >= 25


@pytest.mark.parametrize(("name", "pattern"), PATTERNS, ids=[f"{n}:{p.pattern[:30]!r}" for n, p in PATTERNS])
def test_every_pattern_is_built_so_it_cannot_backtrack_super_linearly(name, pattern):
    assert problems(pattern) == []


@pytest.mark.parametrize(("text", "reason"), [
    (r"(?P<user>.*?) from (?P<addr>\S+)$", "greedy"),
    (r"^(\w+)=(\S*)", "greedy"),
    (r"^a (.*?) b (.*?)\Z", "2 lazy"),
    (r"^a (?:x.*?)*+\Z", "inside another repeat"),
    (r"^a (.*?) b$", "not anchored"),
    (r"^a (?:xy)*? b\Z", "more than one character"),
])
def test_the_construction_check_catches_what_can_backtrack(text, reason):
    assert any(reason in problem for problem in problems(re.compile(text)))


def test_no_module_compiles_a_pattern_where_the_check_cannot_see_it():
    """Module-level `re.compile` only: a pattern built in a function, or passed as text to
    re.match & co., would escape the construction check."""
    escaped = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for stmt in tree.body for node in ast.walk(stmt)
                     if not isinstance(stmt, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                    and (node.func.attr in _CALLS_WITH_A_PATTERN
                         or (node.func.attr == "compile" and id(node) not in top_level))):
                escaped.append(f"{path.relative_to(PACKAGE)}:{node.lineno} re.{node.func.attr}")
    assert escaped == []


# --- the line cap -------------------------------------------------------------------------------


ACCEPTED = "Nov  4 01:02:03 web01 sshd[1234]: Accepted publickey for alice from 10.0.0.5 port 52144 ssh2: "


@pytest.mark.parametrize("source_type", ["linux_secure", "aws:vpcflow", "cisco:asa"])
def test_a_line_over_the_cap_is_refused_with_a_clear_error(source_type):
    line = ACCEPTED + "K" * (MAX_LINE_CHARS + 1 - len(ACCEPTED))

    message = failure(line, source_type)

    assert message == (f"log line is {MAX_LINE_CHARS + 1} characters, over the {MAX_LINE_CHARS} "
                       "a line normalizer reads")


def test_a_line_of_exactly_the_cap_is_normalized():
    line = ACCEPTED + "K" * (MAX_LINE_CHARS - len(ACCEPTED))

    event = normalized(line, "linux_secure")

    assert event["user"]["name"] == "alice" and len(event["raw_data"]) == MAX_LINE_CHARS


def test_the_cap_applies_to_a_line_inside_a_json_object_too():
    payload = json.dumps({"message": ACCEPTED + "K" * MAX_LINE_CHARS, "pid": 1})

    with pytest.raises(NormalizationError, match="over the 16384"):
        default_registry().normalize(envelope(payload, "linux_secure", "json"))


def test_the_issue_line_with_a_line_break_is_refused_at_once():
    text = "Failed password for u from a port 1: " + "from a port 1: " * 1000 + "\nX"

    message = failure(json.dumps(text), "linux_secure", "json")

    assert message.startswith(f"log line has a line break at character {len(text) - 2}")


def test_a_user_name_holding_from_still_ends_at_the_first_address_that_completes_the_line():
    event = normalized("Invalid user a from b from 203.0.113.9 port 22", "linux_secure")

    assert event["user"]["name"] == "a from b"
    assert event["src_endpoint"] == {"ip": "203.0.113.9", "port": 22}


def test_pam_fields_after_a_long_word_are_still_read():
    line = "pam_unix(sshd:auth): authentication failure; " + "x" * 5000 + " user=bob rhost=10.0.0.9"

    event = normalized(line, "linux_secure")

    assert event["user"]["name"] == "bob" and event["src_endpoint"] == {"ip": "10.0.0.9"}


# --- the growth -----------------------------------------------------------------------------------


SMALL = 2000
LARGE = 8 * SMALL
assert LARGE <= MAX_LINE_CHARS


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_an_adversarial_line_costs_time_linear_in_its_length(case: Case):
    small, large = best_time(case, SMALL), best_time(case, LARGE)

    assert large / small < 24, f"{small * 1e6:.0f} µs at {SMALL} characters, {large * 1e6:.0f} µs at {LARGE}"
