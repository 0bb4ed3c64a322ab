"""The HTTP layer over ASGI, in process: what is decided before the body is read, the body-read
deadline, and that blocking service work never runs on the event loop."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from telhawk_ingest.storage.base import retry
from tests.fakes import ScriptedBackend
from tests.functional.conftest import HEC_TOKEN, OPERATOR_TOKEN
from tests.functional.test_ingest import CISCO, SSHD_EVENT, stored_docs

Receive = Callable[[], Awaitable[dict[str, Any]]]


def never_called() -> Receive:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    return receive


def never_arrives() -> Receive:
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def whole(body: bytes) -> Receive:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def call(client, receive: Receive, headers: dict[str, str], path: str = "/services/collector/event",
         method: str = "POST") -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request straight into the ASGI app: (status, response headers, JSON body)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(client.app.app(http_scope(headers, path, method), receive, send))
    return answer(sent)


def http_scope(headers: dict[str, str], path: str = "/services/collector/event", method: str = "POST"
               ) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8088),
    }


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON body) of the messages an ASGI app sent."""
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)


def test_a_bad_token_is_refused_without_reading_a_byte_of_the_body(client):
    status, headers, body = call(client, never_called(),
                                 {"Authorization": "Splunk wrong", "Content-Length": "10000000"})

    assert (status, body["code"]) == (403, 4)
    assert headers["connection"] == "close"


def test_a_wrong_method_with_a_body_is_answered_405_without_reading_it(client):
    status, headers, body = call(client, never_called(),
                                 {"Authorization": f"Splunk {HEC_TOKEN}", "Content-Length": "10000000"},
                                 method="PUT")

    assert (status, body["code"]) == (405, 6)
    assert headers["connection"] == "close"


def test_a_declared_body_over_the_limit_is_refused_without_reading_it(make_client):
    client = make_client(hec={"max_body_bytes": 1000})

    status, headers, body = call(client, never_called(),
                                 {"Authorization": f"Splunk {HEC_TOKEN}", "Content-Length": "1001"})

    assert (status, body["code"]) == (413, 6)
    assert body["detail"] == "Content-Length of 1001 too large (maximum is 1000)"
    assert headers["connection"] == "close"
    assert client.service.healthz()["requests_rejected"] == 1


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed(make_client):
    client = make_client(hec={"body_read_timeout_seconds": 0.2})

    status, headers, body = call(client, never_arrives(),
                                 {"Authorization": f"Splunk {HEC_TOKEN}", "Content-Length": "100"})

    assert (status, body["code"]) == (408, 6)
    assert body["detail"] == "the body did not arrive within 0.2 s"
    assert headers["connection"] == "close"
    assert stored_docs(client) == [] and client.dlq_records() == []


