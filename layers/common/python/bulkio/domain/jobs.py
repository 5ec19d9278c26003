"""Import jobs: statuses, counters and the view the API shows. Pure: no AWS, no database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bulkio.domain.callbacks import CallbackState, DeliveryAttempt, JobCallback
from bulkio.domain.errors import Conflict, Gone
from bulkio.domain.resources import Format, ImportTarget


class JobStatus(StrEnum):
    QUEUED = "queued"
    AWAITING_UPLOAD = "awaiting_upload"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"
    VALIDATED = "validated"  # a dry run that ran to the end: its counters and report are the real run's


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.VALIDATED}
)
STARTABLE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.AWAITING_UPLOAD})


class ImportMode(StrEnum):
    IMPORT = "import"
    VALIDATE = "validate"  # a dry run: every check of a real run, the merge's included; no resource table written


class LeaseLost(RuntimeError):
    """Another chunker run holds the job now: this one must stop without touching the job."""


class InvalidCursor(ValueError):
    """A listing cursor the job repository did not hand out for this listing."""


class SourceKind(StrEnum):
    MULTIPART = "multipart"
    PRESIGNED = "presigned"
    URL = "url"
    DROP = "drop"


@dataclass(slots=True)
class JobSource:
    kind: SourceKind
    bucket: str | None = None
    key: str | None = None
    url: str | None = None
    filename: str | None = None
    etag: str | None = None
    # Set by the chunker's first run: the object version (or ETag) every later run reads, so that a retry
    # reads exactly the bytes of the first attempt. For a URL import, bucket and key then name the copy of
    # the downloaded bytes.
    version_id: str | None = None
    pinned: bool = False
    size: int | None = None  # bytes of the pinned source (compressed, if it is): the basis of early progress
    # A resumable (multipart) presigned upload: its S3 upload id and the file's announced size.
    upload_id: str | None = None
    upload_size: int | None = None


@dataclass(slots=True)
class Counters:
    total: int | None = None
    processed: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass(slots=True)
class JobFailure:
    code: str
    message: str


@dataclass(slots=True)
class ImportJob:
    job_id: str
    resource: ImportTarget | None  # None: a file dropped in a folder that names no resource (failed at once)
    format: Format | None
    status: JobStatus
    source: JobSource
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    chunks_total: int | None = None
    chunks_done: int = 0
    counters: Counters = field(default_factory=Counters)
    errors_by_code: dict[str, int] = field(default_factory=dict)
    failure: JobFailure | None = None
    owner: str | None = None  # the subject of the token that created it; None for S3 drops (admins' jobs)
    # The chunker's lease (epoch seconds; renewed while it reads) and how many chunker runs have started.
    lease_until: int | None = None
    chunker_runs: int = 0
    # How far the chunker has read the source (bytes of it, records found in them), while the total is unknown.
    bytes_read: int = 0
    records_read: int = 0
    # Ended, and its completion event not yet published: the job stays among the open jobs until it is.
    completion_pending: bool = False
    mode: ImportMode = ImportMode.IMPORT
    parent_job_id: str | None = None  # the dry run this job commits, or the job whose rejected records it holds
    committed_job_id: str | None = None  # a dry run's commit: the job that imports its source
    # Records of this job's rejected ones imported since, by jobs naming it as their parent_job_id.
    rejected_reimported: int = 0
    callback: JobCallback | None = None  # where the job's end is POSTed (callback_url), signed
    # A mixed job's outcome per resource, once it has ended: {"users": {total, processed, succeeded, failed}, ...}
    counters_by_resource: dict[str, dict[str, int]] | None = None

    @property
    def awaits_callback(self) -> bool:
        """Ended, and its callback neither taken nor given up: the job stays among the open jobs meanwhile."""
        return self.is_final and self.callback is not None and self.callback.state is CallbackState.PENDING

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def target(self) -> ImportTarget:
        """What the job loads. Every job that runs has it: one without (an unknown drop folder) failed at birth."""
        if self.resource is None:
            raise ValueError(f"job {self.job_id} names no resource: it never runs")
        return self.resource

    @property
    def is_dry_run(self) -> bool:
        return self.mode is ImportMode.VALIDATE


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    # Fixed width (always microseconds), so that timestamps sort as text in DynamoDB indexes.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def final_status(failed_records: int, mode: ImportMode = ImportMode.IMPORT) -> JobStatus:
    if mode is ImportMode.VALIDATE:
        return JobStatus.VALIDATED
    return JobStatus.COMPLETED_WITH_ERRORS if failed_records else JobStatus.COMPLETED


def commit_job_id(dry_run_id: str) -> str:
    """The id of the job that commits a dry run: one per dry run, whoever asks and however often, so that a
    commit interrupted after claiming the dry run creates that same job when it is asked again."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bulkio:commit:{dry_run_id}"))


