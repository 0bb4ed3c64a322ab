"""GET and DELETE /api/v1/dlq/{id}: one dead-lettered event, read or removed."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.entries import entry_call
from telhawk_ingest.http import handle_operator, path_param
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service

PREFIX = "/api/v1/dlq/"


@functions_framework.aio.http
async def dlq_entry(request: Request) -> Response:
    entry_id = path_param(request, "id", PREFIX)
    return await handle_operator(
        request, ("GET", "DELETE"),
        lambda who, query: entry_call(service(), who, request.method, entry_id, query))


handler = lambda_handler(dlq_entry)
