"""Normalizers from installed packages (entry points) and configured aliases: what they add, in
which order, and how a bad one is refused without stopping anything else."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from telhawk_ingest import ocsf
from telhawk_ingest.config import NormalizerSettings, Settings, load_settings
from telhawk_ingest.errors import ConfigError
from telhawk_ingest.normalizers import Origin, default_registry, passthrough
from telhawk_ingest.normalizers.loading import ENTRY_POINT_GROUP, discover, load_registry
from telhawk_ingest.normalizers.trial import try_normalize
from telhawk_ingest.service import Service
from tests.plugins import on_path, pip_install_example, write_distribution
from tests.unit.test_normalizers import envelope

ASA_LINE = ("%ASA-6-302013: Built inbound TCP connection 8 for outside:198.51.100.7/51234 "
            "(198.51.100.7/51234) to inside:192.168.10.20/443 (203.0.113.20/443)")
KV_LINE = "action=deny proto=tcp src=198.51.100.7 sport=51234 dst=10.1.1.10 dport=22 rule=block-ssh zone=dmz"

# A plugin module: one normalizer, declared for the source types and patterns given.
PLUGIN_SOURCE = '''
from telhawk_ingest.normalizers import NormalizerPlugin

def normalize(envelope):
    return {{"by": {tag!r}, "payload": envelope.payload}}

PLUGIN = NormalizerPlugin(normalize=normalize, source_types={types!r}, patterns={patterns!r},
                          ocsf_classes={classes!r}, formats={formats!r})
'''


def plugin_module(tag: str, types: list[str] = (), patterns: list[str] = (), classes: list[int] = (4001,),
                  formats: tuple[str, ...] = ("raw", "json")) -> str:
    return PLUGIN_SOURCE.format(tag=tag, types=list(types), patterns=list(patterns), classes=list(classes),
                                formats=list(formats))


def registry_with(folder: Path, **settings):
    with on_path(folder):
        return load_registry(NormalizerSettings(**settings))


def by(registry, source_type: str, format: str = "raw"):
    return registry.normalize(envelope("x", source_type, format))["by"]


# --- the example package, installed for real ------------------------------------------------------


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/telhawk-normalizer-example pip-installed into a folder of its own."""
    site = tmp_path_factory.mktemp("site")
    pip_install_example(site, tmp_path_factory.mktemp("build"))
    return site


def test_the_installed_example_package_normalizes_its_events_through_its_entry_point(example_site):
    with on_path(example_site):
        [entry_point] = discover()
        registry = load_registry(NormalizerSettings())
        answer = try_normalize(registry, "example:kv_firewall", "raw", KV_LINE)

    assert (entry_point.group, entry_point.name, entry_point.value) == (
        ENTRY_POINT_GROUP, "kv_firewall", "telhawk_normalizer_example:PLUGIN")
    assert answer["ok"] is True and answer["error"] is None
    event = answer["event"]
    ocsf.validate(event)
    assert (event["class_uid"], event["activity_name"], event["action"]) == (4001, "Refuse", "Denied")
    assert event["src_endpoint"] == {"ip": "198.51.100.7", "port": 51234}
    assert event["firewall_rule"] == {"name": "block-ssh"}
    assert event["unmapped"] == {"zone": "dmz"} and event["raw_data"] == KV_LINE
    assert answer["route"]["origin"] == {"type": "plugin", "entry_point": "kv_firewall",
                                         "distribution": "telhawk-normalizer-example", "version": "0.1.0"}
    assert registry.plugin_failures == []


def test_the_example_serves_both_formats_and_says_what_it_cannot_read(example_site):
    with on_path(example_site):
        registry = load_registry(NormalizerSettings())
        wrapped = try_normalize(registry, "example:kv_firewall", "json", json.dumps({"message": KV_LINE}))
        refused = try_normalize(registry, "example:kv_firewall", "raw", "action=maybe src=a dst=b")

    assert wrapped["ok"] is True and wrapped["event"]["dst_endpoint"] == {"ip": "10.1.1.10", "port": 22}
    assert (refused["ok"], refused["reason"], refused["error"]) == (
        False, "normalization_failed", "action: expected allow or deny, got 'maybe'")