def source_kept_until(dry_run: ImportJob, retention_seconds: int) -> datetime | None:
    """Until when a finished dry run's source is kept for its commit."""
    return dry_run.finished_at + timedelta(seconds=retention_seconds) if dry_run.finished_at else None


def check_committable(dry_run: ImportJob, now: datetime, retention_seconds: int) -> None:
    """Raises the refusal of POST /v1/imports/{id}/commit for this job, if any. A dry run committed before
    passes when its commit job does not exist yet (a commit interrupted between its two steps): the caller
    checks that."""
    job_id = dry_run.job_id
    if dry_run.mode is not ImportMode.VALIDATE:
        raise Conflict(
            "not_a_dry_run",
            f'job {job_id} is an import, not a dry run: only a job created with "mode": "validate" can be committed',
        )
    if dry_run.status is not JobStatus.VALIDATED:
        hint = (
            "wait until it is validated (GET /v1/imports/{job_id})"
            if not dry_run.is_final
            else "start a new dry run or import of the file"
        )
        raise Conflict("dry_run_not_validated", f"dry run {job_id} is {dry_run.status.value}, not validated: {hint}")
    kept_until = source_kept_until(dry_run, retention_seconds)
    if kept_until is not None and now >= kept_until:
        raise Gone(
            "source_expired",
            f"the source of dry run {job_id} was kept until {iso(kept_until)} (DRY_RUN_RETENTION_SECONDS): "
            "upload the file again as a new import",
            expired_at=iso(kept_until),
        )


@dataclass(frozen=True, slots=True)
class JobMetrics:
    rows_per_second: float | None
    error_rate: float | None
    duration_seconds: float | None


def job_metrics(job: ImportJob, now: datetime) -> JobMetrics:
    """Throughput over the records handled so far, from the start of processing to its end (or now)."""
    if job.started_at is None:
        return JobMetrics(None, None, None)
    duration = max(((job.finished_at or now) - job.started_at).total_seconds(), 0.0)
    handled = job.counters.processed
    rows_per_second = round(handled / duration, 1) if duration > 0 else None
    error_rate = round(job.counters.failed / handled, 4) if handled else None
    return JobMetrics(rows_per_second, error_rate, round(duration, 3))


DONE_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.VALIDATED})


def expected_records(job: ImportJob) -> tuple[float | None, str]:
    """The job's record total and what it rests on: counted ("records") once the chunker has read the whole
    source; before that estimated from the share of the source's bytes read so far ("bytes"), None while
    nothing has been read."""
    if job.counters.total is not None:
        return float(job.counters.total), "records"
    size = job.source.size
    if size and job.bytes_read and job.records_read:
        # Read past the end of the last record in a piece: never estimate fewer records than were found.
        return max(job.records_read * size / min(job.bytes_read, size), float(job.records_read)), "bytes"
    return None, "bytes"


