"""The local emulator: every function in template.yaml, served on one port (SPEC §10).

Here: reading the SAM template (CloudFormation tags included), the route table, a small ASGI
dispatcher that hands each request to the functions-framework ASGI app of the function that owns
the route, the local settings overrides (DLQ and data under `var/`, `local` storage, the dev
config file), and the command line. How it serves (gunicorn, uvicorn workers, limits, the SIGTERM
drain): local/serving.py.

Not here: API Gateway features beyond routing (authorizers, CORS, throttling, payload limits, the
operator API being private: every route of every API in the template is served on the one port),
the template's own environment (its /mnt paths exist only on Lambda), and the Lambda adapters (the
emulator ignores the Handler's attribute and serves the functions-framework target whose name is the
Handler module's file stem).

Routing rules:
- a route's path is literal segments and `{name}` segments (one segment each), optionally ending
  in a greedy `{name+}` (the rest of the path, empty segments included, but not nothing); matching
  is exact, a trailing slash included; paths are matched decoded (`%2F` is a `/`, as on API
  Gateway);
- when several routes match, the most specific wins: segment by segment, literal beats `{name}`
  beats `{name+}` (so `/api/v1/dlq/purge` wins over `/api/v1/dlq/{id}`);
- among routes of that path, the one declaring the request's method (or ANY) is chosen; when none
  does, the request still goes to that path's function, which answers the wrong method itself
  (a HEC-shaped 405), as an HTTP function receives every method;
- the function sees the original path (`request.url.path`), the path parameters in
  `request.scope["telhawk.path_params"]` and the matched route in `request.scope["telhawk.route"]`;
- no route matches: 404 with a HEC-shaped JSON body; never a redirect.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from starlette.responses import Response

from local.triggers import LocalTriggers, Trigger, read_triggers
from telhawk_ingest import emulator_env
from telhawk_ingest.credentials import PUBLIC_TOKENS, redact_url
from telhawk_ingest.errors import HecError
from telhawk_ingest.files import private_dir

if TYPE_CHECKING:
    from telhawk_ingest.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config.yaml"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
# Worker processes when not told: one per CPU this process may run on, at most MAX_DEFAULT_WORKERS.
# More processes than cores cost CPU for nothing: each has its own event loop, its own SQLite
# writer and checkpointer, and they contend for the one write lock of the embedded store (README,
# "The number of workers").
MAX_DEFAULT_WORKERS = 4

PATH_PARAMS_KEY = "telhawk.path_params"
ROUTE_KEY = "telhawk.route"
FUNCTION_KEY = "telhawk.function"

NOT_FOUND_BODY = json.dumps({"text": "The requested URL was not found on this server.", "code": 404}).encode()

# Event types that declare an HTTP route; other event sources (queues, schedules) are not served.
_HTTP_EVENT_TYPES = frozenset({"HttpApi", "Api"})
_ANY = "ANY"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


class TemplateError(ValueError):
    """template.yaml cannot be served: the message names the resource and what was expected."""


# --- template --------------------------------------------------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that also reads CloudFormation short-form tags (!Ref, !Sub, !GetAtt...).

    Tags become their long form (`{"Ref": x}`, `{"Fn::Sub": x}`), as CloudFormation reads them;
    `yaml.safe_load` refuses them outright.
    """


def _construct_cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        # !GetAtt Resource.Attribute is the one tag whose scalar form is a list in long form.
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_template(path: Path) -> dict[str, Any]:
    """Parse a SAM/CloudFormation template; errors name the file."""
    try:
        data = yaml.load(path.read_text(), Loader=CloudFormationLoader)  # a SafeLoader subclass
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: expected a template with a Resources mapping")
    return data


