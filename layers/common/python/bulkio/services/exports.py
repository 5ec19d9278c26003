"""The export service layer: streamed exports, and asynchronous export jobs run by Step Functions."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from bulkio.config import Settings
from bulkio.domain.auth import Principal
from bulkio.domain.errors import NotFound
from bulkio.domain.export_jobs import EXPORT_COMPLETED, ExportJob, ExportStatus, export_object_key, export_view
from bulkio.domain.export_messages import TaskError
from bulkio.domain.exports import CONTENT_TYPES, parse_export_format, parse_export_query, parse_export_request
from bulkio.domain.jobs import utc_now
from bulkio.domain.metrics import JobSummary
from bulkio.domain.resources import Resource
from bulkio.domain.submissions import Submitted
from bulkio.services.idempotency import idempotency_scope, submit_once
from bulkio.services.listing import listed_page
from bulkio.services.ports import (
    EventPublisher,
    ExportExecutionStarter,
    ExportJobRepository,
    ExportStore,
    ExportStream,
    IdempotencyRecords,
    MetricsSink,
    ObjectStore,
)

logger = Logger(child=True)

IDEMPOTENCY_SCOPE = "exports"
DOWNLOAD_TTL_SECONDS = 900


@dataclass(frozen=True, slots=True)
class StreamedExport:
    """A streamed export's body with what the response needs to say about it."""

    content_type: str
    filename: str
    body: Iterator[bytes]


