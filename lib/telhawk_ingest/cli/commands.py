"""`telhawk-dlq`: the DLQ from the command line (README, "The DLQ command line").

Commands: list, show, delete, replay, purge, export, stats, normalizers, normalize, retention. Each works
against the operator API (`--url`, the operator token from `--token` or TELHAWK_OPERATOR_TOKEN) or on
a DLQ folder directly (`--dlq-dir`, with the service's settings from `--config`); modes.py holds the
two. Exit codes: modes.Exit. Output: render.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import httpx
import orjson
from click.core import ParameterSource

from ..dlq import REASONS
from ..normalizers.trial import try_normalize
from . import render
from .modes import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    TOKEN_ENV,
    ApiMode,
    CliError,
    DirMode,
    Exit,
    Mode,
    load_cli_settings,
    registry_for,
)

# Entries per listing call when paging through everything (SPEC §11's maximum).
PAGE = 1000
REPLAY_TOTALS = ("matched", "stored", "failed", "skipped")
# Entry ids per replay call at most (the service's limit, SPEC §11's bounded call).
MAX_IDS = 1000
# Retention calls one `retention` command makes at most (each deletes up to 10,000 entries).
MAX_RETENTION_CALLS = 1000


@dataclass
class State:
    """The group's options; the mode is made on first use (`normalize` on sample text needs none)."""

    url: str = DEFAULT_URL
    token: str | None = None
    dlq_dir: Path | None = None
    config: Path | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    transport: httpx.BaseTransport | None = None  # replaces the network in tests
    _mode: Mode | None = field(default=None, repr=False)

    def mode(self) -> Mode:
        if self._mode is None:
            if self.dlq_dir is not None:
                self._mode = DirMode(self.dlq_dir, self.config)
            else:
                self._mode = ApiMode(self.url, self.token, timeout=self.timeout, transport=self.transport)
            click.get_current_context().call_on_close(self._mode.close)
        return self._mode


