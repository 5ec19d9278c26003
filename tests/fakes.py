"""In-memory fakes of the adapters the import service uses ("Architecture Patterns with Python", ch. 3).

Each fake implements its port (bulkio.services.ports; mypy checks this file against them) and keeps the
semantics the service relies on (conditional claims, counting once, ending once), with plain Python state instead
of AWS or PostgreSQL.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Literal

import orjson
from bulkio import bootstrap
from bulkio.adapters.metrics import Metrics
from bulkio.config import Settings
from bulkio.domain.auth import Principal
from bulkio.domain.callbacks import CallbackAnswer, CallbackMessage, CallbackState, DeliveryAttempt
from bulkio.domain.chunks import ChunkMessage
from bulkio.domain.idempotency import IdempotencyClaim, StoredRequest
from bulkio.domain.jobs import (
    FINAL_STATUSES,
    STARTABLE_STATUSES,
    Counters,
    ImportJob,
    ImportMode,
    JobFailure,
    JobSource,
    JobStatus,
    LeaseLost,
    final_status,
    utc_now,
)
from bulkio.domain.objects import ByteSink, ObjectChanged, ObjectInfo, PresignedUpload
from bulkio.domain.records import ValidationRules
from bulkio.domain.rejected import (
    RejectedFormat,
    RejectedRecord,
    rejected_csv_header,
    rejected_csv_row,
    rejected_ndjson_line,
)
from bulkio.domain.resources import DEPENDENCY_ORDER, Format, ImportTarget
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord, StagingLost, StagingProgress
from bulkio.domain.sweep import RunState
from bulkio.domain.uploads import UploadedPart
from bulkio.services import ports
from bulkio.services.imports.api import ImportApi
from bulkio.services.imports.chunking import Chunker
from bulkio.services.imports.ending import JobEnding
from bulkio.services.imports.sweeping import DeadLetters, Sweeper
from bulkio.services.imports.wiring import ImportParts, wire_imports
from bulkio.services.imports.writing import ChunkWriter

Clock = Callable[[], float]

# The caller the API layer hands the services in these tests: an ordinary user, not an admin.
OWNER = "ann"
CALLER = Principal(OWNER, frozenset({"imports:write", "imports:read", "exports:read"}))


# ================================================================================================ jobs


@dataclass(slots=True)
class _StoredJob:
    job: ImportJob
    chunker_run: str | None = None
    credited_children: set[str] = field(default_factory=set)
    deliveries: list[DeliveryAttempt] = field(default_factory=list)


class FakeJobRepository:
    """DynamoJobRepository in a dict. `clock` gives epoch seconds for leases and idempotency expiry."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._jobs: dict[str, _StoredJob] = {}
        self._drops: dict[tuple[str | None, str | None, str | None], str] = {}
        self.idempotency_records: dict[tuple[str, str], StoredRequest] = {}

    def _now(self) -> int:
        return int(self._clock())

    # ------------------------------------------------------------ jobs
    def create(self, job: ImportJob) -> None:
        stored = self._jobs.get(job.job_id)
        if stored is None or stored.job.status in STARTABLE_STATUSES:
            self._jobs[job.job_id] = _StoredJob(copy.deepcopy(job))

    def job_for_drop(self, bucket: str, key: str, etag: str) -> str | None:
        return self._drops.get((bucket, key, etag))

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ImportJob], dict[str, Any] | None]:
        def listed(job: ImportJob) -> bool:
            return (
                (owner is None or job.owner == owner)
                and (status is None or job.status.value == status)
                and (resource is None or (job.resource is not None and job.resource.value == resource))
            )

        newest_first = sorted(
            (stored for stored in self._jobs.values() if listed(stored.job)),
            key=lambda stored: stored.job.created_at,
            reverse=True,
        )
        start = int(cursor["offset"]) if cursor else 0
        page = [self.get(stored.job.job_id) for stored in newest_first[start : start + limit]]
        more = start + limit < len(newest_first)
        return [job for job in page if job is not None], {"offset": start + limit} if more else None

    def get(self, job_id: str) -> ImportJob | None:
        stored = self._jobs.get(job_id)
        if stored is None:
            return None
        job = copy.deepcopy(stored.job)
        # As DynamoJobRepository: a completed job did all its chunks; others' progress comes from the store.
        completed = job.status in {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.VALIDATED}
        return replace(job, chunks_done=(job.chunks_total or 0) if completed else 0)

    def all_jobs(self) -> list[ImportJob]:
        return [job for job_id in self._jobs if (job := self.get(job_id)) is not None]

    def open_jobs(self, page_size: int = 100) -> Iterable[ImportJob]:
        ordered = sorted(self.all_jobs(), key=lambda job: job.created_at)
        return [job for job in ordered if not job.is_final or job.completion_pending or job.awaits_callback]

    def create_for_drop(self, job: ImportJob) -> str:
        drop = (job.source.bucket, job.source.key, job.source.etag)
        if drop not in self._drops:
            self._drops[drop] = job.job_id
            self._jobs[job.job_id] = _StoredJob(copy.deepcopy(job))
        return self._drops[drop]

    def start_processing(self, job_id: str, format_: Format | None, run_id: str, lease_seconds: int) -> bool:
        stored = self._jobs.get(job_id)
        if stored is None:
            return False
        now = self._now()
        job = stored.job
        lease_expired = job.lease_until is not None and job.lease_until < now
        reclaimable = job.status is JobStatus.PROCESSING and lease_expired and job.chunks_total is None
        if job.status not in STARTABLE_STATUSES and not reclaimable:
            return False
        job.status = JobStatus.PROCESSING
        job.lease_until = now + lease_seconds
        job.chunker_runs += 1
        stored.chunker_run = run_id
        job.started_at = job.started_at or utc_now()
        if format_:
            job.format = format_
        return True

    def renew_chunker_lease(self, job_id: str, run_id: str, lease_seconds: int) -> None:
        stored = self._jobs[job_id]
        if stored.job.status is not JobStatus.PROCESSING or stored.chunker_run != run_id:
            raise LeaseLost(f"job {job_id} is no longer chunker run {run_id}'s")
        stored.job.lease_until = self._now() + lease_seconds

    def record_reading(self, job_id: str, run_id: str, bytes_read: int, records_read: int, lease_seconds: int) -> None:
        self.renew_chunker_lease(job_id, run_id, lease_seconds)
        job = self._jobs[job_id].job
        job.bytes_read, job.records_read = bytes_read, records_read

    def release_chunker_lease(self, job_id: str, run_id: str) -> None:
        stored = self._jobs[job_id]
        job = stored.job
        if job.status is JobStatus.PROCESSING and stored.chunker_run == run_id and job.chunks_total is None:
            job.lease_until = 0

    def pin_source(self, job_id: str, source: JobSource) -> JobSource:
        stored = self._jobs[job_id]
        if not stored.job.source.pinned:
            stored.job.source = replace(source, pinned=True)
        return copy.deepcopy(stored.job.source)

    def set_format(self, job_id: str, format_: Format) -> None:
        self._jobs[job_id].job.format = format_

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None:
        job = self._jobs[job_id].job
        job.chunks_total = chunks_total
        job.counters.total = records_total

    def finish(
        self,
        job_id: str,
        counters: Counters,
        errors_by_code: dict[str, int],
        mode: ImportMode = ImportMode.IMPORT,
        counters_by_resource: dict[str, dict[str, int]] | None = None,
    ) -> bool:
        stored = self._end(job_id, final_status(counters.failed, mode))
        if stored is None:
            return False
        stored.job.counters = Counters(
            total=counters.total or 0,
            processed=counters.processed,
            succeeded=counters.succeeded,
            failed=counters.failed,
        )
        stored.job.errors_by_code = dict(errors_by_code)
        stored.job.counters_by_resource = copy.deepcopy(counters_by_resource)
        return True

    def credit_reimport(self, parent_id: str, child_id: str, records: int) -> None:
        stored = self._jobs.get(parent_id)
        if stored is not None and child_id not in stored.credited_children:
            stored.credited_children.add(child_id)
            stored.job.rejected_reimported += records

    def completion_published(self, job_id: str, keep_open: bool = False) -> None:
        job = self._jobs[job_id].job
        job.completion_pending = False
        if keep_open and job.callback is not None and job.callback.next_attempt_at is None:
            job.callback.next_attempt_at = utc_now()

    def claim_callback_attempt(self, job_id: str, attempt: int, lease_until: datetime) -> bool:
        callback = self._jobs[job_id].job.callback
        if callback is None or callback.state is not CallbackState.PENDING or callback.attempts != attempt - 1:
            return False
        callback.attempts, callback.next_attempt_at = attempt, lease_until
        return True

    def record_delivery(
        self, job_id: str, attempt: DeliveryAttempt, settled: CallbackState | None, next_attempt_at: datetime | None
    ) -> None:
        stored = self._jobs[job_id]
        callback = stored.job.callback
        assert callback is not None
        stored.deliveries.append(attempt)
        callback.deliveries += 1
        if settled is not None:
            callback.state, callback.next_attempt_at = settled, None
        elif next_attempt_at is not None:
            callback.next_attempt_at = next_attempt_at

    def settle_callback(self, job_id: str, state: CallbackState) -> None:
        callback = self._jobs[job_id].job.callback
        if callback is not None and callback.state is CallbackState.PENDING:
            callback.state, callback.next_attempt_at = state, None

    def deliveries(self, job_id: str) -> list[DeliveryAttempt]:
        return list(self._jobs[job_id].deliveries)

    def claim_commit(self, dry_run_id: str, commit_id: str) -> bool:
        stored = self._jobs.get(dry_run_id)
        if stored is None or stored.job.status is not JobStatus.VALIDATED:
            return False
        if stored.job.committed_job_id not in (None, commit_id):
            return False
        stored.job.committed_job_id = commit_id
        return True

    def fail(self, job_id: str, code: str, message: str) -> bool:
        stored = self._end(job_id, JobStatus.FAILED)
        if stored is None:
            return False
        stored.job.failure = JobFailure(code, message)
        return True

    def cancel(self, job_id: str) -> bool:
        return self._end(job_id, JobStatus.CANCELLED) is not None

    def _end(self, job_id: str, status: JobStatus) -> _StoredJob | None:
        stored = self._jobs.get(job_id)
        if stored is None or stored.job.status in FINAL_STATUSES:
            return None
        stored.job.status = status
        stored.job.finished_at = utc_now()
        stored.job.lease_until = None
        stored.job.completion_pending = True
        return stored

    # ------------------------------------------------------------ idempotency keys
    def claim_idempotency_key(self, claim: IdempotencyClaim) -> StoredRequest | None:
        now = self._now()
        existing = self.idempotency_records.get((claim.scope, claim.key))
        if existing is not None and existing.expires_at > now:
            return existing
        self.idempotency_records[(claim.scope, claim.key)] = StoredRequest(
            fingerprint=claim.fingerprint,
            job_id=claim.job_id,
            expires_at=now + claim.ttl_seconds,
            locked_until=now + claim.lock_seconds,
        )
        return None

    def stored_request(self, scope: str, key: str) -> StoredRequest | None:
        return self.idempotency_records.get((scope, key))

    def store_response(self, scope: str, key: str, status: int, body: str) -> None:
        stored = self.idempotency_records[(scope, key)]
        self.idempotency_records[(scope, key)] = replace(stored, response_status=status, response_body=body)

    def release_idempotency_key(self, scope: str, key: str) -> None:
        self.idempotency_records.pop((scope, key), None)