def test_without_the_package_its_source_type_has_no_normalizer(example_site):
    answer = try_normalize(load_registry(NormalizerSettings()), "example:kv_firewall", "raw", KV_LINE)

    assert answer["error"] == "no normalizer registered for format=raw source_type=example:kv_firewall"


def test_plugins_can_be_switched_off(example_site):
    registry = registry_with(example_site, load_plugins=False)

    assert registry.lookup("raw", "example:kv_firewall") is None


# --- hand-made distributions: order and refusals --------------------------------------------------


def test_a_plugin_adds_exact_names_and_patterns_after_the_built_in_patterns(tmp_path):
    write_distribution(tmp_path, "acme-fw", {"fw": "acme_fw:PLUGIN"},
                       {"acme_fw": plugin_module("acme", ["acme:fw"], ["ocsf*", "acme:*"])})

    registry = registry_with(tmp_path)

    assert by(registry, "acme:fw") == "acme" and by(registry, "acme:other", "json") == "acme"
    assert registry.lookup("raw", "ocsf:x") is passthrough.ocsf_passthrough  # the built-in pattern first
    assert by(registry, "ocsfx") == "acme"
    patterns = [(r.source_type, r.origin.kind) for r in registry.routes() if r.match == "pattern"]
    assert patterns == [("ocsf:*", "builtin"), ("ocsf:*", "builtin"), ("ocsf*", "plugin"),
                        ("acme:*", "plugin"), ("ocsf*", "plugin"), ("acme:*", "plugin")]


def test_plugins_load_in_order_of_distribution_name_whatever_the_path_order(tmp_path):
    write_distribution(tmp_path / "one", "zeta-plugin", {"a": "zeta:PLUGIN"},
                       {"zeta": plugin_module("zeta", patterns=["acme:*"])})
    write_distribution(tmp_path / "two", "alpha-plugin", {"z": "alpha:PLUGIN"},
                       {"alpha": plugin_module("alpha", patterns=["acme:fw*"])})

    with on_path(tmp_path / "one"), on_path(tmp_path / "two"):
        first = load_registry(NormalizerSettings())
    with on_path(tmp_path / "two"), on_path(tmp_path / "one"):
        second = load_registry(NormalizerSettings())

    assert by(first, "acme:fw1") == by(second, "acme:fw1") == "alpha"
    assert by(first, "acme:x") == "zeta"


@pytest.mark.parametrize(("types", "patterns", "error"), [
    (["linux_secure"], [], "source type 'linux_secure' (format raw) is already routed by built in "
                           "(exact 'linux_secure'); a plugin only adds source types"),
    (["ocsf:acme"], [], "source type 'ocsf:acme' (format raw) is already routed by built in "
                        "(pattern 'ocsf:*'); a plugin only adds source types"),
    ([], ["ocsf:*"], "pattern 'ocsf:*' (format raw) is already registered"),
])
def test_a_plugin_cannot_replace_what_a_built_in_routes(tmp_path, caplog, types, patterns, error):
    write_distribution(tmp_path, "sneaky", {"take": "sneaky:PLUGIN"},
                       {"sneaky": plugin_module("sneaky", [*types, "sneaky:own"], patterns)})

    with caplog.at_level(logging.ERROR, logger="telhawk_ingest.normalizers.loading"):
        registry = registry_with(tmp_path)

    [failure] = registry.plugin_failures
    assert (failure.entry_point, failure.distribution, failure.error) == ("take", "sneaky", error)
    assert registry.lookup("raw", "sneaky:own") is None  # refused whole
    assert not any(r.origin.kind == "plugin" for r in registry.routes())
    assert error in caplog.text


def test_the_second_plugin_for_a_source_type_is_refused_and_the_first_kept(tmp_path):
    write_distribution(tmp_path, "a-first", {"fw": "first:PLUGIN"},
                       {"first": plugin_module("first", ["acme:fw"])})
    write_distribution(tmp_path, "b-second", {"fw": "second:PLUGIN"},
                       {"second": plugin_module("second", ["acme:fw"])})

    registry = registry_with(tmp_path)

    assert by(registry, "acme:fw") == "first"
    [failure] = registry.plugin_failures
    assert failure.distribution == "b-second"
    assert failure.error.startswith("source type 'acme:fw' (format raw) is already routed by "
                                    "plugin entry point fw (distribution a-first)")


