"""Every import job ends: the sweeper resumes or fails the unfinished ones (the rules: bulkio/domain/sweep.py),
and the dead-letter consumer fails the jobs of chunks and chunker events that kept failing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from bulkio.config import Settings
from bulkio.domain.chunks import ChunkMessage, FailedChunkerRun
from bulkio.domain.jobs import ImportJob, JobStatus
from bulkio.domain.sweep import SweepAction, SweepSettings, decide
from bulkio.services.imports.chunking import store_totals
from bulkio.services.imports.common import announce, source_key
from bulkio.services.imports.ending import JobEnding
from bulkio.services.ports import (
    ChunkerLauncher,
    ChunkQueue,
    ImportJobRepository,
    ImportStore,
    MetricsSink,
    ObjectStore,
)

logger = Logger(child=True)

# After the presigned URL expired, how long an upload that started in time may still take to arrive.
UPLOAD_GRACE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Sweeper:
    settings: Settings
    jobs: ImportJobRepository
    objects: ObjectStore
    queue: ChunkQueue
    store: ImportStore
    metrics: MetricsSink
    ending: JobEnding
    launch_chunker: ChunkerLauncher

    def sweep(self) -> dict[str, int]:
        """Looks at every unfinished job once and does what it needs to end (bulkio/domain/sweep.py). One job's
        trouble never stops the others'. Returns how many jobs got each action."""
        settings = SweepSettings(
            stall_seconds=self.settings.sweep_stall_seconds,
            max_chunker_runs=self.settings.sweep_max_chunker_runs,
            max_resends=self.settings.sweep_max_resends,
            upload_window_seconds=self.settings.presign_ttl_seconds + UPLOAD_GRACE_SECONDS,
            multipart_upload_window_seconds=self.settings.multipart_upload_window_seconds,
        )
        actions: dict[str, int] = {}
        for job in self.jobs.open_jobs():
            try:
                if job.is_final and job.completion_pending:  # ended, but its completion did not go out
                    action = "published" if self.ending.completion.publish(job.job_id) else "error"
                elif job.is_final:  # ended, and its callback not taken yet
                    action = self.ending.completion.sweep_callback(job, self.settings.callback_retry_window_seconds)
                else:
                    action = self._sweep_job(job, settings)
            except Exception:
                logger.exception("sweeping a job failed; the next sweep tries again", extra={"job_id": job.job_id})
                action = "error"
            actions[action] = actions.get(action, 0) + 1
        try:
            self.metrics.delete_job_groups_older_than(self.settings.job_metrics_retention_seconds)
        except Exception:
            logger.exception("could not delete old job groups from the Pushgateway")
        logger.info("sweep done", extra={"actions": actions})
        return actions

    def _sweep_job(self, job: ImportJob, settings: SweepSettings) -> str:
        run = self.store.run_state(job.job_id)
        if job.chunks_total is not None and (run is None or run.chunks_total is None):
            # The chunker finished and recorded its totals on the job, but the database missed them.
            store_totals(self.store, job, job.chunks_total, job.counters.total or 0)
            run = self.store.run_state(job.job_id)
        upload_present = False
        waited = time.time() - job.created_at.timestamp()
        if job.status is JobStatus.AWAITING_UPLOAD and waited > settings.stall_seconds:
            key = job.source.key or source_key(job.job_id)
            upload_present = self.objects.info(key, job.source.bucket) is not None
        decision = decide(job, run, time.time(), settings, upload_present)
        if decision.action is SweepAction.NOTHING:
            return decision.action.value
        logger.warning(
            "sweeper resumes a job",
            extra={"job_id": job.job_id, "status": job.status.value, "action": decision.action.value},
        )
        if decision.action is SweepAction.LAUNCH_CHUNKER:
            self.launch_chunker(job.job_id)
        elif decision.action is SweepAction.RESEND_CHUNKS:
            unstaged = self.store.unstaged_chunks(job.job_id)
            self.store.mark_resent(job.job_id)
            announce(self.queue, [ChunkMessage.announcing(job.job_id, job.target, n) for n in unstaged])
        elif decision.action is SweepAction.FINISH:
            self.ending.finish_if_complete(job.job_id, wait=False)
        elif decision.action is SweepAction.FAIL:
            self.ending.fail(
                job.job_id, decision.code or "job_interrupted", decision.message or "the job was interrupted"
            )
        return decision.action.value


@dataclass(frozen=True, slots=True)
class DeadLetters:
    settings: Settings
    jobs: ImportJobRepository
    store: ImportStore
    metrics: MetricsSink
    ending: JobEnding

    def on_failed_invocation(self, failure: FailedChunkerRun) -> None:
        """The chunker failed on an event after all its retries."""
        self.metrics.dead_letters.labels("chunker_event").inc()
        for job_id in self._jobs_of_event(failure.request_payload):
            self.ending.fail(
                job_id,
                "chunker_failed",
                f"reading the source failed {failure.attempts} times: {failure.reason or 'no reason given'}. "
                "Fix the cause and submit the import again.",
            )

    def _jobs_of_event(self, event: dict[str, Any]) -> list[str]:
        if "job_id" in event:
            return [event["job_id"]]
        job_ids = []
        for record in event.get("Records", []):
            s3 = record.get("s3", {})
            key = unquote_plus(s3.get("object", {}).get("key", ""))
            if key.startswith("uploads/"):
                job_ids.append(key.split("/")[1])
            elif key.startswith("drop/"):
                etag = s3.get("object", {}).get("eTag", "")
                job_id = self.jobs.job_for_drop(s3.get("bucket", {}).get("name", ""), key, etag)
                if job_id:
                    job_ids.append(job_id)
        return job_ids

    def on_dead_letter(self, message: ChunkMessage) -> None:
        job_id, chunk_no = message.job_id, message.chunk
        self.metrics.dead_letters.labels("chunk").inc()
        if self.store.is_staged(job_id, chunk_no):
            # Another copy of the message (a re-send by the sweeper, a redelivery) staged the chunk meanwhile.
            logger.info("dead-lettered chunk was staged by another delivery: ignored", extra={"job_id": job_id})
            self.ending.finish_if_complete(job_id)
            return
        reason = self.store.chunk_failure(job_id, chunk_no) or "the writer crashed without recording a reason"
        first = message.first or (chunk_no - 1) * self.settings.chunk_records + 1
        last = first + (message.records or self.settings.chunk_records) - 1
        job = self.jobs.get(job_id)
        if job is not None and job.counters.total:
            last = min(last, job.counters.total)
        self.ending.fail(
            job_id,
            "chunk_failed",
            f"chunk {chunk_no} (records {first} to {last}) failed repeatedly "
            f"and was moved to the dead-letter queue: {reason}. Fix the cause and submit the import again.",
        )
