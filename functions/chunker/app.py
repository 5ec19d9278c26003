"""Chunker: streams an import source and splits it into chunks of at most 1,000 records announced on SQS.

Triggered by S3 ObjectCreated events (uploads/ and drop/ prefixes) and by asynchronous invocations
`{"job_id": ...}` for URL imports.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import chunker, pushing_metrics

logger = Logger()


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    service = chunker()
    if "job_id" in event:
        logger.append_keys(job_id=event["job_id"])
        service.run_chunker(event["job_id"])
        return {"jobs": 1}
    records = list(S3Event(event).records)
    for record in records:
        # Keys arrive URL-encoded (a space as '+'); powertools' object.key decodes '%xx' but not '+'.
        key = unquote_plus(record.raw_event["s3"]["object"]["key"])
        service.on_object_created(record.s3.bucket.name, key, record.s3.get_object.etag or "")
    return {"jobs": len(records)}