@dataclass(frozen=True)
class Route:
    """One (method, path template) pair owned by a function."""

    method: str
    path: str
    function: str
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)
    rank: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise TemplateError(f"{self.function}: route path {self.path!r} must start with '/'")
        segments = tuple(self.path.split("/")[1:])
        rank = []
        for i, segment in enumerate(segments):
            if _is_param(segment):
                greedy = segment.endswith("+}")
                if greedy and i != len(segments) - 1:
                    raise TemplateError(f"{self.function}: greedy {segment} must be the last segment")
                rank.append(2 if greedy else 1)
            elif "{" in segment or "}" in segment:
                raise TemplateError(
                    f"{self.function}: route path {self.path!r}: a parameter must be a whole segment"
                )
            else:
                rank.append(0)
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "rank", tuple(rank))

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters when `path` matches this route's path, else None."""
        parts = path.split("/")[1:]
        params: dict[str, str] = {}
        for i, segment in enumerate(self.segments):
            if self.rank[i] == 2:
                # Empty segments included: `%2Fetc` arrives decoded as `/etc`, and the function,
                # not the router, must refuse it (SPEC §11: 400, never the router's 404).
                rest = "/".join(parts[i:])
                if not rest:
                    return None
                params[segment[1:-2]] = rest
                return params
            if i >= len(parts):
                return None
            if self.rank[i] == 1:
                if not parts[i]:
                    return None
                params[segment[1:-1]] = parts[i]
            elif segment != parts[i]:
                return None
        return params if len(parts) == len(self.segments) else None

    def accepts(self, method: str) -> bool:
        # HEAD is answered by the GET route, as Flask and API Gateway do.
        return self.method in (_ANY, method) or (method == "HEAD" and self.method == "GET")


def _is_param(segment: str) -> bool:
    return len(segment) > 2 and segment.startswith("{") and segment.endswith("}")


@dataclass(frozen=True)
class FunctionSpec:
    """A function to serve: functions-framework target name, its source file, its routes."""

    logical_id: str
    target: str
    source: Path
    routes: tuple[Route, ...]
    # Queues, streams and schedules (local/triggers.py), delivered to the Lambda handler.
    triggers: tuple[Trigger, ...] = ()


def _function_source(template_dir: Path, logical_id: str, props: Mapping[str, Any]) -> tuple[str, Path]:
    """(target, source file) from CodeUri and the Handler's module path.

    `functions/ingest_event.handler` (or `functions.ingest_event.handler`) names the module
    functions/ingest_event.py; its stem is the functions-framework target.
    """
    handler = props.get("Handler")
    code_uri = props.get("CodeUri", ".")
    if not isinstance(handler, str) or "." not in handler:
        raise TemplateError(f"{logical_id}: Handler must be a string like functions/<name>.handler")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local folder to be served locally")
    module = handler.rsplit(".", 1)[0].replace(".", "/")
    source = (template_dir / code_uri / f"{module}.py").resolve()
    return Path(module).name, source


def read_functions(template_path: Path) -> list[FunctionSpec]:
    """Every AWS::Serverless::Function with HTTP events or triggers (SQS, Kinesis, Schedule), in
    template order. Conditions are ignored: locally every function is served.

    Raises TemplateError on a malformed route, a missing source file, or a (method, path) pair
    declared twice (API Gateway refuses that too).
    """
    template = load_template(template_path)
    globals_ = template.get("Globals") or {}
    function_defaults = (globals_.get("Function") or {}) if isinstance(globals_, dict) else {}
    seen: dict[tuple[str, str], str] = {}
    specs = []
    for logical_id, resource in template["Resources"].items():
        if not isinstance(resource, dict) or resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**function_defaults, **(resource.get("Properties") or {})}
        target, source = _function_source(template_path.parent, logical_id, props)
        routes = []
        for event_id, event in (props.get("Events") or {}).items():
            if not isinstance(event, dict) or event.get("Type") not in _HTTP_EVENT_TYPES:
                continue
            event_props = event.get("Properties") or {}
            path, method = event_props.get("Path"), event_props.get("Method")
            if not isinstance(path, str) or not isinstance(method, str):
                raise TemplateError(f"{logical_id}.Events.{event_id}: Path and Method must be plain strings")
            method = method.upper()
            if method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
                method = _ANY
            key = (method, path)
            if key in seen:
                raise TemplateError(f"{logical_id}: route {method} {path} is already declared by {seen[key]}")
            seen[key] = logical_id
            routes.append(Route(method, path, target))
        triggers = read_triggers(template, logical_id, props, source)
        if not routes and not triggers:
            continue
        if not source.is_file():
            raise TemplateError(f"{logical_id}: source file {source} does not exist")
        specs.append(FunctionSpec(logical_id, target, source, tuple(routes), tuple(triggers)))
    targets = [spec.target for spec in specs]
    duplicated = sorted({t for t in targets if targets.count(t) > 1})
    if duplicated:
        # functions-framework registers each module in sys.modules under its file stem.
        raise TemplateError(f"several functions share the file stem {', '.join(duplicated)}")
    return specs


