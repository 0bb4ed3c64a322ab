"""The emulator's template reading, route table and dispatcher, in-process (no server, no network).

A small fake template and fake function files under a temporary folder stand in for the real
ones, so these tests do not depend on the service's handlers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient as Client

from local import emulator
from local.emulator import (
    CloudFormationLoader,
    Dispatcher,
    Route,
    RouteTable,
    TemplateError,
    build_dispatcher,
    load_template,
    local_overrides,
    read_functions,
)

FAKE_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Url:
    Type: String
Conditions:
  HasUrl: !Not [!Equals [!Ref Url, ""]]
Globals:
  Function:
    Runtime: python3.11
    CodeUri: .
    Environment:
      Variables:
        PLAIN: /mnt/dlq
        REF: !Ref Url
        SUB: !Sub "${Url}/x"
        GETATT: !GetAtt Queue.Arn
        IF: !If [HasUrl, !Ref Url, !Ref AWS::NoValue]
        JOIN: !Join ["", [a, !Ref Url]]
Resources:
  Queue:
    Type: AWS::SQS::Queue
  FakeEcho:
    Type: AWS::Serverless::Function
    Properties:
      Handler: functions/fake_echo.handler
      Events:
        Collector:
          Type: HttpApi
          Properties: {Path: /services/collector, Method: POST}
        CollectorEventV1:
          Type: HttpApi
          Properties: {Path: /services/collector/event/1.0, Method: post}
        List:
          Type: Api
          Properties: {Path: /api/v1/dlq, Method: GET}
        FromQueue:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
  FakeItem:
    Type: AWS::Serverless::Function
    Properties:
      Handler: functions/fake_item.handler
      Events:
        Get:
          Type: HttpApi
          Properties: {Path: "/api/v1/dlq/{id}", Method: GET}
  FakeDelete:
    Type: AWS::Serverless::Function
    Properties:
      Handler: functions/fake_delete.handler
      Events:
        Delete:
          Type: HttpApi
          Properties: {Path: "/api/v1/dlq/{id}", Method: DELETE}
  FakePurge:
    Type: AWS::Serverless::Function
    Properties:
      Handler: functions.fake_purge.handler
      Events:
        Purge:
          Type: HttpApi
          Properties: {Path: /api/v1/dlq/purge, Method: DELETE}
  NoRoutes:
    Type: AWS::Serverless::Function
    Properties:
      Handler: functions/not_served.handler
"""

FAKE_FUNCTION = '''\
"""A fake function that reports what it received."""

import functions_framework.aio
from starlette.requests import Request


@functions_framework.aio.http
async def {name}(request: Request) -> dict:
    return {{
        "function": "{name}",
        "path": request.url.path,
        "method": request.method,
        "query": request.url.query,
        "body": (await request.body()).decode(),
        "params": request.scope.get("telhawk.path_params"),
        "route": request.scope.get("telhawk.route"),
    }}
'''

FAKE_NAMES = ("fake_echo", "fake_item", "fake_delete", "fake_purge")


def write_project(root: Path, template: str = FAKE_TEMPLATE, names: tuple[str, ...] = FAKE_NAMES) -> Path:
    (root / "functions").mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "functions" / f"{name}.py").write_text(FAKE_FUNCTION.format(name=name))
    path = root / "template.yaml"
    path.write_text(template)
    return path


@pytest.fixture(scope="module")
def template_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def client(template_path: Path) -> Iterator[Client]:
    # create_app writes FUNCTION_* into os.environ, appends to sys.path and registers each module
    # under its stem: undo all of it so other tests see a clean process.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUNCTION_TARGET", "")
        mp.setenv("FUNCTION_SIGNATURE_TYPE", "")
        mp.setattr(sys, "path", list(sys.path))
        yield Client(build_dispatcher(read_functions(template_path)))
        for name in FAKE_NAMES:
            sys.modules.pop(name, None)


def call(client: Client, method: str, path: str, **kwargs: Any) -> tuple[int, dict]:
    response = client.request(method, path, **kwargs)
    return response.status_code, response.json()


# --- template ---------------------------------------------------------------------------------


