"""Resumable uploads on the fakes: `upload_size` gives a job its parts' presigned URLs; the parts come in any order
and again after an interruption (GET …/upload says which S3 holds); completing checks every part is there, and
the job then starts; such a job waits for its parts longer than a presigned PUT."""

from __future__ import annotations

import time

import pytest
from bulkio.domain.errors import Conflict, InvalidRequest
from bulkio.domain.jobs import JobStatus
from bulkio.domain.resources import Format, ImportTarget
from bulkio.domain.uploads import MIB, MIN_PART_BYTES, UploadedPart, missing_parts, part_ranges, part_size_for
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import CALLER, OWNER, FakeWorld, build_world, make_settings
from tests.unit.test_import_service import job_of

SIZE = MIN_PART_BYTES + 3 * MIB  # two parts: a full one and a short last one


def test_parts_are_at_least_64_mib_and_never_more_than_s3_takes() -> None:
    assert part_size_for(1) == part_size_for(5 * 1024**3) == MIN_PART_BYTES
    terabyte = 1024**4
    assert part_size_for(terabyte) % MIB == 0 and len(part_ranges(terabyte)) <= 10_000
    ranges = part_ranges(SIZE)
    assert ranges == [(1, 0, MIN_PART_BYTES), (2, MIN_PART_BYTES, 3 * MIB)]
    assert missing_parts(SIZE, [UploadedPart(2, "e", 3 * MIB), UploadedPart(1, "e", 5)]) == [1]  # wrong size


@pytest.fixture
def world() -> FakeWorld:
    return build_world()


def resumable(world: FakeWorld, size: int = SIZE) -> dict[str, object]:
    return world.api.submit(NewImport(ImportTarget.USERS, Format.NDJSON, upload_size=size), None, OWNER).body


def test_a_resumable_upload_completes_once_every_part_is_there_and_the_job_starts(world: FakeWorld) -> None:
    body = resumable(world)
    job_id = str(body["job_id"])
    upload = body["upload"]
    assert isinstance(upload, dict)
    assert (upload["method"], upload["size"], upload["part_size"]) == ("multipart", SIZE, MIN_PART_BYTES)
    assert [(p["part_number"], p["offset"], p["size"]) for p in upload["parts"]] == part_ranges(SIZE)
    assert upload["complete_url"] == f"/v1/imports/{job_id}/upload/complete"
    upload_id = job_of(world, job_id).source.upload_id
    assert upload_id is not None and job_of(world, job_id).status is JobStatus.AWAITING_UPLOAD

    first_part, second_part = b"1" * MIN_PART_BYTES, b"2" * (3 * MIB)
    world.objects.put_part(upload_id, 2, second_part)  # out of order
    with pytest.raises(Conflict) as refused:
        world.api.complete_upload(job_id, CALLER)
    assert (refused.value.code, refused.value.extra["missing_parts"]) == ("upload_incomplete", [1])
    resumed = world.api.upload_status(job_id, CALLER)["upload"]
    assert resumed["uploaded"] == [{"part_number": 2, "size": 3 * MIB}]

    world.objects.put_part(upload_id, 1, first_part)
    world.api.complete_upload(job_id, CALLER)

    assert world.objects.read_bytes(source_key(job_id)) == first_part + second_part
    assert world.launches.job_ids == [job_id]  # the chunker starts at once, not only on the object's event
    with pytest.raises(Conflict) as again:
        world.api.complete_upload(job_id, CALLER)
    assert again.value.code == "upload_already_completed"


def test_a_plain_presigned_job_has_no_parts_and_a_size_over_the_limit_is_refused() -> None:
    world = build_world(make_settings(max_source_bytes=10 * MIB))
    plain = world.api.submit(NewImport(ImportTarget.USERS, Format.NDJSON), None, OWNER).body["job_id"]
    with pytest.raises(Conflict) as refused:
        world.api.upload_status(plain, CALLER)
    assert refused.value.code == "not_a_resumable_upload"

    with pytest.raises(InvalidRequest) as too_big:
        resumable(world, 10 * MIB + 1)
    assert too_big.value.code == "source_too_large"


def test_a_resumable_upload_waits_for_its_parts_longer_than_a_presigned_put(world: FakeWorld) -> None:
    job_id = str(resumable(world)["job_id"])
    plain = world.api.submit(NewImport(ImportTarget.USERS, Format.NDJSON), None, OWNER).body["job_id"]
    for job in (job_of(world, job_id), job_of(world, plain)):
        world.jobs._jobs[job.job_id].job.created_at = job.created_at.fromtimestamp(
            time.time() - 2 * 3600, job.created_at.tzinfo
        )

    world.sweeper.sweep()

    assert job_of(world, plain).status is JobStatus.FAILED
    assert job_of(world, job_id).status is JobStatus.AWAITING_UPLOAD
