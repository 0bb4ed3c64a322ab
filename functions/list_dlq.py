"""GET /api/v1/dlq: dead-lettered events, oldest first, a page at a time."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_operator
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service


@functions_framework.aio.http
async def list_dlq(request: Request) -> Response:
    return await handle_operator(request, "GET", lambda who, query: service().list_dlq(who, query))


handler = lambda_handler(list_dlq)
