"""What the services need from the outside world, as protocols: the adapters (DynamoDB, PostgreSQL, S3, SQS, the
Pushgateway) and the fakes of tests/fakes.py both fit them, and the services know nothing else about either."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, BinaryIO, Literal, Protocol

from bulkio.domain.callbacks import CallbackAnswer, CallbackMessage, CallbackState, DeliveryAttempt
from bulkio.domain.chunks import ChunkMessage
from bulkio.domain.export_jobs import ExportJob
from bulkio.domain.exports import ExportFormat, ExportQuery
from bulkio.domain.idempotency import IdempotencyClaim, StoredRequest
from bulkio.domain.jobs import Counters, ImportJob, ImportMode, JobSource
from bulkio.domain.metrics import JobSummary
from bulkio.domain.objects import ByteSink, ObjectInfo, PresignedUpload
from bulkio.domain.rejected import RejectedFormat
from bulkio.domain.resources import Format, ImportTarget
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord, StagingLost, StagingProgress
from bulkio.domain.sweep import RunState
from bulkio.domain.uploads import UploadedPart

# ================================================================================================ jobs


class ImportJobRepository(Protocol):
    """Import jobs (DynamoDB): every status change is conditional, so that a job starts once and ends once."""

    def create(self, job: ImportJob) -> None: ...

    def get(self, job_id: str) -> ImportJob | None: ...

    def job_for_drop(self, bucket: str, key: str, etag: str) -> str | None: ...

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ImportJob], dict[str, Any] | None]: ...

    def create_for_drop(self, job: ImportJob) -> str: ...

    def open_jobs(self, page_size: int = 100) -> Iterable[ImportJob]: ...

    def start_processing(self, job_id: str, format_: Format | None, run_id: str, lease_seconds: int) -> bool: ...

    def renew_chunker_lease(self, job_id: str, run_id: str, lease_seconds: int) -> None: ...

    def record_reading(
        self, job_id: str, run_id: str, bytes_read: int, records_read: int, lease_seconds: int
    ) -> None: ...

    def release_chunker_lease(self, job_id: str, run_id: str) -> None: ...

    def pin_source(self, job_id: str, source: JobSource) -> JobSource: ...

    def set_format(self, job_id: str, format_: Format) -> None: ...

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None: ...

    def finish(
        self,
        job_id: str,
        counters: Counters,
        errors_by_code: dict[str, int],
        mode: ImportMode = ImportMode.IMPORT,
        counters_by_resource: dict[str, dict[str, int]] | None = None,
    ) -> bool: ...

    def claim_commit(self, dry_run_id: str, commit_id: str) -> bool: ...

    def credit_reimport(self, parent_id: str, child_id: str, records: int) -> None:
        """Adds `records` to the parent's rejected_reimported, once per child."""

    def completion_published(self, job_id: str, keep_open: bool = False) -> None:
        """The ended job's completion event went out (and its callback was queued): it leaves the open jobs (the
        sweeper's outbox), unless `keep_open` (its callback is still to be taken); the callback's first attempt
        is then due now."""

    def claim_callback_attempt(self, job_id: str, attempt: int, lease_until: datetime) -> bool:
        """Automatic attempt `attempt` starts, once: False when it was claimed before (a duplicate message) or
        the callback is no longer pending. Until `lease_until` the sweeper takes it as under way."""

    def record_delivery(
        self, job_id: str, attempt: DeliveryAttempt, settled: CallbackState | None, next_attempt_at: datetime | None
    ) -> None:
        """Appends the attempt to the job's deliveries. `settled` (delivered, failed) ends the callback: the job
        leaves the open jobs; else the next automatic attempt is due at `next_attempt_at`, if given."""

    def settle_callback(self, job_id: str, state: CallbackState) -> None:
        """Ends a pending callback without an attempt (the retry window closed): the job leaves the open jobs."""

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]: ...

    def fail(self, job_id: str, code: str, message: str) -> bool: ...

    def cancel(self, job_id: str) -> bool: ...


class IdempotencyRecords(Protocol):
    """Idempotency-Keys and the responses they replay, for every job-creating request (imports, exports)."""

    def claim_idempotency_key(self, claim: IdempotencyClaim) -> StoredRequest | None: ...

    def store_response(self, scope: str, key: str, status: int, body: str) -> None: ...

    def release_idempotency_key(self, scope: str, key: str) -> None: ...


# ======================================================================================== import store


class ImportStore(Protocol):
    """The import pipeline's database work: staging exactly once per chunk, the merge, progress, error reports."""

    def register_job(self, job_id: str, target: ImportTarget, dry_run: bool = False) -> None: ...

    def stage_chunk(
        self,
        job_id: str,
        target: ImportTarget,
        chunk_no: int,
        staged: Iterable[StagedRecord],
        failed: Iterable[FailedRecord],
        dry_run: bool = False,
    ) -> bool: ...

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None: ...

    def try_merge(self, job_id: str, wait: bool = True) -> MergeOutcome | StagingLost | None: ...

    def progress(self, job_id: str) -> StagingProgress: ...

    def errors_by_code(self, job_id: str) -> dict[str, int]:
        """The job's errors so far, by code (those of the chunks staged, for a job that ended unmerged)."""
        ...

    def run_state(self, job_id: str) -> RunState | None: ...

    def unstaged_chunks(self, job_id: str) -> list[int]: ...

    def mark_resent(self, job_id: str) -> None: ...

    def is_staged(self, job_id: str, chunk_no: int) -> bool: ...

    def first_errors(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]: ...

    def write_error_report(self, job_id: str, fmt: Literal["ndjson", "csv"], sink: ByteSink) -> int: ...

    def write_rejected(self, job_id: str, fmt: RejectedFormat, sink: ByteSink) -> int: ...

    def record_chunk_failure(self, job_id: str, chunk_no: int, error: str) -> None: ...

    def chunk_failure(self, job_id: str, chunk_no: int) -> str | None: ...

    def fail_run(self, job_id: str) -> bool: ...


