"""Real Splunk HEC client libraries, unchanged, talking to the emulator."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from splunk_handler import SplunkHandler

from telhawk_ingest.storage.local import LocalBackend

pytestmark = pytest.mark.e2e

SSHD = "Nov  4 01:02:{:02d} web01 sshd[1234]: Accepted publickey for deploy from 10.0.0.{} port 5{:04d} ssh2"


def test_the_splunk_handler_logging_library_batches_events_that_are_all_stored(emulator):
    handler = SplunkHandler(
        host="127.0.0.1", port=emulator.port, token=emulator.hec_token, index="auth",
        protocol="http", verify=False, sourcetype="linux_secure", flush_interval=0.2, timeout=10,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("splunk-client-test")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for n in range(25):
            logger.info(SSHD.format(n, n % 250 + 1, n))
        handler.force_flush()
    finally:
        logger.removeHandler(handler)
        handler.close()

    docs = list(LocalBackend(emulator.data_dir).documents("auth"))
    assert len(docs) == 25
    assert {d["_source"]["src_endpoint"]["port"] for d in docs} == {50000 + n for n in range(25)}
    assert {d["_source"]["user"]["name"] for d in docs} == {"deploy"}
    assert not list(emulator.dlq_path.glob("failed_*.json"))


SPLUNK_JS = Path(__file__).parent / "splunk_js"


@pytest.fixture(scope="session")
def splunk_js() -> Path:
    """Splunk's splunk-logging package, installed from the lock file once."""
    if not (shutil.which("node") and shutil.which("npm")):
        reason = "Node.js and npm are needed to run Splunk's JavaScript HEC library"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    if not (SPLUNK_JS / "node_modules" / "splunk-logging").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SPLUNK_JS,
                       check=True, timeout=300)
    return SPLUNK_JS


def test_splunks_javascript_logging_library_batches_events_that_are_all_stored(emulator, splunk_js):
    done = subprocess.run(
        ["node", "send.js", emulator.url + "/services/collector/event", emulator.hec_token, "35"],
        cwd=splunk_js, capture_output=True, text=True, timeout=60, check=True,
    )

    assert json.loads(done.stdout) == {"errors": []}
    stored = LocalBackend(emulator.data_dir).documents("auth")
    docs = [d for d in stored if d["_source"]["user"]["name"] == "root"]
    assert sorted(d["_source"]["src_endpoint"]["port"] for d in docs) == [40000 + n for n in range(35)]
    assert {d["_source"]["status"] for d in docs} == {"Failure"}
