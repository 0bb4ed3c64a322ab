"""The normalizer registry and the built-in normalizers; every event they build is schema-checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from telhawk_ingest import ocsf
from telhawk_ingest.envelope import Envelope
from telhawk_ingest.errors import NormalizationError, SchemaError
from telhawk_ingest.normalizers import (
    Registry,
    aws_vpcflow,
    cisco_asa,
    default_registry,
    linux_auth,
    passthrough,
)

EVENTS = Path(__file__).parent.parent / "events"
RECEIVED_AT = "2024-11-05T00:00:00.000Z"


def envelope(payload: str, source_type: str, format: str = "raw", **attributes: Any) -> Envelope:
    attributes.setdefault("host", "hec-client")
    return Envelope(
        id="0193f3a0-0000-7000-8000-000000000000",
        source="/var/log/auth.log",
        source_type=source_type,
        format=format,  # type: ignore[arg-type]
        payload=payload,
        attributes=attributes,
        received_at=RECEIVED_AT,
    )


def normalized(payload: str, source_type: str, format: str = "raw", **attributes: Any) -> dict[str, Any]:
    """Normalize through the default registry and insist the result is valid OCSF."""
    event = default_registry().normalize(envelope(payload, source_type, format, **attributes))
    ocsf.validate(event)
    return event


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def fixture_lines(name: str) -> list[str]:
    return (EVENTS / name).read_text().splitlines()


def failure(payload: str, source_type: str, format: str = "raw", registry: Registry | None = None) -> str:
    with pytest.raises(NormalizationError) as caught:
        (registry or default_registry()).normalize(envelope(payload, source_type, format))
    return caught.value.message


# --- registry -------------------------------------------------------------------------------------


def returns(tag: str) -> Any:
    return lambda env: {"by": tag}


def test_unknown_source_type_fails_with_the_seed_error_text() -> None:
    assert failure('{"msg": "x"}', "cisco_asa", "json") == (
        "no normalizer registered for format=json source_type=cisco_asa"
    )


def test_the_error_names_the_format_and_source_type_it_looked_for() -> None:
    with pytest.raises(NormalizationError) as caught:
        default_registry().normalize(envelope("x", "", "raw"))
    assert str(caught.value) == "no normalizer registered for format=raw source_type="
    assert caught.value.details == {"format": "raw", "source_type": ""}
    assert caught.value.reason == "normalization_failed"


@pytest.mark.parametrize("source_type", ["syslog", "json", "ocsf_authentication", "OCSF", "xocsf:a", "*"])
def test_there_is_no_catch_all(source_type: str) -> None:
    assert failure("{}", source_type, "json").startswith("no normalizer registered for format=json")


def test_an_exact_name_wins_over_a_pattern_registered_first() -> None:
    registry = Registry()
    registry.register_pattern("json", "fw:*", returns("pattern"))
    registry.register("json", "fw:asa", returns("exact"))
    assert registry.normalize(envelope("{}", "fw:asa", "json")) == {"by": "exact"}
    assert registry.normalize(envelope("{}", "fw:other", "json")) == {"by": "pattern"}


def test_patterns_are_tried_in_registration_order() -> None:
    registry = Registry()
    registry.register_pattern("raw", "fw:*", returns("broad"))
    registry.register_pattern("raw", "fw:asa*", returns("narrow"))
    assert registry.normalize(envelope("x", "fw:asa:1", "raw")) == {"by": "broad"}


def test_a_pattern_applies_only_to_its_format_and_matches_case_sensitively() -> None:
    registry = Registry()
    registry.register_pattern("raw", "fw:*", returns("raw"))
    with pytest.raises(NormalizationError) as caught:
        registry.normalize(envelope("{}", "fw:a", "json"))
    assert caught.value.message == "no normalizer registered for format=json source_type=fw:a"
    assert registry.lookup("raw", "FW:a") is None


def test_a_normalizer_that_raises_fails_with_the_exception_message() -> None:
    def broken(env: Envelope) -> dict[str, Any]:
        raise ValueError("field 'src' is not an address")

    registry = Registry()
    registry.register("json", "thing", broken)
    with pytest.raises(NormalizationError) as caught:
        registry.normalize(envelope("{}", "thing", "json"))
    assert caught.value.message == "field 'src' is not an address"
    assert isinstance(caught.value.__cause__, ValueError)


def test_an_exception_without_a_message_is_named_by_its_class() -> None:
    def broken(env: Envelope) -> dict[str, Any]:
        raise ZeroDivisionError

    registry = Registry()
    registry.register("raw", "thing", broken)
    assert failure("x", "thing", registry=registry) == "ZeroDivisionError"


def test_a_normalization_error_from_a_normalizer_keeps_its_details() -> None:
    def refuses(env: Envelope) -> dict[str, Any]:
        raise NormalizationError("no user", details={"line": 3})

    registry = Registry()
    registry.register("raw", "thing", refuses)
    with pytest.raises(NormalizationError) as caught:
        registry.normalize(envelope("x", "thing"))
    assert (caught.value.message, caught.value.details) == ("no user", {"line": 3})


def test_a_normalizer_must_return_an_event_object() -> None:
    registry = Registry()
    registry.register("raw", "thing", lambda env: [env.payload])  # type: ignore[arg-type,return-value]
    assert failure("x", "thing", registry=registry) == (
        "normalizer for format=raw source_type=thing returned list, not an event object"
    )


def test_registering_a_route_twice_or_an_unknown_format_is_refused() -> None:
    registry = Registry()
    registry.register("raw", "a", returns("1"))
    registry.register_pattern("raw", "a:*", returns("1"))
    with pytest.raises(ValueError, match="already registered for format=raw source_type=a"):
        registry.register("raw", "a", returns("2"))
    with pytest.raises(ValueError, match="already registered for format=raw pattern=a:\\*"):
        registry.register_pattern("raw", "a:*", returns("2"))
    with pytest.raises(ValueError, match="format must be one of json, raw, got 'xml'"):
        registry.register("xml", "a", returns("3"))


def test_the_default_registry_is_built_once() -> None:
    assert default_registry() is default_registry()


@pytest.mark.parametrize("format", ["raw", "json"])
@pytest.mark.parametrize(
    ("source_type", "fn"),
    [
        ("ocsf", passthrough.ocsf_passthrough),
        ("ocsf:authentication", passthrough.ocsf_passthrough),
        ("ocsf:", passthrough.ocsf_passthrough),
        ("linux_secure", linux_auth.normalize),
        ("linux:auth", linux_auth.normalize),
        ("sshd", linux_auth.normalize),
        ("syslog:sshd", linux_auth.normalize),
        ("aws:vpcflow", aws_vpcflow.normalize),
        ("aws:cloudwatchlogs:vpcflow", aws_vpcflow.normalize),
        ("cisco:asa", cisco_asa.normalize),
    ],
)
def test_the_default_registry_routes_every_built_in_source_type_for_both_formats(
    format: str, source_type: str, fn: Any
) -> None:
    assert default_registry().lookup(format, source_type) is fn


# --- OCSF passthrough -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ocsf_authentication.json", "ocsf_network_activity.json",
                                  "ocsf_detection_finding.json"])
@pytest.mark.parametrize(
    ("format", "source_type"),
    [("json", "ocsf"), ("json", "ocsf:authentication"), ("raw", "ocsf"), ("raw", "ocsf:x")],
)
def test_an_ocsf_event_of_any_class_passes_through_unchanged(
    name: str, format: str, source_type: str
) -> None:
    payload = (EVENTS / name).read_text()
    assert normalized(payload, source_type, format) == json.loads(payload)


def test_an_ocsf_payload_must_be_a_json_object() -> None:
    assert failure("[1, 2]", "ocsf", "json") == "OCSF event must be a JSON object, got an array"
    assert failure('"text"', "ocsf:x", "raw") == "OCSF event must be a JSON object, got a string"


def test_an_ocsf_raw_line_that_is_not_json_fails_saying_so() -> None:
    assert failure("class_uid=3002", "ocsf", "raw").startswith("payload is not valid JSON: ")


def test_passthrough_adds_nothing_so_a_producer_mistake_fails_validation_by_path() -> None:
    event = json.loads((EVENTS / "ocsf_authentication.json").read_text())
    event["src_endpoint"]["port"] = "abc"
    passed = default_registry().normalize(envelope(json.dumps(event), "ocsf:authentication", "json"))
    with pytest.raises(SchemaError) as caught:
        ocsf.validate(passed)
    assert str(caught.value) == "src_endpoint.port: 'abc' is not of type 'integer'"


# --- Linux auth: sshd and pam_unix ----------------------------------------------------------------


@pytest.mark.parametrize("line", fixture_lines("sshd.log"))
def test_every_auth_log_fixture_line_becomes_a_valid_ocsf_event_keeping_the_line(line: str) -> None:
    event = normalized(line, "linux_secure")
    assert event["class_uid"] in {3002, 4001}
    assert event["raw_data"] == line
    assert event["metadata"]["version"] == ocsf.OCSF_VERSION


@pytest.mark.parametrize(
    ("line", "error"),
    list(zip(
        fixture_lines("sshd_unmapped.log"),
        [
            "unrecognised sshd message: 'Server listening on 0.0.0.0 port 22.'",
            "unrecognised sshd message: 'pam_unix(sshd:auth): check pass; user unknown'",
            "pam_unix authentication failure names no user; OCSF Authentication needs one",
            "unrecognised sshd message: 'Received signal 15; terminating.'",
            "unrecognised CRON message: '(root) CMD (run-parts /etc/cron.hourly)'",
        ],
        strict=True,
    )),
)
def test_auth_log_lines_without_a_mapping_fail_saying_which_message(line: str, error: str) -> None:
    assert failure(line, "linux_secure") == error


def test_accepted_password_is_a_successful_remote_logon() -> None:
    line = "Nov  4 01:02:03 host1 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
    event = normalized(line, "sshd")
    assert {k: event[k] for k in ("class_uid", "category_uid", "activity_id", "type_uid", "status_id")} == {
        "class_uid": 3002, "category_uid": 3, "activity_id": 1, "type_uid": 300201, "status_id": 1,
    }
    assert (event["activity_name"], event["status"], event["severity_id"]) == ("Logon", "Success", 1)
    assert event["user"] == {"name": "alice"}
    assert event["src_endpoint"] == {"ip": "10.0.0.5", "port": 52144}
    assert event["dst_endpoint"] == {"hostname": "host1"}
    assert event["service"] == {"name": "sshd"}
    assert event["is_remote"] is True
    assert (event["auth_protocol_id"], event["auth_protocol"]) == (99, "password")
    assert event["logon_process"] == {"name": "sshd", "pid": 1234}
    assert event["time"] == ms(2024, 11, 4, 1, 2, 3)
    assert event["message"] == "Accepted password for alice from 10.0.0.5 port 52144 ssh2"
    assert event["metadata"] == {
        "version": "1.5.0",
        "product": {"name": "OpenSSH", "vendor_name": "OpenBSD"},
        "log_name": "/var/log/auth.log",
        "logged_time": ms(2024, 11, 5),
        "original_time": "Nov  4 01:02:03",
    }
    assert event["unmapped"] == {"ssh_protocol": "ssh2"}
    assert event["raw_data"] == line


def test_failed_password_for_an_invalid_user_is_a_failed_logon_of_that_name() -> None:
    event = normalized(
        "Nov  4 01:03:13 host1 sshd[1301]: "
        "Failed password for invalid user bob from 203.0.113.9 port 4242 ssh2",
        "linux:auth",
    )
    assert (event["activity_id"], event["status_id"], event["status"]) == (1, 2, "Failure")
    assert event["status_detail"] == "Failed password for invalid user"
    assert event["severity_id"] == 2
    assert event["user"] == {"name": "bob"}
    assert event["src_endpoint"] == {"ip": "203.0.113.9", "port": 4242}


def test_failed_password_for_root_names_root() -> None:
    event = normalized(
        "Nov  4 01:04:22 host1 sshd[1322]: Failed password for root from 203.0.113.9 port 51000 ssh2", "sshd"
    )
    assert (event["user"], event["status_id"], event["status_detail"]) == (
        {"name": "root"}, 2, "Failed password",
    )


def test_invalid_user_is_a_failed_logon_even_without_a_port() -> None:
    event = normalized("Nov  4 01:03:11 host1 sshd[1301]: Invalid user x from 203.0.113.9", "sshd")
    assert (event["user"], event["status_id"], event["status_detail"]) == ({"name": "x"}, 2, "Invalid user")
    assert event["src_endpoint"] == {"ip": "203.0.113.9"}


def test_publickey_logon_keeps_the_key_fingerprint_in_unmapped() -> None:
    event = normalized(
        "Nov  4 01:02:09 host1 sshd[1240]: Accepted publickey for deploy from 10.0.0.7 port 40022 ssh2: "
        "ED25519 SHA256:Kq1yJ3nM0cTz2vW9",
        "sshd",
    )
    assert event["auth_protocol"] == "publickey"
    assert event["unmapped"] == {"ssh_protocol": "ssh2", "ssh_key": "ED25519 SHA256:Kq1yJ3nM0cTz2vW9"}


def test_gssapi_logon_is_kerberos_and_an_rfc3339_stamp_keeps_its_fraction_and_zone() -> None:
    event = normalized(
        "2024-11-04T03:14:00.123456+02:00 host2 sshd-session[2001]: "
        "Accepted gssapi-with-mic for carol@EXAMPLE.COM from 10.0.0.9 port 50001 ssh2",
        "sshd",
    )
    assert (event["auth_protocol_id"], event["auth_protocol"]) == (2, "Kerberos")
    assert event["user"] == {"name": "carol@EXAMPLE.COM"}
    assert event["time"] == ms(2024, 11, 4, 1, 14) + 123
    assert event["metadata"]["original_time"] == "2024-11-04T03:14:00.123456+02:00"
    assert event["logon_process"] == {"name": "sshd-session", "pid": 2001}


def test_pam_session_opened_is_a_logon_and_closed_is_a_logoff() -> None:
    opened = normalized(
        "Nov  4 01:02:03 host1 sshd[1234]: pam_unix(sshd:session): session opened for user alice(uid=1000) "
        "by (uid=0)",
        "linux_secure",
    )
    closed = normalized(
        "Nov  4 01:09:59 host1 sshd[1234]: pam_unix(sshd:session): session closed for user alice",
        "linux_secure",
    )
    assert (opened["activity_id"], opened["activity_name"], opened["status_id"]) == (1, "Logon", 1)
    assert opened["user"] == {"name": "alice", "uid": "1000"}
    assert opened["actor"] == {"user": {"uid": "0"}}
    assert opened["metadata"]["product"] == {"name": "Linux-PAM"}
    assert (closed["activity_id"], closed["activity_name"], closed["type_uid"]) == (2, "Logoff", 300202)
    assert closed["status_detail"] == "session closed"


def test_su_session_names_the_invoking_user_as_actor_and_su_as_service() -> None:
    event = normalized(
        "Nov  4 01:12:00 host1 su[1500]: pam_unix(su-l:session): session opened for user root(uid=0) "
        "by alice(uid=1000)",
        "linux_secure",
    )
    assert event["user"] == {"name": "root", "uid": "0"}
    assert event["actor"] == {"user": {"name": "alice", "uid": "1000"}}
    assert event["service"] == {"name": "su-l"}
    assert "src_endpoint" not in event


def test_disconnected_from_user_is_a_logoff() -> None:
    event = normalized(
        "Nov  4 01:09:59 host1 sshd[1234]: Disconnected from user alice 10.0.0.5 port 52144", "sshd"
    )
    assert (event["class_uid"], event["activity_id"], event["status_id"]) == (3002, 2, 1)
    assert event["user"] == {"name": "alice"}
    assert event["src_endpoint"] == {"ip": "10.0.0.5", "port": 52144}


def test_a_connection_closed_before_authentication_is_a_failed_other_activity_of_that_user() -> None:
    event = normalized(
        "Nov  4 01:03:15 host1 sshd[1301]: "
        "Connection closed by invalid user bob 203.0.113.9 port 4242 [preauth]",
        "sshd",
    )
    assert (event["activity_id"], event["activity_name"]) == (99, "Connection Closed")
    assert event["type_uid"] == 300299
    assert (event["status_id"], event["user"]) == (2, {"name": "bob"})
    assert event["status_detail"] == "Connection closed by invalid user before authentication completed"


def test_disconnecting_for_too_many_failures_says_why() -> None:
    event = normalized(
        "Nov  4 01:04:30 host1 sshd[1322]: Disconnecting authenticating user root 203.0.113.9 port 51000: "
        "Too many authentication failures [preauth]",
        "sshd",
    )
    assert (event["activity_id"], event["status_id"]) == (99, 2)
    assert event["status_detail"] == "Too many authentication failures"


def test_pam_authentication_failure_maps_user_rhost_and_keeps_the_pam_fields() -> None:
    event = normalized(
        "Nov  4 01:04:20 host1 sshd[1322]: pam_unix(sshd:auth): authentication failure; "
        "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.9  user=root",
        "linux_secure",
    )
    assert (event["user"], event["status_id"], event["status_detail"]) == (
        {"name": "root"}, 2, "authentication failure",
    )
    assert event["src_endpoint"] == {"ip": "203.0.113.9"}
    assert event["unmapped"]["pam"] == {
        "logname": "", "uid": "0", "euid": "0", "tty": "ssh", "ruser": "", "rhost": "203.0.113.9",
        "user": "root",
    }


def test_pam_more_failures_carries_the_count_and_a_hostname_rhost_is_a_hostname() -> None:
    event = normalized(
        "Nov  4 01:04:30 host1 sshd[1322]: PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh "
        "ruser= rhost=scanner.example.net  user=root",
        "linux_secure",
    )
    assert event["count"] == 5
    assert event["src_endpoint"] == {"hostname": "scanner.example.net"}


def test_root_login_refused_is_a_failed_logon_of_root() -> None:
    event = normalized(
        "<86>Nov  4 01:13:00 host1 sshd[1600]: ROOT LOGIN REFUSED FROM 192.0.2.77 port 4711", "sshd"
    )
    assert (event["user"], event["status_id"]) == ({"name": "root"}, 2)
    assert event["src_endpoint"] == {"ip": "192.0.2.77", "port": 4711}


def test_connection_lines_without_a_user_are_network_activity() -> None:
    closed = normalized(
        "Nov  4 01:09:59 host1 sshd[1234]: "
        "Received disconnect from 10.0.0.5 port 52144:11: disconnected by user",
        "sshd",
    )
    assert (closed["class_uid"], closed["activity_id"], closed["type_uid"]) == (4001, 2, 400102)
    assert closed["status_detail"] == "11: disconnected by user"
    assert "status_id" not in closed
    assert closed["src_endpoint"] == {"ip": "10.0.0.5", "port": 52144}
    assert closed["dst_endpoint"] == {"hostname": "host1"}
    assert closed["connection_info"] == {"protocol_name": "tcp", "protocol_num": 6, "direction_id": 1,
                                         "direction": "Inbound"}

    opened = normalized(
        "Nov  4 01:05:00 host1 sshd[1350]: "
        'Connection from 198.51.100.23 port 60312 on 10.0.0.1 port 22 rdomain ""',
        "sshd",
    )
    assert (opened["activity_id"], opened["activity_name"]) == (1, "Open")
    assert opened["dst_endpoint"] == {"ip": "10.0.0.1", "port": 22, "hostname": "host1"}
    assert opened["unmapped"] == {"rdomain": ""}

    failed = normalized(
        "Nov  4 01:05:00 host1 sshd[1350]: "
        "Did not receive identification string from 198.51.100.23 port 60312",
        "sshd",
    )
    assert (failed["activity_id"], failed["status_id"]) == (4, 2)


def test_syslog_year_comes_from_the_event_time_the_client_sent() -> None:
    event = normalized(
        "Mar  1 12:00:00 host1 sshd[1]: Accepted password for alice from 10.0.0.5 port 1 ssh2",
        "sshd",
        time=ms(2023, 3, 1, 12, 0, 5) / 1000,
    )
    assert event["time"] == ms(2023, 3, 1, 12)


def test_a_december_line_received_in_january_is_dated_the_previous_year() -> None:
    env = envelope(
        "Dec 31 23:59:58 host1 sshd[1]: Accepted password for alice from 10.0.0.5 port 1 ssh2", "sshd"
    )
    env.received_at = "2025-01-01T00:00:03.000Z"
    assert default_registry().normalize(env)["time"] == ms(2024, 12, 31, 23, 59, 58)


def test_a_line_without_a_syslog_header_takes_the_client_time_else_arrival() -> None:
    body = "Accepted password for alice from 10.0.0.5 port 52144 ssh2"
    with_time = normalized(body, "sshd", time=1730682123.25)
    assert with_time["time"] == 1730682123250
    assert "original_time" not in with_time["metadata"]
    assert with_time["dst_endpoint"] == {"hostname": "hec-client"}  # the HEC host
    assert "logon_process" not in with_time
    assert normalized(body, "sshd")["time"] == ms(2024, 11, 5)


def test_json_string_and_json_object_events_normalize_like_raw_lines() -> None:
    line = "Nov  4 01:02:03 host1 sshd[1234]: Accepted password for alice from 10.0.0.5 port 52144 ssh2"
    raw = normalized(line, "sshd")
    as_string = normalized(json.dumps(line), "sshd", "json")
    wrapped_payload = json.dumps({"message": line, "stream": "stdout", "pod": "bastion-0"})
    wrapped = normalized(wrapped_payload, "sshd", "json")
    for event in (as_string, wrapped):
        assert {k: v for k, v in event.items() if k not in {"raw_data", "unmapped"}} == {
            k: v for k, v in raw.items() if k not in {"raw_data", "unmapped"}
        }
    assert wrapped["raw_data"] == wrapped_payload
    assert wrapped["unmapped"] == {"ssh_protocol": "ssh2", "stream": "stdout", "pod": "bastion-0"}


def test_a_line_that_is_not_an_auth_line_fails_clearly() -> None:
    assert failure("GET / HTTP/1.1", "linux_secure") == "not a Linux auth log line: 'GET / HTTP/1.1'"
    assert failure("   ", "linux_secure") == "empty log line"
    assert failure('{"msg": "x"}', "sshd", "json") == (
        "JSON event has no log line: expected a string under one of message, MESSAGE, log, _raw, line"
    )
    assert failure("[1]", "sshd", "json") == "JSON event is a list, expected a string or an object"


def test_an_impossible_syslog_date_fails_naming_the_timestamp() -> None:
    assert failure("Feb 30 01:02:03 host1 sshd[1]: Invalid user x from 10.0.0.1", "sshd").startswith(
        "invalid syslog timestamp 'Feb 30 01:02:03': "
    )


# --- AWS VPC flow logs ----------------------------------------------------------------------------


@pytest.mark.parametrize("line", fixture_lines("vpc_flow.log"))
def test_every_vpc_flow_fixture_record_becomes_a_valid_ocsf_event_keeping_the_record(line: str) -> None:
    event = normalized(line, "aws:vpcflow")
    assert (event["class_uid"], event["raw_data"]) == (4001, line)
    assert event["cloud"] == {"provider": "AWS", "account": {"uid": "123456789010"}}


def test_an_accepted_flow_maps_endpoints_protocol_traffic_times_and_action() -> None:
    line = ("2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 "
            "1418530010 1418530070 ACCEPT OK")
    event = normalized(line, "aws:vpcflow")
    assert (event["activity_id"], event["activity_name"], event["type_uid"]) == (6, "Traffic", 400106)
    assert event["src_endpoint"] == {"ip": "172.31.16.139", "port": 20641}
    assert event["dst_endpoint"] == {"ip": "172.31.16.21", "port": 22}
    assert event["connection_info"] == {"protocol_num": 6, "protocol_name": "tcp", "direction_id": 0,
                                        "direction": "Unknown"}
    assert event["traffic"] == {"packets": 20, "bytes": 4249}
    assert (event["time"], event["start_time"]) == (1418530010000, 1418530010000)
    assert event["end_time"] == 1418530070000
    assert (event["action_id"], event["action"], event["disposition_id"]) == (1, "Allowed", 1)
    assert event["status_code"] == "OK"
    assert event["unmapped"] == {"interface_id": "eni-1235b8ca123456789"}
    assert event["metadata"]["product"] == {"name": "Amazon VPC", "vendor_name": "AWS",
                                            "feature": {"name": "Flowlogs"}}
    assert event["metadata"]["log_version"] == "2"
    assert event["metadata"]["profiles"] == ["cloud", "security_control"]


def test_a_rejected_flow_is_a_refused_connection_that_was_denied() -> None:
    event = normalized(
        "2 123456789010 eni-1 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK",
        "aws:vpcflow",
    )
    assert (event["activity_id"], event["activity_name"]) == (5, "Refuse")
    assert (event["action_id"], event["action"], event["disposition_id"], event["disposition"]) == (
        2, "Denied", 2, "Blocked",
    )


def test_a_nodata_record_names_its_interface_as_the_only_endpoint() -> None:
    event = normalized("2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA",
                       "aws:vpcflow")
    assert (event["activity_id"], event["activity_name"], event["status_code"]) == (99, "NODATA", "NODATA")
    assert event["src_endpoint"] == {"interface_uid": "eni-1235b8ca123456789"}
    assert "dst_endpoint" not in event and "traffic" not in event and "action_id" not in event


def test_a_cloudwatch_subscription_record_keeps_its_wrapper_fields() -> None:
    record = ("2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 "
              "1418530010 1418530070 ACCEPT OK")
    payload = json.dumps({"id": "3719552", "timestamp": 1418530010000, "message": record})
    event = normalized(payload, "aws:cloudwatchlogs:vpcflow", "json")
    assert event["raw_data"] == payload
    assert event["unmapped"] == {
        "id": "3719552", "timestamp": 1418530010000, "interface_id": "eni-1235b8ca123456789",
    }
    assert event["src_endpoint"] == {"ip": "172.31.16.139", "port": 20641}


def test_vpc_flow_events_validate_only_with_the_profiles_they_declare() -> None:
    event = normalized("2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 1418530070 ACCEPT OK",
                       "aws:vpcflow")
    del event["metadata"]["profiles"]
    with pytest.raises(SchemaError) as caught:
        ocsf.validate(event)
    assert str(caught.value) == (
        "action_id: is not an attribute of Network Activity in OCSF 1.5.0; it belongs to the "
        "'security_control' profile, which metadata.profiles does not list"
    )


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end "
         "action log-status", "VPC flow log header line, not a flow record"),
        ("5 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 1418530070 ACCEPT OK",
         "VPC flow log version '5': only the version 2 default format is supported"),
        ("2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 ACCEPT OK",
         "expected the 14 fields of the VPC flow log version 2 default format, got 13"),
        ("2 123456789010 eni-1 10.0.0.1 10.0.0.2 http 2 6 1 1 1418530010 1418530070 ACCEPT OK",
         "srcport: 'http' is not a number"),
        ("2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 1418530070 DROP OK",
         "action: 'DROP' is neither ACCEPT nor REJECT"),
        ("2 123456789010 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1418530010 1418530070 ACCEPT PARTIAL",
         "log-status: 'PARTIAL' is not OK, NODATA or SKIPDATA"),
    ],
)
def test_records_outside_the_default_format_fail_saying_what_was_expected(line: str, error: str) -> None:
    assert failure(line, "aws:vpcflow") == error