# ============================================================================================= objects


class ObjectWriter(Protocol):
    """An object being written piece by piece: it appears on a clean exit of the `with` block, never on an error."""

    @property
    def bytes_written(self) -> int: ...

    def write(self, data: bytes, /) -> int: ...

    def __enter__(self) -> ObjectWriter: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None, /
    ) -> None: ...


class ObjectStore(Protocol):
    """One bucket of objects (S3): uploads, chunks, error reports, export files. `bucket` None means this one."""

    @property
    def bucket(self) -> str: ...

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def upload_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> None: ...

    def open_version(self, key: str, bucket: str | None, version_id: str | None, etag: str | None) -> BinaryIO: ...

    def read_bytes(self, key: str) -> bytes:
        """FileNotFoundError when the object does not exist."""
        ...

    def purge(self, prefix: str) -> int:
        """Deletes every version of every object under `prefix` (no delete markers left behind); returns how
        many versions went."""
        ...

    def info(self, key: str, bucket: str | None = None) -> ObjectInfo | None: ...

    def presign_put(self, key: str, ttl_seconds: int) -> PresignedUpload: ...

    def presign_get(self, key: str, ttl_seconds: int, filename: str | None = None) -> str: ...

    def start_multipart(self, key: str) -> str:
        """Starts a multipart upload of `key`; returns its upload id."""
        ...

    def presign_part(self, key: str, upload_id: str, part_number: int, ttl_seconds: int) -> str: ...

    def uploaded_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """FileNotFoundError when the upload is gone (completed or aborted)."""
        ...

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None: ...

    def writer(self, key: str, content_type: str = "application/octet-stream") -> ObjectWriter: ...


# =============================================================================================== queue


class ChunkQueue(Protocol):
    """The writers' queue (SQS): one message per chunk."""

    def send(self, messages: Iterable[ChunkMessage]) -> None: ...

    def delay(self, receipt_handle: str, seconds: int) -> None:
        """A received message comes back only after `seconds`."""


# ============================================================================================= metrics


class Counting(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observing(Protocol):
    def observe(self, amount: float) -> None: ...


class CounterFamily(Protocol):
    def labels(self, *values: str) -> Counting: ...


class HistogramFamily(Protocol):
    def labels(self, *values: str) -> Observing: ...


class MetricsSink(Protocol):
    """The process's metrics (Prometheus, pushed to a Pushgateway): counters by label values, and one summary
    per finished job."""

    @property
    def records(self) -> CounterFamily: ...

    @property
    def record_errors(self) -> CounterFamily: ...

    @property
    def chunks(self) -> CounterFamily: ...

    @property
    def chunk_seconds(self) -> HistogramFamily: ...

    @property
    def dead_letters(self) -> CounterFamily: ...

    @property
    def export_rows(self) -> CounterFamily: ...

    @property
    def export_bytes(self) -> CounterFamily: ...

    def job_finished(self, summary: JobSummary) -> None: ...

    def delete_job_groups_older_than(self, seconds: float) -> int: ...

    def push(self) -> None: ...


# ============================================================================================ launches


class EventPublisher(Protocol):
    """Puts one event on the event bus (bulkio.adapters.events): at least once, by whoever ends a job, and again
    by the sweeper for a job whose event did not go out."""

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None: ...


class CallbackQueue(Protocol):
    """The queue of callback deliveries: a message comes back to the callback function after `delay_seconds`
    (at most SQS's 900)."""

    def send(self, message: CallbackMessage, delay_seconds: int = 0) -> None: ...


class CallbackSender(Protocol):
    """POSTs a callback through the SSRF guards of URL imports; raises SourceUnavailable when no HTTP answer came
    (refused by the guards, unreachable, timed out)."""

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> CallbackAnswer: ...


class ChunkerLauncher(Protocol):
    """Starts a chunker run for the job, asynchronously."""

    def __call__(self, job_id: str) -> None: ...


SourceOpener = Callable[[str], BinaryIO]
"""Opens a URL import's source for reading (the vetted HTTP fetch)."""


# ============================================================================================= exports


class ExportJobRepository(Protocol):
    """Export jobs (DynamoDB): every status change is conditional, so that a job completes once and fails once."""

    def create(self, job: ExportJob) -> None: ...

    def get(self, job_id: str) -> ExportJob | None: ...

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ExportJob], dict[str, Any] | None]: ...

    def start(self, job_id: str) -> bool:
        """queued → running; a retried worker may take a running job again."""

    def complete(self, job_id: str, rows: int, size: int, object_key: str) -> bool: ...

    def fail(self, job_id: str, code: str, message: str) -> bool: ...


class ExportStream(Protocol):
    """An export's body, chunk by chunk; `rows` counts the exported rows once it has been read to the end."""

    @property
    def rows(self) -> int: ...

    def __iter__(self) -> Iterator[bytes]: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None:
        """Stops the export early (the query is cancelled)."""


class ExportStore(Protocol):
    """The rows of an export (PostgreSQL), streamed in the requested format, ordered by id."""

    def stream(self, query: ExportQuery, fmt: ExportFormat) -> ExportStream: ...


class ExportExecutionStarter(Protocol):
    """Starts the export state machine's execution for the job (named after it, so it starts once)."""

    def __call__(self, job_id: str, /) -> None: ...