class ExportService:
    """Refuses bad requests with InvalidRequest (InvalidExportRequest) and unknown or hidden jobs with NotFound;
    answers plain data: the web layer adds the links and decides the statuses."""

    def __init__(
        self,
        settings: Settings,
        jobs: ExportJobRepository,
        idempotency: IdempotencyRecords,
        objects: ObjectStore,
        store: ExportStore,
        start_execution: ExportExecutionStarter,
        metrics: MetricsSink,
        events: EventPublisher,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.jobs = jobs
        self.idempotency = idempotency
        self.objects = objects
        self.store = store
        self.start_execution = start_execution
        self.events = events

    # ================================================================ streamed
    def stream(self, params: Mapping[str, str]) -> StreamedExport:
        """GET /v1/exports: rows leave as PostgreSQL produces them; nothing is held whole."""
        fmt = parse_export_format(params.get("format"))
        query = parse_export_query(params.get("resource"), params)
        filename = f"{query.resource.value}.{fmt.value}"
        body = self._counted(self.store.stream(query, fmt), query.resource.value, fmt.value)
        return StreamedExport(CONTENT_TYPES[fmt], filename, body)

    def _counted(self, export: ExportStream, resource: str, fmt: str) -> Iterator[bytes]:
        """Passes the body on; once it has all gone out, counts it and pushes (the handler returned long ago)."""
        size = 0
        try:
            for piece in export:
                size += len(piece)
                yield piece
        finally:
            export.close()
        self.metrics.export_rows.labels(resource, fmt, "stream").inc(export.rows)
        self.metrics.export_bytes.labels(resource, fmt, "stream").inc(size)
        self.metrics.push()

    # ================================================================ jobs: API side
    def submit(self, body: Mapping[str, Any], idempotency_key: str | None, owner: str) -> Submitted:
        """POST /v1/exports: the job, queued and its execution started, once per Idempotency-Key."""
        query, fmt, compression = parse_export_request(body)
        request = {
            "resource": query.resource.value,
            "format": fmt.value,
            "filters": dict(body.get("filters") or {}),
            "fields": list(query.fields),
            "compression": compression,
            "limit": query.limit,
        }
        return submit_once(
            self.idempotency,
            idempotency_scope(IDEMPOTENCY_SCOPE, owner),
            idempotency_key,
            request,
            self.settings.idempotency_ttl_seconds,
            lambda job_id: self._create(job_id, request, owner),
        )

    def _create(self, job_id: str, request: dict[str, Any], owner: str) -> dict[str, Any]:
        job = ExportJob(
            job_id=job_id,
            resource=request["resource"],
            format=request["format"],
            filters=request["filters"],
            fields=request["fields"],
            compression=request["compression"],
            status=ExportStatus.QUEUED,
            created_at=utc_now(),
            request=request,
            owner=owner,
        )
        self.jobs.create(job)
        try:
            self.start_execution(job_id)
        except Exception as error:
            self.jobs.fail(job_id, "submission_failed", f"the export could not be started: {error}; submit it again")
            raise
        logger.info("export job created", extra={"job_id": job_id, "resource": job.resource})
        return {"job_id": job_id, "status": job.status.value}

    def list_jobs(
        self,
        limit: int,
        cursor: str | None,
        caller: Principal,
        status: ExportStatus | None = None,
        resource: Resource | None = None,
    ) -> dict[str, Any]:
        """The caller's export jobs, newest first (an admin's: everyone's); each without its download URL, which
        GET /v1/exports/{job_id} hands out."""
        owner = None if caller.is_admin else caller.subject
        jobs, last = listed_page(
            lambda start: self.jobs.list_jobs(
                limit, start, owner, status.value if status else None, resource.value if resource else None
            ),
            cursor,
        )
        now = utc_now()
        return {"jobs": [export_view(job, now, None) for job in jobs], "next": last}

    def view(self, job_id: str, caller: Principal) -> dict[str, Any]:
        job = self._job(job_id)
        if not caller.may_read(job.owner):
            raise self._not_found(job_id)  # as if it did not exist: its id tells nothing about it
        download = None
        if job.status is ExportStatus.COMPLETED and job.object_key:
            filename = job.object_key.rsplit("/", 1)[-1]
            url = self.objects.presign_get(job.object_key, DOWNLOAD_TTL_SECONDS, filename)
            download = (url, datetime.now(UTC) + timedelta(seconds=DOWNLOAD_TTL_SECONDS))
        return export_view(job, utc_now(), download)

    def _job(self, job_id: str) -> ExportJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise self._not_found(job_id)
        return job

    @staticmethod
    def _not_found(job_id: str) -> NotFound:
        return NotFound("job_not_found", f"no export job {job_id}: check the id returned by POST /v1/exports")

    # ================================================================ jobs: Step Functions tasks
    def run(self, job_id: str) -> dict[str, Any]:
        """The export worker: streams the rows into one S3 object with a multipart upload, in constant memory."""
        job = self._job(job_id)
        if not self.jobs.start(job_id):
            raise RuntimeError(f"export job {job_id} is {job.status.value}: it cannot run")
        query, fmt, compression = parse_export_request(job.request)
        started = time.monotonic()
        key = export_object_key(job)
        content_type = "application/gzip" if compression == "gzip" else CONTENT_TYPES[fmt]
        with self.objects.writer(key, content_type) as sink:
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if compression == "gzip" else None
            export = self.store.stream(query, fmt)
            for piece in export:
                sink.write(compressor.compress(piece) if compressor else piece)
            if compressor is not None:
                sink.write(compressor.flush())
            rows = export.rows
        size = sink.bytes_written
        if not self.jobs.complete(job_id, rows, size, key):
            raise RuntimeError(f"export job {job_id} was no longer running when its file was written")
        duration = time.monotonic() - started
        self.metrics.export_rows.labels(job.resource, fmt.value, "async").inc(rows)
        self.metrics.export_bytes.labels(job.resource, fmt.value, "async").inc(size)
        self.metrics.job_finished(JobSummary("export", job_id, job.resource, "completed", rows, 0, duration))
        logger.info(
            "export job finished",
            extra={
                "job_id": job_id,
                "resource": job.resource,
                "format": fmt.value,
                "rows": rows,
                "bytes": size,
                "rows_per_second": round(rows / duration, 1) if duration > 0 else None,
                "duration_seconds": round(duration, 3),
            },
        )
        return {"job_id": job_id, "rows": rows, "bytes": size}

    def publish_completion(self, job_id: str) -> None:
        """The state machine's last task, after the job completed or failed: puts its "Export Job Completed"
        event on the bus (without a download URL: the owner fetches one from the job). Raises when the event did
        not go out: the state machine retries the task, so every ended export's event goes out at least once."""
        job = self._job(job_id)
        if job.status not in {ExportStatus.COMPLETED, ExportStatus.FAILED}:
            raise RuntimeError(f"export job {job_id} is {job.status.value}: it has not ended")
        self.events.publish(EXPORT_COMPLETED, export_view(job, utc_now(), None))

    def mark_failed(self, job_id: str, error: TaskError | None) -> None:
        """The state machine's Catch: the worker failed (after its retries); record why."""
        caught = error or TaskError()
        cause = caught.cause or caught.error or "unknown error"
        if self.jobs.fail(job_id, "export_failed", f"the export failed: {cause[:1000]}"):
            logger.warning("export job failed", extra={"job_id": job_id, "error": caught.error})
