"""The floor: the least an HEC endpoint can do, served exactly like the real functions.

It reads the body as the real handler does (raw, at most the limit plus one byte), parses it as
concatenated JSON objects with orjson, and answers a constant HEC success. The ingest benchmark
serves it from the same emulator process as the real functions (`/bench/floor`), so the ratio of
the two throughputs measures what normalization, validation and storage cost on top of HTTP,
Flask and JSON parsing.
"""

import re

import flask
import functions_framework
import orjson

MAX_BODY_BYTES = 10 * 1024 * 1024
_BOUNDARY = re.compile(rb"\}[ \t\r\n]*\{")
_SUCCESS = orjson.dumps({"text": "Success", "code": 0})


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


@functions_framework.http
def floor(request: flask.Request) -> flask.Response:
    events = parse_concatenated(request.stream.read(MAX_BODY_BYTES + 1))
    if not events:
        return flask.Response(b'{"text":"No data","code":5}', status=400, mimetype="application/json")
    return flask.Response(_SUCCESS, status=200, mimetype="application/json")