class _Group(click.Group):
    """Reports a CliError in one line on stderr and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            render.note(f"error: {exc.message}")
            ctx.exit(int(exc.code))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", envvar="TELHAWK_URL", default=DEFAULT_URL, show_default=True,
              help="The service's operator API (env TELHAWK_URL).")
@click.option("--token", envvar=TOKEN_ENV, show_default=False,
              help=f"Operator token; better given as {TOKEN_ENV}, since a command line is visible to "
                   "other users of the machine. Never printed.")
@click.option("--dlq-dir", type=click.Path(path_type=Path, file_okay=False), envvar="TELHAWK_DLQ_DIR",
              help="Work on this DLQ folder directly instead of through the API (env TELHAWK_DLQ_DIR).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The service's settings file (else INGEST_CONFIG_FILE): storage and limits for "
                   "--dlq-dir, normalizer aliases for `normalize`.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Seconds to wait for each API answer.")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None, dlq_dir: Path | None, config: Path | None,
        timeout: float) -> None:
    """Inspect, fix, replay and clean up the TelHawk ingest dead-letter queue.

    \b
    Exit codes: 0 done; 1 not everything happened (an entry failed again, an id is not in the DLQ,
    a sample did not normalize, a purge was not confirmed); 2 not understood, nothing done;
    3 operator credential missing or refused; 4 service unreachable or failing (5xx).
    """
    if dlq_dir is not None and ctx.get_parameter_source("url") in (ParameterSource.COMMANDLINE,
                                                                   ParameterSource.ENVIRONMENT):
        raise click.UsageError("give --url or --dlq-dir, not both")
    given = ctx.obj if isinstance(ctx.obj, State) else State()
    ctx.obj = State(url=url, token=token, dlq_dir=dlq_dir, config=config, timeout=timeout,
                    transport=given.transport)


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True,
                           help="One JSON document on stdout, for scripts.")


def filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The list filters of SPEC §11, as options: --reason, --source-type, --since, --until, --error."""
    options = [
        click.option("--reason", type=click.Choice(REASONS), help="Failure reason."),
        click.option("--source-type", help="Envelope source type, exactly."),
        click.option("--since", help="Failed at or after (RFC 3339 or unix seconds)."),
        click.option("--until", help="Failed at or before (RFC 3339 or unix seconds)."),
        click.option("--error", "error_text", help="Text the error message contains."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def filter_params(reason: str | None, source_type: str | None, since: str | None, until: str | None,
                  error_text: str | None) -> dict[str, str]:
    """The filters given, as query parameters; those not given are left out (an empty value is
    sent as is, and refused by the service: SPEC §8)."""
    given = {"reason": reason, "source_type": source_type, "since": since, "until": until,
             "error": error_text}
    return {name: value for name, value in given.items() if value is not None}


def pages(mode: Mode, params: Mapping[str, str], cursor: str | None, limit: int) -> Iterator[dict[str, Any]]:
    """Every listing page from `cursor` on, following `next_cursor` (`_continued`)."""
    query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
    return _continued(mode.list, query)


def matching(mode: Mode, params: Mapping[str, str]) -> int:
    """How many entries match the filters now (the listing's `count`)."""
    return int(mode.list({**params, "limit": "1"})["count"])


# -- list, show, export ----------------------------------------------------------------------


@cli.command("list")
@filter_options
@click.option("--limit", type=click.IntRange(1, PAGE), help="Entries per page [service default: 100].")
@click.option("--cursor", help="Start after this entry id (a previous page's next_cursor).")
@click.option("--all", "all_pages", is_flag=True, help="Follow next_cursor to the last page.")
@json_option
@pass_state
def list_entries(state: State, limit: int | None, cursor: str | None, all_pages: bool, as_json: bool,
                 **filters: str | None) -> None:
    """List DLQ entries, oldest first (GET /api/v1/dlq)."""
    mode = state.mode()
    params = filter_params(**filters)
    if all_pages:
        events: list[dict[str, Any]] = []
        count = 0
        for page in pages(mode, params, cursor, limit or PAGE):
            events.extend(page["events"])
            count = page["count"]
        answer: dict[str, Any] = {"events": events, "count": count, "next_cursor": None}
    else:
        query = dict(params)
        if limit:
            query["limit"] = str(limit)
        if cursor:
            query["cursor"] = cursor
        answer = mode.list(query)
    if as_json:
        render.emit_json(answer)
        return
    if answer["events"]:
        render.table(None, render.LIST_COLUMNS, (render.entry_row(e) for e in answer["events"]))
    more = f"; next page: --cursor {answer['next_cursor']}" if answer.get("next_cursor") else ""
    render.note(f"{len(answer['events'])} shown of {answer['count']} matching{more}")


@cli.command()
@click.argument("entry_id")
@json_option
@pass_state
def show(state: State, entry_id: str, as_json: bool) -> None:
    """Print one whole DLQ record (GET /api/v1/dlq/{id}). Exit 1 when there is no such entry."""
    record = state.mode().show(entry_id)
    (render.emit_json if as_json else render.emit_pretty_json)(record)


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@json_option
@pass_state
def delete(state: State, ids: tuple[str, ...], as_json: bool) -> None:
    """Delete DLQ entries by id (DELETE /api/v1/dlq/{id}). Exit 1 when one is not in the DLQ
    (the others are deleted all the same)."""
    mode = state.mode()
    answers, missing = [], []
    for entry_id in ids:
        try:
            answers.append(mode.delete(entry_id))
        except CliError as exc:
            if exc.code != Exit.INCOMPLETE:
                raise
            missing.append(entry_id)
            render.note(f"error: {exc.message}")
    if as_json:
        render.emit_json({"deleted": [a["id"] for a in answers], "missing": missing})
    else:
        render.note(f"deleted {len(answers)} of {len(ids)} entries")
    if missing:
        raise CliError(Exit.INCOMPLETE, f"{len(missing)} of the ids given are not DLQ entries")


@cli.command()
@filter_options
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="NDJSON file to write (written whole, then renamed into place).")
@pass_state
def export(state: State, output: Path, **filters: str | None) -> None:
    """Write matching records as NDJSON, one whole record per line.

    Entries too large for a listing page are listed without their envelope ("truncated"); those
    are fetched one by one, so every line is the record as stored.
    """
    mode = state.mode()
    params = filter_params(**filters)
    if str(output) == "-":
        counts = _export(mode, params, sys.stdout.buffer)
        where = "stdout"
    else:
        partial = output.with_name(f".{output.name}.partial")
        try:
            with partial.open("wb") as sink:
                counts = _export(mode, params, sink)
            os.replace(partial, output)
        except OSError as exc:
            raise CliError(Exit.USAGE, f"--output: cannot write {output}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        where = str(output)
    written, fetched, gone = counts
    render.note(f"exported {written} entries to {where} ({fetched} fetched one by one)")
    if gone:
        render.note(f"warning: {gone} listed entries were gone when fetched (replayed or purged meanwhile)")


def _export(mode: Mode, params: Mapping[str, str], sink: IO[bytes]) -> tuple[int, int, int]:
    """(written, fetched whole, gone since listed)."""
    written = fetched = gone = 0
    with render.progress("exporting") as bar:
        task = None
        for page in pages(mode, params, None, PAGE):
            if task is None:
                task = bar.add_task("export", total=page["count"])
            for entry in page["events"]:
                if entry.get("truncated"):
                    try:
                        entry = mode.show(entry["id"])
                    except CliError as exc:
                        if exc.code != Exit.INCOMPLETE:
                            raise
                        gone += 1
                        continue
                    fetched += 1
                sink.write(orjson.dumps(entry) + b"\n")
                written += 1
                bar.advance(task)
    sink.flush()
    return written, fetched, gone


# -- replay, purge, retention ----------------------------------------------------------------


@cli.command()
@click.argument("ids", nargs=-1)
@filter_options
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing.")
@click.option("--rate-limit", type=click.FloatRange(min=0, min_open=True), help="Events per second at most.")
@json_option
@pass_state
def replay(state: State, ids: tuple[str, ...], dry_run: bool, rate_limit: float | None, as_json: bool,
           **filters: str | None) -> None:
    """Run entries through normalization, validation and storage again (POST /api/v1/dlq/replay).

    Give entry ids, or filters (none: every entry). Stored entries leave the DLQ; one that fails
    again stays, with attempts + 1. Each call does bounded work; this command continues with the
    answer's next_cursor until done. Exit 1 when an entry failed again, or an id given was not
    replayed (not in the DLQ, or held by another replay).
    """
    params = filter_params(**filters)
    if ids and params:
        raise click.UsageError("give entry ids or filters, not both")
    mode = state.mode()
    unique = sorted(set(ids))
    total = len(unique) if ids else matching(mode, params)
    # The service takes at most MAX_IDS ids per call; a filter is one request continued by cursor.
    requests: list[dict[str, Any]] = ([{"ids": unique[i:i + MAX_IDS]} for i in range(0, len(unique), MAX_IDS)]
                                      if ids else [{"filter": params}])
    totals: dict[str, Any] = dict.fromkeys(REPLAY_TOTALS, 0)
    would: list[str] = []
    calls = 0
    with render.progress("dry run" if dry_run else "replaying") as bar:
        task = bar.add_task("replay", total=total)
        for body in requests:
            if dry_run:
                body["dry_run"] = True
            if rate_limit is not None:
                body["rate_limit"] = rate_limit
            for answer in _continued(mode.replay, body):
                calls += 1
                for key in REPLAY_TOTALS:
                    totals[key] += int(answer.get(key) or 0)
                if dry_run:
                    would.extend(answer.get("ids") or [])
                bar.update(task, completed=min(total, totals["matched"]))
    result = {**totals, "dry_run": dry_run, "calls": calls, **({"ids": would} if dry_run else {})}
    if as_json:
        render.emit_json(result)
    else:
        shown = {k: v for k, v in result.items() if k != "ids"}
        render.key_values("replay (dry run: nothing changed)" if dry_run else "replay", shown.items())
        if dry_run and would:
            render.note("would replay: " + " ".join(would))
    # With ids, each one was asked for: one skipped (gone, unreadable, or held by another replay,
    # SPEC §11) was not replayed. A filter's skipped entries were not asked for one by one.
    taken = len(would) if dry_run else totals["stored"] + totals["failed"]
    missed = len(unique) - taken if ids else 0
    if totals["failed"] or missed > 0:
        raise CliError(Exit.INCOMPLETE, _replay_shortfall(totals["failed"], missed, len(unique)))


def _continued(call: Callable[[Any], dict[str, Any]], body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The answers of `call(body)`, then of the same body with each answer's `next_cursor` as its
    `cursor` (the list's query parameter and the replay's body key alike), until it is null. CliError
    UNAVAILABLE when a cursor comes back twice (the loop would never end)."""
    seen: set[str] = set()
    while True:
        answer = call(body)
        yield answer
        cursor = answer.get("next_cursor")
        if not cursor:
            return
        if cursor in seen:
            raise CliError(Exit.UNAVAILABLE, f"the service returned cursor {cursor} twice; stopped")
        seen.add(cursor)
        body = {**body, "cursor": cursor}


def _replay_shortfall(failed: int, missed: int, asked: int) -> str:
    parts = []
    if failed:
        parts.append(f"{failed} entries failed again and stay in the DLQ (attempts + 1)")
    if missed > 0:
        parts.append(f"{missed} of the {asked} ids given were not replayed (not in the DLQ, unreadable, "
                     "or held by another replay)")
    return "; ".join(parts)


@cli.command()
@filter_options
@click.option("--dry-run", is_flag=True, help="Say how many entries would be purged; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def purge(state: State, dry_run: bool, yes: bool, as_json: bool, **filters: str | None) -> None:
    """Delete matching entries (DELETE /api/v1/dlq/purge); without filters, every entry.

    Asks first unless --yes; not confirmed (or no terminal to ask): nothing is deleted, exit 1.
    """
    mode = state.mode()
    params = filter_params(**filters)
    if dry_run:
        answer = mode.purge(params, dry_run=True)
        (render.emit_json if as_json else _print_mapping("purge (dry run: nothing deleted)"))(answer)
        return
    if not yes:
        count = _would_purge(mode, params)
        if count == 0:
            render.note("no entry matches; nothing was purged")
            if as_json:
                render.emit_json({"status": "purged", "purged": 0})
            return
        scope = (", ".join(f"{k}={v}" for k, v in params.items()) if params
                 else "no filter: EVERY entry, corrupt files included")
        try:
            confirmed = click.confirm(f"Purge {count} DLQ entries ({scope})?", default=False, err=True)
        except click.Abort:  # no answer: end of input, or Ctrl-C
            confirmed = False
        if not confirmed:
            raise CliError(Exit.INCOMPLETE, "not confirmed (--yes to skip the question); nothing was purged")
    answer = mode.purge(params, dry_run=False)
    (render.emit_json if as_json else _print_mapping("purge"))(answer)


def _would_purge(mode: Mode, params: Mapping[str, str]) -> int:
    """How many entries a purge would delete: the service's dry run (SPEC §11), or, from a service
    without it (400), the listing's count (which leaves out corrupt files)."""
    try:
        return int(mode.purge(params, dry_run=True)["would_purge"])
    except CliError as exc:
        if exc.code != Exit.USAGE:
            raise
    return matching(mode, params)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be dropped or expired; change nothing.")
@json_option
@pass_state
def retention(state: State, dry_run: bool, as_json: bool) -> None:
    """Apply the DLQ limits and age of the settings now (POST /api/v1/dlq/retention)."""
    mode = state.mode()
    answer = mode.retention(dry_run)
    calls = 1
    # One call deletes a bounded number of entries; `more` says there are more to delete. A dry
    # run changes nothing, so asking again would only repeat its answer.
    while answer.get("more") and not dry_run and calls < MAX_RETENTION_CALLS:
        following = mode.retention(False)
        calls += 1
        for key in ("expired", "dropped"):
            answer[key] = int(answer.get(key) or 0) + int(following.get(key) or 0)
        answer["more"] = following.get("more")
    answer["calls"] = calls
    title = "retention (dry run: nothing changed)" if dry_run else "retention"
    (render.emit_json if as_json else _print_mapping(title))(answer)


# -- stats, normalizers, normalize -----------------------------------------------------------


@cli.command()
@json_option
@pass_state
def stats(state: State, as_json: bool) -> None:
    """Counters and DLQ statistics (GET /healthz)."""
    health = state.mode().stats()
    if as_json:
        render.emit_json(health)
    else:
        render.key_values(f"health of {state.mode().where}", _flatten(health))


@cli.command()
@json_option
@pass_state
def normalizers(state: State, as_json: bool) -> None:
    """The registered normalizers in match order: format, source type, OCSF classes, origin
    (GET /api/v1/normalizers). Plugins that failed to load, and aliases left out, are reported."""
    answer = state.mode().normalizers()
    if as_json:
        render.emit_json(answer)
        return
    render.table(None, ("#", "match", "format", "source_type", "ocsf_classes", "origin", "normalizer"),
                 ([r.get("position"), r.get("match"), r.get("format"), r.get("source_type"),
                   render.classes(r.get("ocsf_classes")), render.origin(r.get("origin") or {}),
                   r.get("normalizer")] for r in answer.get("normalizers", [])))
    for failure in answer.get("plugin_failures") or []:
        render.note(f"plugin not loaded: {failure.get('entry_point')} ({failure.get('distribution')}): "
                    f"{failure.get('error')}")
    for failure in answer.get("alias_failures") or []:
        render.note(f"alias left out: {failure.get('alias')} -> {failure.get('alias_of')}: "
                    f"{failure.get('error')}")


@cli.command()
@click.argument("text", required=False)
@click.option("--source-type", "-s", help="Source type to normalize as [with --entry: the entry's].")
@click.option("--format", "fmt", type=click.Choice(["raw", "json"]),
              help="Envelope format: raw (a line or string event) or json (an object) [raw; with --entry: "
                   "the entry's].")
@click.option("--file", "source", type=click.File("r"), help="Read the sample from this file (- for stdin).")
@click.option("--entry", help="Take the sample from this DLQ entry: its payload, source type and format.")
@json_option
@pass_state
def normalize(state: State, text: str | None, source_type: str | None, fmt: str | None,
              source: IO[str] | None, entry: str | None, as_json: bool) -> None:
    """Run one normalizer and OCSF validation on a sample, as the service would (nothing is stored).

    The normalizers are this installation's, with the aliases of the settings (--config, else
    INGEST_CONFIG_FILE): check a fix before replaying. Prints the OCSF event, or the reason and
    error the event would be dead-lettered with (exit 1).
    """
    if sum(x is not None for x in (text, source, entry)) != 1:
        raise click.UsageError("give the sample as TEXT, --file or --entry (one of them)")
    attributes: dict[str, Any] = {}
    if entry is not None:
        envelope = state.mode().show(entry)["envelope"]
        text = envelope["payload"]
        source_type = source_type or envelope["source_type"]
        fmt = fmt or envelope["format"]
        attributes = envelope.get("attributes") or {}  # host, time...: as ingest had them
    elif source is not None:
        text = source.read()
    if not source_type:
        raise click.UsageError("--source-type is required (unless --entry gives it)")
    settings = load_cli_settings(state.config)
    result = try_normalize(registry_for(settings), source_type, fmt or "raw", text or "",
                           attributes=attributes)
    if as_json:
        render.emit_json(result)
    elif result["ok"]:
        render.emit_pretty_json(result["event"])
        render.note(f"ok: source_type={source_type} format={fmt or 'raw'} normalizes and validates "
                    f"(OCSF class_uid {result['event'].get('class_uid')})")
    if not result["ok"]:
        raise CliError(Exit.INCOMPLETE, f"{result['reason']}: {result['error']}")


def _flatten(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings as dotted keys, so keys added later show without changes here."""
    for key, item in value.items():
        if isinstance(item, Mapping) and item:
            yield from _flatten(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", item


def _print_mapping(title: str) -> Callable[[Mapping[str, Any]], None]:
    return lambda answer: render.key_values(title, _flatten(answer))


def main() -> None:
    """The console script `telhawk-dlq`."""
    cli(prog_name="telhawk-dlq")
