"""Job listings on DynamoDB (moto's server): newest first, filtered by status and resource across pages (DynamoDB
filters after it reads, so a filtered page reads on until it is full), import and export jobs apart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from bulkio.adapters.export_jobs import DynamoExportJobRepository
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.jobs import ImportJob, JobSource, JobStatus, SourceKind
from bulkio.domain.resources import Format, ImportTarget

from tests.fixtures.aws import create_jobs_table

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def table(aws_environment: str) -> object:
    return create_jobs_table(boto3.session.Session(), f"listing-jobs-{uuid.uuid4().hex[:8]}")


def import_job(number: int, status: JobStatus, resource: ImportTarget, owner: str = "ann") -> ImportJob:
    return ImportJob(
        job_id=f"import-{number}",
        resource=resource,
        format=Format.CSV,
        status=status,
        source=JobSource(kind=SourceKind.PRESIGNED),
        created_at=START + timedelta(minutes=number),
        owner=owner,
    )


def pages(jobs: DynamoJobRepository, limit: int, **filters: str) -> list[list[str]]:
    listed, cursor = [], None
    while True:
        page, cursor = jobs.list_jobs(limit, cursor, **filters)  # type: ignore[arg-type]
        listed.append([job.job_id for job in page])
        if cursor is None:
            return listed


def test_a_filtered_listing_pages_through_the_matching_jobs_newest_first(table: object) -> None:
    jobs = DynamoJobRepository(table)
    statuses = [JobStatus.QUEUED, JobStatus.AWAITING_UPLOAD]
    for number in range(1, 10):
        target = ImportTarget.USERS if number % 3 else ImportTarget.ARTICLES
        jobs.create(import_job(number, statuses[number % 2], target, owner="ann" if number != 5 else "bob"))

    assert pages(jobs, 2, owner="ann", status="queued") == [["import-8", "import-6"], ["import-4", "import-2"]]
    assert pages(jobs, 3, owner="ann", resource="articles") == [["import-9", "import-6", "import-3"], []]
    assert pages(jobs, 10, status="awaiting_upload", resource="users") == [["import-7", "import-5", "import-1"]]
    assert pages(jobs, 4, owner="bob") == [["import-5"]]


def test_export_jobs_are_listed_apart_by_owner(table: object) -> None:
    exports = DynamoExportJobRepository(table)
    DynamoJobRepository(table).create(import_job(1, JobStatus.QUEUED, ImportTarget.USERS))
    for number, owner in enumerate(["ann", "bob", "ann"], start=1):
        exports.create(
            ExportJob(
                job_id=f"export-{number}",
                resource="users",
                format="csv",
                filters={},
                fields=["id"],
                compression=None,
                status=ExportStatus.QUEUED,
                created_at=START + timedelta(minutes=number),
                request={"resource": "users"},
                owner=owner,
            )
        )

    mine, cursor = exports.list_jobs(10, None, owner="ann")
    assert ([job.job_id for job in mine], cursor) == (["export-3", "export-1"], None)
    everyone, _ = exports.list_jobs(10, None, status="queued")
    assert [job.job_id for job in everyone] == ["export-3", "export-2", "export-1"]