def test_cloudformation_short_tags_load_as_their_long_form(template_path: Path) -> None:
    variables = load_template(template_path)["Globals"]["Function"]["Environment"]["Variables"]

    assert variables["PLAIN"] == "/mnt/dlq"
    assert variables["REF"] == {"Ref": "Url"}
    assert variables["SUB"] == {"Fn::Sub": "${Url}/x"}
    assert variables["GETATT"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert variables["IF"] == {"Fn::If": ["HasUrl", {"Ref": "Url"}, {"Ref": "AWS::NoValue"}]}
    assert variables["JOIN"] == {"Fn::Join": ["", ["a", {"Ref": "Url"}]]}


def test_the_loader_still_refuses_arbitrary_python_objects() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError):
        yaml.load("!!python/object/apply:os.system ['true']", Loader=CloudFormationLoader)


def test_functions_come_from_the_handler_module_path_and_only_http_events_count(template_path: Path) -> None:
    specs = read_functions(template_path)

    assert [(s.logical_id, s.target) for s in specs] == [
        ("FakeEcho", "fake_echo"),
        ("FakeItem", "fake_item"),
        ("FakeDelete", "fake_delete"),
        ("FakePurge", "fake_purge"),
    ]
    assert specs[0].source == template_path.parent / "functions" / "fake_echo.py"
    assert [(r.method, r.path) for r in specs[0].routes] == [
        ("POST", "/services/collector"),
        ("POST", "/services/collector/event/1.0"),
        ("GET", "/api/v1/dlq"),
    ]


def test_a_route_declared_twice_is_refused(tmp_path: Path) -> None:
    twice = FAKE_TEMPLATE.replace("Path: /api/v1/dlq/purge, Method: DELETE", "Path: /api/v1/dlq, Method: GET")
    with pytest.raises(
        TemplateError, match=r"FakePurge: route GET /api/v1/dlq is already declared by FakeEcho"
    ):
        read_functions(write_project(tmp_path, twice))


def test_a_missing_function_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"FakePurge: source file .*fake_purge\.py does not exist"):
        read_functions(write_project(tmp_path, names=FAKE_NAMES[:3]))


def test_a_template_without_resources_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text("Transform: AWS::Serverless-2016-10-31\n")
    with pytest.raises(TemplateError, match="Resources"):
        load_template(path)


# --- routing through the dispatcher -------------------------------------------------------------


def test_a_literal_path_reaches_its_function_with_the_full_original_path(client: Client) -> None:
    status, seen = call(client, "POST", "/services/collector/event/1.0?channel=x", content="{}")

    assert status == 200
    assert seen["function"] == "fake_echo"
    assert seen["path"] == "/services/collector/event/1.0"
    assert seen["query"] == "channel=x"
    assert seen["body"] == "{}"
    assert seen["params"] == {}
    assert seen["route"] == "POST /services/collector/event/1.0"


def test_a_post_to_a_bare_path_is_answered_not_redirected(client: Client) -> None:
    response = client.post("/services/collector", content='{"event": "x"}', follow_redirects=False)

    assert response.status_code == 200
    assert "Location" not in response.headers
    assert response.json()["path"] == "/services/collector"


def test_a_path_parameter_is_exposed_in_the_scope(client: Client) -> None:
    status, seen = call(client, "GET", "/api/v1/dlq/failed_1700000000_abc")

    assert status == 200
    assert seen["function"] == "fake_item"
    assert seen["params"] == {"id": "failed_1700000000_abc"}
    assert seen["path"] == "/api/v1/dlq/failed_1700000000_abc"


def test_the_method_chooses_between_functions_sharing_a_path(client: Client) -> None:
    assert call(client, "GET", "/api/v1/dlq/x")[1]["function"] == "fake_item"
    assert call(client, "DELETE", "/api/v1/dlq/x")[1]["function"] == "fake_delete"


def test_a_literal_route_beats_a_parameter_route(client: Client) -> None:
    status, seen = call(client, "DELETE", "/api/v1/dlq/purge")

    assert status == 200
    assert seen["function"] == "fake_purge"
    assert seen["params"] == {}


def test_a_literal_route_beats_a_parameter_route_even_for_an_undeclared_method(client: Client) -> None:
    # purge_dlq answers the wrong method itself; GET /api/v1/dlq/{id} must not see "purge" as an id.
    status, seen = call(client, "GET", "/api/v1/dlq/purge")

    assert status == 200
    assert (seen["function"], seen["method"], seen["params"]) == ("fake_purge", "GET", {})
    assert seen["route"] == "DELETE /api/v1/dlq/purge"


def test_a_wrong_method_is_passed_to_the_function(client: Client) -> None:
    status, seen = call(client, "GET", "/services/collector")

    assert status == 200
    assert (seen["function"], seen["method"]) == ("fake_echo", "GET")