@pytest.mark.parametrize(("module", "value", "error"), [
    ("import no_such_dependency\n", "broken:PLUGIN",
     "cannot load broken:PLUGIN: ModuleNotFoundError: No module named 'no_such_dependency'"),
    ("PLUGIN = 42\n", "broken:PLUGIN",
     "broken:PLUGIN is a int, expected a telhawk_ingest.normalizers.NormalizerPlugin"),
    ("import sys\nsys.exit(3)\n", "broken:PLUGIN", "cannot load broken:PLUGIN: SystemExit: 3"),
    ("", "broken:MISSING", "cannot load broken:MISSING: AttributeError: module 'broken' has no attribute "
                           "'MISSING'"),
    (plugin_module("x", ["x:y"], classes=[9999]), "broken:PLUGIN",
     f"ocsf_classes: 9999 is not a class_uid of OCSF {ocsf.OCSF_VERSION}"),
    (plugin_module("x", ["x:y"], classes=[]), "broken:PLUGIN", "declares no ocsf_classes"),
    (plugin_module("x"), "broken:PLUGIN", "declares no source_types and no patterns"),
    (plugin_module("x", ["x:y"], formats=("xml",)), "broken:PLUGIN",
     "formats must be some of json, raw, got ['xml']"),
    (plugin_module("x", [""]), "broken:PLUGIN", "source_types must be a list of non-empty strings, got ['']"),
])
def test_a_plugin_that_fails_to_load_is_reported_and_everything_else_works(tmp_path, module, value, error):
    write_distribution(tmp_path, "broken-plugin", {"bad": value}, {"broken": module})
    write_distribution(tmp_path, "good-plugin", {"good": "good:PLUGIN"},
                       {"good": plugin_module("good", ["g"])})

    registry = registry_with(tmp_path)

    assert [f.to_dict() for f in registry.plugin_failures] == [
        {"entry_point": "bad", "distribution": "broken-plugin", "error": error}]
    assert by(registry, "g") == "good"
    assert registry.lookup("raw", "linux_secure") is default_registry().lookup("raw", "linux_secure")


def test_a_service_starts_with_a_broken_plugin_and_ingest_still_works(tmp_path):
    write_distribution(tmp_path / "site", "broken-plugin", {"bad": "broken:PLUGIN"},
                       {"broken": "raise RuntimeError('boom at import')\n"})
    settings = Settings.model_validate({"dlq": {"base_path": str(tmp_path / "dlq")},
                                        "storage": {"backend": "local", "data_dir": str(tmp_path / "data")}})

    with on_path(tmp_path / "site"):
        svc = Service(settings)
    try:
        result = svc.ingest([envelope(ASA_LINE, "cisco:asa")])
    finally:
        svc.backend.close()
        svc.counters.retire()

    assert (result.stored, result.dead_lettered) == (1, 0)
    assert svc.registry.plugin_failures[0].error == "cannot load broken:PLUGIN: RuntimeError: boom at import"


# --- aliases --------------------------------------------------------------------------------------


def test_an_alias_takes_its_targets_normalizer_for_every_format():
    registry = load_registry(NormalizerSettings(aliases={"cisco_asa": "cisco:asa"}))

    event = registry.normalize(envelope(json.dumps(ASA_LINE), "cisco_asa", "json"))

    ocsf.validate(event)
    assert event["metadata"]["event_code"] == "302013"
    routes = [(r.format, r.origin) for r in registry.routes() if r.source_type == "cisco_asa"]
    alias = Origin("alias", alias_of="cisco:asa")
    assert routes == [("json", alias), ("raw", alias)]


def test_an_alias_may_name_a_type_a_pattern_routes_or_a_plugins_type(tmp_path):
    write_distribution(tmp_path, "acme-fw", {"fw": "acme_fw:PLUGIN"},
                       {"acme_fw": plugin_module("acme", ["acme:fw"], formats=("raw",))})

    registry = registry_with(tmp_path, aliases={"security_lake": "ocsf:authentication", "acme": "acme:fw"})

    assert registry.lookup("json", "security_lake") is passthrough.ocsf_passthrough
    assert by(registry, "acme") == "acme"
    assert registry.lookup("json", "acme") is None  # the target routes raw only


