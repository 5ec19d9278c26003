"""How an import job ends, whoever ends it (a writer, the chunker, the sweeper, the dead-letter consumer): merged
and finished once every chunk is staged, or failed with a reason. The two meet: a failure finds the rows already
merged and finishes the job instead, and a merge whose staged rows keep vanishing fails it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aws_lambda_powertools import Logger

from bulkio import faults
from bulkio.domain.chunks import ChunkMessage
from bulkio.domain.jobs import Counters, ImportJob, job_metrics, utc_now
from bulkio.domain.metrics import JobSummary
from bulkio.domain.staging import StagingLost
from bulkio.services.imports.common import (
    MAX_RESTAGES,
    REPORT_CONTENT_TYPES,
    announce,
    discard,
    report_key,
    scratch_prefixes,
)
from bulkio.services.imports.completion import Completion
from bulkio.services.ports import (
    ChunkQueue,
    ImportJobRepository,
    ImportStore,
    MetricsSink,
    ObjectStore,
)

logger = Logger(child=True)

REPORT_FORMATS: tuple[Literal["ndjson", "csv"], ...] = ("ndjson", "csv")


@dataclass(frozen=True, slots=True)
class JobEnding:
    jobs: ImportJobRepository
    objects: ObjectStore
    queue: ChunkQueue
    store: ImportStore
    metrics: MetricsSink
    completion: Completion

    def finish_if_complete(self, job_id: str, wait: bool = True) -> None:
        """Merges and ends the job once every chunk is staged. wait=False leaves a job whose merge is under way
        in another process alone (the sweeper must not wait for it, nor write its report a second time)."""
        outcome = self.store.try_merge(job_id, wait)
        if outcome is None:
            return
        if isinstance(outcome, StagingLost):
            self._restage(job_id, outcome)
            return
        faults.crash_at(faults.MERGE_BEFORE_FINISH)
        job = self.jobs.get(job_id)
        if job is None or job.is_final:
            return
        self._write_reports(job_id)
        counters = Counters(
            total=outcome.records_total,
            processed=outcome.records_total,
            succeeded=outcome.succeeded,
            failed=outcome.failed,
        )
        if self.jobs.finish(job_id, counters, outcome.errors_by_code, job.mode, outcome.counters_by_resource):
            discard(self.objects, job_id, scratch_prefixes(job_id, keep_download=job.is_dry_run))
            finished = self.jobs.get(job_id) or job
            metrics = job_metrics(finished, utc_now())
            self._count_finished(finished, outcome.errors_by_code, metrics.duration_seconds or 0.0)
            logger.info(
                "import job finished",
                extra={
                    "job_id": job_id,
                    "resource": job.target.value,
                    "status": finished.status.value,
                    "rows": outcome.records_total,
                    "succeeded": outcome.succeeded,
                    "failed": outcome.failed,
                    "rows_per_second": metrics.rows_per_second,
                    "error_rate": metrics.error_rate,
                    "duration_seconds": metrics.duration_seconds,
                },
            )
            self.completion.publish(job_id)

    def fail(self, job_id: str, code: str, message: str) -> None:
        if not self.store.fail_run(job_id):
            # Its rows were merged before the failure: finishing it reports what really happened.
            self.finish_if_complete(job_id)
            return
        if self.jobs.fail(job_id, code, message):
            discard(self.objects, job_id, scratch_prefixes(job_id))
            # The reason may quote the data (a database error names the value it refused): it goes to the job,
            # which only its owner reads, and to the logs at DEBUG only.
            logger.warning(
                "import job failed: GET /v1/imports/{job_id} shows why", extra={"job_id": job_id, "code": code}
            )
            logger.debug("import job failure reason", extra={"job_id": job_id, "reason": message})
            self.completion.publish(job_id)

    def _restage(self, job_id: str, lost: StagingLost) -> None:
        """Staged rows vanished (a crash recovery of PostgreSQL empties the UNLOGGED staging tables): their chunks
        are staged again from their chunk objects, a bounded number of times."""
        if lost.restages > MAX_RESTAGES:
            self.fail(
                job_id,
                "staging_lost",
                f"the staged rows of {len(lost.chunks)} chunks were lost {lost.restages} times (the database "
                "restarted or failed over each time): submit the import again once the database is stable",
            )
            return
        job = self.jobs.get(job_id)
        if job is None:
            return
        logger.warning(
            "staged rows were lost: their chunks are staged again",
            extra={"job_id": job_id, "chunks": len(lost.chunks), "restages": lost.restages},
        )
        announce(self.queue, [ChunkMessage.announcing(job_id, job.target, chunk_no) for chunk_no in lost.chunks])

    def _count_finished(self, job: ImportJob, errors_by_code: dict[str, int], duration_seconds: float) -> None:
        """Counted once per job (the finish above succeeds once): the sums over all instances are the job totals."""
        resource = job.target.value
        if not job.is_dry_run:  # a dry run imports no record: it counts as a job only
            self.metrics.records.labels(resource, "succeeded").inc(job.counters.succeeded)
            self.metrics.records.labels(resource, "failed").inc(job.counters.failed)
            for code, count in errors_by_code.items():
                self.metrics.record_errors.labels(resource, code).inc(count)
        self.metrics.job_finished(
            JobSummary(
                "import",
                job.job_id,
                resource,
                job.status.value,
                job.counters.total or 0,
                job.counters.failed,
                duration_seconds,
            )
        )

    def _write_reports(self, job_id: str) -> None:
        for fmt in REPORT_FORMATS:
            with self.objects.writer(report_key(job_id, fmt), REPORT_CONTENT_TYPES[fmt]) as sink:
                self.store.write_error_report(job_id, fmt, sink)
