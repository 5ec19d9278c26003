"""Callback deliverer: POSTs an ended job's summary to its callback_url, signed, one message one attempt.

A failed attempt queues the next one itself (exponential backoff, for CALLBACK_RETRY_WINDOW_SECONDS after the
job's end); the sweeper sends again an attempt whose message was lost. The rules: bulkio/domain/callbacks.py.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.adapters.sqs import CallbackRecord
from bulkio.bootstrap import callback_deliverer, pushing_metrics

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS, model=CallbackRecord)


def deliver_callback(record: CallbackRecord) -> None:
    message = record.body
    logger.append_keys(job_id=message.job_id, trigger=message.trigger.value, attempt=message.attempt)
    callback_deliverer().deliver(message)


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=deliver_callback, processor=processor, context=context)
