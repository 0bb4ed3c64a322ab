"""template.yaml: lints clean, names real function files, declares each route once (SPEC §10).

The function files are inspected with `ast`, not imported: these checks must not depend on the
service's modules importing cleanly.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from local.emulator import load_template, read_functions

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# Every route SPEC §3 and §8 promise; later functions add theirs to the template and to this list.
EXPECTED_ROUTES = {
    ("POST", "/services/collector"): "ingest_event",
    ("POST", "/services/collector/event"): "ingest_event",
    ("POST", "/services/collector/event/1.0"): "ingest_event",
    ("POST", "/services/collector/raw"): "ingest_event",
    ("POST", "/services/collector/raw/1.0"): "ingest_event",
    ("GET", "/services/collector/health"): "ingest_event",
    ("GET", "/services/collector/health/1.0"): "ingest_event",
    ("POST", "/services/collector/ack"): "ingest_event",
    ("POST", "/services/collector/ack/1.0"): "ingest_event",
    ("GET", "/api/v1/dlq"): "list_dlq",
    ("DELETE", "/api/v1/dlq/purge"): "purge_dlq",
    ("GET", "/api/v1/normalizers"): "list_normalizers",
    ("GET", "/healthz"): "healthz",
    ("POST", "/api/v1/dlq/replay"): "replay_dlq",
    ("GET", "/metrics"): "metrics",
    ("POST", "/triggers/pubsub"): "pubsub_ingest",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def serverless_functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource.get("Properties") or {}
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
    }


def http_routes(template: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, logical id) for every HTTP event, duplicates kept."""
    return [
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"], logical_id)
        for logical_id, props in serverless_functions(template).items()
        for event in (props.get("Events") or {}).values()
        if event.get("Type") in ("HttpApi", "Api")
    ]


def cfn_lint() -> str:
    beside_python = Path(sys.executable).parent / "cfn-lint"
    found = str(beside_python) if beside_python.exists() else shutil.which("cfn-lint")
    if found is None:
        pytest.fail("cfn-lint is not installed (it is in the project's `test` extra)")
    return found


