"""Scheduled DLQ retention (SPEC §9 caps and age): a SAM `Schedule` event on AWS (`handler`), a
Cloud Scheduler HTTP target on Google Cloud (the functions-framework target). The use case runs
with the scheduled time as its clock (telhawk_ingest.schedules)."""

from collections.abc import Mapping
from typing import Any

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from telhawk_ingest.lambda_adapter import lambda_entry
from telhawk_ingest.schedules import run_schedule, schedule_endpoint


@functions_framework.aio.http
async def scheduled_retention(request: Request) -> Response:
    return await schedule_endpoint(request, "retention")


@lambda_entry
def handler(event: Mapping[str, Any]) -> dict[str, Any]:
    return run_schedule("retention", event)
