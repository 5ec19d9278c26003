"""Validator/writer: validates one chunk of records and stages it in PostgreSQL with COPY.

SQS batch with partial failures: a failed chunk is retried alone, after a backoff it sets itself, and after
maxReceiveCount it goes to the dead-letter queue.
"""

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


def process_chunk_message(record: SQSRecord) -> None:
    message = orjson.loads(record.body)
    logger.append_keys(job_id=message["job_id"], chunk=message["chunk"], resource=message.get("resource"))
    try:
        import_service().process_chunk(message)
    except Exception:
        # Backs the chunk off before it is reported failed: the next try comes after seconds, not the queue's
        # visibility timeout, and a database outage uses up receives slowly (bulkio.domain.sweep.retry_delay_seconds).
        import_service().retry_later(record.receipt_handle, int(record.attributes.approximate_receive_count))
        raise


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=process_chunk_message, processor=processor, context=context
    )