# --- dispatch --------------------------------------------------------------------------------


class RouteTable:
    """Finds the route for a request path and method (rules in the module docstring)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, path: str, method: str) -> tuple[Route, dict[str, str]] | None:
        found = [(route, params) for route in self.routes if (params := route.match(path)) is not None]
        if not found:
            return None
        best_rank = min(route.rank for route, _ in found)
        # Several paths of the same shape can only differ by parameter names: the first declared wins.
        best_path = next(route.path for route, _ in found if route.rank == best_rank)
        candidates = [(route, params) for route, params in found if route.path == best_path]
        for route, params in candidates:
            if route.accepts(method):
                return route, params
        return candidates[0]


class Dispatcher:
    """ASGI app: sends each request to the app of the function owning the matched route.

    Unlike a mount-based router it never redirects (werkzeug's DispatcherMiddleware answers a POST
    to a bare mount point with a 308, which HEC clients do not follow) and leaves the path
    untouched, so a function sees `/services/collector/event/1.0`, not a path relative to a mount
    point. It also counts the requests in flight: past `max_in_flight`, and once `draining` is
    set (local/serving.py), a request is answered 503 with HEC code 9, `Retry-After` and
    `Connection: close` without reaching a function. ASGI lifespan: `on_startup` runs in a worker
    thread before the first request, `on_shutdown` after the last one.
    """

    def __init__(self, routes: Iterable[Route], apps: Mapping[str, AsgiApp], *,
                 max_in_flight: int | None = None, on_startup: Callable[[], None] | None = None,
                 on_shutdown: Callable[[], None] | None = None, local: LocalTriggers | None = None) -> None:
        self.table = RouteTable(routes)
        self.local = local
        self.apps = dict(apps)
        missing = {route.function for route in self.table.routes} - self.apps.keys()
        if missing:
            raise TemplateError(f"no app loaded for {', '.join(sorted(missing))}")
        self.max_in_flight = max_in_flight
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.in_flight = 0
        self.draining = False
        # Route lookups by (method, path): a few paths carry nearly all requests.
        self._matches: dict[tuple[str, str], tuple[Route, dict[str, str]] | None] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None  # websockets: the functions serve none
        path = scope.get("path") or "/"
        if self.local is not None and self.local.owns(path):
            if self.draining:
                return await _SHUTTING_DOWN(scope, receive, send)
            return await self.local(scope, receive, send)
        found = self._match(scope["method"], path)
        if found is None:
            return await _NOT_FOUND(scope, receive, send)
        if self.draining:
            return await _SHUTTING_DOWN(scope, receive, send)
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            return await _BUSY(scope, receive, send)
        route, params = found
        scope["path"] = path
        scope[PATH_PARAMS_KEY] = params
        scope[ROUTE_KEY] = f"{route.method} {route.path}"
        scope[FUNCTION_KEY] = route.function
        self.in_flight += 1
        try:
            await self.apps[route.function](scope, receive, send)
        finally:
            self.in_flight -= 1

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        key = (method, path)
        try:
            return self._matches[key]
        except KeyError:
            found = self.table.match(path, method.upper())
            if len(self._matches) < _MATCH_CACHE_SIZE:
                self._matches[key] = found
            return found

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.on_startup is not None:
                    await asyncio.to_thread(self.on_startup)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown is not None:
                    self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


_MATCH_CACHE_SIZE = 4096


def _json_answer(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    """A prebuilt JSON response (a Starlette Response is an ASGI app and can be sent many times)."""
    return Response(json.dumps(body).encode(), status, dict(headers or {}), media_type="application/json")


def _busy(detail: str) -> Response:
    err = HecError(9, detail=detail)
    return _json_answer(err.status, err.body(), {"Retry-After": str(err.retry_after), "Connection": "close"})


_NOT_FOUND = _json_answer(404, json.loads(NOT_FOUND_BODY))
_BUSY = _busy("too many requests in flight in this worker; try again")
_SHUTTING_DOWN = _busy("the server is shutting down; try again")


def load_function_app(spec: FunctionSpec) -> AsgiApp:
    """The functions-framework ASGI app of one function, exactly as `functions-framework --asgi`
    builds it."""
    # Imported here: functions_framework imports Starlette and the whole framework, which the
    # CLI's --help and the template checks do not need.
    from functions_framework import _function_registry
    from functions_framework.aio import create_asgi_app

    from telhawk_ingest.triggers import push_adapter

    app = create_asgi_app(target=spec.target, source=str(spec.source), signature_type="http")
    if _function_registry.REGISTRY_MAP.get(spec.target) == _function_registry.CLOUDEVENT_SIGNATURE_TYPE:
        # functions-framework's ASGI path reads CloudEvents only: Pub/Sub push bodies are converted.
        app = push_adapter(app)
    return app


def build_dispatcher(specs: Iterable[FunctionSpec], max_in_flight: int | None = None) -> Dispatcher:
    """Load every HTTP function (executing its module once) and put them behind one dispatcher with
    the local trigger endpoints (local/triggers.py), which warms the service up and starts the
    schedules' timers at start-up, then freezes what start-up built out of the garbage collector's
    full passes (heap.py), and writes the counters out at shutdown."""
    from telhawk_ingest.config import load_settings
    from telhawk_ingest.heap import freeze_startup
    from telhawk_ingest.http import warm_up
    from telhawk_ingest.logs import configure
    from telhawk_ingest.service import service
    from telhawk_ingest.stats import retire_all

    log_settings = load_settings().log
    configure(log_settings.level, log_settings.format)
    specs = list(specs)
    apps = {spec.target: load_function_app(spec) for spec in specs if spec.routes}
    local = LocalTriggers([trigger for spec in specs for trigger in spec.triggers])

    def start() -> None:
        warm_up()
        local.start_timers(service().settings.state_path / "local-schedules.lock")
        freeze_startup()  # heap.py: full collections no longer walk what start-up built

    def stop() -> None:
        local.stop_timers()
        retire_all()

    return Dispatcher([route for spec in specs for route in spec.routes], apps, max_in_flight=max_in_flight,
                      on_startup=start, on_shutdown=stop, local=local)


# --- local settings --------------------------------------------------------------------------

MAX_IN_FLIGHT_VAR = "INGEST_HEC_MAX_IN_FLIGHT"


def local_overrides(environ: Mapping[str, str], root: Path = REPO_ROOT) -> dict[str, str]:
    """Environment variables the emulator sets, leaving alone whatever the caller already set:
    the DLQ and data under `<root>/var`, local/config.yaml, `local` storage
    (telhawk_ingest.emulator_env, shared with `telhawk-dlq --dlq-dir <root>/var/dlq`)."""
    return emulator_env.local_overrides(environ, root, DEFAULT_CONFIG)


def apply_local_overrides(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the local overrides in `environ` (default os.environ); returns what was set. Also marks
    the process (and its workers) as the emulator's, where local/config.yaml's public tokens are
    accepted (telhawk_ingest.credentials)."""
    from telhawk_ingest.credentials import EMULATOR_ENV

    environ = os.environ if environ is None else environ
    overrides = local_overrides(environ)
    environ.update(overrides)
    environ[EMULATOR_ENV] = "1"
    return overrides


