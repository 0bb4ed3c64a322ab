"""`telhawk-dlq --dlq-dir`: the command line on a real DLQ folder, through click's runner.

Entries are real files written by DeadLetterQueue; what the commands print and what is left on
disk afterwards are what is checked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from telhawk_ingest import dlq as dlq_module
from telhawk_ingest.cli import cli
from telhawk_ingest.config import DlqSettings
from telhawk_ingest.dlq import DeadLetterQueue, make_record
from tests.readback import stored_documents

REASONS = ["normalization_failed", "storage_failed", "normalization_failed", "validation_failed",
           "normalization_failed"]


def envelope(n: int, source_type: str = "cisco_asa", payload: str = "%ASA-6-302013: Built") -> dict:
    return {"id": f"0190a000-0000-7000-8000-{n:012d}", "source": "firewall", "source_type": source_type,
            "format": "raw", "payload": payload, "attributes": {"host": "fw01"},
            "received_at": "2026-01-01T00:00:00.000Z"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "dlq"


@pytest.fixture
def entries(folder: Path) -> list[str]:
    """Five entries, one second apart, of the reasons in REASONS (oldest first)."""
    dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    ids = []
    for n, reason in enumerate(REASONS):
        source_type = "sshd" if reason == "validation_failed" else "cisco_asa"
        ids.append(dlq.write(make_record(envelope(n, source_type), reason, f"error number {n}",
                                         now=1_700_000_000.0 + n), now=1_700_000_000 + n))
    return ids


@pytest.fixture
def run(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch):
    """`run(*args, input=None)` -> click's Result, with --dlq-dir and a config whose storage is local
    under tmp_path. The shell's INGEST_* variables do not reach the settings."""
    for name in list(os.environ):
        if name.startswith(("INGEST_", "CORE_", "TELHAWK_")):
            monkeypatch.delenv(name)
    config = configure(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--dlq-dir", str(folder), "--config", str(config), *args], input=input)

    return invoke


def configure(tmp_path: Path, **sections: dict) -> Path:
    """The settings file `run` passes: local storage under tmp_path, and `sections`."""
    config = tmp_path / "config.yaml"
    (tmp_path / "data").mkdir(exist_ok=True)
    settings = {"storage": {"backend": "local", "data_dir": str(tmp_path / "data")}, **sections}
    config.write_text(yaml.safe_dump(settings))
    return config


def on_disk(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("failed_*.json"))


def test_list_json_is_the_api_answer_oldest_first_with_the_total_and_the_next_cursor(run, entries):
    result = run("list", "--limit", "2", "--json")

    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert [e["id"] for e in answer["events"]] == entries[:2]
    assert answer["count"] == 5 and answer["next_cursor"] == entries[1]


def test_list_filters_and_all_pages_follow_the_cursor_to_the_end(run, entries):
    result = run("list", "--reason", "normalization_failed", "--limit", "1", "--all", "--json")

    answer = json.loads(result.stdout)
    assert [e["id"] for e in answer["events"]] == [entries[0], entries[2], entries[4]]
    assert answer["count"] == 3 and answer["next_cursor"] is None


def test_list_for_people_is_a_table_and_a_line_saying_how_to_go_on(run, entries):
    result = run("list", "--limit", "2", "--source-type", "cisco_asa")

    assert result.exit_code == 0
    assert entries[0] in result.stdout and "error number 0" in result.stdout
    assert entries[2] not in result.stdout
    assert f"2 shown of 4 matching; next page: --cursor {entries[1]}" in result.stderr


def test_a_filter_value_the_service_refuses_is_a_usage_error_and_lists_nothing(run, entries):
    result = run("list", "--since", "yesterday-ish", "--json")

    assert result.exit_code == 2
    assert "since: expected RFC 3339 or unix seconds" in result.stderr and result.stdout == ""


def test_show_prints_the_whole_record_as_the_file_holds_it(run, entries, folder):
    result = run("show", entries[3], "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads((folder / f"{entries[3]}.json").read_bytes())


@pytest.mark.parametrize(("entry_id", "code"), [("failed_1700000000_" + "0" * 32, 1),
                                                ("../../etc/passwd", 2), ("failed_1_x", 2)])
def test_show_of_an_unknown_id_exits_1_and_of_a_non_id_exits_2(run, entries, entry_id, code):
    result = run("show", entry_id)

    assert result.exit_code == code
    assert result.stdout == "" and result.stderr.startswith("error: ")


def test_purge_with_yes_deletes_only_the_matching_entries_and_is_audited(run, entries, folder):
    result = run("purge", "--reason", "normalization_failed", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "purged", "purged": 3}
    assert on_disk(folder) == [entries[1], entries[3]]
    audit = "".join(p.read_text() for p in (folder / ".state" / "audit").iterdir())
    lines = [json.loads(line) for line in audit.splitlines()]
    [purge] = [line for line in lines if line.get("action") == "purge_dlq"]
    assert purge["operator"].endswith("@cli") and purge["count"] == 3


@pytest.mark.parametrize("answer", ["n\n", "", "\n"])
def test_purge_not_confirmed_deletes_nothing_and_exits_1(run, entries, folder, answer):
    result = run("purge", input=answer)

    assert result.exit_code == 1
    assert "Purge 5 DLQ entries (no filter: EVERY entry" in result.stderr
    assert "nothing was purged" in result.stderr
    assert on_disk(folder) == entries


def test_purge_confirmed_at_the_prompt_deletes(run, entries, folder):
    result = run("purge", "--source-type", "sshd", input="y\n")

    assert result.exit_code == 0
    assert "Purge 1 DLQ entries (source_type=sshd)?" in result.stderr
    assert on_disk(folder) == [e for i, e in enumerate(entries) if i != 3]


def test_export_writes_every_record_whole_even_those_listed_as_truncated(run, entries, folder, tmp_path,
                                                                         monkeypatch):
    big_dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    big = big_dlq.write(make_record(envelope(9, payload="x" * 5000), "storage_failed", "down",
                                    now=1_700_000_100.0), now=1_700_000_100)
    # Pages of 3 KiB: the 5 KB record is listed without its envelope and must be fetched whole.
    monkeypatch.setattr(dlq_module, "LIST_PAGE_BYTES", 3 * 1024)
    listed = json.loads(run("list", "--source-type", "cisco_asa", "--all", "--json").stdout)
    assert [e for e in listed["events"] if e.get("truncated")] != []
    target = tmp_path / "out" / "backup.ndjson"
    target.parent.mkdir()

    result = run("export", "-o", str(target))

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in target.read_bytes().splitlines()]
    assert [line["id"] for line in lines] == [*entries, big]
    for line in lines:
        assert line == json.loads((folder / f"{line['id']}.json").read_bytes())
    assert lines[-1]["envelope"]["payload"] == "x" * 5000
    assert "exported 6 entries" in result.stderr and "fetched one by one" in result.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["backup.ndjson"]  # no partial file left


def test_export_to_stdout_with_a_filter(run, entries):
    result = run("export", "--reason", "storage_failed")

    assert result.exit_code == 0
    [line] = result.stdout.splitlines()
    assert json.loads(line)["id"] == entries[1]


def test_stats_count_the_files_in_the_folder(run, entries, folder):
    result = run("stats", "--json")

    health = json.loads(result.stdout)
    assert health["dlq_stats"]["pending_files"] == 5
    assert health["dlq_stats"]["base_path"] == str(folder)


def test_a_dlq_dir_that_does_not_exist_is_a_usage_error_and_is_not_created(tmp_path):
    missing = tmp_path / "no-such-dlq"

    result = CliRunner().invoke(cli, ["--dlq-dir", str(missing), "list"])

    assert result.exit_code == 2 and "is not a folder" in result.stderr
    assert not missing.exists()


def test_url_and_dlq_dir_together_are_refused(folder, entries):
    result = CliRunner().invoke(cli, ["--url", "http://127.0.0.1:9", "--dlq-dir", str(folder), "list"])

    assert result.exit_code == 2 and "not both" in result.stderr


def test_the_emulator_config_with_its_public_tokens_loads_for_the_command_line(folder, entries, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("INGEST_", "TELHAWK_")):
            monkeypatch.delenv(name)
    dev_config = Path(__file__).resolve().parents[2] / "local" / "config.yaml"

    result = CliRunner().invoke(cli, ["--dlq-dir", str(folder), "--config", str(dev_config), "list",
                                      "--json"])

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["count"] == 5


ASA = ("<166>Jan 12 2024 10:01:02 asa01 : %ASA-6-302013: Built outbound TCP connection 1234 for "
       "outside:93.184.216.34/443 (93.184.216.34/443) to inside:10.1.1.10/52000 (203.0.113.5/52000)")
ALIAS = {"normalizers": {"aliases": {"cisco_asa": "cisco:asa"}}}


def audit_lines(folder: Path) -> list[dict]:
    text = "".join(p.read_text() for p in (folder / ".state" / "audit").iterdir())
    return [json.loads(line) for line in text.splitlines()]


def test_show_and_delete_in_directory_mode_are_audited(run, entries, folder):
    assert run("show", entries[0], "--json").exit_code == 0

    result = run("delete", entries[0], "--json")

    assert result.exit_code == 0 and json.loads(result.stdout) == {"deleted": [entries[0]], "missing": []}
    assert on_disk(folder) == entries[1:]
    actions = [(line["action"], line["params"].get("id")) for line in audit_lines(folder)]
    assert ("show_dlq_entry", entries[0]) in actions and ("delete_dlq_entry", entries[0]) in actions


def test_purge_dry_run_says_what_it_would_delete_and_deletes_nothing(run, entries, folder):
    result = run("purge", "--reason", "normalization_failed", "--dry-run", "--json")

    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["would_purge"] == 3 and answer["ids"] == [entries[0], entries[2], entries[4]]
    assert on_disk(folder) == entries


def test_retention_expires_entries_older_than_max_age_and_a_dry_run_only_says_so(run, entries, folder,
                                                                                   tmp_path):
    fresh = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0)).write(
        make_record(envelope(7), "storage_failed", "down"))
    configure(tmp_path, dlq={"max_age": "30d"})

    dry = run("retention", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert json.loads(dry.stdout)["expired"] == 5 and len(on_disk(folder)) == 6

    done = run("retention", "--json")

    assert done.exit_code == 0 and json.loads(done.stdout)["expired"] == 5
    assert on_disk(folder) == [fresh]


def test_normalizers_in_directory_mode_list_the_configured_alias(run, entries, tmp_path):
    configure(tmp_path, **ALIAS)

    result = run("normalizers")

    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " cisco_asa " in line]
    assert len(rows) == 2 and all("alias of cisco:asa" in row for row in rows)  # raw and json


