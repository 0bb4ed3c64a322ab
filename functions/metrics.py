"""GET /metrics: Prometheus metrics; counters of every instance on the DLQ volume (as healthz)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_metrics
from telhawk_ingest.lambda_adapter import lambda_handler


@functions_framework.aio.http
async def metrics(request: Request) -> Response:
    return await handle_metrics(request)


handler = lambda_handler(metrics)