def progress(job: ImportJob, now: datetime | None = None) -> dict[str, Any]:
    """How much of the job is done: records validated and staged out of the total (or its estimate). A job that
    failed or was cancelled stays at what it did; `eta_seconds` extrapolates the pace so far to the rest of the
    records (the merge at the end is not in it)."""
    total, basis = expected_records(job)
    processed = job.counters.processed
    if job.status in DONE_STATUSES:
        percent = 100.0
    elif total:
        # Not 100 before the job ends: the merge is still to come once every record is staged.
        percent = min(round(100.0 * processed / total, 1), 99.9)
    else:
        percent = 0.0
    eta: float | None = None
    if job.status is JobStatus.PROCESSING and now is not None and job.started_at is not None and total and processed:
        elapsed = (now - job.started_at).total_seconds()
        if elapsed > 0:
            eta = round(max(total - processed, 0.0) / (processed / elapsed), 1)
    return {
        "chunks_total": job.chunks_total,
        "chunks_done": job.chunks_done,
        "percent": percent,
        "basis": basis,
        "eta_seconds": eta,
    }


IMPORT_COMPLETED = "Import Job Completed"  # the completion event's detail-type and the callback's Bulkio-Event


def completion_payload(job: ImportJob, now: datetime) -> dict[str, Any]:
    """What the completion event carries as its detail and a callback POSTs: the job's summary, without the
    state of the callback that is being delivered."""
    summary = job_summary(job, now)
    summary.pop("callback", None)
    return summary


def job_summary(job: ImportJob, now: datetime) -> dict[str, Any]:
    """A job in the list of GET /v1/imports: the view without its errors."""
    view = job_view(job, [], now)
    del view["errors"]
    return view


def job_view(job: ImportJob, first_errors: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The representation of GET /v1/imports/{job_id}, without its links (the web layer adds them)."""
    metrics = job_metrics(job, now)
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "mode": job.mode.value,
        "resource": job.resource.value if job.resource is not None else None,
        "format": job.format.value if job.format else None,
        "source": {"kind": job.source.kind.value, "filename": job.source.filename},
        "counters": {
            "total": job.counters.total,
            "processed": job.counters.processed,
            "succeeded": job.counters.succeeded,
            "failed": job.counters.failed,
        },
        "progress": progress(job, now),
        "metrics": {
            "rows_per_second": metrics.rows_per_second,
            "error_rate": metrics.error_rate,
            "duration_seconds": metrics.duration_seconds,
        },
        "errors_by_code": job.errors_by_code,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "errors": first_errors,
    }
    if job.failure:
        view["failure"] = {"code": job.failure.code, "message": job.failure.message}
    if job.parent_job_id:
        view["parent_job_id"] = job.parent_job_id
    if job.committed_job_id:
        view["committed_job_id"] = job.committed_job_id
    if job.rejected_reimported:
        view["rejected_reimported"] = job.rejected_reimported
    if job.callback is not None:
        view["callback"] = callback_view(job.callback)
    if job.counters_by_resource is not None:
        view["counters_by_resource"] = job.counters_by_resource
    return view


def callback_view(callback: JobCallback) -> dict[str, Any]:
    """A job's callback as its view shows it: never its secret."""
    pending = callback.state is CallbackState.PENDING
    return {
        "url": callback.url,
        "state": callback.state.value,
        "deliveries": callback.deliveries,
        "next_attempt_at": iso(callback.next_attempt_at) if pending else None,
    }


def delivery_view(attempt: DeliveryAttempt) -> dict[str, Any]:
    """One attempt, as GET /v1/imports/{job_id}/deliveries lists it."""
    return {
        "delivery_id": attempt.delivery_id,
        "trigger": attempt.trigger.value,
        "at": iso(attempt.at),
        "outcome": "delivered" if attempt.delivered else "failed",
        "status_code": attempt.status_code,
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
        "response_excerpt": attempt.response_excerpt,
    }


def credited_parent(job: ImportJob) -> str | None:
    """The parent a finished import credits with the records it imported: the job whose rejected records it
    re-imported. None for any other job. (A dry run's commit also names a parent, the dry run, and credits it
    nothing: the caller checks the parent's committed_job_id.)"""
    if job.is_dry_run or job.status not in {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS}:
        return None
    return job.parent_job_id
