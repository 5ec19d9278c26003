"""Limits against oversized input, through the import service with fakes: the job fails with a clear reason."""

from __future__ import annotations

import gzip
import io

import orjson
from bulkio.domain.jobs import JobStatus
from bulkio.domain.resources import Format, ImportTarget
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import OWNER, FakeWorld, build_world, make_settings

BUCKET = "import-bucket"


def ndjson_users(count: int) -> bytes:
    return b"".join(
        orjson.dumps({"email": f"user{n}@example.com", "name": f"User {n}"}) + b"\n" for n in range(1, count + 1)
    )


def upload_and_chunk(world: FakeWorld, content: bytes, filename: str = "users.ndjson") -> str:
    request = NewImport(
        ImportTarget.USERS, Format.NDJSON, filename=filename, file=io.BytesIO(content), file_sha256="ab"
    )
    job_id = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    return job_id


def deliver_all(world: FakeWorld) -> None:
    for message in list(world.queue.messages):
        world.writer.process_chunk(message)


def test_settings_defaults() -> None:
    settings = make_settings()
    assert settings.max_records_per_job == 1_000_000
    assert settings.max_compression_ratio == 100
    assert settings.max_decompressed_bytes == 10 * 1024**3


def test_a_file_with_one_record_over_the_limit_fails_the_job_with_too_many_records() -> None:
    world = build_world(make_settings(chunk_records=2, max_records_per_job=5))
    job_id = upload_and_chunk(world, ndjson_users(6))
    deliver_all(world)  # the chunks queued before the limit was hit: skipped, the job has failed

    job = world.jobs.get(job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "too_many_records"
    assert "5 records" in job.failure.message
    assert "MAX_RECORDS_PER_JOB" in job.failure.message
    assert world.store.progress(job_id).records == 0


def test_a_file_at_the_record_limit_completes() -> None:
    world = build_world(make_settings(chunk_records=2, max_records_per_job=5))
    job_id = upload_and_chunk(world, ndjson_users(5))
    deliver_all(world)

    job = world.jobs.get(job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.counters.succeeded == 5


def test_gzip_over_the_decompressed_size_cap_fails_the_job() -> None:
    world = build_world(make_settings(max_decompressed_bytes=1000))
    job_id = upload_and_chunk(world, gzip.compress(ndjson_users(100)), filename="users.ndjson.gz")

    job = world.jobs.get(job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "decompressed_too_large"