def test_normalize_shows_the_ocsf_event_for_a_source_type_that_has_a_normalizer(run):
    result = run("normalize", "--source-type", "cisco:asa", ASA, "--json")

    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["event"]["class_uid"] == 4001
    assert answer["event"]["dst_endpoint"]["ip"] == "93.184.216.34"


def test_normalize_says_why_an_event_would_be_dead_lettered_and_exits_1(run):
    result = run("normalize", "--source-type", "cisco_asa", ASA)

    assert result.exit_code == 1 and result.stdout == ""
    assert ("normalization_failed: no normalizer registered for format=raw source_type=cisco_asa"
            in result.stderr)


def test_normalize_an_entry_with_the_fixed_configuration(run, folder, tmp_path):
    entry = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0)).write(make_record(
        envelope(3, payload=ASA), "normalization_failed",
        "no normalizer registered for format=raw source_type=cisco_asa"))
    before = run("normalize", "--entry", entry)
    configure(tmp_path, **ALIAS)

    after = run("normalize", "--entry", entry)

    assert before.exit_code == 1
    assert after.exit_code == 0, after.stderr
    assert json.loads(after.stdout)["class_uid"] == 4001
    assert ("ok: source_type=cisco_asa format=raw normalizes and validates (OCSF class_uid 4001)"
            in after.stderr)


