"""The import service layer: what the handlers call. Orchestrates the domain and the adapters."""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, unquote_plus, urlsplit

import orjson
from aws_lambda_powertools import Logger

from bulkio import faults
from bulkio.adapters.http_source import SourceUnavailable, open_url
from bulkio.adapters.jobs_repo import DynamoJobRepository, InvalidCursor, LeaseLost
from bulkio.adapters.metrics import JobSummary, Metrics
from bulkio.adapters.postgres import FailedRecord, ImportStore, StagedRecord, StagingLost
from bulkio.adapters.s3 import ObjectChanged, S3ObjectStore
from bulkio.adapters.sqs import ChunkQueue
from bulkio.config import Settings
from bulkio.domain.auth import Principal
from bulkio.domain.chunks import chunk_key, decode_chunk, encode_chunks
from bulkio.domain.jobs import (
    STARTABLE_STATUSES,
    Counters,
    ImportJob,
    JobSource,
    JobStatus,
    SourceKind,
    iso,
    job_links,
    job_metrics,
    job_summary,
    job_view,
    utc_now,
)
from bulkio.domain.parsing import SourceRecord, UnreadableFile, detect_format, iter_source_records
from bulkio.domain.records import ValidationRules, validate_record
from bulkio.domain.resources import Format, Resource, parse_resource
from bulkio.domain.sweep import SweepAction, SweepSettings, decide, retry_delay_seconds
from bulkio.problems import Problem, bad_request, conflict, not_found
from bulkio.services.idempotency import ApiResult, idempotency_scope, submit_once

logger = Logger(child=True)

IDEMPOTENCY_SCOPE = "imports"
FIRST_ERRORS = 100
INLINE_REPORT_BYTES = 4 * 1024 * 1024  # below Lambda's 6 MB response cap, with room for base64
REPORT_URL_TTL_SECONDS = 900
FORMAT_SNIFF_BYTES = 64 * 1024
SQS_BATCH = 10
FETCH_PIECE_BYTES = 1024 * 1024
# How often a job's staged rows may vanish (a PostgreSQL crash recovery each time) before it fails.
MAX_RESTAGES = 3
# After the presigned URL expired, how long an upload that started in time may still take to arrive.
UPLOAD_GRACE_SECONDS = 300


def source_key(job_id: str) -> str:
    # No caller-controlled text in keys: the original file name is kept in the job record only.
    return f"uploads/{job_id}/source"


def report_key(job_id: str, fmt: str) -> str:
    return f"reports/{job_id}/errors.{fmt}"


class ChunkerLauncher(Protocol):
    def __call__(self, job_id: str) -> None: ...


@dataclass(slots=True)
class NewImport:
    """A validated POST /v1/imports request."""

    resource: Resource
    format: Format | None
    url: str | None = None
    filename: str | None = None
    file: BinaryIO | None = None
    file_sha256: str | None = None

    @property
    def kind(self) -> SourceKind:
        if self.file is not None:
            return SourceKind.MULTIPART
        return SourceKind.URL if self.url else SourceKind.PRESIGNED

    def identity(self) -> dict[str, Any]:
        """What makes two requests the same request, for Idempotency-Key checks."""
        return {
            "kind": self.kind.value,
            "resource": self.resource.value,
            "format": self.format.value if self.format else None,
            "url": self.url,
            "filename": self.filename,
            "file_sha256": self.file_sha256,
        }


@dataclass(slots=True)
class ErrorReport:
    """Either the report itself (small) or where to download it (large)."""

    content_type: str
    body: bytes | None = None
    redirect_url: str | None = None


