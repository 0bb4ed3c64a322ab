"""The one place where HTTP meets the service: Starlette requests in, JSON responses out (ASGI).

Handlers in `functions/` call these adapters and nothing else. Errors become answers here: HEC
errors as `{"text", "code"}` with Splunk's statuses, operator errors as `{"error", "status"}`, and
anything unexpected as a logged 500 in the caller's shape, never a stack trace.

How a request is served (README, "Serving"):

- The event loop never waits on a disk or a network: every service call that may (fsync,
  storage, DLQ writes and listings, the remote auth service) runs in a worker thread, the event
  loop's default executor (`asyncio.to_thread`: a third cheaper per call than anyio's thread
  pool, and sized by the server, local/serving.py). Concurrent requests of one process meet
  there, in the storage backends' group commit.
- One thread hop for a small ingest request (`_ingest_inline`): up to INLINE_MAX_BODY_BYTES of
  uncompressed body, the CPU-only part (parsing, normalizing, validating) runs on the loop, the
  local store's writer thread commits the events and wakes the loop, and the loop answers when
  everything was stored. A worker thread takes over only what may block: retries, DLQ writes,
  a backend without a non-blocking hand-over (OpenSearch).
- A HEC request is judged on its method, path, headers and query string before its body is read
  (SPEC §3: authentication comes first). A refused credential or a declared Content-Length over
  `hec.max_body_bytes` is answered without reading a body byte, so a client that sent
  `Expect: 100-continue` gets its 401/403/413 and never `100 Continue` (uvicorn sends it only
  when the application first asks for the body).
- The body must arrive whole within `hec.body_read_timeout_seconds` of the headers; a client
  that sends it slower is answered 408 with HEC code 6 and cut. Reading the body holds no
  thread, so slow clients cost memory, not service.
- An answer sent before the whole body was read carries `Connection: close`: the rest of the
  body would otherwise have to be read and thrown away before the next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from . import metrics
from .bodies import BodyTooLarge, receive_body
from .config import HecToken
from .errors import ApiError, HecError
from .hec import HecRequest, endpoint_kind
from .service import INGEST_KINDS, Operator, Query, Reply, Service, Staged, parse_query, service
from .storage.base import Outcome

log = logging.getLogger(__name__)

JSON = "application/json"
# Bodies up to this size, not compressed, are parsed, normalized and validated on the event loop
# and stored with one thread hop (`_ingest_inline`; about a millisecond of CPU for 64 KiB of OCSF
# events); larger or compressed ones go to a worker thread whole, so no request holds the loop for
# long. The hop costs about 150 us of CPU per request: a quarter of a single event's, 1 - 2 % of
# a 100-event batch's.
INLINE_MAX_BODY_BYTES = 64 * 1024
# The answer to a request cut short by the server's shutdown (its task cancelled past the drain):
# nothing of it is acknowledged, and the client is told to send it again.
SHUTTING_DOWN = Reply.hec(HecError(9, detail="the server is shutting down; try again"))


def warm_up() -> None:
    """Build this process's Service and fill its caches before the first request (a server calls
    it at start-up, in a worker thread): a worker's first health call otherwise pays a scan of the
    DLQ folder. Failures are logged, not raised; the requests then report them."""
    try:
        service().healthz()
    except Exception:
        log.exception("warming up the service failed; requests will report the cause")


def respond(reply: Reply, *, close: bool = False) -> Response:
    headers = {**reply.headers, "Connection": "close"} if close else reply.headers
    return Response(orjson.dumps(reply.body), status_code=reply.status, headers=headers, media_type=JSON)


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """Every (name, value) of the query string in order, repeats included."""
    raw = request.scope.get("query_string", b"")
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True) if raw else []


def query_params(request: Request) -> dict[str, str]:
    """The query string, first value of each name (as Flask's `request.args` gave it)."""
    params: dict[str, str] = {}
    for name, value in query_pairs(request):
        params.setdefault(name, value)
    return params


def hec_request(request: Request) -> HecRequest:
    """The request without its body: what the header phase needs."""
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in request.scope["headers"]}
    return HecRequest(method=request.method, path=request.scope["path"], headers=headers,
                      query=query_params(request))


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body, whatever the Content-Type; at most `limit` bytes, within `timeout` seconds.

    Raises HecError: 413 (code 6) when the declared or received size passes `limit` (nothing
    more is read), 408 (code 6) when the body is not whole within `timeout`, 400 (code 6) when the
    client disconnects first.
    """
    try:
        async with asyncio.timeout(timeout):
            return await receive_body(request.receive, limit, request.scope["headers"])
    except BodyTooLarge as exc:
        detail = (f"the body is larger than the maximum of {limit} bytes" if exc.declared is None
                  else f"Content-Length of {exc.declared} too large (maximum is {limit})")
        raise HecError(6, status=413, detail=detail) from None
    except TimeoutError:
        raise HecError(6, status=408, detail=f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise HecError(6, detail="the client disconnected before sending the whole body") from None


def _announces_body(request: Request) -> bool:
    headers = request.headers
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


@metrics.timed
async def handle_hec(request: Request, get_service: Callable[[], Service] = service) -> Response:
    """A HEC request answered by `get_service()` (the process's Service; a benchmark passes another).

    An ingest request (POST to the event or raw endpoint) first takes a place among the process's
    `hec.max_in_flight` (shedding.py); without one it is answered 503 code 9 at once, before
    authentication and before its body is read.
    """
    svc: Service | None = None
    entered = False
    try:
        svc = get_service()
        head = hec_request(request)
        if head.method == "POST" and endpoint_kind(head.path) in INGEST_KINDS:
            if not svc.in_flight.enter():
                return respond(svc.hec_shed(head.path), close=_announces_body(request))
            entered = True
        admitted = await _admit(svc, head)
        if isinstance(admitted, Reply):
            return respond(admitted, close=_announces_body(request))
        if admitted is None:  # health, or a wrong method: answered without a body either way
            return respond(await asyncio.to_thread(svc.hec, head), close=_announces_body(request))
        hec = svc.settings.hec
        try:
            body = await read_body(request, hec.max_body_bytes, hec.body_read_timeout_seconds)
        except HecError as err:
            return respond(svc.hec_refuse(err), close=True)
        req = HecRequest(head.method, head.path, head.headers, head.query, body)
        if _inline(req):
            return respond(await _ingest_inline(svc, req, admitted))
        return respond(await asyncio.to_thread(svc.hec, req, admitted))
    except asyncio.CancelledError:
        return respond(SHUTTING_DOWN, close=True)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.scope.get("path"))
        return respond(Reply.hec(HecError(8)), close=True)
    finally:
        if entered and svc is not None:
            svc.in_flight.leave()


def _inline(req: HecRequest) -> bool:
    """Whether `_ingest_inline` takes the request: an uncompressed body of at most
    INLINE_MAX_BODY_BYTES for the event or raw endpoint."""
    return (len(req.body) <= INLINE_MAX_BODY_BYTES and "content-encoding" not in req.headers
            and endpoint_kind(req.path) in INGEST_KINDS)


async def _ingest_inline(svc: Service, req: HecRequest, token: HecToken) -> Reply:
    """Ingest a small request with one thread hop: parse, normalize and validate on the loop, await
    the storage writer's commit, and answer on the loop when everything was stored. A worker
    thread finishes the request instead when something must be retried or dead-lettered, or when
    the backend cannot take the batch without blocking (OpenSearch)."""
    staged = svc.hec_stage(req, token)
    if isinstance(staged, Reply):
        return staged
    outcomes = await _first_try(svc, staged)
    if outcomes is not None and all(outcome.stored for outcome in outcomes):
        return svc.hec_complete(staged, outcomes)  # nothing to retry or dead-letter: never blocks
    return await asyncio.to_thread(svc.hec_complete, staged, outcomes)


async def _first_try(svc: Service, staged: Staged) -> list[Outcome] | None:
    """The outcomes of the first try at storing `staged`, awaited on the loop (`hec_submit`); None
    when the backend cannot take it without blocking."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[list[Outcome]] = loop.create_future()

    def settle(outcomes: list[Outcome]) -> None:  # on the loop
        if waiter.cancelled():
            svc.hec_abandoned(outcomes)
        else:
            waiter.set_result(outcomes)

    def done(outcomes: list[Outcome]) -> None:  # in the storage writer's thread
        try:
            loop.call_soon_threadsafe(settle, outcomes)
        except RuntimeError:  # the loop is closed: the request was answered 503 long ago
            svc.hec_abandoned(outcomes)

    if not svc.hec_submit(staged, done):
        return None
    return await waiter


async def _admit(svc: Service, head: HecRequest) -> HecToken | Reply | None:
    """`Service.hec_admit` on the loop when it only looks tokens up in memory; in a worker thread
    when it may ask the remote auth service."""
    if svc.settings.hec.auth_url:
        return await asyncio.to_thread(svc.hec_admit, head)
    return svc.hec_admit(head)


def path_param(request: Request, name: str, prefix: str) -> str:
    """Path parameter `name` of the matched route, as the router decoded it (`%2F` is `/` by
    then): the emulator's (`telhawk.path_params`), else API Gateway's (`pathParameters` of the
    Lambda event Mangum passes as `aws.event`), else the path after `prefix` (a function served
    alone). Empty when the path does not start with `prefix`."""
    params = request.scope.get("telhawk.path_params")
    if isinstance(params, dict) and isinstance(params.get(name), str):
        return params[name]
    event = request.scope.get("aws.event")
    given = event.get("pathParameters") if isinstance(event, dict) else None
    if isinstance(given, dict) and isinstance(given.get(name), str):
        return given[name]
    path = request.scope.get("path", "")
    return path[len(prefix):] if path.startswith(prefix) else ""


@metrics.timed
async def handle_operator(
    request: Request, method: str | tuple[str, ...], call: Callable[[Operator, Query], dict[str, Any]]
) -> Response:
    """Check the method (one, or several the call tells apart) and the operator credential, then
    run an operator call with the query's pairs (repeats kept, so the call can refuse them). A
    refusal after authentication (a parameter or body it does not take) is audited under the
    operator's name."""
    sent_body = _announces_body(request)

    def run(who: Operator, query: Query) -> dict[str, Any]:
        _refuse_body(sent_body)
        return call(who, query)

    return await _operator(request, method, run)


@metrics.timed
async def handle_operator_body(
    request: Request, method: str, call: Callable[[Operator, Query, bytes], dict[str, Any]], limit: int
) -> Response:
    """`handle_operator` for a call that takes a request body (a JSON body, which the call
    parses): at most `limit` bytes, arriving whole within `hec.body_read_timeout_seconds`, read
    only once the credential is accepted (refusals are answered without reading it). Too large:
    413; too slow: 408; the client gone: 400; all in the operator shape and audited."""
    authorization = request.headers.get("authorization")
    body: bytes | ApiError = b""
    read = False  # the whole body: the connection can take another request after the answer
    if request.method == method and _announces_body(request):
        svc = service()
        try:
            svc.operator(authorization)
        except ApiError:
            pass  # refused (and audited) by _operator, without reading the body
        else:
            try:
                body = await read_body(request, limit, svc.settings.hec.body_read_timeout_seconds)
                read = True
            except HecError as err:
                body = ApiError(err.status, f"{err.detail or err.text}; nothing was done")

    def run(who: Operator, query: Query) -> dict[str, Any]:
        if isinstance(body, ApiError):
            raise body
        return call(who, query, body)

    return await _operator(request, method, run, body_read=read)


async def _operator(request: Request, method: str | tuple[str, ...],
                    call: Callable[[Operator, Query], dict[str, Any]], body_read: bool = False) -> Response:
    authorization = request.headers.get("authorization")
    query = query_pairs(request)
    where = {"method": request.method, "path": request.scope["path"]}

    def run() -> dict[str, Any]:
        svc = service()
        try:
            who = svc.operator(authorization)
        except ApiError as err:
            # Refused attempts are audited too: they are what an investigation looks for first.
            svc.audit.record(None, "denied", 0, {**where, "status": err.status})
            raise
        try:
            return call(who, query)
        except ApiError as err:
            svc.audit.record(who.name, "refused", 0, {**where, "status": err.status, "error": err.message})
            raise

    return await _answer(request, (method,) if isinstance(method, str) else method, run, body_read)


@metrics.timed
async def handle_public(request: Request, call: Callable[[], dict[str, Any]]) -> Response:
    """A GET endpoint without credentials and without parameters (healthz)."""
    query = query_pairs(request)
    sent_body = _announces_body(request)

    def run() -> dict[str, Any]:
        parse_query(query, frozenset())
        _refuse_body(sent_body)
        return call()

    return await _answer(request, ("GET", "HEAD"), run)


def _refuse_body(sent: bool) -> None:
    """Operator calls read no body: one sent (e.g. `{"id": ...}` to purge) was not understood, and
    acting on the query alone could delete more than was meant (SPEC §8)."""
    if sent:
        raise ApiError(400, "this call takes no request body (filters go in the query string); "
                            "nothing was done")


async def _answer(request: Request, methods: tuple[str, ...], run: Callable[[], dict[str, Any]],
                  body_read: bool = False) -> Response:
    """A JSON answer from `run` (in a worker thread), or the operator-shaped error: 405, its
    ApiError, or a logged 500. With `Connection: close` when the request announced a body that was
    not read (`body_read`): a client that got its refusal before sending the body may send the next
    request on the connection in its place, and the server would read it as the body."""
    close = not body_read and _announces_body(request)
    if request.method not in methods:
        return respond(Reply.api(ApiError(405, f"{request.method} is not allowed here; use {methods[0]}")),
                       close=close)
    try:
        return respond(await asyncio.to_thread(_reply, run, request.method, request.scope.get("path")),
                       close=close)
    except asyncio.CancelledError:
        return respond(SHUTTING_DOWN, close=True)


def _reply(run: Callable[[], dict[str, Any]], method: str, path: Any) -> Reply:
    try:
        return Reply(200, run())
    except ApiError as err:
        return Reply.api(err)
    except Exception:
        log.exception("unexpected error answering %s %s", method, path)
        return Reply.api(ApiError(500, "internal error; see the service log"))


@metrics.timed
async def handle_metrics(request: Request) -> Response:
    """`GET /metrics` (SPEC §11): the Prometheus exposition of metrics.py, in the format the
    `Accept` header negotiates. No credential, unless `operator.metrics_require_auth`: then any
    operator token (either role); a refused one is audited, an answered scrape is not (a scraper
    calls every few seconds). Takes no query parameters and no body (400, as healthz)."""
    authorization = request.headers.get("authorization")
    accept = request.headers.get("accept")
    query = query_pairs(request)
    sent_body = _announces_body(request)
    if request.method not in ("GET", "HEAD"):
        return respond(Reply.api(ApiError(405, f"{request.method} is not allowed here; use GET")))

    def run() -> tuple[bytes, str]:
        svc = service()
        if svc.settings.operator.metrics_require_auth:
            try:
                svc.operator(authorization)
            except ApiError as err:
                svc.audit.record(None, "denied", 0, {"method": request.method,
                                                     "path": request.scope["path"], "status": err.status})
                raise
        parse_query(query, frozenset())
        _refuse_body(sent_body)
        return metrics.exposition(svc, accept)

    try:
        body, content_type = await asyncio.to_thread(run)
    except asyncio.CancelledError:
        return respond(SHUTTING_DOWN, close=True)
    except ApiError as err:
        return respond(Reply.api(err))
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.scope.get("path"))
        return respond(Reply.api(ApiError(500, "internal error; see the service log")))
    return Response(body, status_code=200, headers={"Content-Type": content_type})