# --- start-up banner -------------------------------------------------------------------------


def banner(url: str, template: Path, specs: Iterable[FunctionSpec], settings: Any, config_file: str) -> str:
    """What a developer needs on start: where it listens, the routes, where data goes, tokens."""
    routes = sorted((route for spec in specs for route in spec.routes), key=lambda r: (r.path, r.method))
    width = max((len(route.path) for route in routes), default=0)
    lines = [f"TelHawk ingest emulator listening on {url}", f"routes (from {template}):"]
    lines += [f"  {route.method:<6} {route.path:<{width}}  -> {route.function}" for route in routes]
    dlq = settings.dlq
    lines.append(f"DLQ:      {dlq.base_path} ({'enabled' if dlq.enabled else 'DISABLED'})")
    if settings.storage_backend == "opensearch":
        lines.append(f"storage:  opensearch at {redact_url(settings.core.url or '')}")
    else:
        lines.append(f"storage:  local, data in {settings.storage.data_dir}")
    lines.append(f"config:   {config_file or '(none: environment and defaults only)'}")
    triggers = [trigger for spec in specs for trigger in spec.triggers]
    if triggers:
        lines.append("triggers (local endpoints; POST):")
        for trigger in triggers:
            what = f"{trigger.kind} {trigger.source}".strip()
            if trigger.kind == "schedule":
                what += ", fires on its rate" if trigger.rate_seconds else ", on demand only"
            lines.append(f"  {url}{trigger.endpoint}  -> {trigger.logical_id} ({what})")
        lines.append(f"  {url}/2015-03-31/functions/<function>/invocations  -> a Lambda event as is")
        spool = Path(settings.dlq.base_path).parent / "queues"
        lines.append(f"  spool folders: {spool}/<queue or stream>/incoming/*.json, delivered within a second")
        message = {"body": "Nov  4 01:02:03 web01 sshd[1234]: Accepted password for alice from 10.0.0.5",
                   "attributes": {"sourcetype": "linux_secure"}}
        lines.append(f"  curl -s {url}/_local/queues/<queue> -H 'Content-Type: application/json' "
                     f"-d {shlex.quote(json.dumps({'messages': [message]}))}")
    if any(route.path == "/triggers/pubsub" for spec in specs for route in spec.routes):
        push = {"message": {"data": "aGVsbG8gZnJvbSBwdWIvc3Vi", "messageId": "1",
                            "publishTime": "2026-01-01T00:00:00Z"},
                "subscription": "projects/local/subscriptions/local-logs"}
        lines.append("Pub/Sub push (or a CloudEvent, binary or structured) to POST /triggers/pubsub:")
        lines.append(f"  curl -s {url}/triggers/pubsub -H 'Content-Type: application/json' "
                     f"-d {shlex.quote(json.dumps(push))}")
    hec = settings.hec.tokens[0] if settings.hec.tokens else None
    operator = settings.operator.tokens[0] if settings.operator.tokens else None
    if hec:
        shown, auth = _token_for_banner(hec.token, "Splunk", "$HEC_TOKEN")
        lines.append(f"HEC token:      {shown}  ({hec.name})")
        body = shlex.quote(json.dumps({"event": "hello from the emulator", "sourcetype": "demo"}))
        lines.append(f"  curl -s {url}/services/collector/event -H {auth} -d {body}")
    else:
        lines.append("HEC token:      none configured (hec.tokens in the config file, or INGEST_HEC_TOKENS)")
    if operator:
        shown, auth = _token_for_banner(operator.token, "Bearer", "$OPERATOR_TOKEN")
        lines.append(f"operator token: {shown}  ({operator.name})")
        lines.append(f"  curl -s {url}/api/v1/dlq -H {auth}")
    else:
        lines.append("operator token: none configured (operator.tokens, or INGEST_OPERATOR_TOKENS)")
    lines.append("Ctrl-C or SIGTERM stops it after in-flight requests finish (new ones get 503 code 9).")
    return "\n".join(lines)


