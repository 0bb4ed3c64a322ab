"""HEC endpoints: POST /services/collector[/event|/raw|/ack][/1.0], GET /services/collector/health."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_hec
from telhawk_ingest.lambda_adapter import lambda_handler


@functions_framework.aio.http
async def ingest_event(request: Request) -> Response:
    return await handle_hec(request)


handler = lambda_handler(ingest_event)
