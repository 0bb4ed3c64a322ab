"""The seed's DLQ workflow end to end, without the `jq` loop: identify, analyze, fix by configuration,
check the fix, replay, and find the event stored once, its entry gone and the others untouched.

Run twice over the real emulator: with `telhawk-dlq`, and with plain HTTP calls as the README's curl
walk-through makes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.test_cli import ADMIN_TOKEN, CONFIG, telhawk_dlq
from tests.e2e.test_pipeline import post
from tests.readback import dlq_records, stored_documents

pytestmark = pytest.mark.e2e

# An ASA syslog line as a firewall sends it, in HEC's `event` as a string (envelope format raw).
ASA = ("<166>Nov 30 2026 08:00:00 fw01 : %ASA-6-302013: Built outbound TCP connection 1234 for "
       "outside:93.184.216.34/443 (93.184.216.34/443) to inside:10.1.1.10/52000 (203.0.113.5/52000)")
FIX = {"normalizers": {"aliases": {"cisco_asa": "cisco:asa"}}}
ALIASES_ENV = '{cisco_asa: "cisco:asa"}'


def operator_api(emu, method: str, path: str, **kwargs) -> httpx.Response:
    """One operator call as curl makes it: `-H "Authorization: Bearer $OPERATOR_TOKEN"`."""
    return httpx.request(method, f"{emu.url}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         timeout=60, trust_env=False, **kwargs)


def replay_with_cli(emu) -> dict:
    done = telhawk_dlq(emu, "replay", "--source-type", "cisco_asa", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def replay_with_http(emu) -> dict:
    """POST /api/v1/dlq/replay, continued with next_cursor until null (the README's curl loop)."""
    body: dict = {"filter": {"source_type": "cisco_asa"}}
    totals = {"matched": 0, "stored": 0, "failed": 0, "skipped": 0}
    while True:
        answer = operator_api(emu, "POST", "/api/v1/dlq/replay", json=body)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        for key in totals:
            totals[key] += result[key]
        if result["next_cursor"] is None:
            return totals
        body["cursor"] = result["next_cursor"]


@pytest.mark.parametrize("replay", [replay_with_cli, replay_with_http], ids=["cli", "http"])
def test_the_seed_workflow_fix_by_alias_check_replay_stored_once(start_emulator, tmp_path: Path,
                                                                 replay: Callable[..., dict]):
    emu = start_emulator(config=CONFIG)

    # The event fails into the DLQ, next to an unrelated failure that must stay as it is.
    event = {"event": ASA, "sourcetype": "cisco_asa", "source": "firewall", "host": "fw01"}
    sent = post(emu, json.dumps(event))
    assert sent.json() == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    assert post(emu, json.dumps({"event": "session opened", "sourcetype": "juniper:srx"})).status_code == 200

    # 1-2. Identify and analyze.
    listed = telhawk_dlq(emu, "list", "--reason", "normalization_failed", "--source-type", "cisco_asa",
                         "--json")
    [entry] = json.loads(listed.stdout)["events"]
    assert entry["error"] == "no normalizer registered for format=raw source_type=cisco_asa"
    assert entry["envelope"]["payload"] == ASA
    [unrelated] = [r for r in dlq_records(emu.dlq_path) if r["id"] != entry["id"]]
    unrelated_bytes = (emu.dlq_path / f"{unrelated['id']}.json").read_bytes()

    # 3. The fix is configuration: an alias to the cisco:asa normalizer, in the settings file
    # (with the CLI) or as the README's INGEST_NORMALIZERS_ALIASES (with curl). Checked before
    # replaying: the running configuration still fails, the fixed one gives an OCSF event.
    current = tmp_path / "current.yaml"
    current.write_text(yaml.safe_dump(CONFIG))
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({**CONFIG, **FIX}))
    unfixed = telhawk_dlq(emu, "--config", str(current), "normalize", "--entry", entry["id"])
    assert unfixed.returncode == 1
    assert ("normalization_failed: no normalizer registered for format=raw source_type=cisco_asa"
            in unfixed.stderr)
    if replay is replay_with_cli:
        checked = telhawk_dlq(emu, "--config", str(fixed), "normalize", "--entry", entry["id"], "--json")
        emu.env["INGEST_CONFIG_FILE"] = str(fixed)
    else:
        checked = telhawk_dlq(emu, "--config", str(current), "normalize", "--entry", entry["id"], "--json",
                              INGEST_NORMALIZERS_ALIASES=ALIASES_ENV)
        emu.env["INGEST_NORMALIZERS_ALIASES"] = ALIASES_ENV
    assert checked.returncode == 0, checked.stderr
    trial = json.loads(checked.stdout)
    assert trial["ok"] is True and trial["event"]["class_uid"] == 4001
    emu.restart()
    routes = operator_api(emu, "GET", "/api/v1/normalizers").json()["normalizers"]
    alias = {"type": "alias", "alias_of": "cisco:asa"}
    assert {r["format"]: r["origin"] for r in routes if r["source_type"] == "cisco_asa"} == {"raw": alias,
                                                                                          "json": alias}

    # 4. Replay, through the service: never through HEC.
    totals = replay(emu)
    assert {k: totals[k] for k in ("matched", "stored", "failed")} == {"matched": 1, "stored": 1, "failed": 0}

    # A second replay of the same id finds nothing to do.
    again = telhawk_dlq(emu, "replay", entry["id"], "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["stored"] == 0

    # 5. The event is stored once under its envelope id, its entry is gone, the other one untouched;
    # health counts it as replayed, not as a second event processed.
    health = emu.healthz(lambda h: h["replayed"]["stored"] == 1)
    assert (health["replayed"], health["processed"], health["failed"]) == ({"stored": 1, "failed": 0}, 2, 2)
    emu.stop()
    copies = [d for d in stored_documents(emu.data_dir) if d["_id"] == entry["envelope"]["id"]]
    assert len(copies) == 1
    assert copies[0]["_source"]["class_uid"] == 4001
    assert [r["id"] for r in dlq_records(emu.dlq_path)] == [unrelated["id"]]
    assert (emu.dlq_path / f"{unrelated['id']}.json").read_bytes() == unrelated_bytes
