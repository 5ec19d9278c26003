"""The chunk queue: one small message per chunk, carrying a reference to the chunk object, never records; and the
shape in which Lambda's SQS event source hands those messages (and dead letters) to the functions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, Json

from bulkio.domain.callbacks import CallbackMessage
from bulkio.domain.chunks import ChunkMessage, FailedChunkerRun

SEND_BATCH = 10  # SQS SendMessageBatch limit


class ChunkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, messages: Iterable[ChunkMessage]) -> None:
        batch: list[ChunkMessage] = []
        for message in messages:
            batch.append(message)
            if len(batch) == SEND_BATCH:
                self._send_batch(batch)
                batch = []
        if batch:
            self._send_batch(batch)

    def delay(self, receipt_handle: str, seconds: int) -> None:
        """A received message comes back only after `seconds` (its visibility timeout from now)."""
        self._sqs.change_message_visibility(QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def _send_batch(self, batch: list[ChunkMessage]) -> None:
        entries = [{"Id": str(n), "MessageBody": m.to_json()} for n, m in enumerate(batch)]
        response = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
        failed = response.get("Failed") or []
        if failed:
            retry = [entries[int(f["Id"])] for f in failed]
            response = self._sqs.send_message_batch(QueueUrl=self._url, Entries=retry)
            if response.get("Failed"):
                raise RuntimeError(f"SQS refused {len(response['Failed'])} chunk messages: {response['Failed']}")


class CallbackQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, message: CallbackMessage, delay_seconds: int = 0) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=message.model_dump_json(), DelaySeconds=delay_seconds)


class DeliveryAttributes(BaseModel):
    """The one attribute of a received message the functions read. Lambda sends more (SenderId, timestamps);
    they are not required, so that a record is never refused for metadata nobody reads."""

    ApproximateReceiveCount: str


class ChunkRecord(SqsRecordModel):
    """A chunk message as the writer receives it. A body that is not a chunk message fails the record (it is
    retried, then dead-lettered) before the writer runs."""

    body: Json[ChunkMessage]
    attributes: DeliveryAttributes  # type: ignore[assignment]  # fewer required fields than the base model


class DeadLetterRecord(SqsRecordModel):
    """What the dead-letter queue holds: a chunk message that kept failing, or the chunker's OnFailure record."""

    body: Json[ChunkMessage | FailedChunkerRun]
    attributes: DeliveryAttributes  # type: ignore[assignment]  # fewer required fields than the base model


class CallbackRecord(SqsRecordModel):
    """A message of the callback queue as the callback function receives it."""

    body: Json[CallbackMessage]
    attributes: DeliveryAttributes  # type: ignore[assignment]  # fewer required fields than the base model
