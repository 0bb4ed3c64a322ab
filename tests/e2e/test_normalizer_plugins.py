"""A plugin package and aliases in a real emulator process: the example plugin pip-installed into a
folder on PYTHONPATH, entry points read by each worker, events normalized and stored over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from telhawk_ingest.storage.local import LocalBackend
from tests.plugins import pip_install_example

pytestmark = pytest.mark.e2e

ASA_LINE = ("<166>Jan 12 2024 10:01:02 asa01 : %ASA-6-113005: AAA user authentication Rejected : "
            "reason = Invalid password : server = 10.1.1.5 : user = ***** : user IP = 198.51.100.7")
KV_LINE = "action=allow proto=udp src=10.1.1.10 sport=51515 dst=8.8.8.8 dport=53"


def test_the_example_plugin_and_an_alias_work_in_the_emulator(start_emulator, tmp_path):
    site = tmp_path / "site"
    pip_install_example(site, tmp_path / "build")
    emu = start_emulator(workers=2, PYTHONPATH=str(site),
                         INGEST_NORMALIZERS_ALIASES='{cisco_asa: "cisco:asa", kv: "example:kv_firewall"}')
    hec = {"Authorization": f"Splunk {emu.hec_token}"}

    events = "".join(json.dumps(e) for e in (
        {"event": ASA_LINE, "sourcetype": "cisco_asa"},
        {"event": KV_LINE, "sourcetype": "example:kv_firewall"},
        {"event": {"message": KV_LINE}, "sourcetype": "kv"},
        {"event": "%ASA-6-999999: new", "sourcetype": "cisco_asa"},
    ))
    answer = httpx.post(f"{emu.url}/services/collector/event", content=events, headers=hec, timeout=30,
                        trust_env=False)
    listed = httpx.get(f"{emu.url}/api/v1/normalizers", timeout=30, trust_env=False,
                       headers={"Authorization": f"Bearer {emu.operator_token}"})

    assert answer.json() == {"text": "Success", "code": 0, "accepted": 4, "dead_lettered": 1}
    stored = sorted((d["_source"]["class_uid"], d["_source"]["metadata"]["product"]["name"])
                    for d in LocalBackend(emu.data_dir).documents())
    assert stored == [(3002, "ASA"), (4001, "Example KV Firewall"), (4001, "Example KV Firewall")]
    [record] = [json.loads(p.read_text()) for p in emu.dlq_path.glob("failed_*.json")]
    assert record["error"] == "cisco:asa message id 999999 is not supported"
    body = listed.json()
    origins = {(n["format"], n["source_type"]): n["origin"] for n in body["normalizers"]}
    assert origins[("raw", "example:kv_firewall")] == {
        "type": "plugin", "entry_point": "kv_firewall", "distribution": "telhawk-normalizer-example",
        "version": "0.1.0"}
    assert origins[("json", "kv")] == {"type": "alias", "alias_of": "example:kv_firewall"}
    assert origins[("raw", "cisco_asa")] == {"type": "alias", "alias_of": "cisco:asa"}
    assert body["plugin_failures"] == [] and body["alias_failures"] == []
