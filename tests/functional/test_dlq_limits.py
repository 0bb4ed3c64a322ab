"""The DLQ's limits and writability, as a HEC client and an operator see them (SPEC §2, §3, §9).

A request whose dead letters the DLQ cannot take is refused whole with 503 code 9 and Retry-After
before anything of it is stored, so the client keeps every event and its resend is the first copy.
Health says 18 exactly when ingest can neither store nor dead-letter. Read-only filesystems and
missing permissions are made real (tests/realfs.py), since the tests run as root.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from telhawk_ingest.storage.base import STORED, permanent
from tests import realfs
from tests.fakes import ScriptedBackend, every
from tests.functional.test_ingest import CISCO, SSHD_EVENT, stored_docs

HEALTH = "/services/collector/health"


def busy(answer) -> bool:
    """503 code 9 with a Retry-After: the client keeps the events and sends them again."""
    return (answer.status_code == 503 and answer.json()["code"] == 9
            and int(answer.headers["Retry-After"]) > 0)


def health_code(client) -> int:
    return client.hec("", path=HEALTH, method="GET", token=None).json()["code"]


# -- limits hold per request --------------------------------------------------------------------------

def test_200_undeliverable_events_against_a_limit_of_2_files_are_refused_whole(make_client):
    client = make_client(dlq={"max_pending_files": 2})

    answer = client.hec(CISCO * 200)

    assert busy(answer)
    assert "max_pending_files=2" in answer.json()["detail"]
    assert client.dlq_records() == [] and stored_docs(client) == []


def test_a_mixed_request_past_the_limit_stores_nothing_and_its_resend_loses_nothing(make_client):
    backend = ScriptedBackend()
    client = make_client(backend, dlq={"max_pending_files": 1})

    answer = client.hec(SSHD_EVENT + CISCO + CISCO)

    assert busy(answer) and backend.calls == [] and client.dlq_records() == []
    client.service.dlq.max_pending_files = 2  # the operator raises the limit; the client resends
    again = client.hec(SSHD_EVENT + CISCO + CISCO)
    assert again.json() == {"text": "Success", "code": 0, "accepted": 3, "dead_lettered": 2}
    assert len(backend.stored) == 1 and len(client.dlq_records()) == 2


def test_a_request_past_the_byte_limit_is_refused_whole(make_client, tmp_path):
    probe = make_client()
    probe.hec(CISCO)
    one = sum(p.stat().st_size for p in probe.service.settings.dlq.base_path.glob("failed_*.json"))
    probe.operator("DELETE", "/api/v1/dlq/purge")
    client = make_client(dlq={"max_pending_bytes": 3 * one})

    assert client.hec(CISCO + CISCO).status_code == 200
    answer = client.hec(CISCO + CISCO)

    assert busy(answer) and f"max_pending_bytes={3 * one}" in answer.json()["detail"]
    assert len(client.dlq_records()) == 2
    assert client.hec(CISCO).status_code == 200  # one more still fits


def test_the_limit_counts_what_is_already_pending_from_an_earlier_process(make_client):
    make_client().hec(CISCO + CISCO + CISCO)
    client = make_client(dlq={"max_pending_files": 4})  # a restart, with a limit

    assert busy(client.hec(CISCO + CISCO))
    assert client.hec(CISCO).status_code == 200
    assert len(client.dlq_records()) == 4


def test_storage_failures_the_full_dlq_cannot_take_get_503_and_the_rest_stays_stored(make_client):
    # Storage failures are known only after storing: the events stored stay stored (a resend with
    # the same ids stores nothing twice, storage being idempotent by _id), the failed ones go back
    # to the client with the 503.
    backend = ScriptedBackend(lambda batch: [STORED, permanent("mapper_parsing_exception")])
    client = make_client(backend, dlq={"max_pending_files": 1})
    client.hec(CISCO)  # the DLQ is now full

    answer = client.hec(SSHD_EVENT + SSHD_EVENT)

    assert busy(answer) and "max_pending_files=1" in answer.json()["detail"]
    assert len(backend.stored) == 1 and len(client.dlq_records()) == 1
    assert client.service.healthz()["stored"] == 1


def test_storage_failing_whole_with_a_full_dlq_stores_nothing_and_answers_503(make_client, waits):
    backend = ScriptedBackend(every(permanent("index closed")))
    client = make_client(backend, dlq={"max_pending_files": 1})
    client.hec(CISCO)

    assert busy(client.hec(SSHD_EVENT + SSHD_EVENT))
    assert backend.stored == [] and len(client.dlq_records()) == 1


def test_after_a_purge_the_dlq_takes_events_again_at_once(make_client):
    client = make_client(dlq={"max_pending_files": 2})
    client.hec(CISCO + CISCO)
    assert busy(client.hec(CISCO)) and health_code(client) == 17  # storage still works

    client.operator("DELETE", "/api/v1/dlq/purge")

    assert client.hec(CISCO + CISCO).status_code == 200


# -- health agrees with ingest ------------------------------------------------------------------------

def test_health_is_18_when_the_dlq_is_full_and_storage_fails_and_healthz_says_why(make_client, waits):
    backend = ScriptedBackend(*[every(permanent("down"))] * 10)
    backend.is_healthy = False
    client = make_client(backend, dlq={"max_pending_files": 1})
    assert health_code(client) == 17  # the DLQ can still take one
    client.hec(CISCO)

    answer = client.hec(SSHD_EVENT)
    health = client.hec(HEALTH, path=HEALTH, method="GET", token=None)
    healthz = client.hec("", path="/healthz", method="GET", token=None).json()

    assert busy(answer)
    assert health.status_code == 503 and health.json()["code"] == 18
    assert healthz["storage"]["healthy"] is False
    assert healthz["dlq_stats"]["accepting"] is False
    assert "max_pending_files=1" in healthz["dlq_stats"]["refusal"]


@pytest.mark.parametrize(("storage_ok", "dlq_ok", "code"), [
    (True, True, 17), (True, False, 17), (False, True, 17), (False, False, 18)])
def test_health_is_18_exactly_when_neither_side_can_take_an_event(make_client, storage_ok, dlq_ok, code):
    backend = ScriptedBackend()
    backend.is_healthy = storage_ok
    client = make_client(backend, dlq={"max_pending_files": 1 if dlq_ok else 0, "enabled": dlq_ok})

    healthz = client.hec("", path="/healthz", method="GET", token=None).json()

    assert health_code(client) == code
    assert healthz["storage"]["healthy"] is storage_ok and healthz["dlq_stats"]["accepting"] is dlq_ok
    assert (healthz["dlq_stats"]["refusal"] is None) is dlq_ok


def test_local_storage_under_a_file_is_unhealthy(make_client, tmp_path):
    (tmp_path / "blocker").write_text("")
    client = make_client(storage={"data_dir": str(tmp_path / "blocker" / "data")},
                         dlq={"enabled": False})

    assert client.service.healthz()["storage"]["healthy"] is False
    assert health_code(client) == 18 and busy(client.hec(SSHD_EVENT))


# -- real conditions: a read-only filesystem, a folder this user cannot write --------------------------

MIXED = SSHD_EVENT + CISCO


def assert_refused_whole(seen: dict, request: int = 0) -> None:
    reply = seen["replies"][request]
    assert reply["status"] == 503 and reply["body"]["code"] == 9 and int(reply["headers"]["Retry-After"]) > 0
    assert seen["stored"] == [] and seen["dlq_files"] == []


def test_a_mixed_request_to_a_read_only_dlq_stores_nothing_then_its_resend_is_kept(tmp_path):
    realfs.require(realfs.read_only_mounts())
    settings = realfs.settings_for(tmp_path)
    (tmp_path / "dlq").mkdir(mode=0o700)

    seen = realfs.run(settings, [("/services/collector/event", MIXED)], read_only=[tmp_path / "dlq"])

    assert_refused_whole(seen)
    assert "read-only filesystem" in seen["replies"][0]["body"]["detail"]
    assert seen["healthz"]["dlq_stats"]["accepting"] is False
    again = realfs.run(settings, [("/services/collector/event", MIXED)])  # the mount is gone
    assert again["replies"][0]["body"] == {"text": "Success", "code": 0, "accepted": 2, "dead_lettered": 1}
    assert len(again["stored"]) == 1 and len(again["dlq_files"]) == 1


def test_with_dlq_and_storage_read_only_ingest_says_503_and_health_18(tmp_path):
    realfs.require(realfs.read_only_mounts())
    settings = realfs.settings_for(tmp_path)
    for name in ("dlq", "data"):
        (tmp_path / name).mkdir(mode=0o700)

    seen = realfs.run(settings, [("/services/collector/event", SSHD_EVENT), (HEALTH, None)],
                      read_only=[tmp_path / "dlq", tmp_path / "data"])

    assert_refused_whole(seen)
    assert seen["replies"][1]["status"] == 503 and seen["replies"][1]["body"]["code"] == 18
    assert seen["healthz"]["storage"]["healthy"] is False


@pytest.fixture
def shared_home() -> Iterator[Path]:
    home = realfs.shared_tmp()
    yield home
    shutil.rmtree(home, ignore_errors=True)


def make_dirs(home: Path, writable: set[str], dlq_files: int = 0) -> None:
    """dlq/ and data/ under `home`, owned by the child's user when named in `writable`, else by
    root (0755: readable, not writable, for the child). `dlq_files` entries are put in dlq/."""
    uid, gid = realfs.unprivileged_uid()
    for name in ("dlq", "data"):
        folder = home / name
        folder.mkdir(mode=0o755)
        for n in range(dlq_files if name == "dlq" else 0):
            entry = folder / f"failed_1700000000_{n:032x}.json"
            entry.write_text(json.dumps({"envelope": {"source_type": "x"}, "reason": "storage_failed"}))
            os.chown(entry, uid, gid)
        if name in writable:
            os.chown(folder, uid, gid)
            folder.chmod(0o700)


def test_a_mixed_request_to_a_dlq_this_user_cannot_write_stores_nothing(shared_home):
    make_dirs(shared_home, writable={"data"})

    seen = realfs.run(realfs.settings_for(shared_home), [("/services/collector/event", MIXED)],
                      as_user=True)

    assert_refused_whole(seen)
    assert "not writable by uid" in seen["replies"][0]["body"]["detail"]


def test_a_full_dlq_and_storage_this_user_cannot_write_make_health_18_like_ingest(shared_home):
    make_dirs(shared_home, writable={"dlq"}, dlq_files=1)
    settings = realfs.settings_for(shared_home, dlq={"max_pending_files": 1})

    seen = realfs.run(settings, [(HEALTH, None), ("/services/collector/event", SSHD_EVENT), (HEALTH, None)],
                      as_user=True)

    first_health, ingest, second_health = seen["replies"]
    assert ingest["status"] == 503 and ingest["body"]["code"] == 9
    assert first_health["body"]["code"] == second_health["body"]["code"] == 18
    assert seen["healthz"]["storage"]["healthy"] is False
    assert seen["healthz"]["dlq_stats"]["accepting"] is False
    assert seen["stored"] == [] and len(seen["dlq_files"]) == 1


def test_storage_this_user_cannot_write_dead_letters_and_health_stays_17(shared_home):
    make_dirs(shared_home, writable={"dlq"})

    seen = realfs.run(realfs.settings_for(shared_home),
                      [("/services/collector/event", SSHD_EVENT), (HEALTH, None)], as_user=True)

    assert seen["replies"][0]["body"] == {"text": "Success", "code": 0, "accepted": 1, "dead_lettered": 1}
    assert seen["replies"][1]["body"]["code"] == 17
    assert seen["healthz"]["storage"]["healthy"] is False and seen["healthz"]["dlq_stats"]["accepting"]
