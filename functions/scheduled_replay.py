"""Scheduled DLQ replay of the entries matching `triggers.replay_filter` (SAM `Schedule` event;
Cloud Scheduler on Google Cloud; telhawk_ingest.schedules)."""

from collections.abc import Mapping
from typing import Any

from telhawk_ingest.schedules import run_schedule
from telhawk_ingest.triggers import lambda_entry


@lambda_entry
def scheduled_replay(event: Mapping[str, Any]) -> dict[str, Any]:
    return run_schedule("replay", event)


handler = scheduled_replay
