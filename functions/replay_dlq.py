"""POST /api/v1/dlq/replay: normalize, validate and store dead-lettered events again (SPEC §11)."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.http import handle_operator_body
from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.replay import MAX_BODY_BYTES
from telhawk_ingest.replay import replay_dlq as replay
from telhawk_ingest.service import service


@functions_framework.aio.http
async def replay_dlq(request: Request) -> Response:
    return await handle_operator_body(
        request, "POST", lambda who, query, body: replay(service(), who, query, body), MAX_BODY_BYTES)


handler = lambda_handler(replay_dlq)