def test_cfn_lint_reports_no_errors_or_warnings() -> None:
    result = subprocess.run(
        [cfn_lint(), "--format", "parseable", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Exit status is a bit mask: 2 errors, 4 warnings, 8 informational; 1 means cfn-lint failed.
    assert result.returncode & 0b111 == 0, result.stdout + result.stderr


def test_it_is_a_sam_template(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert template["Globals"]["Function"]["Runtime"] == "python3.11"
    assert serverless_functions(template)


def test_every_route_is_declared_once(template: dict[str, Any]) -> None:
    counts = Counter((method, path) for method, path, _ in http_routes(template))

    assert [route for route, n in counts.items() if n > 1] == []


def test_every_promised_route_is_declared_by_its_function() -> None:
    declared = {(r.method, r.path): r.function for spec in read_functions(TEMPLATE) for r in spec.routes}

    assert {route: declared.get(route) for route in EXPECTED_ROUTES} == EXPECTED_ROUTES


def test_each_function_file_exists_and_defines_a_target_of_its_stem(template: dict[str, Any]) -> None:
    specs = read_functions(TEMPLATE)
    assert {spec.logical_id for spec in specs} == set(serverless_functions(template))
    for spec in specs:
        # Logical id IngestEvent <-> functions/ingest_event.py <-> target ingest_event.
        assert spec.logical_id == "".join(part.title() for part in spec.target.split("_"))
        assert spec.source == ROOT / "functions" / f"{spec.target}.py"
        tree = ast.parse(spec.source.read_text(), filename=str(spec.source))
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        defined = {node.name for node in tree.body if isinstance(node, functions)}
        assert spec.target in defined, f"{spec.source.name} defines no function {spec.target}"


def test_every_function_mounts_the_dlq_volume_itself(template: dict[str, Any]) -> None:
    # Globals lists are appended to, not replaced, so the mount is declared per function.
    assert "FileSystemConfigs" not in template["Globals"]["Function"]
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["INGEST_DLQ_BASE_PATH"] == "/mnt/dlq"
    for logical_id, props in serverless_functions(template).items():
        mounts = [config["LocalMountPath"] for config in props.get("FileSystemConfigs", [])]
        assert mounts == ["/mnt/dlq"], logical_id


def test_every_function_stores_into_opensearch_and_none_keeps_a_data_dir_on_the_shared_volume(
        template: dict[str, Any]) -> None:
    # The embedded store is a single-host SQLite database: its WAL is not safe on EFS (NFS).
    url = template["Parameters"]["OpenSearchUrl"]
    assert "Default" not in url  # a deployment cannot leave it out
    assert url["AllowedPattern"] == "^https?://.+"
    defaults = template["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id, props in serverless_functions(template).items():
        variables = {**defaults, **((props.get("Environment") or {}).get("Variables") or {})}
        mounts = [config["LocalMountPath"] for config in props.get("FileSystemConfigs", [])]
        assert variables.get("INGEST_STORAGE_BACKEND") == "opensearch", logical_id
        assert variables.get("INGEST_OPENSEARCH_URL") == {"Ref": "OpenSearchUrl"}, logical_id
        data_dir = variables.get("INGEST_STORAGE_DATA_DIR")
        assert data_dir is None or not any(str(data_dir).startswith(m) for m in mounts), logical_id


# -- the deployment surface: which API, which secrets ------------------------------------------------

HEC_PATH_PREFIX = "/services/collector"
OPERATOR_FUNCTIONS = {"ListDlq", "PurgeDlq", "Healthz", "DlqEntry", "DlqRetention", "Metrics",
                      "ListNormalizers", "ReplayDlq"}
# Operator-API paths outside /api/ (monitoring endpoints).
OPERATOR_PATHS = {"/healthz", "/metrics"}
# Pub/Sub push subscriptions post to their own API, which takes only Google-signed OIDC tokens.
PUSH_PATH = "/triggers/pubsub"


def events(props: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (props.get("Events") or {}).values() if e.get("Type") in ("HttpApi", "Api")]


def test_operator_routes_are_on_a_private_api_behind_the_execute_api_endpoint(template: dict[str, Any]
                                                                              ) -> None:
    api = template["Resources"]["OperatorApi"]
    assert api["Type"] == "AWS::Serverless::Api"
    endpoint = api["Properties"]["EndpointConfiguration"]
    only_through = [{"Ref": "ExecuteApiEndpoint"}]
    assert endpoint["Type"] == "PRIVATE" and endpoint["VPCEndpointIds"] == only_through
    assert api["Properties"]["Auth"]["ResourcePolicy"]["IntrinsicVpceWhitelist"] == only_through
    vpce = template["Resources"]["ExecuteApiEndpoint"]["Properties"]
    assert vpce["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.execute-api"}
    for logical_id, props in serverless_functions(template).items():
        for event in events(props):
            path = event["Properties"]["Path"]
            if path.startswith("/api/") or path in OPERATOR_PATHS:
                assert logical_id in OPERATOR_FUNCTIONS
                assert event["Type"] == "Api" and event["Properties"]["RestApiId"] == {"Ref": "OperatorApi"}
            elif path == PUSH_PATH:
                assert event["Type"] == "HttpApi" and event["Properties"]["ApiId"] == {"Ref": "PubsubPushApi"}
            else:
                assert path.startswith(HEC_PATH_PREFIX)
                assert event["Type"] == "HttpApi" and event["Properties"]["ApiId"] == {"Ref": "HecApi"}


def test_both_apis_are_throttled(template: dict[str, Any]) -> None:
    hec = template["Resources"]["HecApi"]["Properties"]["DefaultRouteSettings"]
    assert hec == {"ThrottlingRateLimit": {"Ref": "HecThrottlingRateLimit"},
                   "ThrottlingBurstLimit": {"Ref": "HecThrottlingBurstLimit"}}
    [operator] = template["Resources"]["OperatorApi"]["Properties"]["MethodSettings"]
    assert operator["ThrottlingRateLimit"] == {"Ref": "OperatorThrottlingRateLimit"}
    for name in ("HecThrottlingRateLimit", "HecThrottlingBurstLimit", "OperatorThrottlingRateLimit"):
        assert int(template["Parameters"][name]["Default"]) > 0


def secret_variables(props: dict[str, Any]) -> dict[str, str]:
    """INGEST_*_SECRET variable -> the secret parameter it names."""
    variables = (props.get("Environment") or {}).get("Variables") or {}
    out = {}
    for name, value in variables.items():
        if name.endswith("_SECRET"):
            chosen = value["Fn::If"][1]
            out[name] = chosen["Ref"] if "Ref" in chosen else chosen["Fn::Sub"].split("}")[0][2:]
    return out


def test_each_function_gets_only_the_secrets_it_needs_and_may_read_only_those(template: dict[str, Any]
                                                                              ) -> None:
    storage = {"INGEST_CORE_USERNAME_SECRET", "INGEST_CORE_PASSWORD_SECRET"}
    wanted = {
        "IngestEvent": {"INGEST_HEC_TOKENS_SECRET", *storage},
        "ListDlq": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET"},
        "PurgeDlq": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET"},
        "DlqEntry": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET"},
        "DlqRetention": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET"},
        "ListNormalizers": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET"},
        "Healthz": storage,
        # Replay stores events: operator tokens to be called, storage credentials to store.
        "ReplayDlq": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET", *storage},
        # Operator tokens for operator.metrics_require_auth; storage's for its health gauge.
        "Metrics": {"INGEST_OPERATOR_TOKENS_SECRET", "INGEST_HEC_TOKENS_SECRET", *storage},
        "PubsubIngest": storage,
        "SqsIngest": storage,
        "KinesisIngest": storage,
        "ScheduledRetention": storage,
        "ScheduledReplay": storage,
    }
    for logical_id, props in serverless_functions(template).items():
        secrets = secret_variables(props)
        assert set(secrets) == wanted[logical_id], logical_id
        readable = {p["Fn::If"][1]["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]
                    for p in props["Policies"] if isinstance(p, dict) and "Fn::If" in p}
        assert readable == set(secrets.values()), logical_id
        assert props["Layers"] == [{"Ref": "SecretsExtensionLayerArn"}], logical_id
    assert template["Resources"]["SecretsManagerEndpoint"]["Properties"]["ServiceName"] == {
        "Fn::Sub": "com.amazonaws.${AWS::Region}.secretsmanager"}


def test_no_credential_is_a_parameter_or_a_plain_environment_value(template: dict[str, Any]) -> None:
    for name in template["Parameters"]:
        assert not name.endswith(("Tokens", "Password")), name
    variables = [template["Globals"]["Function"]["Environment"]["Variables"]] + [
        (props.get("Environment") or {}).get("Variables") or {}
        for props in serverless_functions(template).values()]
    for mapping in variables:
        for name in mapping:
            plain_credential = any(word in name for word in ("TOKEN", "PASSWORD", "USERNAME"))
            assert name.endswith("_SECRET") or not plain_credential, name


# -- event-driven invocation (SPEC §12) ----------------------------------------------------------


def test_the_queue_reports_partial_batch_failures_and_redrives_to_its_dead_letter_queue(
        template: dict[str, Any]) -> None:
    resources = template["Resources"]
    [queue_event] = resources["SqsIngest"]["Properties"]["Events"].values()
    assert queue_event["Type"] == "SQS"
    assert queue_event["Properties"]["Queue"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert queue_event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resources["IngestQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["IngestQueueDeadLetters", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1
    # AWS's advice: a visibility timeout of at least six times the function's timeout.
    assert queue["VisibilityTimeout"] >= 6 * template["Globals"]["Function"]["Timeout"]


def test_the_stream_is_optional_and_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    function = template["Resources"]["KinesisIngest"]
    assert function["Condition"] == "HasKinesisStream"
    [stream_event] = function["Properties"]["Events"].values()
    assert stream_event["Type"] == "Kinesis"
    assert stream_event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # What Lambda gives up on after its retries is recorded, never dropped silently.
    on_failure = stream_event["Properties"]["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["KinesisFailures", "Arn"]}}


def test_retention_and_replay_are_scheduled_and_replay_is_optional(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for logical_id, expression in (("ScheduledRetention", "RetentionScheduleExpression"),
                                   ("ScheduledReplay", "ReplayScheduleExpression")):
        [event] = resources[logical_id]["Properties"]["Events"].values()
        assert event["Type"] == "Schedule"
        assert event["Properties"]["Schedule"] == {"Ref": expression}
    assert template["Parameters"]["RetentionScheduleExpression"]["Default"].startswith("rate(")
    assert resources["ScheduledReplay"]["Condition"] == "HasReplaySchedule"


def test_the_push_route_takes_only_google_signed_tokens(template: dict[str, Any]) -> None:
    api = template["Resources"]["PubsubPushApi"]["Properties"]
    authorizer = api["Auth"]["Authorizers"][api["Auth"]["DefaultAuthorizer"]]
    assert authorizer["JwtConfiguration"]["issuer"] == "https://accounts.google.com"
    assert authorizer["JwtConfiguration"]["audience"] == [{"Ref": "PubsubPushAudience"}]
