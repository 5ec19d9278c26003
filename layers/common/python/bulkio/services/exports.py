"""The export service layer: streamed exports, and asynchronous export jobs run by Step Functions."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from bulkio.adapters.export_jobs import DynamoExportJobRepository
from bulkio.adapters.export_store import ExportStore, ExportStream
from bulkio.adapters.metrics import JobSummary, Metrics
from bulkio.adapters.s3 import S3ObjectStore
from bulkio.config import Settings
from bulkio.domain.auth import Principal
from bulkio.domain.export_jobs import ExportJob, ExportStatus, export_links, export_object_key, export_view
from bulkio.domain.exports import (
    CONTENT_TYPES,
    InvalidExportRequest,
    parse_export_format,
    parse_export_query,
    parse_export_request,
)
from bulkio.domain.jobs import utc_now
from bulkio.problems import Problem, bad_request, not_found
from bulkio.services.idempotency import ApiResult, IdempotencyRecords, idempotency_scope, submit_once

logger = Logger(child=True)

IDEMPOTENCY_SCOPE = "exports"
DOWNLOAD_TTL_SECONDS = 900


def _problem(error: InvalidExportRequest) -> Problem:
    extra = {"allowed": error.allowed} if error.allowed else {}
    return bad_request(error.code, error.message, **extra)


class StreamedExport:
    """A streamed export's body with what the response needs to say about it."""

    def __init__(self, content_type: str, filename: str, body: Iterator[bytes]) -> None:
        self.content_type = content_type
        self.filename = filename
        self.body = body


class ExportService:
    def __init__(
        self,
        settings: Settings,
        jobs: DynamoExportJobRepository,
        idempotency: IdempotencyRecords,
        objects: S3ObjectStore,
        store: ExportStore,
        start_execution: Callable[[str], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.pushgateway_url, "exports")
        self.jobs = jobs
        self.idempotency = idempotency
        self.objects = objects
        self.store = store
        self.start_execution = start_execution

    # ================================================================ streamed
    def stream(self, params: Mapping[str, str]) -> StreamedExport:
        """GET /v1/exports: rows leave as PostgreSQL produces them; nothing is held whole."""
        try:
            fmt = parse_export_format(params.get("format"))
            query = parse_export_query(params.get("resource"), params)
        except InvalidExportRequest as error:
            raise _problem(error) from error
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
    def submit(self, body: Mapping[str, Any], idempotency_key: str | None, owner: str) -> ApiResult:
        try:
            query, fmt, compression = parse_export_request(body)
        except InvalidExportRequest as error:
            raise _problem(error) from error
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
            lambda job_id: export_links(job_id)["self"],
        )

    def _create(self, job_id: str, request: dict[str, Any], owner: str) -> ApiResult:
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
        body = {"job_id": job_id, "status": job.status.value, "links": export_links(job_id)}
        return ApiResult(202, body, {"Location": export_links(job_id)["self"]})

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
    def _not_found(job_id: str) -> Problem:
        return not_found("job_not_found", f"no export job {job_id}: check the id returned by POST /v1/exports")

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

    def mark_failed(self, job_id: str, error: Mapping[str, Any]) -> None:
        """The state machine's Catch: the worker failed (after its retries); record why."""
        cause = str(error.get("Cause") or error.get("Error") or "unknown error")
        if self.jobs.fail(job_id, "export_failed", f"the export failed: {cause[:1000]}"):
            logger.warning("export job failed", extra={"job_id": job_id, "error": error.get("Error")})