# ============================================================================================= objects


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    content_type: str


class FakeObjectWriter(io.RawIOBase):
    """Like MultipartWriter: the object appears on a clean exit of the `with` block, never on an exception."""

    def __init__(self, store: FakeObjectStore, key: str, content_type: str) -> None:
        super().__init__()
        self._store, self._key, self._content_type = store, key, content_type
        self._buffer = bytearray()
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buffer += data
        self.bytes_written += len(data)
        return len(data)

    def __enter__(self) -> FakeObjectWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._store.put_bytes(self._key, bytes(self._buffer), self._content_type)
        self._buffer.clear()


class FakeObjectStore:
    """S3ObjectStore in a dict keyed by (bucket, key). Presigned URLs are recognizable fakes."""

    def __init__(self, bucket: str = "import-bucket", versioned: bool = True) -> None:
        self.bucket = bucket
        self.versioned = versioned
        self.objects: dict[tuple[str, str], StoredObject] = {}
        # Every version ever written, by (bucket, key, version id), as in a versioned bucket.
        self.versions: dict[tuple[str, str, str], StoredObject] = {}
        self.version_ids: dict[tuple[str, str], str] = {}
        self.versions_written = 0
        # Multipart uploads under way: upload id -> (key, {part number: bytes}).
        self.multipart: dict[str, tuple[str, dict[int, bytes]]] = {}

    def _put(self, bucket: str, key: str, stored: StoredObject) -> None:
        self.objects[(bucket, key)] = stored
        self.versions_written += 1  # a count, not len(versions): a purge must not make an id come round again
        version_id = f"v{self.versions_written}"
        self.versions[(bucket, key, version_id)] = stored
        self.version_ids[(bucket, key)] = version_id

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._put(self.bucket, key, StoredObject(bytes(data), content_type))

    def put_in_bucket(self, bucket: str, key: str, data: bytes) -> None:
        """An object written by someone else (a user dropping a file), possibly in another bucket."""
        self._put(bucket, key, StoredObject(bytes(data), "application/octet-stream"))

    def upload_stream(self, key: str, stream: BinaryIO, content_type: str = "application/octet-stream") -> None:
        self.put_bytes(key, b"".join(iter(lambda: stream.read(64 * 1024), b"")), content_type)

    def open(self, key: str, bucket: str | None = None) -> BinaryIO:
        stored = self.objects.get((bucket or self.bucket, key))
        if stored is None:
            raise FileNotFoundError(f"s3://{bucket or self.bucket}/{key}")
        return io.BytesIO(stored.data)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open_version(self, key: str, bucket: str | None, version_id: str | None, etag: str | None) -> BinaryIO:
        bucket = bucket or self.bucket
        if version_id:
            stored = self.versions.get((bucket, key, version_id))
            if stored is None:
                raise FileNotFoundError(f"s3://{bucket}/{key}?versionId={version_id}")
            return io.BytesIO(stored.data)
        current = self.open(key, bucket)
        if etag and hashlib.md5(self.objects[(bucket, key)].data).hexdigest() != etag:
            raise ObjectChanged(f"s3://{bucket}/{key}")
        return current

    def info(self, key: str, bucket: str | None = None) -> ObjectInfo | None:
        bucket = bucket or self.bucket
        stored = self.objects.get((bucket, key))
        if stored is None:
            return None
        version_id = self.version_ids[(bucket, key)] if self.versioned else None
        return ObjectInfo(size=len(stored.data), etag=hashlib.md5(stored.data).hexdigest(), version_id=version_id)

    def presign_put(self, key: str, ttl_seconds: int) -> PresignedUpload:
        url = f"https://{self.bucket}.s3.example/{key}?method=PUT&expires={ttl_seconds}"
        return PresignedUpload(url, "PUT", datetime.now(UTC) + timedelta(seconds=ttl_seconds))

    def presign_get(self, key: str, ttl_seconds: int, filename: str | None = None) -> str:
        return f"https://{self.bucket}.s3.example/{key}?method=GET&expires={ttl_seconds}&filename={filename}"

    def start_multipart(self, key: str) -> str:
        upload_id = f"upload-{len(self.multipart) + 1}"
        self.multipart[upload_id] = (key, {})
        return upload_id

    def presign_part(self, key: str, upload_id: str, part_number: int, ttl_seconds: int) -> str:
        return f"https://{self.bucket}.s3.example/{key}?uploadId={upload_id}&partNumber={part_number}"

    def put_part(self, upload_id: str, part_number: int, data: bytes) -> None:
        """What a client's PUT to a part's presigned URL does."""
        self.multipart[upload_id][1][part_number] = data

    def uploaded_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        if upload_id not in self.multipart:
            raise FileNotFoundError(upload_id)
        parts = self.multipart[upload_id][1]
        return [
            UploadedPart(number, hashlib.md5(data).hexdigest(), len(data)) for number, data in sorted(parts.items())
        ]

    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        _, uploaded = self.multipart.pop(upload_id)
        self.put_bytes(key, b"".join(uploaded[part.part_number] for part in parts))

    def writer(self, key: str, content_type: str = "application/octet-stream") -> FakeObjectWriter:
        return FakeObjectWriter(self, key, content_type)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for bucket, key in self.objects if bucket == self.bucket and key.startswith(prefix))

    def purge(self, prefix: str) -> int:
        versions = [entry for entry in self.versions if entry[0] == self.bucket and entry[1].startswith(prefix)]
        for entry in versions:
            del self.versions[entry]
        for bucket, key in [entry for entry in self.objects if entry[0] == self.bucket and entry[1].startswith(prefix)]:
            del self.objects[(bucket, key)]
            self.version_ids.pop((bucket, key), None)
        return len(versions)


