"""The writers: each validates one chunk and stages it in the import store exactly once; whoever stages the last
chunk merges the job. A chunk that fails comes back after a backoff."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from bulkio import faults
from bulkio.config import Settings
from bulkio.domain.chunks import ChunkMessage, decode_chunk
from bulkio.domain.jobs import ImportJob
from bulkio.domain.records import ValidationRules
from bulkio.domain.staging import validate_chunk
from bulkio.domain.sweep import retry_delay_seconds
from bulkio.services.imports.common import discard
from bulkio.services.imports.ending import JobEnding
from bulkio.services.ports import ChunkQueue, ImportJobRepository, ImportStore, MetricsSink, ObjectStore

logger = Logger(child=True)


@dataclass(frozen=True, slots=True)
class ChunkWriter:
    settings: Settings
    jobs: ImportJobRepository
    objects: ObjectStore
    queue: ChunkQueue
    store: ImportStore
    rules: ValidationRules
    metrics: MetricsSink
    ending: JobEnding

    def process_chunk(self, message: ChunkMessage) -> None:
        job_id, chunk_no = message.job_id, message.chunk
        job = self.jobs.get(job_id)
        if job is None or job.is_final:
            # An ended job stages nothing more (a merged one's chunk is a redelivery). Its chunk objects were
            # purged when it ended, but a chunker still running then may have written this one since.
            logger.info("chunk of an ended job skipped", extra={"job_id": job_id, "chunk": chunk_no})
            if job is not None:
                discard(self.objects, job_id, [message.key])  # no other key starts with it
            return
        started = time.monotonic()
        faults.crash_at(faults.WRITER_BEFORE_STAGE)
        try:
            staged_now = self._validate_and_stage(job, chunk_no, message.key)
        except FileNotFoundError:
            ended = self.jobs.get(job_id)
            if ended is not None and ended.is_final:  # it ended while this chunk was on its way
                logger.info("chunk of an ended job skipped", extra={"job_id": job_id, "chunk": chunk_no})
                return
            self.store.record_chunk_failure(job_id, chunk_no, f"chunk object {message.key} is missing")
            raise
        except Exception as error:
            # Kept for the dead-letter consumer, which reports it if the chunk never succeeds.
            self.store.record_chunk_failure(job_id, chunk_no, f"{type(error).__name__}: {error}")
            raise
        faults.crash_at(faults.WRITER_AFTER_STAGE)
        if staged_now:  # a redelivered chunk is not counted again
            self.metrics.chunks.labels(job.target.value).inc()
            self.metrics.chunk_seconds.labels(job.target.value).observe(time.monotonic() - started)
        self.ending.finish_if_complete(job_id)

    def _validate_and_stage(self, job: ImportJob, chunk_no: int, key: str) -> bool:
        """False when the chunk had been staged before (a redelivery)."""
        staged, failed = validate_chunk(job.target, decode_chunk(self.objects.read_bytes(key)), self.rules)
        # Staging also counts the chunk's records, in the same transaction: a redelivery counts nothing twice.
        return self.store.stage_chunk(job.job_id, job.target, chunk_no, staged, failed, job.is_dry_run)

    def retry_later(self, receipt_handle: str, receive_count: int) -> None:
        """A chunk that failed comes back after a backoff (2 s doubling to 60 s by default) rather than the
        queue's visibility timeout, so a database outage costs seconds, and maxReceiveCount spans minutes."""
        delay = retry_delay_seconds(
            receive_count, self.settings.chunk_retry_first_seconds, self.settings.chunk_retry_longest_seconds
        )
        try:
            self.queue.delay(receipt_handle, delay)
        except Exception:  # the message then comes back after the queue's visibility timeout: slower, not lost
            logger.exception("could not delay the failed chunk's next try")