def test_an_undeclared_method_on_a_shared_path_goes_to_the_first_declared_function(client: Client) -> None:
    assert call(client, "PUT", "/api/v1/dlq/x")[1]["function"] == "fake_item"


@pytest.mark.parametrize(
    "path",
    ["/", "/nope", "/services/collector/", "/services", "/api/v1/dlq/", "/api/v1/dlq/a/b", "/api/v1/dlqx"],
)
def test_an_unknown_path_is_a_hec_shaped_404(client: Client, path: str) -> None:
    response = client.post(path, content="{}", follow_redirects=False)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "text": "The requested URL was not found on this server.",
        "code": 404,
    }


# --- the route table alone ------------------------------------------------------------------------


def test_a_greedy_parameter_takes_the_rest_of_the_path_and_loses_to_anything_narrower() -> None:
    table = RouteTable(
        [
            Route("GET", "/files/{path+}", "greedy"),
            Route("GET", "/files/{name}", "one"),
            Route("ANY", "/", "root"),
        ]
    )

    assert table.match("/files/a/b/c", "GET") == (Route("GET", "/files/{path+}", "greedy"), {"path": "a/b/c"})
    assert table.match("/files/a", "GET") == (Route("GET", "/files/{name}", "one"), {"name": "a"})
    assert table.match("/files/", "GET") is None
    assert table.match("/", "PATCH") == (Route("ANY", "/", "root"), {})


def test_head_is_answered_by_the_get_route() -> None:
    table = RouteTable([Route("POST", "/x", "post"), Route("GET", "/x", "get")])

    assert table.match("/x", "HEAD") == (Route("GET", "/x", "get"), {})


@pytest.mark.parametrize("path", ["api/v1", "/api/v1/dlq-{id}", "/files/{rest+}/tail"])
def test_a_malformed_route_path_is_refused(path: str) -> None:
    with pytest.raises(TemplateError):
        Route("GET", path, "f")


def test_the_dispatcher_refuses_a_route_without_an_app() -> None:
    with pytest.raises(TemplateError, match="no app loaded for missing"):
        Dispatcher([Route("GET", "/x", "missing")], {})


