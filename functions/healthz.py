"""GET /healthz: counters of every instance on the DLQ volume, and the DLQ's state."""

import flask
import functions_framework

from telhawk_ingest.http import handle_public
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service


@functions_framework.http
def healthz(request: flask.Request) -> flask.Response:
    return handle_public(request, lambda: service().healthz())


handler = lambda_handler(healthz)
