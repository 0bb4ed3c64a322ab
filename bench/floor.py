"""The floor: the least an HEC endpoint can do, served exactly like the real functions.

It reads the body, parses it as concatenated JSON objects with orjson, and answers a constant HEC
success: no authentication, no envelopes, no normalization, validation or storage. Two
deployments of it in the stack bench (bench/stack.py):

- `floor` here, an ASGI function (`functions_framework.aio.http`), served by the emulator next to
  the real functions (`/bench/floor`, same processes and workers): the product / floor ratio is
  what the product costs on top of the same ASGI stack and JSON parsing;
- `floor_wsgi` (bench/floor_wsgi.py), the same parsing as a Flask function, served the way
  `functions-framework` serves Flask functions (gunicorn, gthread workers): the WSGI stack's floor.
"""

import re

import functions_framework.aio
import orjson
from starlette.requests import Request
from starlette.responses import Response

MAX_BODY_BYTES = 10 * 1024 * 1024
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
SUCCESS = orjson.dumps({"text": "Success", "code": 0})
NO_DATA = orjson.dumps({"text": "No data", "code": 5})


def parse_concatenated(body: bytes) -> list:
    """Every top-level object of a HEC JSON body (newline-delimited batches in one call)."""
    try:
        return [orjson.loads(body)]
    except orjson.JSONDecodeError:
        pass
    try:
        return orjson.loads(b"[" + body.replace(b"}\n{", b"},{") + b"]")
    except orjson.JSONDecodeError:
        # Objects separated by spaces or nothing: split at each `}{`, as the real parser's
        # fallback does (good enough for the benchmark's bodies, which never nest `}{` in strings).
        view = memoryview(body)
        out, start = [], 0
        for match in _BOUNDARY.finditer(body):
            out.append(orjson.loads(view[start : match.start() + 1]))
            start = match.end() - 1
        out.append(orjson.loads(view[start:]))
        return out


@functions_framework.aio.http
async def floor(request: Request) -> Response:
    body = await request.body()
    if not parse_concatenated(body[: MAX_BODY_BYTES + 1]):
        return Response(NO_DATA, status_code=400, media_type="application/json")
    return Response(SUCCESS, media_type="application/json")