def test_normalize_with_an_alias_to_nothing_is_a_usage_error_naming_it(run, tmp_path):
    configure(tmp_path, normalizers={"aliases": {"cisco_asa": "cisco:asa:typo"}})

    result = run("normalize", "--source-type", "cisco_asa", ASA)

    assert result.exit_code == 2 and "normalizers.aliases.cisco_asa" in result.stderr


def test_normalize_reads_the_sample_from_stdin(run):
    result = run("normalize", "--source-type", "cisco:asa", "--file", "-", "--json", input=ASA)

    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


def test_replay_in_directory_mode_stores_into_the_configured_store_and_rewrites_what_fails_again(
        run, folder, tmp_path):
    dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    for n in (1, 2):
        dlq.write(make_record(envelope(n, payload=ASA), "normalization_failed", "no normalizer"))
    still = dlq.write(make_record(envelope(3, source_type="juniper:srx"), "normalization_failed",
                                  "no normalizer"))
    configure(tmp_path, **ALIAS)

    result = run("replay", "--reason", "normalization_failed", "--json")

    assert result.exit_code == 1  # one entry failed again
    assert json.loads(result.stdout) == {"matched": 3, "stored": 2, "failed": 1, "skipped": 0,
                                         "dry_run": False, "calls": 1}
    assert "1 entries failed again and stay in the DLQ" in result.stderr
    assert on_disk(folder) == [still]
    assert json.loads((folder / f"{still}.json").read_bytes())["attempts"] == 2
    stored = sorted(d["_id"] for d in stored_documents(tmp_path / "data"))
    assert stored == sorted(envelope(n)["id"] for n in (1, 2))
    replays = [line for line in audit_lines(folder) if line["action"] == "replay_dlq"]
    assert len(replays) == 1 and replays[0]["operator"].endswith("@cli")


