"""The one place where HTTP meets the service: Flask requests in, JSON responses out.

Handlers in `functions/` call these adapters and nothing else. Errors become answers here: HEC
errors as `{"text", "code"}` with Splunk's statuses, operator errors as `{"error", "status"}`, and
anything unexpected as a logged 500 in the caller's shape, never a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import flask
import orjson

from .errors import ApiError, HecError
from .hec import HecRequest
from .service import Operator, Query, Reply, parse_query, service

log = logging.getLogger(__name__)


def respond(reply: Reply) -> flask.Response:
    return flask.Response(
        orjson.dumps(reply.body), status=reply.status, headers=reply.headers, mimetype="application/json"
    )


def hec_request(request: flask.Request, max_body_bytes: int) -> HecRequest:
    """The raw request. The body is read raw whatever the Content-Type, and at most one byte over
    the limit, so an oversized body is refused without being held in memory."""
    return HecRequest(
        method=request.method,
        path=request.path,
        headers=request.headers,
        query=request.args,
        body=request.stream.read(max_body_bytes + 1) if request.method == "POST" else b"",
    )


def handle_hec(request: flask.Request) -> flask.Response:
    try:
        svc = service()
        return respond(svc.hec(hec_request(request, svc.settings.hec.max_body_bytes)))
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return respond(Reply.hec(HecError(8)))


def handle_operator(
    request: flask.Request, method: str, call: Callable[[Operator, Query], dict[str, Any]]
) -> flask.Response:
    """Check the method and the operator credential, then run an operator call with the query's
    pairs (repeats kept, so the call can refuse them). A refusal after authentication (a parameter
    or body it does not take) is audited under the operator's name."""

    def run() -> dict[str, Any]:
        svc = service()
        try:
            who = svc.operator(request.headers.get("Authorization"))
        except ApiError as err:
            # Refused attempts are audited too: they are what an investigation looks for first.
            svc.audit.record(None, "denied", 0, {"method": request.method, "path": request.path,
                                                 "status": err.status})
            raise
        try:
            _refuse_body(request)
            return call(who, list(request.args.items(multi=True)))
        except ApiError as err:
            svc.audit.record(who.name, "refused", 0, {"method": request.method, "path": request.path,
                                                      "status": err.status, "error": err.message})
            raise

    return _answer(request, (method,), run)


def handle_public(request: flask.Request, call: Callable[[], dict[str, Any]]) -> flask.Response:
    """A GET endpoint without credentials and without parameters (healthz)."""

    def run() -> dict[str, Any]:
        parse_query(request.args.items(multi=True), frozenset())
        _refuse_body(request)
        return call()

    return _answer(request, ("GET", "HEAD"), run)


def _refuse_body(request: flask.Request) -> None:
    """Operator calls read no body: one sent (e.g. `{"id": ...}` to purge) was not understood, and
    acting on the query alone could delete more than was meant (SPEC §8)."""
    if request.stream.read(1):
        raise ApiError(400, "this call takes no request body (filters go in the query string); "
                            "nothing was done")


def _answer(request: flask.Request, methods: tuple[str, ...], run: Callable[[], dict[str, Any]]
            ) -> flask.Response:
    """A JSON answer from `run`, or the operator-shaped error: 405, its ApiError, or a logged 500."""
    try:
        if request.method not in methods:
            raise ApiError(405, f"{request.method} is not allowed here; use {methods[0]}")
        return respond(Reply(200, run()))
    except ApiError as err:
        return respond(Reply.api(err))
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return respond(Reply.api(ApiError(500, "internal error; see the service log")))
