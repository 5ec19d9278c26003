"""Dead-letter consumer: a chunk that kept failing, or a chunker invocation whose retries ran out (a Lambda
OnFailure destination record), ends its job as failed, with the reason."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.adapters.sqs import DeadLetterRecord
from bulkio.bootstrap import dead_letters, pushing_metrics
from bulkio.domain.chunks import FailedChunkerRun

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS, model=DeadLetterRecord)


def fail_job_of_dead_chunk(record: DeadLetterRecord) -> None:
    message = record.body
    if isinstance(message, FailedChunkerRun):
        dead_letters().on_failed_invocation(message)
        return
    logger.append_keys(job_id=message.job_id, chunk=message.chunk, resource=message.resource.value)
    dead_letters().on_dead_letter(message)


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=fail_job_of_dead_chunk, processor=processor, context=context
    )
