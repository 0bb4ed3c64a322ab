"""The cisco:asa normalizer on Cisco's documented message formats; every event it builds is
schema-checked, and generated lines (Hypothesis) either normalize to valid OCSF or fail with a
NormalizationError, never anything else."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telhawk_ingest import ocsf
from telhawk_ingest.errors import NormalizationError
from telhawk_ingest.normalizers import cisco_asa, default_registry
from tests.unit.test_normalizers import envelope, failure, fixture_lines, ms, normalized

ASA = "cisco:asa"
BUILT_IN = ("<166>Jan 12 2024 10:01:02 asa01 : %ASA-6-302013: Built inbound TCP connection 8 for "
            "outside:198.51.100.7/51234 (198.51.100.7/51234) to inside:192.168.10.20/443 (203.0.113.20/443)")


def asa(line: str, format: str = "raw", **attributes: Any) -> dict[str, Any]:
    return normalized(line, ASA, format, **attributes)


@pytest.mark.parametrize("line", fixture_lines("cisco_asa.log"))
def test_every_fixture_line_becomes_a_valid_ocsf_event_keeping_the_line(line: str) -> None:
    event = asa(line)

    assert event["class_uid"] in {3002, 4001}
    assert event["raw_data"] == line
    assert event["metadata"]["event_code"] == re.search(r"-(\d{6}):", line)[1]  # type: ignore[index]
    assert event["metadata"]["product"]["vendor_name"] == "Cisco"
    assert event["metadata"]["version"] == ocsf.OCSF_VERSION


def test_the_fixture_covers_every_supported_message_id() -> None:
    seen = {re.search(r"-(\d{6}):", line)[1] for line in fixture_lines("cisco_asa.log")}  # type: ignore[index]
    assert seen == set(cisco_asa.SUPPORTED_IDS)


# --- connections ----------------------------------------------------------------------------------


def test_an_inbound_tcp_connection_built_is_an_allowed_open_from_the_foreign_side() -> None:
    event = asa(BUILT_IN)

    assert (event["class_uid"], event["activity_id"], event["type_uid"]) == (4001, 1, 400101)
    assert (event["action"], event["disposition"]) == ("Allowed", "Allowed")
    assert event["src_endpoint"] == {"ip": "198.51.100.7", "port": 51234, "interface_name": "outside"}
    assert event["dst_endpoint"] == {"ip": "192.168.10.20", "port": 443, "interface_name": "inside"}
    assert event["connection_info"] == {"protocol_name": "tcp", "protocol_num": 6, "direction_id": 1,
                                        "direction": "Inbound", "uid": "8"}
    # The NAT address the outside saw, which OCSF has no place for.
    assert event["unmapped"] == {"dst_mapped": {"ip": "203.0.113.20", "port": 443}}
    assert event["device"] == {"type_id": 9, "type": "Firewall", "hostname": "asa01"}
    assert event["time"] == ms(2024, 1, 12, 10, 1, 2)
    assert event["metadata"]["original_time"] == "Jan 12 2024 10:01:02"
    assert event["metadata"]["profiles"] == ["security_control", "host"]
    assert (event["severity_id"], event["metadata"]["log_level"]) == (1, "informational")


def test_an_outbound_connection_starts_on_the_local_side_and_keeps_users_and_nat() -> None:
    event = asa("%ASA-6-302013: Built outbound TCP connection 77 for outside:93.184.216.34/443 "
                "(93.184.216.34/443)(LOCAL\\web, 0) to inside:10.1.1.10/52000 (203.0.113.5/52000)"
                "(LOCAL\\alice, 0) (alice)")

    assert event["src_endpoint"] == {"ip": "10.1.1.10", "port": 52000, "interface_name": "inside"}
    assert event["dst_endpoint"] == {"ip": "93.184.216.34", "port": 443, "interface_name": "outside"}
    assert event["connection_info"]["direction"] == "Outbound"
    assert event["unmapped"] == {"src_mapped": {"ip": "203.0.113.5", "port": 52000},
                                 "dst_users": ["LOCAL\\web, 0"], "src_users": ["LOCAL\\alice, 0", "alice"]}
    assert "device" not in event and event["metadata"]["profiles"] == ["security_control"]


def test_a_teardown_is_a_close_with_duration_bytes_reason_and_initiator() -> None:
    event = asa("%ASA-6-302014: Teardown TCP connection 8 for outside:198.51.100.7/51234 to "
                "inside:192.168.10.20/443 duration 0:01:05 bytes 1024 TCP FINs from outside")

    assert (event["activity_id"], event["activity_name"]) == (2, "Close")
    assert event["duration"] == 65_000 and event["traffic"] == {"bytes": 1024}
    assert event["status_detail"] == "TCP FINs"
    assert event["connection_info"]["uid"] == "8" and event["connection_info"]["direction_id"] == 0
    assert event["src_endpoint"]["ip"] == "198.51.100.7" and event["dst_endpoint"]["port"] == 443
    assert event["unmapped"] == {"teardown_initiator": "outside"}
    assert "action_id" not in event  # a teardown allows or denies nothing


@pytest.mark.parametrize(("reason", "activity"), [
    ("TCP Reset-I", "Reset"), ("TCP Reset-O from inside", "Reset"), ("SYN Timeout", "Fail"),
    ("Conn-timeout", "Close"), ("Flow closed by inspection", "Close"),
])
def test_a_teardown_reason_picks_the_activity(reason: str, activity: str) -> None:
    event = asa("%ASA-6-302014: Teardown TCP connection 9 for outside:198.51.100.7/1 to inside:10.0.0.1/2 "
                f"duration 25:00:00 bytes 0 {reason}")

    assert event["activity_name"] == activity
    assert event["duration"] == 25 * 3600 * 1000


def test_a_teardown_keeps_a_duration_it_cannot_read_and_the_user() -> None:
    event = asa("%ASA-6-302016: Teardown UDP connection 47 for outside:8.8.8.8/53 to inside:10.1.1.10/515 "
                "duration 1d2h bytes 120 (alice)")

    assert "duration" not in event
    assert event["unmapped"] == {"user": "alice", "duration": "1d2h"}


def test_icmp_connections_use_faddr_and_laddr_by_direction() -> None:
    inbound = asa("%ASA-6-302020: Built inbound ICMP connection for faddr 198.51.100.7/1 gaddr 203.0.113.5/0 "
                  "laddr 10.1.1.10/0 type 8 code 0")
    outbound = asa("%ASA-6-302020: Built outbound ICMP connection for faddr 8.8.8.8/0 gaddr 203.0.113.5/512 "
                   "laddr 10.1.1.10/512")
    closed = asa("%ASA-6-302021: Teardown ICMP connection for faddr 198.51.100.7/1 gaddr 203.0.113.5/0 "
                 "laddr 10.1.1.10/0 type 8 code 0")

    assert (inbound["src_endpoint"], inbound["dst_endpoint"]) == ({"ip": "198.51.100.7"}, {"ip": "10.1.1.10"})
    assert inbound["unmapped"]["icmp"] == {"type": 8, "code": 0}
    assert (outbound["src_endpoint"], outbound["dst_endpoint"]) == ({"ip": "10.1.1.10"}, {"ip": "8.8.8.8"})
    assert outbound["unmapped"]["src_mapped"] == {"ip": "203.0.113.5"}
    assert closed["activity_name"] == "Close" and closed["connection_info"]["protocol_num"] == 1


# --- denies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "src", "dst"), [
    ("%ASA-2-106001: Inbound TCP connection denied from 198.51.100.7/51234 to 203.0.113.5/22 flags SYN  "
     "on interface outside",
     {"ip": "198.51.100.7", "port": 51234, "interface_name": "outside"}, {"ip": "203.0.113.5", "port": 22}),
    ("%ASA-2-106006: Deny inbound UDP from 198.51.100.7/53 to 10.1.1.10/5353 on interface outside.",
     {"ip": "198.51.100.7", "port": 53, "interface_name": "outside"}, {"ip": "10.1.1.10", "port": 5353}),
    ("%ASA-3-106014: Deny inbound icmp src outside:198.51.100.7 dst inside:10.1.1.10 (type 8, code 0)",
     {"ip": "198.51.100.7", "interface_name": "outside"}, {"ip": "10.1.1.10", "interface_name": "inside"}),
    ("%ASA-1-106021: Deny TCP reverse path check from 10.9.9.9 to 198.51.100.7 on interface outside",
     {"ip": "10.9.9.9", "interface_name": "outside"}, {"ip": "198.51.100.7"}),
    ("%ASA-3-710003: TCP access denied by ACL from 198.51.100.7/51000 to outside:203.0.113.5/ssh",
     {"ip": "198.51.100.7", "port": 51000},
     {"ip": "203.0.113.5", "svc_name": "ssh", "interface_name": "outside"}),
])
def test_a_deny_is_a_refused_connection_that_was_denied_and_blocked(line: str, src: dict, dst: dict) -> None:
    event = asa(line)

    assert (event["activity_id"], event["activity_name"]) == (5, "Refuse")
    assert (event["action_id"], event["action"], event["disposition_id"], event["disposition"]) == (
        2, "Denied", 2, "Blocked")
    assert (event["src_endpoint"], event["dst_endpoint"]) == (src, dst)


def test_a_deny_by_access_group_names_the_rule_and_keeps_type_code_and_hash() -> None:
    event = asa('%ASA-4-106023: Deny icmp src outside:198.51.100.7 dst inside:10.1.1.10 (type 3, code 1) '
                'by access-group "outside_access_in" [0x0, 0x0]')

    assert event["firewall_rule"] == {"name": "outside_access_in"}
    assert event["unmapped"] == {"icmp": {"type": 3, "code": 1}, "acl_hash": "0x0, 0x0"}
    assert (event["severity_id"], event["metadata"]["log_level"]) == (3, "warnings")


def test_a_deny_of_a_protocol_number_names_the_protocol() -> None:
    event = asa('%ASA-4-106023: Deny protocol 47 src outside:198.51.100.7 dst inside:10.1.1.10 '
                'by access-group "outside_access_in" [0x0, 0x0]')

    assert event["connection_info"] == {"protocol_num": 47, "protocol_name": "gre", "direction_id": 0,
                                        "direction": "Unknown"}


def test_tcp_flags_become_the_ocsf_bitmask() -> None:
    event = asa("%ASA-6-106015: Deny TCP (no connection) from 10.1.1.10/51515 to 198.51.100.7/443 "
                "flags FIN PSH ACK  on interface inside")

    assert event["connection_info"]["tcp_flags"] == 1 + 8 + 16
    assert event["unmapped"]["tcp_flags"] == "FIN PSH ACK"


def test_an_access_list_hit_that_permitted_is_an_allowed_open_with_its_count() -> None:
    event = asa("%ASA-6-106100: access-list inside_in permitted udp inside/10.1.1.10(51515)(LOCAL\\alice, 0) "
                "-> outside/8.8.8.8(53) hit-cnt 5 300-second interval [0x1, 0x2]")

    assert (event["activity_name"], event["action"], event["count"]) == ("Open", "Allowed", 5)
    assert event["firewall_rule"] == {"name": "inside_in"}
    assert event["src_endpoint"] == {"ip": "10.1.1.10", "port": 51515, "interface_name": "inside"}
    assert event["unmapped"]["src_users"] == ["LOCAL\\alice, 0"]


def test_a_dns_deny_says_why() -> None:
    event = asa("%ASA-2-106007: Deny inbound UDP from 198.51.100.7/53 to 10.1.1.10/5353 due to DNS Response")

    assert event["status_detail"] == "DNS Response" and event["severity_id"] == 4


# --- authentication -------------------------------------------------------------------------------


def test_aaa_success_is_a_successful_logon_naming_the_server() -> None:
    event = asa("Jan 12 2024 10:01:02 asa01 : %ASA-6-113004: AAA user authentication Successful : "
                "server =  10.1.1.5 : user = alice")

    assert (event["class_uid"], event["activity_name"], event["status"]) == (3002, "Logon", "Success")
    assert event["user"] == {"name": "alice"}
    assert event["service"] == {"name": "aaa"}
    assert event["dst_endpoint"] == {"hostname": "asa01"}
    assert event["unmapped"] == {"aaa_server": "10.1.1.5"}


def test_aaa_rejection_is_a_failed_logon_with_the_reason_and_the_masked_name_as_logged() -> None:
    event = asa("%ASA-6-113005: AAA user authentication Rejected : reason = Invalid password : "
                "server = 10.1.1.5 : user = ***** : user IP = 198.51.100.7")

    assert (event["status_id"], event["status_detail"]) == (2, "Invalid password")
    assert event["user"] == {"name": "*****"}
    assert event["src_endpoint"] == {"ip": "198.51.100.7"} and event["is_remote"] is True


def test_local_database_lines_name_the_local_server() -> None:
    event = asa("%ASA-6-113015: AAA user authentication Rejected : reason = Invalid password : "
                "local database : user = bob : user IP = 10.1.1.20")

    assert event["user"] == {"name": "bob"} and event["unmapped"] == {"aaa_server": "LOCAL"}


def test_aaa_authorization_is_an_other_activity_named_so() -> None:
    event = asa("%ASA-6-113004: AAA user authorization Successful: server = 10.1.1.5, User = alice")

    assert (event["activity_id"], event["activity_name"], event["type_uid"]) == (99, "Authorization", 300299)


def test_management_logons() -> None:
    failed = asa("%ASA-6-611102: User authentication failed: IP address: 10.1.1.20, Uname: admin")
    ssh = asa('%ASA-6-605004: Login denied from 198.51.100.7/51515 to outside:203.0.113.5/ssh '
              'for user "admin"')
    console = asa('asa01: %ASA-6-605005: Login permitted from serial to console for user "enable_15"')

    assert (failed["status"], failed["service"], failed["src_endpoint"]) == (
        "Failure", {"name": "management"}, {"ip": "10.1.1.20"})
    assert (ssh["status"], ssh["service"], ssh["logon_type"]) == ("Failure", {"name": "ssh"}, "Network")
    assert ssh["dst_endpoint"] == {"ip": "203.0.113.5", "interface_name": "outside"}
    assert (console["status"], console["service"], console["logon_type_id"]) == (
        "Success", {"name": "console"}, 2)
    assert "src_endpoint" not in console and console["dst_endpoint"] == {"hostname": "asa01"}


# --- failures -------------------------------------------------------------------------------------


def test_an_unknown_message_id_fails_naming_the_id() -> None:
    with pytest.raises(NormalizationError) as caught:
        default_registry().normalize(envelope("%ASA-6-999999: Something new", ASA))

    assert caught.value.message == "cisco:asa message id 999999 is not supported"
    assert caught.value.details == {"message_id": "999999"}


def test_a_common_message_not_mapped_yet_fails_naming_its_id() -> None:
    assert failure("%ASA-5-111008: User 'enable_15' executed the 'write memory' command.", ASA) == (
        "cisco:asa message id 111008 is not supported")


@pytest.mark.parametrize(("line", "error"), [
    ("%ASA-6-302013: Built sideways TCP", "cisco:asa message 302013: text not in Cisco's documented form: "
                                          "'Built sideways TCP'"),
    ("Nov  4 01:02:03 web01 sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2",
     "not a Cisco ASA syslog line: no %ASA-<level>-<message id>: tag in "
     "'Nov  4 01:02:03 web01 sshd[1]: Accepted password for a from 10.0.0.1 port 1 ssh2'"),
    ("   ", "empty log line"),
    ("Feb 30 2024 10:01:02 asa01 : %ASA-6-611101: User authentication succeeded: Uname: a",
     "invalid syslog timestamp 'Feb 30 2024 10:01:02': day is out of range for month"),
])
def test_lines_it_cannot_read_fail_saying_why(line: str, error: str) -> None:
    assert failure(line, ASA) == error


def test_a_line_with_a_line_break_is_refused() -> None:
    text = BUILT_IN + "\n" + BUILT_IN

    assert failure(json.dumps(text), ASA, "json").startswith("log line has a line break at character")


# --- shapes and times -----------------------------------------------------------------------------


def test_a_json_string_event_and_a_json_object_message_normalize_like_the_raw_line() -> None:
    raw = asa(BUILT_IN)
    string = asa(json.dumps(BUILT_IN), "json")
    wrapped = asa(json.dumps({"message": BUILT_IN, "facility": "local4"}), "json")

    for event in (string, wrapped):
        assert {k: v for k, v in event.items() if k not in ("raw_data", "unmapped")} == {
            k: v for k, v in raw.items() if k not in ("raw_data", "unmapped")}
    assert wrapped["unmapped"] == {**raw["unmapped"], "facility": "local4"}


def test_a_relay_stamp_without_a_year_takes_the_event_time_year_and_names_the_device_by_ip() -> None:
    event = asa("Dec 31 23:59:59 10.0.0.1 %ASA-6-302016: Teardown UDP connection 47 for outside:8.8.8.8/53 "
                "to inside:10.1.1.10/51515 duration 0:00:00 bytes 120", time=1735776000)  # 2025-01-02

    assert event["time"] == ms(2024, 12, 31, 23, 59, 59)
    assert event["device"] == {"type_id": 9, "type": "Firewall", "ip": "10.0.0.1"}


def test_an_asa_stamp_with_milliseconds_keeps_them() -> None:
    event = asa("Jan 12 2024 10:01:02.345 asa01 : %ASA-6-611101: User authentication succeeded: Uname: admin")

    assert event["time"] == ms(2024, 1, 12, 10, 1, 2) + 345
    assert event["metadata"]["original_time"] == "Jan 12 2024 10:01:02.345"


def test_an_rfc3339_stamp_with_a_zone_and_the_ftd_product() -> None:
    event = asa("2024-01-12T10:01:02.250+01:00 fw1 : %FTD-6-113012: AAA user authentication Successful : "
                "local database : user = admin")

    assert event["time"] == ms(2024, 1, 12, 9, 1, 2) + 250
    assert event["metadata"]["product"] == {"name": "Firepower Threat Defense", "vendor_name": "Cisco"}


def test_a_line_without_a_header_takes_the_client_time_and_an_odd_header_is_kept() -> None:
    plain = asa("%ASA-6-611101: User authentication succeeded: Uname: admin", time=1700000000.5)
    odd = asa("relay[1]: <x> %ASA-6-611101: User authentication succeeded: Uname: admin")

    assert plain["time"] == 1_700_000_000_500
    assert odd["unmapped"] == {"syslog_header": "relay[1]: <x> "}
    assert odd["time"] == ms(2024, 11, 5)  # arrival


@pytest.mark.parametrize(("level", "severity_id"), [(0, 5), (1, 5), (2, 4), (3, 3), (4, 3), (5, 2), (6, 1),
                                                    (7, 1)])
def test_severity_follows_the_asa_level(level: int, severity_id: int) -> None:
    event = asa(f"%ASA-{level}-611101: User authentication succeeded: Uname: admin")

    assert event["severity_id"] == severity_id
    assert event["metadata"]["log_level"] == cisco_asa.LEVELS[level]


# --- generated lines (Hypothesis) -----------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
ports = st.integers(0, 65535)
interfaces = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)


@PROPERTY
@given(direction=st.sampled_from(["inbound", "outbound"]), protocol=st.sampled_from(["TCP", "UDP"]),
       conn=st.integers(0, 2**32), fif=interfaces, fip=addresses, fport=ports, lif=interfaces, lip=addresses,
       lport=ports, mapped=addresses, level=st.integers(0, 7))
def test_any_built_line_reads_back_its_endpoints(direction, protocol, conn, fif, fip, fport, lif, lip, lport,
                                                 mapped, level):
    message_id = "302013" if protocol == "TCP" else "302015"
    line = (f"%ASA-{level}-{message_id}: Built {direction} {protocol} connection {conn} "
            f"for {fif}:{fip}/{fport} ({fip}/{fport}) to {lif}:{lip}/{lport} ({mapped}/{lport})")

    event = asa(line)

    foreign = {"ip": fip, "port": fport, "interface_name": fif}
    local = {"ip": lip, "port": lport, "interface_name": lif}
    expected = (foreign, local) if direction == "inbound" else (local, foreign)
    assert (event["src_endpoint"], event["dst_endpoint"]) == expected
    assert event["connection_info"]["uid"] == str(conn)
    assert event["connection_info"]["protocol_name"] == protocol.lower()


@PROPERTY
@given(fip=addresses, lip=addresses, fport=ports, lport=ports, hours=st.integers(0, 10_000),
       minutes=st.integers(0, 59), seconds=st.integers(0, 59), sent=st.integers(0, 2**63 - 1),
       reason=st.sampled_from(["", " TCP FINs", " TCP Reset-O from inside", " Conn-timeout", " (bob)"]))
def test_any_teardown_line_reads_back_its_duration_and_bytes(fip, lip, fport, lport, hours, minutes, seconds,
                                                             sent, reason):
    line = (f"%ASA-6-302014: Teardown TCP connection 1 for outside:{fip}/{fport} to inside:{lip}/{lport} "
            f"duration {hours}:{minutes:02d}:{seconds:02d} bytes {sent}{reason}")

    event = asa(line)

    assert event["duration"] == ((hours * 60 + minutes) * 60 + seconds) * 1000
    assert event["traffic"] == {"bytes": sent}
    assert event["src_endpoint"]["ip"] == str(ipaddress.ip_address(fip))


# Text an ASA message may hold, weighted towards what the patterns look for.
fragments = st.sampled_from(["Built", "Teardown", " ", "inbound", "TCP", "connection", "for", "to", ":",
                             "/", "(", ")", "10.0.0.1", "outside", "1", "duration", "bytes", "flags", "SYN",
                             "on interface", "src", "dst", "\"", "[", "]", "user", "=", "server", "->",
                             "hit-cnt", "type", "code", ",", "LOCAL\\a", "\u00e9", "\x00"])
messages = st.one_of(st.lists(fragments, max_size=40).map("".join), st.text(max_size=200))


@PROPERTY
@given(message_id=st.sampled_from(cisco_asa.SUPPORTED_IDS), message=messages, header=st.sampled_from(
    ["", "<166>Jan 12 2024 10:01:02 asa01 : ", "Jan 12 10:01:02 h ", "junk "]))
def test_any_text_under_a_supported_id_is_valid_ocsf_or_a_normalization_error(message_id, message, header):
    env = envelope(f"{header}%ASA-6-{message_id}: {message}", ASA)
    try:
        event = default_registry().normalize(env)
    except NormalizationError:
        return
    ocsf.validate(event)
    assert event["raw_data"] == env.payload


@PROPERTY
@given(when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 12, 31)),
       millis=st.integers(0, 999), host=st.sampled_from(["asa01", "10.0.0.1", "fw-edge.example.com"]),
       separator=st.sampled_from([" : ", " "]), day=st.sampled_from(["{:02d}", "{:d}", "{:2d}"]))
def test_any_asa_timestamp_with_a_year_dates_the_event(when, millis, host, separator, day):
    stamp = f"{when:%b} {day.format(when.day)} {when.year:04d} {when:%H:%M:%S}.{millis:03d}"
    line = f"<166>{stamp} {host}{separator}%ASA-6-611101: User authentication succeeded: Uname: a"

    event = asa(line)

    expected = when.replace(microsecond=0, tzinfo=UTC).timestamp() * 1000 + millis
    assert event["time"] == expected
    assert event["metadata"]["original_time"] == stamp
    assert event["device"].get("hostname", event["device"].get("ip")) == host