class Held:
    """An ASGI app whose requests wait until released, to hold requests in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def request(app: Any, method: str = "POST", path: str = "/x") -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app: (status, headers, body)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_past_max_in_flight_a_request_gets_hec_503_code_9_and_held_ones_still_finish() -> None:
    held = Held()
    dispatcher = Dispatcher([Route("POST", "/x", "held")], {"held": held}, max_in_flight=2)

    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        first = [asyncio.create_task(request(dispatcher)) for _ in range(2)]
        while held.entered < 2:
            await asyncio.sleep(0)
        refused = await request(dispatcher)
        held.release.set()
        return [refused, *await asyncio.gather(*first)]

    (status, headers, body), *finished = asyncio.run(scenario())

    assert (status, json.loads(body)["code"], json.loads(body)["text"]) == (503, 9, "Server is busy")
    assert int(headers["retry-after"]) > 0 and headers["connection"] == "close"
    assert [(s, b) for s, _, b in finished] == [(200, b"done")] * 2
    assert held.entered == 2 and dispatcher.in_flight == 0


def test_while_draining_new_requests_get_503_code_9_and_unknown_paths_still_404() -> None:
    dispatcher = Dispatcher([Route("POST", "/x", "held")], {"held": Held()})
    dispatcher.draining = True

    status, headers, body = asyncio.run(request(dispatcher))
    missing = asyncio.run(request(dispatcher, path="/nope"))

    assert (status, json.loads(body)["code"]) == (503, 9)
    assert "shutting down" in json.loads(body)["detail"]
    assert int(headers["retry-after"]) > 0 and headers["connection"] == "close"
    assert missing[0] == 404


def test_lifespan_runs_the_start_up_and_shutdown_hooks_once_each() -> None:
    calls: list[str] = []
    dispatcher = Dispatcher([], {}, on_startup=lambda: calls.append("startup"),
                            on_shutdown=lambda: calls.append("shutdown"))
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message["type"])

    asyncio.run(dispatcher({"type": "lifespan"}, receive, send))

    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert calls == ["startup", "shutdown"]


# --- local settings -------------------------------------------------------------------------------


def test_local_overrides_point_at_the_repository_and_local_storage(tmp_path: Path) -> None:
    assert local_overrides({}, root=tmp_path) == {
        "INGEST_DLQ_BASE_PATH": str(tmp_path / "var" / "dlq"),
        "INGEST_STORAGE_DATA_DIR": str(tmp_path / "var" / "data"),
        "INGEST_CONFIG_FILE": str(emulator.DEFAULT_CONFIG),
        "INGEST_STORAGE_BACKEND": "local",
    }


def test_local_overrides_leave_whatever_the_caller_set(tmp_path: Path) -> None:
    caller = {
        "CORE_DLQ_BASE_PATH": "/elsewhere/dlq",
        "INGEST_STORAGE_DATA_DIR": "/elsewhere/data",
        "INGEST_CONFIG_FILE": "/elsewhere/config.yaml",
        "INGEST_STORAGE_BACKEND": "opensearch",
    }
    assert local_overrides(caller, root=tmp_path) == {}


def test_a_storage_url_alone_is_not_overridden_by_local_storage(tmp_path: Path) -> None:
    overrides = local_overrides({"INGEST_OPENSEARCH_URL": "http://127.0.0.1:9200"}, root=tmp_path)

    assert "INGEST_STORAGE_BACKEND" not in overrides


def test_the_dev_config_is_valid_and_the_banner_shows_routes_and_tokens(template_path: Path) -> None:
    from telhawk_ingest.config import load_settings

    settings = load_settings(
        emulator.DEFAULT_CONFIG, env={"INGEST_DLQ_BASE_PATH": "/tmp/x/dlq", "INGEST_STORAGE_BACKEND": "local",
                                      "TELHAWK_LOCAL_EMULATOR": "1"}
    )
    text = emulator.banner(
        "http://127.0.0.1:8088", template_path, read_functions(template_path), settings, "cfg.yaml"
    )

    assert "listening on http://127.0.0.1:8088" in text
    assert "DELETE /api/v1/dlq/purge" in text
    assert "-> fake_purge" in text
    assert "DLQ:      /tmp/x/dlq (enabled)" in text
    assert settings.hec.tokens[0].token in text
    assert settings.operator.tokens[0].token in text
    assert "curl -s http://127.0.0.1:8088/services/collector/event" in text


def test_local_storage_on_a_network_filesystem_stops_the_emulator_before_it_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from telhawk_ingest.storage import local

    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                         f"40 27 0:50 / {tmp_path}/efs rw - nfs4 fs-1.efs.amazonaws.com:/ rw\n")
    monkeypatch.setattr(local, "MOUNTINFO", mountinfo)
    environment = {"INGEST_DLQ_BASE_PATH": tmp_path / "dlq",
                   "INGEST_STORAGE_DATA_DIR": tmp_path / "efs" / "data",
                   "INGEST_CONFIG_FILE": emulator.DEFAULT_CONFIG, "INGEST_STORAGE_BACKEND": "local"}
    for name, value in environment.items():  # all set: the emulator's own overrides change nothing
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("TELHAWK_LOCAL_EMULATOR", "1")  # the emulator sets it: restored after the test

    assert emulator.main(["--port", "0"]) == 2

    err = capsys.readouterr().err
    assert f"emulator: storage.data_dir: {tmp_path}/efs/data is on a nfs4 filesystem" in err


def test_an_alias_to_an_unknown_source_type_stops_the_emulator_before_it_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    environment = {"INGEST_DLQ_BASE_PATH": tmp_path / "dlq", "INGEST_STORAGE_DATA_DIR": tmp_path / "data",
                   "INGEST_CONFIG_FILE": emulator.DEFAULT_CONFIG, "INGEST_STORAGE_BACKEND": "local",
                   "INGEST_NORMALIZERS_ALIASES": '{cisco_asa: "cisco_asa_typo"}'}
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("TELHAWK_LOCAL_EMULATOR", "1")

    assert emulator.main(["--port", "0"]) == 2

    err = capsys.readouterr().err
    assert "emulator: normalizers.aliases.cisco_asa: 'cisco_asa_typo' is not a registered source type" in err


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_the_default_is_one_worker_per_cpu_at_most_four(cpus: int, workers: int) -> None:
    assert emulator.default_workers(set(range(cpus))) == workers


def test_without_workers_given_the_emulator_runs_one_per_usable_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)

    assert emulator.parse_args([]).workers == 3
    assert emulator.parse_args(["--workers", "7"]).workers == 7