def where(name: str, seen: list[str], call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, noting in `seen` whether it ran on the event loop or in a worker thread."""
    def inner(*args: Any) -> Any:
        try:
            asyncio.get_running_loop()
            seen.append(f"{name} on the loop")
        except RuntimeError:
            seen.append(f"{name} in a worker thread")
        return call(*args)
    return inner


def test_storage_and_health_run_in_worker_threads_never_on_the_event_loop(make_client):
    # A full DLQ volume: health then asks the storage backend too.
    client = make_client(dlq={"min_free_bytes": 2**62})
    backend = client.service.backend
    seen: list[str] = []
    # The local store's commit (SQLite, the WAL fsync) runs in its writer thread.
    backend._commit = where("commit", seen, backend._commit)
    backend.healthy = where("healthy", seen, backend.healthy)

    answer = call(client, whole(SSHD_EVENT.encode()), {"Authorization": f"Splunk {HEC_TOKEN}"})
    health = call(client, whole(b""), {}, path="/services/collector/health", method="GET")

    assert (answer[0], health[0], health[2]["code"]) == (200, 200, 17)
    assert seen == ["commit in a worker thread", "healthy in a worker thread"]
    assert len(stored_docs(client)) == 1


def test_a_backend_that_blocks_is_called_in_a_worker_thread(make_client):
    backend = ScriptedBackend()
    client = make_client(backend)
    seen: list[str] = []
    backend.store = where("store", seen, backend.store)

    answer = call(client, whole(SSHD_EVENT.encode()), {"Authorization": f"Splunk {HEC_TOKEN}"})

    assert (answer[0], answer[2]) == (200, {"text": "Success", "code": 0})
    assert seen == ["store in a worker thread"] and len(backend.stored) == 1


def test_a_failed_first_commit_is_retried_in_a_worker_thread_and_the_event_stored_once(make_client, waits):
    client = make_client()
    backend = client.service.backend
    commit, seen = backend._commit, []

    def fail_once(jobs: Any, queue: Any) -> Any:
        if not seen:
            seen.append("first commit refused")
            return retry("local storage: commit failed: disk I/O error")
        return commit(jobs, queue)

    backend._commit = fail_once
    backend.store = where("retry", seen, backend.store)

    answer = call(client, whole(SSHD_EVENT.encode()), {"Authorization": f"Splunk {HEC_TOKEN}"})

    assert (answer[0], answer[2]) == (200, {"text": "Success", "code": 0})
    assert seen == ["first commit refused", "retry in a worker thread"]
    assert waits == [0.1]
    assert len(stored_docs(client)) == 1 and client.dlq_records() == []
    assert client.service.healthz()["storage"]["retries"] == 1


def test_an_event_for_the_dlq_is_written_there_in_a_worker_thread(make_client):
    client = make_client()
    dlq = client.service.dlq
    seen: list[str] = []
    dlq._write_entries = where("DLQ write", seen, dlq._write_entries)
    body = (SSHD_EVENT + CISCO).encode()

    answer = call(client, whole(body), {"Authorization": f"Splunk {HEC_TOKEN}"})

    assert (answer[0], answer[2]) == (200, {"text": "Success", "code": 0, "accepted": 2, "dead_lettered": 1})
    assert seen == ["DLQ write in a worker thread"]
    assert len(stored_docs(client)) == 1
    assert [r["reason"] for r in client.dlq_records()] == ["normalization_failed"]


def sshd_batch(count: int, pad: int = 0) -> bytes:
    """`count` sshd events (distinct ports), one per line, each padded to about `pad` bytes."""
    line = json.loads(SSHD_EVENT)
    return "\n".join(json.dumps({**line, "event": line["event"].replace("52144", str(50000 + n)),
                                 "fields": {"pad": "x" * pad}}) for n in range(count)).encode()


def test_a_small_body_is_parsed_on_the_loop_and_a_large_or_gzipped_one_in_a_worker_thread(make_client):
    import gzip

    from telhawk_ingest.http import INLINE_MAX_BODY_BYTES

    client = make_client()
    seen: list[str] = []
    client.service.prepare = where("parse", seen, client.service.prepare)
    small, large = sshd_batch(2), sshd_batch(40, pad=2000)
    assert len(small) < INLINE_MAX_BODY_BYTES < len(large)
    auth = {"Authorization": f"Splunk {HEC_TOKEN}"}

    answers = [call(client, whole(small), auth)[0], call(client, whole(large), auth)[0],
               call(client, whole(gzip.compress(small)), {**auth, "Content-Encoding": "gzip"})[0]]

    assert answers == [200, 200, 200]
    assert seen == ["parse on the loop", "parse in a worker thread", "parse in a worker thread"]
    assert len(stored_docs(client)) == 2 + 40 + 2


def test_a_small_request_of_several_bulk_chunks_is_stored_whole_from_a_worker_thread(make_client):
    client = make_client(storage={"bulk_max_events": 2})
    backend = client.service.backend
    seen: list[str] = []
    backend.store = where("store", seen, backend.store)

    answer = call(client, whole(sshd_batch(5)), {"Authorization": f"Splunk {HEC_TOKEN}"})

    assert (answer[0], answer[2]) == (200, {"text": "Success", "code": 0})
    assert seen == ["store in a worker thread"] * 3  # chunks of 2, 2 and 1
    assert len(stored_docs(client)) == 5


def test_a_request_cut_at_shutdown_while_its_commit_runs_is_refused_and_its_stored_events_counted(
        make_client):
    import threading

    client = make_client()
    backend = client.service.backend
    commit, started, release = backend._commit, threading.Event(), threading.Event()

    def held(jobs: Any, queue: Any) -> Any:
        started.set()
        release.wait(10)
        return commit(jobs, queue)

    backend._commit = held
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def cut() -> None:
        scope = http_scope({"Authorization": f"Splunk {HEC_TOKEN}"})
        task = asyncio.create_task(client.app.app(scope, whole(SSHD_EVENT.encode()), send))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()  # what uvicorn does to a request still running past the drain
        await task
        release.set()
        await asyncio.sleep(0.5)  # the commit ends; the writer's callback reaches the loop

    asyncio.run(cut())

    status, _, body = answer(sent)
    assert (status, body["code"]) == (503, 9)
    assert len(stored_docs(client)) == 1  # stored, as the client is told may happen; resent, kept once
    assert client.service.healthz()["stored"] == 1


def test_warm_up_builds_the_service_at_start_and_a_failure_only_logs(monkeypatch, tmp_path, caplog):
    from telhawk_ingest import service as service_module
    from telhawk_ingest.http import warm_up

    monkeypatch.setattr(service_module, "_service", None)
    monkeypatch.setenv("INGEST_DLQ_BASE_PATH", str(tmp_path / "dlq"))
    monkeypatch.setenv("INGEST_STORAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INGEST_STORAGE_BACKEND", "local")
    warm_up()
    built = service_module._service
    monkeypatch.setattr(service_module, "_service", None)
    monkeypatch.setenv("INGEST_STORAGE_BACKEND", "not-a-backend")
    warm_up()

    assert built is not None and built.settings.dlq.base_path == tmp_path / "dlq"
    assert service_module._service is None
    assert "warming up the service failed" in caplog.text
    built.backend.close()


def test_the_first_health_call_of_a_worker_reuses_its_start_up_listing_of_the_dlq(monkeypatch, tmp_path):
    """The state folder lives in the DLQ folder: made after a worker's start-up listing (by its
    first count here), it changed the DLQ folder and the next health call listed every entry again.
    The emulator makes it before the workers start."""
    from local.emulator import make_state_folder
    from telhawk_ingest import service as service_module
    from telhawk_ingest.config import load_settings
    from telhawk_ingest.http import warm_up

    dlq = tmp_path / "dlq"
    dlq.mkdir(mode=0o700)
    for n in range(3):
        (dlq / f"failed_1796000000_{n:032x}.json").write_text("{}")
    monkeypatch.setattr(service_module, "_service", None)
    monkeypatch.setenv("INGEST_DLQ_BASE_PATH", str(dlq))
    monkeypatch.setenv("INGEST_STORAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INGEST_STORAGE_BACKEND", "local")
    make_state_folder(load_settings())  # the emulator, before it starts the workers
    os.utime(dlq, (1796000000, 1796000000))  # the workers start later: their listings are trusted
    warm_up()
    svc = service_module._service
    try:
        listed = svc.dlq._listing
        svc.counters.add(stored=1, now=True)  # the first count writes under the state folder
        health = svc.healthz()

        assert health["dlq_stats"]["pending_files"] == 3 and health["stored"] == 1
        assert svc.dlq._listing is listed
    finally:
        svc.backend.close()
        svc.counters.retire()


def test_an_operator_refusal_given_before_the_body_is_read_closes_the_connection(client):
    """A client refused before sending its body may send its next request in the body's place."""
    bad = {"Authorization": "Bearer wrong", "Content-Length": "10000000", "Content-Type": "application/json"}

    replay = call(client, never_called(), bad, path="/api/v1/dlq/replay")
    purge = call(client, never_called(), {**bad, "Authorization": f"Bearer {OPERATOR_TOKEN}"},
                 path="/api/v1/dlq/purge", method="DELETE")
    health = call(client, never_called(), {"Content-Length": "10"}, path="/healthz", method="GET")

    assert replay[0] == 401 and replay[1]["connection"] == "close"
    assert purge[0] == 400 and purge[1]["connection"] == "close"  # purge takes no body
    assert health[0] == 400 and health[1]["connection"] == "close"


def test_an_operator_call_whose_body_was_read_keeps_the_connection(client):
    body = json.dumps({"filter": {}}).encode()
    status, headers, answer = call(client, whole(body), {
        "Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Length": str(len(body)),
        "Content-Type": "application/json"}, path="/api/v1/dlq/replay")

    assert (status, answer["matched"]) == (200, 0)  # an empty DLQ, replayed whole
    assert "connection" not in headers