# =============================================================================================== queue


class FakeChunkQueue:
    """ChunkQueue that records every message. With `deliver`, each message is also handed over at once,
    as if a writer picked it up before the sender went on (writers faster than the chunker)."""

    def __init__(self) -> None:
        self.messages: list[ChunkMessage] = []
        self.deliver: Callable[[ChunkMessage], None] | None = None
        self.delays: list[tuple[str, int]] = []  # (receipt handle, seconds) of ChangeMessageVisibility calls

    def delay(self, receipt_handle: str, seconds: int) -> None:
        self.delays.append((receipt_handle, seconds))

    def send(self, messages: Iterable[ChunkMessage]) -> None:
        for message in messages:
            # What goes over the wire: the message's JSON body, read back as the writer reads it.
            self.messages.append(ChunkMessage.model_validate_json(message.to_json()))
            if self.deliver is not None:
                self.deliver(self.messages[-1])

    def bodies(self) -> list[dict[str, Any]]:
        """The messages as they went over the wire: their JSON bodies."""
        return [orjson.loads(message.to_json()) for message in self.messages]


# ======================================================================================== import store


@dataclass(slots=True)
class FakeRun:
    resource: ImportTarget
    chunks_total: int | None = None
    records_total: int | None = None
    staged_chunks: dict[int, tuple[int, int]] = field(default_factory=dict)  # chunk -> (records, failed)
    staged: list[StagedRecord] = field(default_factory=list)
    merged: list[StagedRecord] = field(default_factory=list)  # what the merge took from staged (then emptied)
    failed: list[FailedRecord] = field(default_factory=list)
    outcome: MergeOutcome | None = None
    failed_run: bool = False
    resends: int = 0
    resent_staged: int = 0
    restages: int = 0
    dry_run: bool = False
    lost_chunks: set[int] = field(default_factory=set)  # staged, but their rows vanished (a crash recovery)
    chunk_indexes: dict[int, set[int]] = field(default_factory=dict)  # chunk -> the record indexes it holds


