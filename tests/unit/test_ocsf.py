"""OCSF validation against the pinned release: what passes, how failures are named, the cache."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from ocsf_json_schema import get_ocsf_schema, get_packaged_versions

from telhawk_ingest import ocsf
from telhawk_ingest.errors import SchemaError
from telhawk_ingest.ocsf import OCSF_VERSION, OcsfValidator

EVENTS = Path(__file__).parent.parent / "events"


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def minimal_logon(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "class_uid": 3002,
        "category_uid": 3,
        "activity_id": 1,
        "type_uid": 300201,
        "severity_id": 1,
        "time": 1730682123000,
        "metadata": {"version": OCSF_VERSION, "product": {"name": "OpenSSH"}},
        "user": {"name": "alice"},
        "service": {"name": "sshd"},
    }
    event.update(changes)
    return event


def schema_error(event: Any, validator: OcsfValidator | None = None) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        (validator or ocsf._default).validate(event)
    return caught.value


def test_the_pinned_version_is_packaged_and_at_least_1_5_0() -> None:
    assert OCSF_VERSION in get_packaged_versions()
    assert tuple(int(part) for part in OCSF_VERSION.split(".")) >= (1, 5, 0)


@pytest.mark.parametrize("name", ["ocsf_authentication.json", "ocsf_network_activity.json",
                                  "ocsf_detection_finding.json"])
def test_valid_events_of_several_classes_pass(name: str) -> None:
    ocsf.validate(load(name))


def test_a_minimal_logon_passes() -> None:
    ocsf.validate(minimal_logon())


def test_a_wrong_type_names_the_attribute_path() -> None:
    error = schema_error(minimal_logon(src_endpoint={"ip": "10.0.0.1", "port": "abc"}))
    assert str(error) == "src_endpoint.port: 'abc' is not of type 'integer'"
    assert error.details["path"] == "src_endpoint.port"
    assert error.reason == "validation_failed"


def test_a_missing_required_attribute_is_named() -> None:
    event = minimal_logon()
    del event["user"]
    error = schema_error(event)
    assert (str(error), error.details["path"]) == ("user: required attribute is missing", "user")


def test_an_attribute_outside_the_class_is_named() -> None:
    assert str(schema_error(minimal_logon(colour="blue"))) == (
        "colour: is not an attribute of Authentication in OCSF 1.5.0"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"activity_id": 42}, "activity_id: 42 is not one of [0, 1, 2, 3, 4, 5, 6, 99]"),
        ({"src_endpoint": {"ip": "not-an-ip"}}, "src_endpoint.ip: 'not-an-ip' is not a valid IP Address"),
        ({"src_endpoint": {"ip": "10.0.0.1", "port": 70000}},
         "src_endpoint.port: 70000 is greater than the maximum of 65535"),
        ({"src_endpoint": {"port": 22}},
         "src_endpoint: at least one of ip, uid, name, hostname, svc_name, instance_uid, interface_uid, "
         "interface_name, domain is required"),
        ({"user": {}}, "user: at least one of account, name, uid is required"),
        ({"severity_id": True}, "severity_id: True is not of type 'integer'"),
        ({"observables": [{"name": "ip", "type_id": 2}, {"name": 7, "type_id": 2}]},
         "observables[1].name: 7 is not of type 'string'"),
    ],
)
def test_failures_are_worded_by_attribute_path(changes: dict[str, Any], message: str) -> None:
    assert str(schema_error(minimal_logon(**changes))) == message


def test_a_class_level_constraint_is_named_without_a_path() -> None:
    event = minimal_logon()
    del event["service"]
    error = schema_error(event)
    assert (str(error), error.details["path"]) == ("at least one of service, dst_endpoint is required", "")


def test_the_first_failure_in_document_order_is_reported() -> None:
    early_port = minimal_logon()
    early_port = {"src_endpoint": {"ip": "10.0.0.1", "port": "abc"}, **early_port, "count": "many"}
    late_port = {**minimal_logon(), "count": "many", "src_endpoint": {"ip": "10.0.0.1", "port": "abc"}}
    assert schema_error(early_port).details["path"] == "src_endpoint.port"
    assert schema_error(late_port).details["path"] == "count"


def test_attribute_failures_come_before_the_constraint_of_their_object() -> None:
    # {"port": "abc"} both has a bad port and lacks every identifying attribute.
    assert schema_error(minimal_logon(src_endpoint={"port": "abc"})).details["path"] == "src_endpoint.port"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([], "event: expected a JSON object, got list"),
        ({}, "class_uid: missing"),
        ({"class_uid": "3002"}, "class_uid: '3002' is not an integer"),
        ({"class_uid": True}, "class_uid: True is not an integer"),
        ({"class_uid": 9999}, "class_uid: 9999 is not an OCSF 1.5.0 class"),
    ],
)
def test_an_event_without_a_known_integer_class_uid_is_refused(event: Any, message: str) -> None:
    error = schema_error(event)
    assert str(error) == message
    assert error.details["path"] == ("" if isinstance(event, list) else "class_uid")


def test_a_value_that_is_not_json_is_a_schema_error_not_a_crash() -> None:
    assert str(schema_error(minimal_logon(user={"name": {"a", "b"}}))).startswith(
        "event: cannot be checked as JSON: "
    )


# --- profiles -------------------------------------------------------------------------------------


def test_a_profile_attribute_is_rejected_unless_metadata_profiles_lists_the_profile() -> None:
    event = minimal_logon(cloud={"provider": "AWS"})
    assert str(schema_error(event)) == (
        "cloud: is not an attribute of Authentication in OCSF 1.5.0; it belongs to the 'cloud' profile, "
        "which metadata.profiles does not list"
    )
    event["metadata"]["profiles"] = ["cloud"]
    ocsf.validate(event)


def test_a_profile_attribute_inside_an_object_is_explained_too() -> None:
    event = minimal_logon(src_endpoint={"ip": "10.0.0.1", "namespace_pid": 7})
    assert str(schema_error(event)) == (
        "src_endpoint.namespace_pid: is not an attribute of Network Endpoint in OCSF 1.5.0; "
        "it belongs to the 'container' profile, which metadata.profiles does not list"
    )
    event["metadata"]["profiles"] = ["Container"]  # profile names compare case-insensitively
    ocsf.validate(event)


def test_enabling_a_profile_makes_its_required_attributes_required() -> None:
    event = minimal_logon()
    event["metadata"]["profiles"] = ["cloud"]
    assert str(schema_error(event)) == "cloud: required attribute is missing"


def test_the_fixture_that_uses_the_host_profile_fails_without_it() -> None:
    event = load("ocsf_authentication.json")
    event["metadata"]["profiles"] = ["datetime"]
    assert schema_error(event).details["path"] == "device"


def test_unknown_profile_names_are_ignored_and_share_a_validator() -> None:
    validator = OcsfValidator()
    event = minimal_logon()
    event["metadata"]["profiles"] = ["no-such-profile"]
    validator.validate(event)
    validator.validate(minimal_logon())
    assert list(validator.build_times()) == [(3002, ())]


def test_a_malformed_profiles_list_is_reported_by_the_schema() -> None:
    event = minimal_logon()
    event["metadata"]["profiles"] = ["cloud", 3]
    assert str(schema_error(event)) == "metadata.profiles[1]: 3 is not of type 'string'"


def test_an_unhashable_profiles_entry_is_reported_by_the_schema_too() -> None:
    event = minimal_logon()
    event["metadata"]["profiles"] = ["host", {"name": "cloud"}]
    assert str(schema_error(event)).startswith("metadata.profiles[1]: ")


def test_a_declared_profiles_list_is_resolved_once_and_case_insensitively() -> None:
    validator = OcsfValidator(max_cached=4)
    event = load("ocsf_authentication.json")
    shouted = copy.deepcopy(event)
    shouted["metadata"]["profiles"] = [p.upper() for p in event["metadata"]["profiles"]]
    for _ in range(2):
        validator.validate(event)
        validator.validate(shouted)
    assert len(validator._profiles) == 2
    assert list(validator.build_times()) == [(3002, ("datetime", "host"))]
    without = copy.deepcopy(event)
    without["metadata"]["profiles"] = ["datetime"]
    assert "'host' profile" in str(schema_error(without, validator))


# --- the validator cache --------------------------------------------------------------------------


def test_a_validator_remembered_for_one_declared_list_is_never_used_for_another() -> None:
    validator = OcsfValidator()
    declared = minimal_logon(cloud={"provider": "AWS"})
    declared["metadata"]["profiles"] = ["cloud"]
    undeclared = minimal_logon(cloud={"provider": "AWS"})
    as_text = copy.deepcopy(declared)
    as_text["metadata"]["profiles"] = "cloud"
    for _ in range(2):
        validator.validate(declared)
        assert schema_error(undeclared, validator).details["path"] == "cloud"
        assert str(schema_error(as_text, validator)) == "metadata.profiles: 'cloud' is not of type 'array'"
        validator.validate(minimal_logon())
    assert sorted(validator.build_times()) == [(3002, ()), (3002, ("cloud",))]


def test_validators_are_built_once_per_class_and_profile_set() -> None:
    validator = OcsfValidator()
    for _ in range(3):
        validator.validate(minimal_logon())
        validator.validate(load("ocsf_network_activity.json"))
    assert sorted(validator.build_times()) == [(3002, ()), (4001, ("cloud", "security_control"))]
    assert all(seconds > 0 for seconds in validator.build_times().values())


def test_threads_validating_a_new_class_at_once_build_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real = ocsf.jsonschema_rs.validator_for

    def counting(schema: dict[str, Any]) -> Any:
        built.append(1)
        return real(schema)

    monkeypatch.setattr(ocsf.jsonschema_rs, "validator_for", counting)
    validator = OcsfValidator()
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            validator.validate(minimal_logon())
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert built == [1]


def test_the_cache_is_bounded_and_drops_the_oldest_validator() -> None:
    validator = OcsfValidator(max_cached=2)
    for profiles in ([], ["datetime"], ["host"]):
        event = minimal_logon()
        event["metadata"]["profiles"] = profiles
        validator.validate(event)
    assert list(validator.build_times()) == [(3002, ("datetime",)), (3002, ("host",))]


def test_every_class_of_the_pinned_release_compiles() -> None:
    # A passthrough event may be of any class: none of them may crash the validator.
    classes = get_ocsf_schema(OCSF_VERSION)["classes"].values()
    validator = OcsfValidator(max_cached=len(classes))
    for definition in classes:
        event = copy.deepcopy(minimal_logon())
        event["class_uid"] = definition["uid"]
        with pytest.raises(SchemaError):  # a logon is not valid as any other class
            validator.validate({**event, "activity_id": "x"})
    assert len(validator.build_times()) == len(classes)