def test_export_to_a_folder_that_does_not_exist_is_a_usage_error(run, entries, tmp_path):
    result = run("export", "-o", str(tmp_path / "nowhere" / "out.ndjson"))

    assert result.exit_code == 2 and "--output: cannot write" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_directory_mode_never_starts_self_healing_that_the_command_would_cut_off(folder, entries):
    from telhawk_ingest.cli.modes import DirMode

    mode = DirMode(folder)

    assert mode.settings.replay.heal_on_recovery is True  # the service's own setting is kept as read
    assert mode.service.settings.replay.heal_on_recovery is False


# --- where a replay stores --------------------------------------------------------------------------

DEV_CONFIG = Path(__file__).resolve().parents[2] / "local" / "config.yaml"


def asa_entries(folder: Path, count: int) -> list[str]:
    dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    return [dlq.write(make_record(envelope(n, source_type="asa_four", payload=ASA), "normalization_failed",
                                  "no normalizer")) for n in range(count)]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("INGEST_", "CORE_", "TELHAWK_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout as the emulator leaves it after a run: local/config.yaml, var/dlq and var/data."""
    root = tmp_path / "checkout"
    (root / "local").mkdir(parents=True)
    (root / "local" / "config.yaml").write_text(DEV_CONFIG.read_text())
    (root / "var" / "data").mkdir(parents=True)
    return root


def test_replay_of_the_emulators_dlq_stores_into_the_emulators_store(checkout, clean_env):
    clean_env.setenv("INGEST_NORMALIZERS_ALIASES", '{asa_four: "cisco:asa"}')
    ids = asa_entries(checkout / "var" / "dlq", 3)

    result = CliRunner().invoke(cli, ["--dlq-dir", str(checkout / "var" / "dlq"), "replay",
                                      "--source-type", "asa_four", "--json"])

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stored"] == 3
    assert on_disk(checkout / "var" / "dlq") == []
    stored = sorted(d["_id"] for d in stored_documents(checkout / "var" / "data"))
    assert stored == sorted(envelope(n)["id"] for n in range(3)) and len(ids) == 3


def test_the_emulators_dlq_before_the_emulator_made_its_store_is_refused_and_nothing_moves(
        checkout, clean_env):
    (checkout / "var" / "data").rmdir()
    ids = asa_entries(checkout / "var" / "dlq", 2)

    result = CliRunner().invoke(cli, ["--dlq-dir", str(checkout / "var" / "dlq"), "replay", "--json"])

    assert result.exit_code == 2
    assert "storage.data_dir" in result.stderr and str(checkout / "var" / "data") in result.stderr
    assert not (checkout / "var" / "data").exists()
    assert on_disk(checkout / "var" / "dlq") == sorted(ids)


@pytest.mark.parametrize("how", ["config", "environment"])
def test_replay_into_a_store_that_does_not_exist_is_refused_and_leaves_every_entry(
        tmp_path, folder, clean_env, how):
    missing = tmp_path / "nobody" / "data"
    ids = asa_entries(folder, 2)
    args = ["--dlq-dir", str(folder)]
    if how == "config":
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"storage": {"backend": "local", "data_dir": str(missing)}}))
        args += ["--config", str(config)]
    else:
        clean_env.setenv("INGEST_STORAGE_DATA_DIR", str(missing))

    result = CliRunner().invoke(cli, [*args, "replay", "--json"])

    assert result.exit_code == 2
    assert "storage.data_dir" in result.stderr and "INGEST_STORAGE_DATA_DIR" in result.stderr
    assert "--config" in result.stderr
    assert not missing.exists() and not missing.parent.exists()
    assert on_disk(folder) == sorted(ids)
    claims = [p for p in folder.rglob("*") if "claim" in p.name]
    assert claims == []


