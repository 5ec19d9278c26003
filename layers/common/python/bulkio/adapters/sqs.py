"""The chunk queue: one small message per chunk, carrying a reference to the chunk object, never records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

SEND_BATCH = 10  # SQS SendMessageBatch limit


class ChunkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, messages: Iterable[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
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

    def _send_batch(self, batch: list[dict[str, Any]]) -> None:
        entries = [{"Id": str(n), "MessageBody": orjson.dumps(m).decode()} for n, m in enumerate(batch)]
        response = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
        failed = response.get("Failed") or []
        if failed:
            retry = [entries[int(f["Id"])] for f in failed]
            response = self._sqs.send_message_batch(QueueUrl=self._url, Entries=retry)
            if response.get("Failed"):
                raise RuntimeError(f"SQS refused {len(response['Failed'])} chunk messages: {response['Failed']}")