@pytest.mark.parametrize(("aliases", "error"), [
    ({"cisco_asa": "cisco:asaa"},
     "normalizers.aliases.cisco_asa: 'cisco:asaa' is not a registered source type; registered: "
     "aws:cloudwatchlogs:vpcflow, aws:vpcflow, cisco:asa, linux:auth, linux_secure, ocsf, ocsf:*, sshd, "
     "syslog:sshd"),
    ({"linux_secure": "cisco:asa"},
     "normalizers.aliases.linux_secure: 'linux_secure' already has a normalizer (built in, exact "
     "'linux_secure'); an alias only names a source type that has none"),
    ({"ocsf:asa": "cisco:asa"},
     "normalizers.aliases.ocsf:asa: 'ocsf:asa' already has a normalizer (built in, pattern 'ocsf:*'); "
     "an alias only names a source type that has none"),
    ({"asa": "cisco:asa", "firewall": "asa"},
     "normalizers.aliases.firewall: 'asa' is itself an alias; name the source type it stands for, "
     "'cisco:asa'"),
])
def test_a_wrong_alias_fails_at_start_up_naming_the_key(tmp_path, aliases, error):
    settings = Settings.model_validate({"dlq": {"base_path": str(tmp_path / "dlq")},
                                        "storage": {"backend": "local", "data_dir": str(tmp_path / "data")},
                                        "normalizers": {"aliases": aliases}})

    with pytest.raises(ConfigError) as caught:
        Service(settings)

    assert str(caught.value) == error


def test_an_alias_to_the_type_of_a_plugin_that_failed_to_load_is_left_out_and_ingest_starts(tmp_path, caplog):
    write_distribution(tmp_path / "site", "acme-fw", {"fw": "acme_fw:PLUGIN"},
                       {"acme_fw": "import acme_sdk_missing\n"})
    settings = Settings.model_validate({"dlq": {"base_path": str(tmp_path / "dlq")},
                                        "storage": {"backend": "local", "data_dir": str(tmp_path / "data")},
                                        "normalizers": {"aliases": {"acme": "acme:fw",
                                                                    "cisco_asa": "cisco:asa"}}})

    with on_path(tmp_path / "site"), caplog.at_level(logging.ERROR):
        svc = Service(settings)
    try:
        result = svc.ingest([envelope(ASA_LINE, "cisco_asa"), envelope("x", "acme")])
    finally:
        svc.backend.close()
        svc.counters.retire()

    [failure] = svc.registry.alias_failures
    assert (failure.alias, failure.alias_of) == ("acme", "acme:fw")
    assert failure.error.startswith("normalizers.aliases.acme: 'acme:fw' is not a registered source type")
    assert failure.error.endswith("(left out: plugins that failed to load may provide it: acme-fw)")
    assert "normalizer alias not registered" in caplog.text
    assert (result.stored, result.dead_lettered) == (1, 1)  # the other alias works; acme waits in the DLQ


def test_aliases_come_from_the_config_file_or_the_environment(tmp_path):
    config = tmp_path / "ingest.yaml"
    config.write_text('normalizers:\n  aliases:\n    cisco_asa: "cisco:asa"\n')

    from_file = load_settings(config, env={})
    from_env = load_settings(env={"INGEST_NORMALIZERS_ALIASES": '{cisco_asa: "cisco:asa", asa: "cisco:asa"}'})

    assert from_file.normalizers.aliases == {"cisco_asa": "cisco:asa"}
    assert from_env.normalizers.aliases == {"cisco_asa": "cisco:asa", "asa": "cisco:asa"}
    with pytest.raises(ConfigError, match=r"normalizers\.aliases\.x \(from INGEST_NORMALIZERS_ALIASES\): "
                                          r"string should have at least 1 character"):
        load_settings(env={"INGEST_NORMALIZERS_ALIASES": '{x: ""}'})
