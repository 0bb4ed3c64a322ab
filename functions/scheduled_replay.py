"""Scheduled DLQ replay of the entries matching `triggers.replay_filter`: a SAM `Schedule` event on
AWS (`handler`), a Cloud Scheduler HTTP target on Google Cloud (the functions-framework target);
nothing is done while no filter is configured (telhawk_ingest.schedules)."""

from collections.abc import Mapping
from typing import Any

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.lambda_adapter import lambda_entry
from telhawk_ingest.schedules import run_schedule, schedule_endpoint


@functions_framework.aio.http
async def scheduled_replay(request: Request) -> Response:
    return await schedule_endpoint(request, "replay")


@lambda_entry
def handler(event: Mapping[str, Any]) -> dict[str, Any]:
    return run_schedule("replay", event)
