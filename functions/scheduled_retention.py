"""Scheduled DLQ retention (SAM `Schedule` event; Cloud Scheduler on Google Cloud): the retention
use case with the scheduled event's time as its clock (telhawk_ingest.schedules)."""

from collections.abc import Mapping
from typing import Any

from telhawk_ingest.schedules import run_schedule
from telhawk_ingest.triggers import lambda_entry


@lambda_entry
def scheduled_retention(event: Mapping[str, Any]) -> dict[str, Any]:
    return run_schedule("retention", event)


handler = scheduled_retention
