"""HEC endpoints: POST /services/collector[/event|/raw|/ack][/1.0], GET /services/collector/health."""

import flask
import functions_framework

from telhawk_ingest.http import handle_hec
from telhawk_ingest.lambda_adapter import lambda_handler


@functions_framework.http
def ingest_event(request: flask.Request) -> flask.Response:
    return handle_hec(request)


handler = lambda_handler(ingest_event)