class ImportService:
    def __init__(
        self,
        settings: Settings,
        jobs: DynamoJobRepository,
        objects: S3ObjectStore,
        queue: ChunkQueue,
        store: ImportStore,
        rules: ValidationRules,
        launch_chunker: ChunkerLauncher,
        open_source_url: Callable[[str], BinaryIO] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.pushgateway_url, "imports")
        self.jobs = jobs
        self.objects = objects
        self.queue = queue
        self.store = store
        self.launch_chunker = launch_chunker
        self.rules = rules
        self._open_url = open_source_url or (
            lambda url: open_url(
                url,
                settings.allow_http_urls,
                settings.url_timeout_seconds,
                allowed_hosts=settings.url_allowed_hosts,
                denied_ports=settings.url_denied_ports,
                max_redirects=settings.max_url_redirects,
                max_bytes=settings.max_source_bytes,
                max_seconds=settings.url_max_seconds,
            )
        )

    # ================================================================ API side
    def submit(self, request: NewImport, idempotency_key: str | None, owner: str) -> ApiResult:
        """`owner` is the caller's subject: their Idempotency-Keys are theirs alone, and so is the job."""
        return submit_once(
            self.jobs,
            idempotency_scope(IDEMPOTENCY_SCOPE, owner),
            idempotency_key,
            request.identity(),
            self.settings.idempotency_ttl_seconds,
            lambda job_id: self._create(request, job_id, owner),
            lambda job_id: job_links(job_id)["self"],
        )

    def _create(self, request: NewImport, job_id: str, owner: str) -> ApiResult:
        kind = request.kind
        job = ImportJob(
            job_id=job_id,
            resource=request.resource,
            format=request.format,
            status=JobStatus.AWAITING_UPLOAD if kind is SourceKind.PRESIGNED else JobStatus.QUEUED,
            source=JobSource(
                kind=kind,
                bucket=None if kind is SourceKind.URL else self.objects.bucket,
                key=None if kind is SourceKind.URL else source_key(job_id),
                url=request.url,
                filename=request.filename or _url_filename(request.url),
            ),
            created_at=utc_now(),
            owner=owner,
        )
        self.jobs.create(job)
        try:
            body = self._start(job, request)
        except Exception as error:
            self.jobs.fail(job_id, "submission_failed", f"the import could not be started: {error}; submit it again")
            raise
        logger.info(
            "import job created", extra={"job_id": job_id, "resource": job.resource.value, "source": kind.value}
        )
        return ApiResult(202, body, {"Location": job_links(job_id)["self"]})

    def _start(self, job: ImportJob, request: NewImport) -> dict[str, Any]:
        """The side effect that gets the job going: upload, chunker launch or presigned URL."""
        job_id, kind = job.job_id, job.source.kind
        body: dict[str, Any] = {
            "job_id": job_id,
            "status": job.status.value,
            "resource": job.resource.value,
            "format": job.format.value if job.format else None,
            "links": job_links(job_id),
        }
        if kind is SourceKind.MULTIPART and request.file is not None:
            # The object's creation event starts the chunker.
            self.objects.upload_stream(source_key(job_id), request.file)
        elif kind is SourceKind.URL:
            self.launch_chunker(job_id)
        else:
            upload = self.objects.presign_put(source_key(job_id), self.settings.presign_ttl_seconds)
            body["upload"] = {"url": upload.url, "method": upload.method, "expires_at": iso(upload.expires_at)}
        return body

    def list_jobs(self, limit: int, cursor: str | None, caller: Principal) -> dict[str, Any]:
        """The caller's jobs, newest first; an admin sees everyone's (and the S3 drops')."""
        try:
            start = orjson.loads(base64.urlsafe_b64decode(cursor)) if cursor else None
            jobs, last = self.jobs.list_jobs(limit, start, owner=None if caller.is_admin else caller.subject)
        except (ValueError, orjson.JSONDecodeError, InvalidCursor) as error:
            raise bad_request("invalid_cursor", "cursor is not one this API returned: pass `next` as given") from error
        now = utc_now()
        return {
            "jobs": [job_summary(self._with_progress(job), now) for job in jobs],
            "next": base64.urlsafe_b64encode(orjson.dumps(last)).decode() if last else None,
        }

    def view(self, job_id: str, caller: Principal) -> dict[str, Any]:
        job = self._with_progress(self._job(job_id, caller))
        first_errors = self.store.first_errors(job_id, FIRST_ERRORS) if job.counters.failed else []
        return job_view(job, first_errors, utc_now())

    def _with_progress(self, job: ImportJob) -> ImportJob:
        """Progress lives with the staged chunks in PostgreSQL; a completed job carries its final counters."""
        if job.status not in {JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED}:
            return job
        progress = self.store.progress(job.job_id)
        job.chunks_done = progress.chunks
        job.counters.processed = progress.records
        job.counters.failed = progress.failed
        return job

    def cancel(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """Stops a job that has not ended: no more chunks are staged and nothing is merged."""
        job = self._job(job_id, caller)
        if not job.is_final and not self.store.fail_run(job_id):
            raise conflict(
                "job_already_merged", f"job {job_id} has already written its records and is finishing: it cannot stop"
            )
        if not self.jobs.cancel(job_id):
            ended = self._job(job_id, caller).status.value
            raise conflict("job_already_ended", f"job {job_id} already ended ({ended}): there is nothing to cancel")
        logger.info("import job cancelled", extra={"job_id": job_id})
        return self.view(job_id, caller)

    def error_report(self, job_id: str, fmt: str, caller: Principal) -> ErrorReport:
        job = self._job(job_id, caller)
        content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        if not job.is_final:
            raise conflict(
                "report_not_ready",
                f"job {job_id} is {job.status.value}; the full error report is written when it ends. "
                "GET /v1/imports/{job_id} shows the first 100 errors meanwhile",
            )
        key = report_key(job_id, fmt)
        info = self.objects.info(key)
        if info is None:
            return ErrorReport(content_type, body=b"")
        if info.size <= INLINE_REPORT_BYTES:
            return ErrorReport(content_type, body=self.objects.read_bytes(key))
        filename = f"import-{job_id}-errors.{fmt}"
        return ErrorReport(content_type, redirect_url=self.objects.presign_get(key, REPORT_URL_TTL_SECONDS, filename))

    def _job(self, job_id: str, caller: Principal) -> ImportJob:
        job = self.jobs.get(job_id)
        # Someone else's job is not found, rather than forbidden: its id tells nothing about it either.
        if job is None or not caller.may_read(job.owner):
            raise not_found("job_not_found", f"no import job {job_id}: check the id returned by POST /v1/imports")
        return job

    # ================================================================ chunker
    def on_object_created(self, bucket: str, key: str, etag: str) -> None:
        if key.endswith("/"):
            return  # a folder marker (the S3 console's "Create folder"), not a file
        if key.startswith("uploads/"):
            self.run_chunker(key.split("/")[1])
        elif key.startswith("drop/"):
            self._import_drop(bucket, key, etag)
        else:
            logger.warning("object outside uploads/ and drop/ ignored", extra={"key": key})

    def _import_drop(self, bucket: str, key: str, etag: str) -> None:
        parts = key.split("/")
        resource = parse_resource(parts[1] if len(parts) > 2 else None)
        if resource is None:
            logger.warning(
                "dropped object ignored: put files under drop/users/, drop/articles/ or drop/comments/",
                extra={"key": key},
            )
            return
        filename = parts[-1]
        job = ImportJob(
            job_id=str(uuid.uuid4()),
            resource=resource,
            format=None,
            status=JobStatus.QUEUED,
            source=JobSource(SourceKind.DROP, bucket=bucket, key=key, filename=filename, etag=etag),
            created_at=utc_now(),
        )
        self.run_chunker(self.jobs.create_for_drop(job))

    def run_chunker(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            logger.warning("no job for this source: ignored", extra={"job_id": job_id})
            return
        if job.status not in STARTABLE_STATUSES and job.status is not JobStatus.PROCESSING:
            logger.info("job already ended: source ignored", extra={"job_id": job_id})
            return
        lease = ChunkerLease(self.jobs, job_id, str(uuid.uuid4()), self.settings.chunker_lease_seconds)
        if not self.jobs.start_processing(job_id, job.format, lease.run_id, lease.seconds):
            # Another run holds a live lease (it renews it while it reads); if it died, the sweeper relaunches
            # the chunker once the lease has run out.
            logger.info("job is being chunked by another invocation", extra={"job_id": job_id})
            return
        started = time.monotonic()
        try:
            with closing(self._open_source(job, lease)) as source:
                stream, fmt = self._settle_format(job, source)
                records = iter_source_records(
                    stream,
                    fmt,
                    job.resource,
                    filename=job.source.filename,
                    max_record_bytes=self.settings.max_record_bytes,
                    max_decompressed_bytes=self.settings.max_decompressed_bytes,
                    max_compression_ratio=self.settings.max_compression_ratio,
                    # Past the limit the parser stops reading and the job fails (too_many_records); the chunks
                    # already queued are skipped by the writers because the job has failed.
                    max_records=self.settings.max_records_per_job,
                )
                chunks_total, records_total = self._write_chunks(job, records, lease)
        except LeaseLost:
            logger.warning("another chunker run took the job over: this one stops", extra={"job_id": job_id})
            return
        except (UnreadableFile, SourceUnavailable) as problem:
            self.fail(job_id, problem.code, problem.message)
            return
        except Exception:
            # S3, SQS or database trouble: free the claim so that Lambda's retry of this event can chunk again.
            self.jobs.release_chunker_lease(job_id, lease.run_id)
            raise
        # DynamoDB first: once the job item has its totals no chunker run starts again, and the sweeper copies
        # them to PostgreSQL if the database was away just now. The chunker touches the database only here.
        self.jobs.set_totals(job_id, chunks_total, records_total)
        self._store_totals(job_id, job.resource, chunks_total, records_total)
        logger.info(
            "source chunked",
            extra={
                "job_id": job_id,
                "chunks": chunks_total,
                "records": records_total,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.finish_if_complete(job_id)

    def _store_totals(self, job_id: str, resource: Resource, chunks_total: int, records_total: int) -> None:
        self.store.register_job(job_id, resource)
        self.store.set_totals(job_id, chunks_total, records_total)

    def _open_source(self, job: ImportJob, lease: ChunkerLease) -> BinaryIO:
        """The source exactly as the job's first chunker run read it: every run reads the pinned version."""
        source = job.source if job.source.pinned else self._pin_source(job, lease)
        key = source.key or source_key(job.job_id)
        where = f"s3://{source.bucket or self.objects.bucket}/{key}"
        try:
            return self.objects.open_version(key, source.bucket, source.version_id, source.etag)
        except FileNotFoundError as error:
            raise SourceUnavailable("source_missing", f"{where} no longer exists: upload the file again") from error
        except ObjectChanged as error:
            raise SourceUnavailable(
                "source_changed",
                f"{where} was replaced while the job was reading it, and the bucket keeps no versions, so the "
                "rest of the first file cannot be read: submit the import again (or enable bucket versioning)",
            ) from error

    def _pin_source(self, job: ImportJob, lease: ChunkerLease) -> JobSource:
        """Fixes the bytes this job imports: the S3 object's current version, or for a URL import a copy of the
        downloaded bytes in S3 (a URL may answer differently next time)."""
        source = job.source
        if source.kind is SourceKind.URL and source.url:
            key = fetched_key(job.job_id)
            with closing(self._open_url(source.url)) as remote, self.objects.writer(key) as copy:
                while piece := remote.read(FETCH_PIECE_BYTES):
                    copy.write(piece)
                    lease.keep_alive()
            source = replace(source, bucket=self.objects.bucket, key=key, etag=None)
        key = source.key or source_key(job.job_id)
        info = self.objects.info(key, source.bucket)
        if info is None:
            raise SourceUnavailable(
                "source_missing", f"s3://{source.bucket or self.objects.bucket}/{key} does not exist: upload the file"
            )
        # A drop names the version its S3 event announced (its ETag); a later PUT of the same key is its own job.
        etag = source.etag or info.etag
        version_id = info.version_id if info.etag == etag else None
        pinned = replace(source, key=key, etag=etag, version_id=version_id)
        return self.jobs.pin_source(job.job_id, pinned)

    def _settle_format(self, job: ImportJob, source: BinaryIO) -> tuple[BinaryIO, Format | None]:
        """Detects a format the request left out, so that the job shows it; reads only the first bytes."""
        if job.format is not None:
            return source, job.format
        head = source.read(FORMAT_SNIFF_BYTES)
        fmt = detect_format(job.source.filename, head)
        if fmt is not None:
            self.jobs.set_format(job.job_id, fmt)
        return _PrefixedStream(head, source), fmt

    def _write_chunks(self, job: ImportJob, records: Iterable[SourceRecord], lease: ChunkerLease) -> tuple[int, int]:
        chunk_no = 0
        records_total = 0
        announced: list[dict[str, Any]] = []
        for chunk in encode_chunks(records, self.settings.chunk_records, self.settings.chunk_max_bytes):
            lease.keep_alive()
            chunk_no += 1
            records_total += chunk.records
            key = chunk_key(job.job_id, chunk_no)
            self.objects.put_bytes(key, chunk.body, "application/x-ndjson")
            faults.crash_at(faults.CHUNKER_AFTER_CHUNK)
            announced.append(chunk_message(job.job_id, job.resource, chunk_no, chunk.first_index, chunk.records))
            if len(announced) == SQS_BATCH:  # one SendMessageBatch per ten chunks
                self._announce(announced)
                announced = []
        self._announce(announced)
        return chunk_no, records_total

    def _announce(self, messages: list[dict[str, Any]]) -> None:
        # A drill may ask for every message twice: SQS delivers at least once, and twice must change nothing.
        self.queue.send(messages * 2 if faults.switched_on(faults.DUPLICATE_CHUNK_MESSAGES) else messages)

    # ================================================================ writers
    def process_chunk(self, message: dict[str, Any]) -> None:
        job_id, chunk_no = message["job_id"], int(message["chunk"])
        job = self.jobs.get(job_id)
        if job is None or job.status in {JobStatus.FAILED, JobStatus.CANCELLED}:
            logger.info("chunk of an ended job skipped", extra={"job_id": job_id, "chunk": chunk_no})
            return
        started = time.monotonic()
        faults.crash_at(faults.WRITER_BEFORE_STAGE)
        try:
            staged_now = self._validate_and_stage(job, chunk_no, message["key"])
        except Exception as error:
            # Kept for the dead-letter consumer, which reports it if the chunk never succeeds.
            self.store.record_chunk_failure(job_id, chunk_no, f"{type(error).__name__}: {error}")
            raise
        faults.crash_at(faults.WRITER_AFTER_STAGE)
        if staged_now:  # a redelivered chunk is not counted again
            self.metrics.chunks.labels(job.resource.value).inc()
            self.metrics.chunk_seconds.labels(job.resource.value).observe(time.monotonic() - started)
        self.finish_if_complete(job_id)

    def _validate_and_stage(self, job: ImportJob, chunk_no: int, key: str) -> bool:
        """False when the chunk had been staged before (a redelivery)."""
        staged: list[StagedRecord] = []
        failed: list[FailedRecord] = []
        for entry in decode_chunk(self.objects.read_bytes(key)):
            if entry.error is not None:
                failed.append(FailedRecord(entry.index, entry.line, entry.error, entry.raw_json))
                continue
            result = validate_record(job.resource, entry.record or {}, self.rules)
            if result.row is not None:
                staged.append(StagedRecord(entry.index, entry.line, result.row, entry.raw_json))
            failed.extend(FailedRecord(entry.index, entry.line, error, entry.raw_json) for error in result.errors)
        # Staging also counts the chunk's records, in the same transaction: a redelivery counts nothing twice.
        return self.store.stage_chunk(job.job_id, job.resource, chunk_no, staged, failed)

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
        if self.jobs.finish(job_id, counters, outcome.errors_by_code):
            finished = self.jobs.get(job_id) or job
            metrics = job_metrics(finished, utc_now())
            self._count_finished(finished, outcome.errors_by_code, metrics.duration_seconds or 0.0)
            logger.info(
                "import job finished",
                extra={
                    "job_id": job_id,
                    "resource": job.resource.value,
                    "status": finished.status.value,
                    "rows": outcome.records_total,
                    "succeeded": outcome.succeeded,
                    "failed": outcome.failed,
                    "rows_per_second": metrics.rows_per_second,
                    "error_rate": metrics.error_rate,
                    "duration_seconds": metrics.duration_seconds,
                },
            )

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
        self._announce([chunk_message(job_id, job.resource, chunk_no) for chunk_no in lost.chunks])

    def _count_finished(self, job: ImportJob, errors_by_code: dict[str, int], duration_seconds: float) -> None:
        """Counted once per job (the finish above succeeds once): the sums over all instances are the job totals."""
        resource = job.resource.value
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
        for fmt, content_type in (("ndjson", "application/x-ndjson"), ("csv", "text/csv; charset=utf-8")):
            with self.objects.writer(report_key(job_id, fmt), content_type) as sink:
                self.store.write_error_report(job_id, fmt, sink)  # type: ignore[arg-type]

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

    # ================================================================ sweeper
    def sweep(self) -> dict[str, int]:
        """Looks at every unfinished job once and does what it needs to end (bulkio/domain/sweep.py). One job's
        trouble never stops the others'. Returns how many jobs got each action."""
        settings = SweepSettings(
            stall_seconds=self.settings.sweep_stall_seconds,
            max_chunker_runs=self.settings.sweep_max_chunker_runs,
            max_resends=self.settings.sweep_max_resends,
            upload_window_seconds=self.settings.presign_ttl_seconds + UPLOAD_GRACE_SECONDS,
        )
        actions: dict[str, int] = {}
        for job in self.jobs.open_jobs():
            try:
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
            self._store_totals(job.job_id, job.resource, job.chunks_total, job.counters.total or 0)
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
            self._announce([chunk_message(job.job_id, job.resource, chunk_no) for chunk_no in unstaged])
        elif decision.action is SweepAction.FINISH:
            self.finish_if_complete(job.job_id, wait=False)
        elif decision.action is SweepAction.FAIL:
            self.fail(job.job_id, decision.code or "job_interrupted", decision.message or "the job was interrupted")
        return decision.action.value

    # ================================================================ failures
    def fail(self, job_id: str, code: str, message: str) -> None:
        if not self.store.fail_run(job_id):
            # Its rows were merged before the failure: finishing it reports what really happened.
            self.finish_if_complete(job_id)
            return
        if self.jobs.fail(job_id, code, message):
            # The reason may quote the data (a database error names the value it refused): it goes to the job,
            # which only its owner reads, and to the logs at DEBUG only.
            logger.warning(
                "import job failed: GET /v1/imports/{job_id} shows why", extra={"job_id": job_id, "code": code}
            )
            logger.debug("import job failure reason", extra={"job_id": job_id, "reason": message})

    def on_failed_invocation(self, record: dict[str, Any]) -> None:
        """A Lambda destination record: the chunker failed on an event after all its retries."""
        self.metrics.dead_letters.labels("chunker_event").inc()
        error = record.get("responsePayload") or {}
        reason = error.get("errorMessage") if isinstance(error, dict) else str(error)
        attempts = record.get("requestContext", {}).get("approximateInvokeCount", "several")
        for job_id in self._jobs_of_event(record.get("requestPayload") or {}):
            self.fail(
                job_id,
                "chunker_failed",
                f"reading the source failed {attempts} times: {reason or 'no reason given'}. "
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

    def on_dead_letter(self, message: dict[str, Any]) -> None:
        job_id, chunk_no = message["job_id"], int(message["chunk"])
        self.metrics.dead_letters.labels("chunk").inc()
        if self.store.is_staged(job_id, chunk_no):
            # Another copy of the message (a re-send by the sweeper, a redelivery) staged the chunk meanwhile.
            logger.info("dead-lettered chunk was staged by another delivery: ignored", extra={"job_id": job_id})
            self.finish_if_complete(job_id)
            return
        reason = self.store.chunk_failure(job_id, chunk_no) or "the writer crashed without recording a reason"
        first = int(message.get("first") or (chunk_no - 1) * self.settings.chunk_records + 1)
        last = first + int(message.get("records") or self.settings.chunk_records) - 1
        job = self.jobs.get(job_id)
        if job is not None and job.counters.total:
            last = min(last, job.counters.total)
        self.fail(
            job_id,
            "chunk_failed",
            f"chunk {chunk_no} (records {first} to {last}) failed repeatedly "
            f"and was moved to the dead-letter queue: {reason}. Fix the cause and submit the import again.",
        )


def fetched_key(job_id: str) -> str:
    """Where a URL import keeps the bytes it downloaded: outside uploads/ and drop/, so no S3 event fires."""
    return f"fetched/{job_id}/source"


def chunk_message(
    job_id: str, resource: Resource, chunk_no: int, first: int | None = None, records: int | None = None
) -> dict[str, Any]:
    """The SQS message announcing one chunk; `first` and `records` only name its records in dead-letter reports
    (a re-sent chunk's message leaves them out)."""
    message: dict[str, Any] = {
        "job_id": job_id,
        "resource": resource.value,
        "chunk": chunk_no,
        "key": chunk_key(job_id, chunk_no),
    }
    if first is not None:
        message["first"] = first
    if records is not None:
        message["records"] = records
    return message


class ChunkerLease:
    """A chunker run's hold on its job: renewed while the run reads, at most every third of its length, so a
    run that died loses the job within `seconds` and the sweeper hands it to a new run."""

    def __init__(self, jobs: DynamoJobRepository, job_id: str, run_id: str, seconds: int) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.run_id = run_id
        self.seconds = seconds
        self._renewed = time.monotonic()

    def keep_alive(self) -> None:
        """Raises LeaseLost when another run holds the job now."""
        if time.monotonic() - self._renewed < self.seconds / 3:
            return
        self.jobs.renew_chunker_lease(self.job_id, self.run_id, self.seconds)
        self._renewed = time.monotonic()


def _url_filename(url: str | None) -> str | None:
    """The last path segment of a source URL, shown as the job's file name (and used to infer the format)."""
    name = urlsplit(url).path.rsplit("/", 1)[-1] if url else ""
    return unquote(name) or None


class _PrefixedStream(io.RawIOBase):
    """`head` followed by the rest of `stream`: lets the format be sniffed without losing the bytes read."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            take = len(self._head) if size < 0 else min(size, len(self._head))
            piece = bytes(self._head[:take])
            self._head = self._head[take:]
            return piece
        return self._stream.read(size)


__all__ = ["ApiResult", "ErrorReport", "ImportService", "NewImport", "Problem"]