def _token_for_banner(token: str, scheme: str, placeholder: str) -> tuple[str, str]:
    """(what to print for the token, the quoted curl header): only local/config.yaml's public
    tokens are printed; any other is a secret, shown as a shell variable to set."""
    if token in PUBLIC_TOKENS:
        return token, shlex.quote(f"Authorization: {scheme} {token}")
    return "(yours: not shown)", f'"Authorization: {scheme} {placeholder}"'


# --- serving ---------------------------------------------------------------------------------


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local",
        description="Serve every function of template.yaml on one port, with local settings.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template to serve")
    parser.add_argument("--workers", type=_positive, default=default_workers(),
                        help="processes (default: one per CPU, at most 4; here %(default)s)")
    parser.add_argument(
        "--threads", type=_positive, default=16,
        help="threads per process for blocking service calls: storage, DLQ, fsync (default %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=_positive, default=60, help="seconds before a stuck worker is restarted"
    )
    parser.add_argument(
        "--graceful-timeout", type=_positive, default=15,
        help="seconds a stopping worker gives requests in flight (default %(default)s)",
    )
    parser.add_argument(
        "--keep-alive", type=_positive, default=5,
        help="seconds an idle connection stays open, and for a request head to arrive (default %(default)s)",
    )
    parser.add_argument(
        "--max-in-flight", type=_positive, default=None,
        help="ingest requests at once per worker; more are answered 503 code 9 at once "
             "(sets hec.max_in_flight, default 256)",
    )
    parser.add_argument("--access-log", action="store_true",
                        help="log every request to stdout (query-string tokens shown as ***)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error", "critical"]
    )
    return parser.parse_args(argv)


