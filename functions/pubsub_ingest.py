"""POST /triggers/pubsub: Pub/Sub messages (CloudEvents, binary or structured, or push bodies) into
the HEC pipeline (SPEC §12; telhawk_ingest.triggers)."""

import functions_framework.aio
from cloudevents.http.event import CloudEvent

from telhawk_ingest.lambda_adapter import lambda_handler
from telhawk_ingest.triggers import cloud_event_endpoint, cloud_event_function


@functions_framework.aio.cloud_event
async def pubsub_ingest(cloud_event: CloudEvent) -> None:
    await cloud_event_function(cloud_event)


handler = lambda_handler(cloud_event_endpoint(pubsub_ingest))
