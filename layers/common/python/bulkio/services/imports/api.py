"""The API side of imports: submit a job, list and view jobs, cancel one, fetch its error report. HTTP is the
web layer's: this answers values and raises the domain's refusals."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote, urlsplit

from aws_lambda_powertools import Logger

from bulkio.config import Settings
from bulkio.domain.auth import Principal
from bulkio.domain.callbacks import MAX_DELIVERIES, CallbackMessage, DeliveryTrigger, JobCallback, new_secret
from bulkio.domain.errors import Conflict, Gone, InvalidRequest, NotFound
from bulkio.domain.jobs import (
    ImportJob,
    ImportMode,
    JobSource,
    JobStatus,
    SourceKind,
    callback_view,
    check_committable,
    commit_job_id,
    delivery_view,
    iso,
    job_summary,
    job_view,
    progress,
    utc_now,
)
from bulkio.domain.rejected import RejectedFormat, rejected_format_of
from bulkio.domain.resources import Format, ImportTarget
from bulkio.domain.submissions import Submitted
from bulkio.domain.uploads import UploadedPart, missing_parts, part_ranges, part_size_for
from bulkio.services.idempotency import idempotency_scope, submit_once
from bulkio.services.imports.common import (
    IDEMPOTENCY_SCOPE,
    REPORT_CONTENT_TYPES,
    discard,
    rejected_key,
    report_key,
    scratch_prefixes,
    source_key,
)
from bulkio.services.imports.completion import Completion
from bulkio.services.listing import listed_page
from bulkio.services.ports import (
    CallbackQueue,
    ChunkerLauncher,
    IdempotencyRecords,
    ImportJobRepository,
    ImportStore,
    ObjectStore,
)

logger = Logger(child=True)

FIRST_ERRORS = 100
INLINE_REPORT_BYTES = 4 * 1024 * 1024  # below Lambda's 6 MB response cap, with room for base64
REPORT_URL_TTL_SECONDS = 900
LONG_POLL_INTERVAL_SECONDS = 1.0


@dataclass(slots=True)
class NewImport:
    """A validated POST /v1/imports request."""

    resource: ImportTarget
    format: Format | None
    url: str | None = None
    filename: str | None = None
    file: BinaryIO | None = None
    file_sha256: str | None = None
    mode: ImportMode = ImportMode.IMPORT
    parent_job_id: str | None = None  # the job whose rejected records this file holds, fixed
    callback_url: str | None = None  # where the job's end is POSTed, signed
    upload_size: int | None = None  # a presigned upload in parts (resumable), of a file of this many bytes

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
            "mode": self.mode.value,
            "parent_job_id": self.parent_job_id,
            "callback_url": self.callback_url,
            "upload_size": self.upload_size,
        }


@dataclass(slots=True)
class ErrorReport:
    """Either the report itself (small) or where to download it (large)."""

    content_type: str
    body: bytes | None = None
    redirect_url: str | None = None


@dataclass(frozen=True, slots=True)
class ImportApi:
    settings: Settings
    jobs: ImportJobRepository
    idempotency: IdempotencyRecords
    objects: ObjectStore
    store: ImportStore
    launch_chunker: ChunkerLauncher
    completion: Completion
    callbacks: CallbackQueue
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic

    def submit(self, request: NewImport, idempotency_key: str | None, owner: str) -> Submitted:
        """`owner` is the caller's subject: their Idempotency-Keys are theirs alone, and so is the job."""
        if request.parent_job_id is not None:
            parent = self.jobs.get(request.parent_job_id)
            if parent is None or parent.owner != owner:
                raise NotFound(
                    "parent_job_not_found",
                    f"no import job {request.parent_job_id} of yours: parent_job_id names the job whose rejected "
                    "records (GET /v1/imports/{job_id}/rejected) this file holds",
                )
        return submit_once(
            self.idempotency,
            idempotency_scope(IDEMPOTENCY_SCOPE, owner),
            idempotency_key,
            request.identity(),
            self.settings.idempotency_ttl_seconds,
            lambda job_id: self._create(request, job_id, owner),
        )

    def _create(self, request: NewImport, job_id: str, owner: str) -> dict[str, Any]:
        kind = request.kind
        resumable = kind is SourceKind.PRESIGNED and request.upload_size is not None
        if resumable and request.upload_size is not None and request.upload_size > self.settings.max_source_bytes:
            raise InvalidRequest(
                "source_too_large",
                f"upload_size {request.upload_size} is over MAX_SOURCE_BYTES ({self.settings.max_source_bytes}): "
                "split the file",
                limit_bytes=self.settings.max_source_bytes,
            )
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
                upload_id=self.objects.start_multipart(source_key(job_id)) if resumable else None,
                upload_size=request.upload_size if resumable else None,
            ),
            created_at=utc_now(),
            owner=owner,
            mode=request.mode,
            parent_job_id=request.parent_job_id,
            callback=JobCallback(request.callback_url, new_secret()) if request.callback_url else None,
        )
        self.jobs.create(job)
        try:
            body = self._start(job, request)
        except Exception as error:
            self.jobs.fail(job_id, "submission_failed", f"the import could not be started: {error}; submit it again")
            raise
        logger.info("import job created", extra={"job_id": job_id, "resource": job.target.value, "source": kind.value})
        return body

    def _start(self, job: ImportJob, request: NewImport) -> dict[str, Any]:
        """The side effect that gets the job going: upload, chunker launch or presigned URL."""
        job_id, kind = job.job_id, job.source.kind
        body = _submitted_body(job)
        if job.callback is not None:
            # Shown this once (and to a replay of the same Idempotency-Key): the receiver checks signatures with it.
            body["callback_secret"] = job.callback.secret
        if kind is SourceKind.MULTIPART and request.file is not None:
            # The object's creation event starts the chunker.
            self.objects.upload_stream(source_key(job_id), request.file)
        elif kind is SourceKind.URL:
            self.launch_chunker(job_id)
        elif job.source.upload_id is not None:
            body["upload"] = self._parts_to_upload(job)
        else:
            upload = self.objects.presign_put(source_key(job_id), self.settings.presign_ttl_seconds)
            body["upload"] = {"url": upload.url, "method": upload.method, "expires_at": iso(upload.expires_at)}
        return body

    def _parts_to_upload(self, job: ImportJob, uploaded: list[UploadedPart] | None = None) -> dict[str, Any]:
        """A resumable upload's parts, each with a fresh presigned PUT URL, and the ones S3 already holds."""
        source = job.source
        assert source.upload_id is not None and source.upload_size is not None
        ttl = self.settings.presign_ttl_seconds
        key = source_key(job.job_id)
        return {
            "method": "multipart",
            "size": source.upload_size,
            "part_size": part_size_for(source.upload_size),
            "parts": [
                {
                    "part_number": number,
                    "offset": offset,
                    "size": size,
                    "url": self.objects.presign_part(key, source.upload_id, number, ttl),
                }
                for number, offset, size in part_ranges(source.upload_size)
            ],
            "uploaded": [{"part_number": p.part_number, "size": p.size} for p in uploaded or []],
            "complete_url": f"/v1/imports/{job.job_id}/upload/complete",
            "expires_at": iso(utc_now() + timedelta(seconds=ttl)),
        }

    def upload_status(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """A resumable upload's parts with fresh URLs, and those already uploaded: how a client resumes."""
        job = self._awaiting_parts(job_id, caller)
        assert job.source.upload_id is not None
        uploaded = self._uploaded(job)
        return {"job_id": job_id, "upload": self._parts_to_upload(job, uploaded)}

    def complete_upload(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """Completes a resumable upload once every part is there: the file appears, and the job starts."""
        job = self._awaiting_parts(job_id, caller)
        assert job.source.upload_id is not None and job.source.upload_size is not None
        uploaded = self._uploaded(job)
        missing = missing_parts(job.source.upload_size, uploaded)
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise Conflict(
                "upload_incomplete",
                f"{len(missing)} of the file's parts are missing or of the wrong size ({shown}): PUT them to their "
                f"URLs (GET /v1/imports/{job_id}/upload gives fresh ones), then complete again",
                missing_parts=missing,
            )
        self.objects.complete_multipart(source_key(job_id), job.source.upload_id, uploaded)
        # The object's creation event starts the chunker too; launching it here does not wait for the event (a
        # second start finds the job claimed).
        self.launch_chunker(job_id)
        logger.info("resumable upload completed", extra={"job_id": job_id, "parts": len(uploaded)})
        return self.view(job_id, caller)

    def _awaiting_parts(self, job_id: str, caller: Principal) -> ImportJob:
        job = self._job(job_id, caller)
        if job.source.upload_id is None:
            raise Conflict(
                "not_a_resumable_upload",
                f"job {job_id} was not created with upload_size: it has no parts to upload",
            )
        if job.status is not JobStatus.AWAITING_UPLOAD:
            raise Conflict(
                "upload_already_completed",
                f"job {job_id} is {job.status.value}: its upload was completed (or it ended); GET /v1/imports/{job_id}",
            )
        return job

    def _uploaded(self, job: ImportJob) -> list[UploadedPart]:
        assert job.source.upload_id is not None
        try:
            return self.objects.uploaded_parts(source_key(job.job_id), job.source.upload_id)
        except FileNotFoundError:
            if self.objects.info(source_key(job.job_id)) is not None:
                raise Conflict(
                    "upload_already_completed",
                    f"the upload of job {job.job_id} was completed: the job starts shortly, GET /v1/imports/{{job_id}}",
                ) from None
            raise Gone(
                "upload_expired",
                f"the parts of job {job.job_id} are no longer kept: create a new import and upload the file again",
            ) from None

    def list_jobs(
        self,
        limit: int,
        cursor: str | None,
        caller: Principal,
        status: JobStatus | None = None,
        resource: ImportTarget | None = None,
    ) -> dict[str, Any]:
        """The caller's jobs, newest first, of a status and a resource if given; an admin sees everyone's (and the
        S3 drops')."""
        owner = None if caller.is_admin else caller.subject
        jobs, last = listed_page(
            lambda start: self.jobs.list_jobs(
                limit, start, owner, status.value if status else None, resource.value if resource else None
            ),
            cursor,
        )
        now = utc_now()
        return {"jobs": [job_summary(self._with_progress(job), now) for job in jobs], "next": last}

    def view(self, job_id: str, caller: Principal, wait_seconds: float = 0) -> dict[str, Any]:
        """The job; with `wait_seconds`, once its status or its percentage changes, or when they run out (a long
        poll: one request where a client would otherwise poll every second)."""
        first = self._with_progress(self._job(job_id, caller))
        deadline = self.monotonic() + wait_seconds
        job = first
        # Each round reads only the job and its progress; the first errors are read once, for the answer.
        while not first.is_final and _same_step(job, first) and self.monotonic() < deadline:
            self.sleep(min(LONG_POLL_INTERVAL_SECONDS, max(deadline - self.monotonic(), 0.0)))
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
        if job.is_final:  # failed or cancelled before its merge: the errors of the chunks it staged
            job.errors_by_code = self.store.errors_by_code(job.job_id)
        return job

    def cancel(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """Stops a job that has not ended: no more chunks are staged and nothing is merged."""
        job = self._job(job_id, caller)
        if not job.is_final and not self.store.fail_run(job_id):
            raise Conflict(
                "job_already_merged", f"job {job_id} has already written its records and is finishing: it cannot stop"
            )
        if not self.jobs.cancel(job_id):
            ended = self._job(job_id, caller).status.value
            raise Conflict("job_already_ended", f"job {job_id} already ended ({ended}): there is nothing to cancel")
        discard(self.objects, job_id, scratch_prefixes(job_id))
        self.completion.publish(job_id)
        logger.info("import job cancelled", extra={"job_id": job_id})
        return self.view(job_id, caller)

    def error_report(self, job_id: str, fmt: Literal["ndjson", "csv"], caller: Principal) -> ErrorReport:
        job = self._ended_job(job_id, caller, "the full error report")
        key = report_key(job.job_id, fmt)
        if self.objects.info(key) is None:
            # A job that failed or was cancelled before its merge has no report yet: the errors of the chunks it
            # staged are kept, and written now.
            with self.objects.writer(key, REPORT_CONTENT_TYPES[fmt]) as sink:
                self.store.write_error_report(job_id, fmt, sink)
        return self._served(key, REPORT_CONTENT_TYPES[fmt], f"import-{job_id}-errors.{fmt}")

    def rejected_file(self, job_id: str, fmt: RejectedFormat | None, caller: Principal) -> ErrorReport:
        """The job's rejected records in the upload's format (or `fmt`), to fix and upload as they are. Written
        to S3 at the first request and served from there after (inline when small, else a download URL)."""
        job = self._ended_job(job_id, caller, "the rejected-records file")
        fmt = fmt or rejected_format_of(job.format.value if job.format else None)
        key = rejected_key(job_id, fmt)
        if self.objects.info(key) is None:
            with self.objects.writer(key, REPORT_CONTENT_TYPES[fmt]) as sink:
                self.store.write_rejected(job_id, fmt, sink)
        return self._served(key, REPORT_CONTENT_TYPES[fmt], f"import-{job_id}-rejected.{fmt}")

    def _ended_job(self, job_id: str, caller: Principal, what: str) -> ImportJob:
        job = self._job(job_id, caller)
        if not job.is_final:
            raise Conflict(
                "report_not_ready",
                f"job {job_id} is {job.status.value}; {what} is written when it ends. "
                "GET /v1/imports/{job_id} shows the first 100 errors meanwhile",
            )
        return job

    def _served(self, key: str, content_type: str, filename: str) -> ErrorReport:
        info = self.objects.info(key)
        if info is not None and info.size <= INLINE_REPORT_BYTES:
            return ErrorReport(content_type, body=self.objects.read_bytes(key))
        return ErrorReport(content_type, redirect_url=self.objects.presign_get(key, REPORT_URL_TTL_SECONDS, filename))

    def commit(self, dry_run_id: str, caller: Principal) -> Submitted:
        """Imports the bytes a validated dry run read, as a new job (its child), without a second upload. Once
        per dry run: the commit's job id is derived from the dry run's, so a commit interrupted after claiming
        the dry run creates that same job when it is asked again, and two commits at once make one job."""
        dry_run = self._job(dry_run_id, caller)
        check_committable(dry_run, utc_now(), self.settings.dry_run_retention_seconds)
        commit_id = commit_job_id(dry_run_id)
        if dry_run.committed_job_id is not None and self.jobs.get(commit_id) is not None:
            raise Conflict(
                "already_committed",
                f"dry run {dry_run_id} was committed as import job {commit_id}: GET /v1/imports/{commit_id}",
                committed_job_id=commit_id,
            )
        source = dry_run.source
        if not source.pinned or source.key is None or self.objects.info(source.key, source.bucket) is None:
            raise Gone(
                "source_expired",
                f"the source of dry run {dry_run_id} is no longer stored: upload the file again as a new import",
            )
        if not self.jobs.claim_commit(dry_run_id, commit_id):
            raise Conflict(
                "already_committed",
                f"dry run {dry_run_id} was committed meanwhile: GET /v1/imports/{dry_run_id} names its import job",
            )
        job = ImportJob(
            job_id=commit_id,
            resource=dry_run.resource,
            format=dry_run.format,
            status=JobStatus.QUEUED,
            source=source,  # pinned: the commit reads the very version its dry run read
            created_at=utc_now(),
            owner=dry_run.owner,
            parent_job_id=dry_run_id,
            # The dry run's endpoint and secret: its receiver knows them already.
            callback=JobCallback(dry_run.callback.url, dry_run.callback.secret) if dry_run.callback else None,
        )
        self.jobs.create(job)
        self.launch_chunker(commit_id)
        logger.info("dry run committed", extra={"job_id": commit_id, "dry_run_id": dry_run_id})
        return Submitted(commit_id, _submitted_body(job), replayed=False)

    def deliveries(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """The attempts to POST the job's completion to its callback_url, oldest first."""
        job = self._job(job_id, caller)
        callback = self._callback_of(job)
        return {
            "job_id": job_id,
            "callback": callback_view(callback),
            "deliveries": [delivery_view(attempt) for attempt in self.jobs.deliveries(job_id)],
        }

    def redeliver(self, job_id: str, caller: Principal) -> dict[str, Any]:
        """Queues one more POST of the job's completion (its summary as it is now), whatever became of the
        earlier ones; a 2xx answer settles the callback as delivered."""
        job = self._job(job_id, caller)
        callback = self._callback_of(job)
        if not job.is_final:
            raise Conflict(
                "job_not_ended",
                f"job {job_id} is {job.status.value}: its callback is sent when it ends, redeliveries after that",
            )
        if callback.deliveries >= MAX_DELIVERIES:
            raise Conflict(
                "too_many_deliveries",
                f"job {job_id} has {callback.deliveries} delivery attempts, the most one job records: "
                "GET /v1/imports/{job_id} gives its summary",
            )
        self.callbacks.send(CallbackMessage(job_id=job_id, trigger=DeliveryTrigger.REDELIVERY))
        logger.info("callback redelivery queued", extra={"job_id": job_id})
        return {"job_id": job_id, "status": "queued", "deliveries_url": f"/v1/imports/{job_id}/deliveries"}

    @staticmethod
    def _callback_of(job: ImportJob) -> JobCallback:
        if job.callback is None:
            raise Conflict(
                "no_callback",
                f"job {job.job_id} was created without callback_url: it has no deliveries. Give callback_url "
                "when you create a job",
            )
        return job.callback

    def _job(self, job_id: str, caller: Principal) -> ImportJob:
        job = self.jobs.get(job_id)
        # Someone else's job is not found, rather than forbidden: its id tells nothing about it either.
        if job is None or not caller.may_read(job.owner):
            raise NotFound("job_not_found", f"no import job {job_id}: check the id returned by POST /v1/imports")
        return job


def _same_step(job: ImportJob, other: ImportJob) -> bool:
    """Nothing a long poll answers for has changed: the status, and the percentage shown."""
    return job.status is other.status and progress(job)["percent"] == progress(other)["percent"]


def _submitted_body(job: ImportJob) -> dict[str, Any]:
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "mode": job.mode.value,
        "resource": job.target.value,
        "format": job.format.value if job.format else None,
    }
    if job.parent_job_id:
        body["parent_job_id"] = job.parent_job_id
    if job.callback is not None:
        body["callback_url"] = job.callback.url
    return body


def _url_filename(url: str | None) -> str | None:
    """The last path segment of a source URL, shown as the job's file name (and used to infer the format)."""
    name = urlsplit(url).path.rsplit("/", 1)[-1] if url else ""
    return unquote(name) or None