def make_state_folder(settings: Settings) -> None:
    """Make the service's state folder (counters, audit, schedules' lock), which lives in the DLQ
    folder (`Settings.state_path`), before any worker starts. Made by a worker's first count
    instead, it changed the DLQ folder just after every worker had listed it at start-up
    (http.warm_up), and each worker's first health call listed every entry again: 0.4 - 0.9 s
    with 100,000 of them. A folder that cannot be made is left to the workers to report."""
    try:
        private_dir(settings.state_path)
    except OSError:
        pass


def default_workers(cpus: set[int] | None = None) -> int:
    """Worker processes when `--workers` is not given: the number of CPUs in `cpus` (default: those
    this process may run on, `os.sched_getaffinity`; `os.cpu_count` where there is no such call),
    between 1 and MAX_DEFAULT_WORKERS."""
    if cpus is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    else:
        usable = len(cpus)
    return max(1, min(MAX_DEFAULT_WORKERS, usable))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    template = args.template.resolve()
    try:
        specs = read_functions(template)
    except TemplateError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    apply_local_overrides()
    if args.max_in_flight is not None:
        # The service's own limit (telhawk_ingest.shedding), read by every worker's settings.
        os.environ[MAX_IN_FLIGHT_VAR] = str(args.max_in_flight)

    from telhawk_ingest.config import load_settings
    from telhawk_ingest.errors import ConfigError
    from telhawk_ingest.normalizers.loading import load_registry
    from telhawk_ingest.storage import make_backend

    try:
        # Validated here too, so a bad setting stops start-up with one clear message instead of
        # every worker failing to boot; so is where storage may live (`local` refuses NFS), and
        # whether every normalizers.aliases target is registered.
        settings = load_settings()
        make_backend(settings).close()
        load_registry(settings.normalizers)
    except ConfigError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    make_state_folder(settings)

    def on_ready(url: str) -> None:
        text = banner(url, template, specs, settings, os.environ.get("INGEST_CONFIG_FILE", ""))
        print(text, flush=True)

    from local.serving import ServeOptions, run

    options = ServeOptions(
        bind=_bind_address(args.host, args.port),
        workers=args.workers,
        threads=args.threads,
        timeout=args.timeout,
        graceful_timeout=args.graceful_timeout,
        keep_alive=args.keep_alive,
        max_in_flight=settings.hec.max_in_flight,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    run(options, lambda: build_dispatcher(specs), on_ready)
    return 0
