"""Dry runs ("mode": "validate") and their commit, against the in-memory fakes: the rules of the domain and the
service. That a dry run's report equals the real run's is proven against PostgreSQL
(tests/integration/test_dry_run_merge.py)."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from bulkio.domain.errors import Conflict, Gone
from bulkio.domain.jobs import (
    ImportJob,
    ImportMode,
    JobSource,
    JobStatus,
    SourceKind,
    check_committable,
    commit_job_id,
    final_status,
)
from bulkio.domain.resources import Format, ImportTarget
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import CALLER, OWNER, FakeWorld, build_world, make_settings
from tests.unit.test_import_service import BUCKET, deliver_all, job_of, ndjson, user

RETENTION = 86400
FINISHED = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def finished_dry_run(**changes: object) -> ImportJob:
    job = ImportJob(
        job_id="dry",
        resource=ImportTarget.USERS,
        format=Format.NDJSON,
        status=JobStatus.VALIDATED,
        source=JobSource(SourceKind.MULTIPART, bucket=BUCKET, key="uploads/dry/source", pinned=True),
        created_at=FINISHED - timedelta(minutes=5),
        finished_at=FINISHED,
        mode=ImportMode.VALIDATE,
    )
    return replace(job, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ domain rules
def test_a_dry_run_ends_validated_whatever_its_errors() -> None:
    assert final_status(0, ImportMode.VALIDATE) is JobStatus.VALIDATED
    assert final_status(7, ImportMode.VALIDATE) is JobStatus.VALIDATED
    assert final_status(7, ImportMode.IMPORT) is JobStatus.COMPLETED_WITH_ERRORS
    assert final_status(0) is JobStatus.COMPLETED


def test_a_validated_dry_run_within_its_retention_can_be_committed() -> None:
    check_committable(finished_dry_run(), FINISHED + timedelta(seconds=RETENTION - 1), RETENTION)


def test_an_import_is_not_a_dry_run() -> None:
    with pytest.raises(Conflict) as refused:
        check_committable(finished_dry_run(mode=ImportMode.IMPORT, status=JobStatus.COMPLETED), FINISHED, RETENTION)
    assert refused.value.code == "not_a_dry_run"


@pytest.mark.parametrize("status", [JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED])
def test_only_a_validated_dry_run_can_be_committed(status: JobStatus) -> None:
    with pytest.raises(Conflict) as refused:
        check_committable(finished_dry_run(status=status), FINISHED, RETENTION)
    assert refused.value.code == "dry_run_not_validated"
    assert status.value in refused.value.message


def test_a_dry_run_past_its_retention_is_gone() -> None:
    with pytest.raises(Gone) as refused:
        check_committable(finished_dry_run(), FINISHED + timedelta(seconds=RETENTION), RETENTION)
    assert refused.value.code == "source_expired"
    assert refused.value.extra["expired_at"] == "2026-11-29T12:00:00.000000Z"


def test_a_dry_run_has_one_commit_job_id() -> None:
    assert commit_job_id("dry") == commit_job_id("dry")
    assert commit_job_id("dry") != commit_job_id("other")


# ------------------------------------------------------------------------------------------------ the service
def dry_run(world: FakeWorld, content: bytes) -> str:
    request = NewImport(
        ImportTarget.USERS,
        Format.NDJSON,
        filename="users.ndjson",
        file=io.BytesIO(content),
        file_sha256="ab",
        mode=ImportMode.VALIDATE,
    )
    job_id = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    deliver_all(world)
    return job_id


RECORDS = ndjson([user(1), user(2), {"email": "not an address", "name": "Broken"}])


@pytest.fixture
def world() -> FakeWorld:
    return build_world()


def test_a_dry_run_ends_validated_with_the_counters_and_writes_nothing(world: FakeWorld) -> None:
    job_id = dry_run(world, RECORDS)

    job = job_of(world, job_id)
    assert job.status is JobStatus.VALIDATED
    assert job.mode is ImportMode.VALIDATE
    assert (job.counters.total, job.counters.succeeded, job.counters.failed) == (3, 2, 1)
    assert job.errors_by_code == {"invalid_email": 1}
    assert world.store.runs[job_id].dry_run
    assert world.store.runs[job_id].merged == []  # the fake merge's writes
    view = world.api.view(job_id, CALLER)
    assert (view["status"], view["mode"], view["progress"]["percent"]) == ("validated", "validate", 100.0)


def test_a_dry_run_keeps_the_source_it_read_and_drops_its_chunks(world: FakeWorld) -> None:
    job_id = dry_run(world, RECORDS)

    assert world.objects.info(source_key(job_id)) is not None
    assert world.objects.keys(f"chunks/{job_id}/") == []


def test_a_commit_imports_the_same_bytes_as_a_child_job(world: FakeWorld) -> None:
    parent = dry_run(world, RECORDS)

    submitted = world.api.commit(parent, CALLER)

    child = submitted.job_id
    assert child == commit_job_id(parent)
    assert submitted.body == {
        "job_id": child,
        "status": "queued",
        "mode": "import",
        "resource": "users",
        "format": "ndjson",
        "parent_job_id": parent,
    }
    assert world.launches.job_ids == [child]
    world.chunker.run_chunker(child)
    deliver_all(world)
    job = job_of(world, child)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert (job.counters.total, job.counters.succeeded, job.counters.failed) == (3, 2, 1)
    assert job.source.key == source_key(parent)  # no second upload
    assert [record.row["email"] for record in world.store.runs[child].merged] == [
        "user1@example.com",
        "user2@example.com",
    ]
    assert world.api.view(child, CALLER)["parent_job_id"] == parent
    assert world.api.view(parent, CALLER)["committed_job_id"] == child
    assert "rejected_reimported" not in world.api.view(parent, CALLER)  # a commit re-imports no rejected record


def test_a_second_commit_is_a_conflict_naming_the_first(world: FakeWorld) -> None:
    parent = dry_run(world, RECORDS)
    child = world.api.commit(parent, CALLER).job_id

    with pytest.raises(Conflict) as refused:
        world.api.commit(parent, CALLER)

    assert refused.value.code == "already_committed"
    assert refused.value.extra == {"committed_job_id": child}
    assert world.launches.job_ids == [child]


def test_a_commit_interrupted_after_its_claim_creates_its_job_when_asked_again(world: FakeWorld) -> None:
    parent = dry_run(world, RECORDS)
    assert world.jobs.claim_commit(parent, commit_job_id(parent))  # the first try died right after this

    submitted = world.api.commit(parent, CALLER)

    assert submitted.job_id == commit_job_id(parent)
    assert job_of(world, submitted.job_id).parent_job_id == parent


def test_an_import_cannot_be_committed(world: FakeWorld) -> None:
    job_id = world.api.submit(
        NewImport(ImportTarget.USERS, Format.NDJSON, filename="u.ndjson", file=io.BytesIO(RECORDS), file_sha256="ab"),
        None,
        OWNER,
    ).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    deliver_all(world)

    with pytest.raises(Conflict) as refused:
        world.api.commit(job_id, CALLER)
    assert refused.value.code == "not_a_dry_run"


def test_a_commit_after_the_retention_is_gone() -> None:
    world = build_world(make_settings(dry_run_retention_seconds=0))  # expired the moment it ended
    parent = dry_run(world, RECORDS)

    with pytest.raises(Gone) as refused:
        world.api.commit(parent, CALLER)
    assert refused.value.code == "source_expired"


def test_a_commit_whose_source_was_deleted_is_gone(world: FakeWorld) -> None:
    parent = dry_run(world, RECORDS)
    world.objects.purge(f"uploads/{parent}/")

    with pytest.raises(Gone) as refused:
        world.api.commit(parent, CALLER)
    assert refused.value.code == "source_expired"
    assert world.launches.job_ids == []


def test_the_mode_is_part_of_an_idempotent_request() -> None:
    plain = NewImport(ImportTarget.USERS, Format.NDJSON, url="https://example.com/u.ndjson")
    assert plain.identity() != replace(plain, mode=ImportMode.VALIDATE).identity()


def test_a_dry_run_counts_as_a_job_but_imports_no_record_in_the_metrics(world: FakeWorld) -> None:
    dry_run(world, RECORDS)

    registry = world.metrics.registry
    assert registry.get_sample_value("bulkio_records_total", {"resource": "users", "outcome": "succeeded"}) is None
    assert (
        registry.get_sample_value("bulkio_record_errors_total", {"resource": "users", "code": "invalid_email"}) is None
    )


def test_a_url_dry_run_keeps_its_download_and_the_commit_reads_it_not_the_url_again() -> None:
    fetches: list[str] = []

    def fetch(url: str) -> io.BytesIO:
        fetches.append(url)
        return io.BytesIO(RECORDS)

    world = build_world(open_source_url=fetch)
    request = NewImport(
        ImportTarget.USERS, Format.NDJSON, url="https://example.com/users.ndjson", mode=ImportMode.VALIDATE
    )
    parent = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.run_chunker(parent)
    deliver_all(world)
    assert job_of(world, parent).status is JobStatus.VALIDATED
    assert world.objects.keys(f"fetched/{parent}/") == [f"fetched/{parent}/source"]  # kept for the commit

    child = world.api.commit(parent, CALLER).job_id
    world.chunker.run_chunker(child)
    deliver_all(world)

    assert fetches == ["https://example.com/users.ndjson"]  # the URL was read once
    job = job_of(world, child)
    assert (job.status, job.counters.succeeded, job.counters.failed) == (JobStatus.COMPLETED_WITH_ERRORS, 2, 1)
    assert job.source.key == f"fetched/{parent}/source"
