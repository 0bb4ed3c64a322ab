"""The floor of bench/floor.py as a Flask function, for the WSGI stack: `functions-framework
--target floor_wsgi --source bench/floor_wsgi.py` serves it with gunicorn's gthread workers."""

import flask
import functions_framework
from floor import MAX_BODY_BYTES, NO_DATA, SUCCESS, parse_concatenated  # bench/ is on sys.path


@functions_framework.http
def floor_wsgi(request: flask.Request) -> flask.Response:
    if not parse_concatenated(request.stream.read(MAX_BODY_BYTES + 1)):
        return flask.Response(NO_DATA, status=400, mimetype="application/json")
    return flask.Response(SUCCESS, status=200, mimetype="application/json")
