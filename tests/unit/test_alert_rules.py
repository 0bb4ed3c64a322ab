"""deploy/prometheus/alerts.yml checked by Prometheus's own promtool: the rules parse
(`check rules`), fire and stay quiet where tests/prometheus/alerts_test.yml says (`test rules`),
and name only metrics that GET /metrics exposes (whose exposition `check metrics` accepts).

promtool comes from scripts/promtool.sh (Debian's `prometheus` package, fetched on first use);
without one these tests fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from telhawk_ingest import metrics
from telhawk_ingest.config import Settings
from telhawk_ingest.envelope import Envelope, new_id, rfc3339
from telhawk_ingest.service import Service

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
UNIT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
FETCH = ROOT / "scripts" / "promtool.sh"
# Alerts the seed recommends (dlq-and-backpressure.md, "Monitoring"), by the name they have here.
SEED_ALERTS = {"TelhawkDlqPendingFiles", "TelhawkStorageRetryRateHigh", "TelhawkDlqWriteRateRising",
               "TelhawkStorageErrors"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        fetched = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=600)
        found = fetched.stdout.strip().splitlines()[-1] if fetched.returncode == 0 else None
        if not found:
            why = f"scripts/promtool.sh could not fetch one: {fetched.stderr.strip()[-500:]}"
            if in_ci():
                pytest.fail(f"CI needs promtool to check the alert rules: {why}", pytrace=False)
            pytest.skip(f"no promtool: {why}")
    return found


def run(promtool: str, *args: str, cwd: Path = ROOT, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, input=stdin,
                          timeout=120)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_every_rule(promtool):
    checked = run(promtool, "check", "rules", str(RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_the_seeds_alerts_are_there_with_a_severity_and_a_summary():
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}

    assert alerts.keys() >= SEED_ALERTS
    for rule in alerts.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_alerts_fire_and_stay_quiet_as_the_unit_tests_say(promtool):
    tested = run(promtool, "test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_catch_a_wrong_threshold_and_a_sum_across_instances(promtool, tmp_path):
    """The unit tests are not vacuous: a pending-files threshold of 200, or instances summed
    (two instances at 60 pending files would alert), make them fail."""
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "tests" / "prometheus").mkdir(parents=True)
    shutil.copy(UNIT_TESTS, tmp_path / "tests" / "prometheus" / UNIT_TESTS.name)
    text = RULES.read_text()
    pending = "max by (job) (telhawk_dlq_pending_files)"
    for wrong in (text.replace(f"{pending} > 100", f"{pending} > 200"),
                  text.replace(pending, pending.replace("max", "sum"))):
        assert wrong != text
        (tmp_path / "deploy" / "prometheus" / "alerts.yml").write_text(wrong)

        tested = run(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path / "tests" / "prometheus")

        assert tested.returncode != 0
        assert "TelhawkDlqPendingFiles" in tested.stdout + tested.stderr


def test_promtool_refuses_a_rule_that_does_not_parse(promtool, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("> 100", "> > 100"))

    checked = run(promtool, "check", "rules", str(broken))

    assert checked.returncode != 0
    assert "parse error" in (checked.stdout + checked.stderr)


@pytest.fixture
def exposition(tmp_path, monkeypatch) -> str:
    """GET /metrics of a Service that dead-lettered one event, with one request timed, and a
    storage circuit breaker in healthz (`storage.breaker`; added here when this build has none)."""
    settings = Settings.model_validate({
        "dlq": {"base_path": str(tmp_path / "dlq"), "min_free_bytes": 0},
        "storage": {"backend": "local", "data_dir": str(tmp_path / "data")},
    })
    svc = Service(settings)
    healthz = svc.healthz

    def with_breaker() -> dict:
        health = healthz()
        return {**health, "storage": {"breaker": "closed", **health["storage"]}}

    monkeypatch.setattr(svc, "healthz", with_breaker)
    try:
        event = {"class_uid": 0}  # not OCSF: dead-lettered, so the DLQ gauges have an entry
        svc.ingest([Envelope(new_id(), "test", "ocsf", "json", json.dumps(event), {}, rfc3339())])
        metrics.observe({"method": "POST", "telhawk.function": "ingest_event",
                         "telhawk.route": "POST /services/collector/event"}, 503, 0.004)
        body, _ = metrics.exposition(svc)
        return body.decode()
    finally:
        svc.backend.close()
        svc.counters.retire()


def test_every_metric_and_label_the_rules_use_is_exposed(exposition):
    samples = [s for family in text_string_to_metric_families(exposition) for s in family.samples]
    exposed = {s.name for s in samples}
    used = set()
    for rule in rules():
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # not the label values
        used |= set(re.findall(r"\btelhawk_[a-z_]+\b", expr))
    assert used and used <= exposed, used - exposed
    labelled = {(s.name, key, value) for s in samples for key, value in s.labels.items()}
    for rule in rules():
        for name, key, value in re.findall(r'(telhawk_[a-z_]+)\{(\w+)="([^"]*)"\}', rule["expr"]):
            assert (name, key, value) in labelled


def test_promtool_accepts_the_exposition(promtool, exposition):
    checked = run(promtool, "check", "metrics", stdin=exposition)

    assert checked.returncode == 0, checked.stdout + checked.stderr
