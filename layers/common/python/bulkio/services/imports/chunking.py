"""The chunker: reads an import's source once, as pinned by its first run, and splits it into chunk objects
announced on the chunk queue. A run holds its job with a lease it renews while it reads."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from typing import BinaryIO, cast

from aws_lambda_powertools import Logger

from bulkio import faults
from bulkio.config import Settings
from bulkio.domain.chunks import ChunkMessage, chunk_key, encode_chunks
from bulkio.domain.jobs import (
    STARTABLE_STATUSES,
    ImportJob,
    JobFailure,
    JobSource,
    JobStatus,
    LeaseLost,
    SourceKind,
    utc_now,
)
from bulkio.domain.objects import ObjectChanged
from bulkio.domain.parsing import SourceRecord, UnreadableFile, detect_format, iter_source_records
from bulkio.domain.resources import Format, ImportTarget, parse_import_target
from bulkio.domain.sources import SourceUnavailable
from bulkio.services.imports.common import announce, discard, fetched_key, scratch_prefixes, source_key
from bulkio.services.imports.ending import JobEnding
from bulkio.services.ports import ChunkQueue, ImportJobRepository, ImportStore, ObjectStore, SourceOpener

logger = Logger(child=True)

FORMAT_SNIFF_BYTES = 64 * 1024
SQS_BATCH = 10
FETCH_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Chunker:
    settings: Settings
    jobs: ImportJobRepository
    objects: ObjectStore
    queue: ChunkQueue
    store: ImportStore
    ending: JobEnding
    open_source_url: SourceOpener

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
        resource = parse_import_target(parts[1] if len(parts) > 2 else None)
        job = ImportJob(
            job_id=str(uuid.uuid4()),
            resource=resource,
            format=None,
            status=JobStatus.QUEUED,
            source=JobSource(SourceKind.DROP, bucket=bucket, key=key, filename=parts[-1], etag=etag),
            created_at=utc_now(),
        )
        if resource is None:
            # A job that failed at once, rather than a log line: an admin sees it among the jobs, with the reason.
            folders = ", ".join(f"drop/{target.value}/" for target in ImportTarget)
            job.status, job.finished_at, job.completion_pending = JobStatus.FAILED, utc_now(), True
            job.failure = JobFailure(
                "unknown_drop_folder",
                f"{key} is in no folder that imports: move the file under one of {folders}",
            )
            job_id = self.jobs.create_for_drop(job)
            logger.warning("dropped file in an unknown folder: its job failed", extra={"key": key, "job_id": job_id})
            self.ending.completion.publish(job_id)
            return
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
            with closing(self._open_source(job, lease)) as opened:
                source = _CountingStream(opened)
                stream, fmt = self._settle_format(job, cast(BinaryIO, source))
                records = iter_source_records(
                    stream,
                    fmt,
                    job.target,
                    filename=job.source.filename,
                    max_record_bytes=self.settings.max_record_bytes,
                    max_decompressed_bytes=self.settings.max_decompressed_bytes,
                    max_compression_ratio=self.settings.max_compression_ratio,
                    # Past the limit the parser stops reading and the job fails (too_many_records); the chunks
                    # already queued are skipped by the writers because the job has failed.
                    max_records=self.settings.max_records_per_job,
                )
                chunks_total, records_total = self._write_chunks(job, records, lease, source)
        except LeaseLost:
            ended = self.jobs.get(job_id)
            if ended is not None and ended.is_final:
                # Cancelled or failed while this run read: what it wrote since the job's end was purged is not.
                logger.info("job ended while it was being chunked: this run stops", extra={"job_id": job_id})
                discard(self.objects, job_id, scratch_prefixes(job_id))
                return
            logger.warning("another chunker run took the job over: this one stops", extra={"job_id": job_id})
            return
        except (UnreadableFile, SourceUnavailable) as problem:
            self.ending.fail(job_id, problem.code, problem.message)
            return
        except Exception:
            # S3, SQS or database trouble: free the claim so that Lambda's retry of this event can chunk again.
            self.jobs.release_chunker_lease(job_id, lease.run_id)
            raise
        # DynamoDB first: once the job item has its totals no chunker run starts again, and the sweeper copies
        # them to PostgreSQL if the database was away just now. The chunker touches the database only here.
        self.jobs.set_totals(job_id, chunks_total, records_total)
        store_totals(self.store, job, chunks_total, records_total)
        logger.info(
            "source chunked",
            extra={
                "job_id": job_id,
                "chunks": chunks_total,
                "records": records_total,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.ending.finish_if_complete(job_id)

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
            with closing(self.open_source_url(source.url)) as remote, self.objects.writer(key) as copy:
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
        pinned = replace(source, key=key, etag=etag, version_id=version_id, size=info.size)
        return self.jobs.pin_source(job.job_id, pinned)

    def _settle_format(self, job: ImportJob, source: BinaryIO) -> tuple[BinaryIO, Format | None]:
        """Detects a format the request left out, so that the job shows it; reads only the first bytes."""
        if job.format is not None:
            return source, job.format
        head = source.read(FORMAT_SNIFF_BYTES)
        fmt = detect_format(job.source.filename, head)
        if fmt is not None:
            self.jobs.set_format(job.job_id, fmt)
        # Read like any binary stream (read(size) is all the parsers call), though it is no BinaryIO by type.
        return cast(BinaryIO, _PrefixedStream(head, source)), fmt

    def _write_chunks(
        self, job: ImportJob, records: Iterable[SourceRecord], lease: ChunkerLease, source: _CountingStream
    ) -> tuple[int, int]:
        chunk_no = 0
        records_total = 0
        announced: list[ChunkMessage] = []
        for chunk in encode_chunks(records, self.settings.chunk_records, self.settings.chunk_max_bytes):
            lease.keep_alive()
            chunk_no += 1
            records_total += chunk.records
            key = chunk_key(job.job_id, chunk_no)
            self.objects.put_bytes(key, chunk.body, "application/x-ndjson")
            faults.crash_at(faults.CHUNKER_AFTER_CHUNK)
            announced.append(
                ChunkMessage.announcing(job.job_id, job.target, chunk_no, chunk.first_index, chunk.records)
            )
            if len(announced) == SQS_BATCH:  # one SendMessageBatch per ten chunks
                announce(self.queue, announced)
                announced = []
                lease.report_reading(source.bytes_read, records_total)
        announce(self.queue, announced)
        return chunk_no, records_total


def store_totals(store: ImportStore, job: ImportJob, chunks_total: int, records_total: int) -> None:
    """The job's totals in PostgreSQL, where the merge checks them (the chunker's, or the sweeper's copy)."""
    store.register_job(job.job_id, job.target, dry_run=job.is_dry_run)
    store.set_totals(job.job_id, chunks_total, records_total)


class ChunkerLease:
    """A chunker run's hold on its job: renewed while the run reads, at most every third of its length, so a
    run that died loses the job within `seconds` and the sweeper hands it to a new run."""

    def __init__(self, jobs: ImportJobRepository, job_id: str, run_id: str, seconds: int) -> None:
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

    def report_reading(self, bytes_read: int, records_read: int) -> None:
        """Records how far the source has been read (the job's early progress), renewing the lease with it."""
        self.jobs.record_reading(self.job_id, self.run_id, bytes_read, records_read, self.seconds)
        self._renewed = time.monotonic()


class _CountingStream(io.RawIOBase):
    """The source as read, counting its bytes: how far the chunker has got, before the record total is known."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        piece = self._stream.read(size)
        self.bytes_read += len(piece)
        return piece


class _PrefixedStream(io.RawIOBase):
    """`head` followed by the rest of `stream`: lets the format be sniffed without losing the bytes read."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            take = len(self._head) if size < 0 else min(size, len(self._head))
            piece = bytes(self._head[:take])
            self._head = self._head[take:]
            return piece
        return self._stream.read(size)