class FakeImportStore:
    """ImportStore without SQL. The merge is deliberately simple: every staged record succeeds, every record
    with an error fails. The real merge (duplicates, keys, references) is tested against PostgreSQL."""

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.chunk_failures: dict[tuple[str, int], str] = {}
        self.merges = 0
        self.staging_error: Exception | None = None
        """When set, stage_chunk raises it (the database refused the chunk)."""

    def close(self) -> None:
        """Nothing to close: there is no connection."""

    def register_job(self, job_id: str, target: ImportTarget, dry_run: bool = False) -> None:
        run = self.runs.setdefault(job_id, FakeRun(target))
        run.dry_run = run.dry_run or dry_run

    def stage_chunk(
        self,
        job_id: str,
        target: ImportTarget,
        chunk_no: int,
        staged: Iterable[StagedRecord],
        failed: Iterable[FailedRecord],
        dry_run: bool = False,
    ) -> bool:
        if self.staging_error is not None:
            raise self.staging_error
        run = self.runs.setdefault(job_id, FakeRun(target))
        run.dry_run = run.dry_run or dry_run
        if chunk_no in run.staged_chunks:
            return False
        staged, failed = list(staged), list(failed)
        failed_indexes = {record.index for record in failed}
        run.staged_chunks[chunk_no] = (len(staged) + len(failed_indexes), len(failed_indexes))
        run.chunk_indexes[chunk_no] = {record.index for record in staged} | failed_indexes
        run.staged.extend(staged)
        run.failed.extend(failed)
        return True

    def progress(self, job_id: str) -> StagingProgress:
        run = self.runs.get(job_id)
        counts = list(run.staged_chunks.values()) if run else []
        return StagingProgress(len(counts), sum(c[0] for c in counts), sum(c[1] for c in counts))

    def errors_by_code(self, job_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.runs[job_id].failed if job_id in self.runs else []:
            counts[record.error.code.value] = counts.get(record.error.code.value, 0) + 1
        return dict(sorted(counts.items()))

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None:
        run = self.runs.get(job_id)
        if run is None:
            raise LookupError(f"no import run {job_id!r}: register_job first")
        if run.outcome is None:
            run.chunks_total, run.records_total = chunks_total, records_total

    def lose_staged_rows(self, job_id: str, chunks: Iterable[int]) -> None:
        """What a crash recovery of PostgreSQL does to UNLOGGED staging: the claims stay, the rows go."""
        self.runs[job_id].lost_chunks.update(chunks)

    def try_merge(self, job_id: str, wait: bool = True) -> MergeOutcome | StagingLost | None:
        run = self.runs.get(job_id)
        if run is None:
            return None
        if run.outcome is not None:
            return replace(run.outcome, merged_now=False)
        if run.failed_run or run.chunks_total is None or len(run.staged_chunks) < run.chunks_total:
            return None
        if run.lost_chunks:
            lost = tuple(sorted(run.lost_chunks))
            gone: set[int] = set()
            for chunk_no in lost:
                del run.staged_chunks[chunk_no]
                gone |= run.chunk_indexes.pop(chunk_no, set())
            # As ImportStore: the lost chunks' rows are gone, and their validation errors are removed with their
            # claims, so that staging them again counts nothing twice.
            run.staged = [record for record in run.staged if record.index not in gone]
            run.failed = [record for record in run.failed if record.index not in gone]
            run.lost_chunks.clear()
            run.restages += 1
            return StagingLost(lost, run.restages)
        errors_by_code = self.errors_by_code(job_id)
        run.outcome = MergeOutcome(
            records_total=run.records_total or 0,
            succeeded=len(run.staged),
            failed=len({record.index for record in run.failed}),
            errors_by_code=errors_by_code,
            merged_now=True,
            counters_by_resource=None if run.resource.single else self._counters_by_resource(run),
        )
        # A dry run is checked like an import, and writes nothing.
        run.merged, run.staged = ([] if run.dry_run else run.staged), []
        self.merges += 1
        return run.outcome

    @staticmethod
    def _counters_by_resource(run: FakeRun) -> dict[str, dict[str, int]]:
        counters = {}
        for resource in DEPENDENCY_ORDER:
            succeeded = sum(1 for record in run.staged if record.resource is resource)
            failed = len({record.index for record in run.failed if record.resource is resource})
            total = succeeded + failed
            counters[resource.value] = {"total": total, "processed": total, "succeeded": succeeded, "failed": failed}
        return counters

    def is_staged(self, job_id: str, chunk_no: int) -> bool:
        run = self.runs.get(job_id)
        return run is not None and chunk_no in run.staged_chunks

    def run_state(self, job_id: str) -> RunState | None:
        run = self.runs.get(job_id)
        if run is None:
            return None
        return RunState(
            chunks_total=run.chunks_total,
            records_total=run.records_total,
            chunks_staged=len(run.staged_chunks),
            merged=run.outcome is not None,
            failed=run.failed_run,
            last_activity_age_seconds=self.activity_age_seconds,
            resends=run.resends,
        )

    activity_age_seconds: float | None = 0.0
    """What run_state reports as the seconds since the run's last sign of life (tests set it)."""

    def unstaged_chunks(self, job_id: str) -> list[int]:
        run = self.runs[job_id]
        return [n for n in range(1, (run.chunks_total or 0) + 1) if n not in run.staged_chunks]

    def mark_resent(self, job_id: str) -> None:
        run = self.runs[job_id]
        run.resends = 1 if len(run.staged_chunks) > run.resent_staged else run.resends + 1
        run.resent_staged = len(run.staged_chunks)

    def first_errors(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        run = self.runs.get(job_id)
        if run is None:
            return []
        ordered = sorted(run.failed, key=lambda record: (record.index, record.error.code.value))
        return [_error_row(record) for record in ordered[:limit]]

    def write_rejected(self, job_id: str, fmt: RejectedFormat, sink: ByteSink) -> int:
        """As ImportStore: each rejected record once, with all its errors, in record order."""
        run = self.runs.get(job_id)
        by_index: dict[int, list[FailedRecord]] = {}
        for record in sorted(run.failed if run else [], key=lambda record: (record.index, record.error.code.value)):
            by_index.setdefault(record.index, []).append(record)
        rejected = [
            RejectedRecord(
                records[0].line,
                orjson.loads(records[0].raw),
                [(record.error.code.value, record.error.field, record.error.message) for record in records],
            )
            for records in by_index.values()
        ]
        if fmt == "csv":
            columns = list(dict.fromkeys(name for r in rejected if isinstance(r.record, dict) for name in r.record))
            data = rejected_csv_header(columns).encode() + b"".join(
                rejected_csv_row(columns, record).encode() for record in rejected
            )
        else:
            data = b"".join(rejected_ndjson_line(record) for record in rejected)
        sink.write(data)
        return len(data)

    def write_error_report(self, job_id: str, fmt: Literal["ndjson", "csv"], sink: ByteSink) -> int:
        rows = self.first_errors(job_id, limit=len(self.runs[job_id].failed) if job_id in self.runs else 0)
        if fmt == "ndjson":
            data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        else:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["line", "index", "code", "field", "message", "value", "record"])
            for row in rows:
                writer.writerow(
                    [
                        row["line"],
                        row["index"],
                        row["code"],
                        row["field"],
                        row["message"],
                        orjson.dumps(row["value"]).decode(),
                        orjson.dumps(row["record"]).decode(),
                    ]
                )
            data = text.getvalue().encode() if rows else b""
        sink.write(data)
        return len(data)

    def record_chunk_failure(self, job_id: str, chunk_no: int, error: str) -> None:
        self.chunk_failures[(job_id, chunk_no)] = error

    def chunk_failure(self, job_id: str, chunk_no: int) -> str | None:
        return self.chunk_failures.get((job_id, chunk_no))

    def fail_run(self, job_id: str) -> bool:
        run = self.runs.get(job_id)
        if run is not None and run.outcome is not None:
            return False
        if run is not None:
            run.failed_run = True
            run.staged = []
        return True


def _error_row(record: FailedRecord) -> dict[str, Any]:
    return {
        "line": record.line,
        "index": record.index,
        "code": record.error.code.value,
        "field": record.error.field,
        "message": record.error.message,
        "value": record.error.value,
        "record": orjson.loads(record.raw),
    }


# ============================================================================================ chunker


@dataclass(slots=True)
class FakeEvents:
    """The event bus: what was published, in order; `error` makes publishing fail."""

    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    error: Exception | None = None

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        self.published.append((detail_type, detail))


@dataclass(slots=True)
class FakeCallbackQueue:
    """The callback queue: each message with the delay it was sent with, in order; `error` makes sending fail."""

    sent: list[tuple[CallbackMessage, int]] = field(default_factory=list)
    error: Exception | None = None

    def send(self, message: CallbackMessage, delay_seconds: int = 0) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append((message, delay_seconds))

    def take(self) -> list[tuple[CallbackMessage, int]]:
        taken, self.sent = self.sent, []
        return taken


@dataclass(slots=True)
class FakeCallbackEndpoint:
    """The receiving end of callbacks: answers `statuses` in turn (the last one from then on), or raises `error`;
    keeps each request."""

    statuses: list[int] = field(default_factory=lambda: [200])
    error: Exception | None = None
    requests: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> CallbackAnswer:
        self.requests.append((url, body, headers))
        if self.error is not None:
            raise self.error
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return CallbackAnswer(status, "ok" if 200 <= status < 300 else "no")


@dataclass(slots=True)
class ChunkerLaunches:
    """Records the job ids the API asked the chunker to run for; `error` makes the launch fail."""

    job_ids: list[str] = field(default_factory=list)
    error: Exception | None = None

    def __call__(self, job_id: str) -> None:
        if self.error is not None:
            raise self.error
        self.job_ids.append(job_id)


# ============================================================================================== wiring


def make_settings(**overrides: Any) -> Settings:
    defaults: dict[str, Any] = {
        "jobs_table": "jobs",
        "import_bucket": "import-bucket",
        "chunk_queue_url": "https://sqs.example/chunks",
        "database_url": "postgresql://unused",
        "chunker_function_name": "chunker",
        "chunk_records": 1000,
        "max_upload_bytes": 10 * 1024 * 1024,
        "presign_ttl_seconds": 3600,
        "idempotency_ttl_seconds": 86400,
        "allow_http_urls": False,
        "url_timeout_seconds": 30,
        "max_record_bytes": 1024 * 1024,
        "export_bucket": "export-bucket",
        "state_machine_arn": "arn:aws:states:eu-west-1:123456789012:stateMachine:exports",
        "max_decompressed_bytes": 10 * 1024**3,
        "max_compression_ratio": 100,
        "max_records_per_job": 1_000_000,
    }
    return Settings(**{**defaults, **overrides})


@dataclass(slots=True)
class FakeWorld:
    """The import service's parts wired to fakes, with the fakes at hand for arrangement and assertions."""

    parts: ImportParts
    jobs: FakeJobRepository
    objects: FakeObjectStore
    queue: FakeChunkQueue
    store: FakeImportStore
    launches: ChunkerLaunches
    metrics: Metrics
    events: FakeEvents
    callbacks: FakeCallbackQueue
    endpoint: FakeCallbackEndpoint

    @property
    def api(self) -> ImportApi:
        return self.parts.api

    @property
    def chunker(self) -> Chunker:
        return self.parts.chunker

    @property
    def writer(self) -> ChunkWriter:
        return self.parts.writer

    @property
    def sweeper(self) -> Sweeper:
        return self.parts.sweeper

    @property
    def dead_letters(self) -> DeadLetters:
        return self.parts.dead_letters

    @property
    def ending(self) -> JobEnding:
        return self.parts.ending

    def wiring(self) -> bootstrap.Wiring:
        """What the functions run with when a test puts it in place: `monkeypatch.setattr(bootstrap, "wiring",
        world.wiring())`."""
        return bootstrap.Wiring(imports=self.parts, metrics=self.metrics)


def build_world(
    settings: Settings | None = None,
    open_source_url: Callable[[str], BinaryIO] | None = None,
    clock: Clock = time.time,
) -> FakeWorld:
    settings = settings or make_settings()
    jobs, objects = FakeJobRepository(clock), FakeObjectStore(settings.import_bucket)
    queue, store, launches, events = FakeChunkQueue(), FakeImportStore(), ChunkerLaunches(), FakeEvents()
    callbacks, endpoint = FakeCallbackQueue(), FakeCallbackEndpoint()
    metrics = Metrics("", "imports")  # an in-process registry: nothing is pushed without a Pushgateway URL
    parts = wire_imports(
        settings=settings,
        jobs=jobs,
        idempotency=jobs,
        objects=objects,
        queue=queue,
        store=store,
        rules=ValidationRules(),
        metrics=metrics,
        launch_chunker=launches,
        open_source_url=open_source_url or bootstrap.url_opener(settings),
        events=events,
        callbacks=callbacks,
        send_callback=endpoint,
    )
    return FakeWorld(parts, jobs, objects, queue, store, launches, metrics, events, callbacks, endpoint)


# The fakes are their ports: mypy checks these assignments (pyproject's [tool.mypy] files include this file).
_JOBS: ports.ImportJobRepository = FakeJobRepository()
_IDEMPOTENCY: ports.IdempotencyRecords = FakeJobRepository()
_OBJECTS: ports.ObjectStore = FakeObjectStore()
_QUEUE: ports.ChunkQueue = FakeChunkQueue()
_STORE: ports.ImportStore = FakeImportStore()
_LAUNCHES: ports.ChunkerLauncher = ChunkerLaunches()
_EVENTS: ports.EventPublisher = FakeEvents()
_CALLBACKS: ports.CallbackQueue = FakeCallbackQueue()
_ENDPOINT: ports.CallbackSender = FakeCallbackEndpoint()
_METRICS: ports.MetricsSink = Metrics("", "fakes")


class FakeClock:
    """Epoch seconds for the job repository and the service (`time`), and a monotonic clock for the lease."""

    def __init__(self) -> None:
        self.now = time.time()
        self.ticks = 1000.0

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.ticks += seconds

    def sleep(self, seconds: float) -> None:
        """As the `time` module's, for code that waits: the clock advances at once."""
        self.advance(seconds)
