"""POST /api/v1/dlq/retention: expire old entries and keep the DLQ within its limits (admin)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_operator
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.retention import retention_call
from telhawk_ingest.service import service


@functions_framework.aio.http
async def dlq_retention(request: Request) -> Response:
    return await handle_operator(request, "POST", lambda who, query: retention_call(service(), who, query))


handler = lambda_handler(dlq_retention)
