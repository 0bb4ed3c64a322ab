"""DELETE /api/v1/dlq/purge: remove every dead-lettered event (or those matching a filter)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_operator
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service


@functions_framework.aio.http
async def purge_dlq(request: Request) -> Response:
    return await handle_operator(request, "DELETE", lambda who, query: service().purge_dlq(who, query))


handler = lambda_handler(purge_dlq)
