"""What `telhawk-dlq` prints: tables for people (rich), JSON for scripts, progress bars on stderr.

Results go to stdout; messages, warnings and progress bars to stderr, so `--json` output piped into
`jq` never carries anything else. Progress bars are drawn only when stderr is a terminal.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# Columns of a listing, and how many characters of the error (and of the source type) a table row
# shows.
LIST_COLUMNS = ("id", "timestamp", "reason", "source_type", "attempts", "error")
ERROR_CHARS = 80
# C0 and C1 control characters and DEL: shown as `\x1b` in a table cell.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


# Width of tables written to a file or a pipe (a terminal's own width is used otherwise): ids
# (50 characters) and timestamps stay on one line.
PIPE_WIDTH = 200


def out() -> Console:
    """Stdout as it is now (click's runner replaces it), never cached."""
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def emit_json(value: Any) -> None:
    """One JSON document on one line, for scripts."""
    click.echo(orjson.dumps(value).decode())


def emit_pretty_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def note(message: str) -> None:
    """A message for the person at the terminal (stderr), never mixed into results; one line,
    not wrapped, so scripts can read it too."""
    click.echo(message, err=True)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout; every cell is shown as plain text (`printable`)."""
    view = Table(title=title, show_lines=False)
    for column in columns:
        view.add_column(column, overflow="fold", no_wrap=column in ("id", "timestamp"))
    for row in rows:
        view.add_row(*(Text(printable("" if cell is None else str(cell))) for cell in row))
    out().print(view)


def printable(text: str) -> str:
    """`text` with each control character written as an escape (`\\x1b`, `\\n`'s `\\x0a`).

    Cells hold what HEC clients sent (a source type, an error quoting an event): escape sequences
    in them must not retitle, clear or colour the terminal of whoever reads the table, also
    through a pipe, a file or `less -R`, where rich leaves them as they are. Cells are not rich
    markup either (`Text`), so `[link=...]` in a source type stays text.
    """
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def entry_row(entry: Mapping[str, Any]) -> list[Any]:
    """One listing entry as a table row (LIST_COLUMNS); a truncated entry says so in its error."""
    envelope = entry.get("envelope") or {}
    error = _shortened(str(entry.get("error", "")))
    if entry.get("truncated"):
        error = f"[envelope of {entry.get('envelope_bytes')} bytes not listed] {error}"
    source_type = _shortened(str(envelope.get("source_type", ""))) if isinstance(envelope, dict) else ""
    return [entry.get("id"), entry.get("timestamp"), entry.get("reason"), source_type,
            entry.get("attempts"), error]


def _shortened(text: str) -> str:
    """At most ERROR_CHARS characters, the last an ellipsis when some were cut."""
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


def classes(listed: list[dict[str, Any]] | None) -> str:
    """OCSF classes of a normalizer route: `4001 Network Activity, ...`; any class for a pass-through."""
    if listed is None:
        return "any (as sent)"
    return ", ".join(f"{c.get('class_uid')} {c.get('class_name') or ''}".strip() for c in listed)


def origin(given: Mapping[str, Any]) -> str:
    """`builtin`, `alias of cisco:asa`, `plugin <entry point> (<distribution> <version>)`."""
    kind = given.get("type", "")
    if kind == "alias":
        return f"alias of {given.get('alias_of')}"
    if kind == "plugin":
        version = f" {given['version']}" if given.get("version") else ""
        return f"plugin {given.get('entry_point')} ({given.get('distribution')}{version})"
    return str(kind)


def key_values(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    table(title, ("key", "value"), ([key, _cell(value)] for key, value in pairs))


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if value is None:
        return "-"
    return str(value)


def progress(label: str) -> Progress:
    """A progress bar on stderr, shown only when stderr is a terminal (`disable` otherwise)."""
    console = Console(file=sys.stderr)
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal, transient=False)
