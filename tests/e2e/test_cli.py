"""`telhawk-dlq`, the installed console script, against the real emulator on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_pipeline import CISCO, dlq_files, post, sshd

pytestmark = pytest.mark.e2e

SCRIPT = Path(sys.executable).with_name("telhawk-dlq")
READER_TOKEN = "reader-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
HEC_TOKEN = "3b2a9c55-7f0e-4b1e-9d59-1f6a2b3c4d5e"
CONFIG = {
    "hec": {"tokens": [{"name": "fw", "token": HEC_TOKEN, "default_index": "main"}]},
    "operator": {"tokens": [{"name": "ops", "token": ADMIN_TOKEN},
                            {"name": "viewer", "token": READER_TOKEN, "role": "read"}]},
}


def telhawk_dlq(emu, *args: str, token: str | None = ADMIN_TOKEN, input: str | None = None,
                **settings: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with the token in TELHAWK_OPERATOR_TOKEN, as the README shows;
    `settings` are INGEST_* variables (the shell's own are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELHAWK_", "INGEST_"))}
    env.update(settings)
    if token is not None:
        env["TELHAWK_OPERATOR_TOKEN"] = token
    done = subprocess.run([str(SCRIPT), "--url", emu.url, *args], env=env, capture_output=True, text=True,
                          input=input, timeout=120)
    for secret in (ADMIN_TOKEN, READER_TOKEN):
        assert secret not in done.stdout + done.stderr
    return done


@pytest.fixture
def emu(start_emulator):
    return start_emulator(config=CONFIG)


def fill(emu) -> None:
    """Three cisco_asa events dead-lettered and one sshd event stored."""
    assert post(emu, json.dumps(CISCO) * 3).json()["dead_lettered"] == 3
    assert post(emu, sshd(52144)).json() == {"text": "Success", "code": 0}


def test_list_export_stats_and_a_filtered_purge_through_the_api(emu):
    fill(emu)
    files = dlq_files(emu)

    listed = telhawk_dlq(emu, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in json.loads(listed.stdout)["events"]] == [f["id"] for f in files]

    table = telhawk_dlq(emu, "list", "--limit", "2")
    assert files[0]["id"] in table.stdout and "no normalizer registered" in table.stdout
    assert f"2 shown of 3 matching; next page: --cursor {files[1]['id']}" in table.stderr

    exported = telhawk_dlq(emu, "export")
    assert [json.loads(line) for line in exported.stdout.splitlines()] == files

    health = json.loads(telhawk_dlq(emu, "stats", "--json", token=None).stdout)
    assert health["dlq_stats"]["pending_files"] == 3

    refused = telhawk_dlq(emu, "purge", "--source-type", "cisco_asa")  # no terminal, no --yes
    assert refused.returncode == 1 and len(dlq_files(emu)) == 3

    purged = telhawk_dlq(emu, "purge", "--source-type", "cisco_asa", "--yes", "--json")
    assert purged.returncode == 0 and json.loads(purged.stdout) == {"status": "purged", "purged": 3}
    assert dlq_files(emu) == []


@pytest.mark.parametrize(("token", "said"), [("not-a-known-operator-token", "401"), (HEC_TOKEN, "403"),
                                             (None, "no operator token")])
def test_a_missing_or_refused_credential_exits_3_and_changes_nothing(emu, token, said):
    fill(emu)

    done = telhawk_dlq(emu, "purge", "--yes", token=token)

    assert done.returncode == 3 and said in done.stderr
    assert len(dlq_files(emu)) == 3


def test_a_read_token_lists_but_may_not_purge(emu):
    fill(emu)

    assert telhawk_dlq(emu, "list", "--json", token=READER_TOKEN).returncode == 0
    done = telhawk_dlq(emu, "purge", "--yes", token=READER_TOKEN)

    assert done.returncode == 3 and "admin role" in done.stderr
    assert len(dlq_files(emu)) == 3


def test_a_stopped_service_exits_4(emu):
    emu.stop()

    done = telhawk_dlq(emu, "list")

    assert done.returncode == 4 and "cannot reach" in done.stderr


def test_show_delete_and_an_export_that_fetches_an_entry_too_large_for_its_page(emu):
    fill(emu)
    # An event whose record passes a listing page's 8 MiB: listed without its envelope.
    big = json.dumps({"event": "x" * (8 * 1024 * 1024 + 100), "sourcetype": "cisco_asa"})
    assert post(emu, big).json()["dead_lettered"] == 1
    files = dlq_files(emu)
    listed = json.loads(telhawk_dlq(emu, "list", "--json").stdout)["events"]
    assert [e.get("truncated", False) for e in listed] == [False, False, False, True]

    exported = telhawk_dlq(emu, "export")

    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line) for line in exported.stdout.splitlines()] == files
    assert "(1 fetched one by one)" in exported.stderr

    shown = telhawk_dlq(emu, "show", files[0]["id"], "--json")
    assert json.loads(shown.stdout) == files[0]
    deleted = telhawk_dlq(emu, "delete", files[0]["id"], "--json")
    assert deleted.returncode == 0 and [f["id"] for f in dlq_files(emu)] == [f["id"] for f in files[1:]]
    again = telhawk_dlq(emu, "show", files[0]["id"])
    assert again.returncode == 1 and "404" in again.stderr
