"""Lambda entry points for the functions (template.yaml's `Handler: functions/<name>.handler`).

On Lambda, API Gateway calls `handler(event, context)`; apig-wsgi turns that event into a WSGI
request for a one-route Flask app that calls the same functions-framework function the emulator
serves, so both paths run identical code. Not here: routing (API Gateway does it from the template).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
from apig_wsgi import make_lambda_handler

HttpFunction = Callable[[flask.Request], flask.Response]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def lambda_handler(function: HttpFunction) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    app = flask.Flask(function.__name__)

    def view(path: str = "") -> flask.Response:
        return function(flask.request)

    app.add_url_rule("/", function.__name__, view, methods=METHODS)
    app.add_url_rule("/<path:path>", function.__name__, view, methods=METHODS)
    # Binary support: gzip HEC bodies arrive base64-encoded and must reach the function as bytes.
    return make_lambda_handler(app, binary_support=True)
