"""Validator/writer: validates one chunk of records and stages it in PostgreSQL with COPY.

SQS batch with partial failures: a failed chunk is retried alone, after a backoff it sets itself, and after
maxReceiveCount it goes to the dead-letter queue. A body that is not a chunk message fails its record before the
writer runs (no backoff: it is retried at the queue's pace, then dead-lettered).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.adapters.sqs import ChunkRecord
from bulkio.bootstrap import chunk_writer, pushing_metrics

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS, model=ChunkRecord)


def process_chunk_message(record: ChunkRecord) -> None:
    message = record.body
    logger.append_keys(job_id=message.job_id, chunk=message.chunk, resource=message.resource.value)
    try:
        chunk_writer().process_chunk(message)
    except Exception:
        # Backs the chunk off before it is reported failed: the next try comes after seconds, not the queue's
        # visibility timeout, and a database outage uses up receives slowly (bulkio.domain.sweep.retry_delay_seconds).
        chunk_writer().retry_later(record.receiptHandle, int(record.attributes.ApproximateReceiveCount))
        raise


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=process_chunk_message, processor=processor, context=context
    )
