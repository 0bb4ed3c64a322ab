"""GET /api/v1/normalizers: the registered normalizers, their OCSF classes and origin, in match order."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest import normalizer_list
from telhawk_ingest.http import handle_operator
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.service import service


@functions_framework.aio.http
async def list_normalizers(request: Request) -> Response:
    return await handle_operator(request, "GET",
                                 lambda who, query: normalizer_list.list_normalizers(service(), who, query))


handler = lambda_handler(list_normalizers)
