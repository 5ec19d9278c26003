"""Dead-letter consumer: a chunk that kept failing, or a chunker invocation whose retries ran out (a Lambda
OnFailure destination record), ends its job as failed, with the reason."""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.services.bootstrap import import_service, pushing_metrics

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)


def fail_job_of_dead_chunk(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    if "requestPayload" in message:
        import_service().on_failed_invocation(message)
        return
    logger.append_keys(job_id=message["job_id"], chunk=message["chunk"], resource=message.get("resource"))
    import_service().on_dead_letter(message)


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=fail_job_of_dead_chunk, processor=processor, context=context
    )
