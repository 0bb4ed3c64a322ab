"""Lambda Kinesis event source: base64 records (CloudWatch Logs subscription messages included)
into the HEC pipeline, with a partial batch response (`batchItemFailures`)."""

from collections.abc import Mapping
from typing import Any

from telhawk_ingest.lambda_adapter import lambda_entry
from telhawk_ingest.triggers import handle_kinesis


@lambda_entry
def kinesis_ingest(event: Mapping[str, Any]) -> dict[str, Any]:
    return handle_kinesis(event)


handler = kinesis_ingest
