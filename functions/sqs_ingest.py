"""Lambda SQS event source: each record's body into the HEC pipeline, with a partial batch
response (`batchItemFailures`) naming only the records neither stored nor dead-lettered."""

from collections.abc import Mapping
from typing import Any

from telhawk_ingest.lambda_adapter import lambda_entry
from telhawk_ingest.triggers import handle_sqs


@lambda_entry
def sqs_ingest(event: Mapping[str, Any]) -> dict[str, Any]:
    return handle_sqs(event)


handler = sqs_ingest
