"""GET /healthz: counters of every instance on the DLQ volume, and the DLQ's state."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_public
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service


@functions_framework.aio.http
async def healthz(request: Request) -> Response:
    return await handle_public(request, lambda: service().healthz())


handler = lambda_handler(healthz)