def test_stats_on_a_store_that_does_not_exist_is_refused_without_creating_it(tmp_path, folder, clean_env):
    missing = tmp_path / "data-missing"
    asa_entries(folder, 1)
    clean_env.setenv("INGEST_STORAGE_DATA_DIR", str(missing))

    result = CliRunner().invoke(cli, ["--dlq-dir", str(folder), "stats", "--json"])

    assert result.exit_code == 2 and "storage.data_dir" in result.stderr
    assert not missing.exists()


def test_a_replay_the_folder_cannot_take_exits_4_and_says_when_to_come_back(run, folder, tmp_path):
    ids = asa_entries(folder, 1)
    (folder / ".claims").write_text("not a folder")  # claims cannot be made: the folder fails

    result = run("replay", "--json")

    assert result.exit_code == 4
    assert "nothing was replayed" in result.stderr and "(retry after 5 s)" in result.stderr
    assert on_disk(folder) == ids


def test_a_source_type_with_terminal_escapes_is_listed_as_text_through_a_pipe(run, folder):
    """A HEC client chooses the source type: its escape sequences (retitle, clear, colour) must not
    reach the terminal of whoever lists the DLQ, piped to `less -R` or a file included."""
    hostile = "esc\x1b]0;PWNED\x07\x1b[2J\x1b[31mred\x00"
    dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    dlq.write(make_record(envelope(1, hostile), "normalization_failed", "no normalizer", now=1_700_000_000.0),
              now=1_700_000_000)

    result = run("list")

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\x00" not in result.stdout
    assert "esc\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[31mred\\x00" in result.stdout


def test_a_source_type_is_neither_rich_markup_nor_longer_than_a_table_cell_shows(run, folder):
    dlq = DeadLetterQueue(DlqSettings(base_path=folder, min_free_bytes=0))
    for n, source_type in enumerate(["[link=https://example.invalid]click[/link][bold]x", "s" * 100_000]):
        dlq.write(make_record(envelope(n, source_type), "normalization_failed", "no normalizer",
                              now=1_700_000_000.0 + n), now=1_700_000_000 + n)

    result = run("list")

    assert result.exit_code == 0, result.output
    assert "[link=https://example.invalid]click[/link][bold]x" in result.stdout
    # The long one shows its first 79 characters (folded over a few lines) and an ellipsis.
    assert "…" in result.stdout and result.stdout.count("s") < 79 + 100
    assert len(result.stdout.splitlines()) < 20
