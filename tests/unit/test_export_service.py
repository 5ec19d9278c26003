"""ExportService with in-memory fakes: the job lifecycle, the worker's file, and request problems."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.exports import ExportFormat, ExportQuery
from bulkio.domain.jobs import JobFailure, utc_now
from bulkio.problems import Problem
from bulkio.services.exports import ExportService

from tests.fakes import CALLER, OWNER, FakeJobRepository, FakeObjectStore, make_settings


class FakeExportJobs:
    """DynamoExportJobRepository in a dict, with the same status transitions."""

    def __init__(self) -> None:
        self.jobs: dict[str, ExportJob] = {}

    def create(self, job: ExportJob) -> None:
        self.jobs.setdefault(job.job_id, job)

    def get(self, job_id: str) -> ExportJob | None:
        job = self.jobs.get(job_id)
        return replace(job) if job else None

    def _move(self, job_id: str, allowed: set[ExportStatus], **changes: Any) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status not in allowed:
            return False
        self.jobs[job_id] = replace(job, **changes)
        return True

    def start(self, job_id: str) -> bool:
        return self._move(
            job_id, {ExportStatus.QUEUED, ExportStatus.RUNNING}, status=ExportStatus.RUNNING, started_at=utc_now()
        )

    def complete(self, job_id: str, rows: int, size: int, object_key: str) -> bool:
        return self._move(
            job_id,
            {ExportStatus.RUNNING},
            status=ExportStatus.COMPLETED,
            finished_at=utc_now(),
            rows=rows,
            bytes=size,
            object_key=object_key,
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self._move(
            job_id,
            {ExportStatus.QUEUED, ExportStatus.RUNNING},
            status=ExportStatus.FAILED,
            finished_at=utc_now(),
            failure=JobFailure(code, message),
        )


class FakeExportStream(Iterator[bytes]):
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = iter(lines)
        self.rows = 0
        self._count = len(lines)

    def __next__(self) -> bytes:
        try:
            return next(self._lines)
        except StopIteration:
            self.rows = self._count
            raise

    def close(self) -> None:
        pass


@dataclass
class FakeExportStore:
    queries: list[tuple[ExportQuery, ExportFormat]] = field(default_factory=list)

    def stream(self, query: ExportQuery, fmt: ExportFormat) -> FakeExportStream:
        self.queries.append((query, fmt))
        return FakeExportStream([b'{"id":"a"}\n', b'{"id":"b"}\n'])


@dataclass
class World:
    service: ExportService
    jobs: FakeExportJobs
    objects: FakeObjectStore
    store: FakeExportStore
    started: list[str]


@pytest.fixture
def world() -> World:
    jobs, objects, store, started = FakeExportJobs(), FakeObjectStore("export-bucket"), FakeExportStore(), []
    service = ExportService(make_settings(), jobs, FakeJobRepository(), objects, store, started.append)  # type: ignore[arg-type]
    return World(service, jobs, objects, store, started)


def test_submitting_creates_a_queued_job_and_starts_the_state_machine(world: World) -> None:
    result = world.service.submit({"resource": "users", "format": "csv", "filters": {"role": "admin"}}, None, OWNER)

    assert result.status == 202
    job_id = result.body["job_id"]
    assert result.body == {"job_id": job_id, "status": "queued", "links": {"self": f"/v1/exports/{job_id}"}}
    assert world.started == [job_id]
    view = world.service.view(job_id, CALLER)
    assert (view["status"], view["resource"], view["format"], view["filters"]) == (
        "queued",
        "users",
        "csv",
        {"role": "admin"},
    )
    assert "download_url" not in view


def test_the_same_idempotency_key_makes_one_export(world: World) -> None:
    body = {"resource": "articles", "format": "ndjson"}
    first = world.service.submit(body, "key-1", OWNER)
    again = world.service.submit(body, "key-1", OWNER)
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert len(world.started) == 1
    with pytest.raises(Problem) as raised:
        world.service.submit({"resource": "users", "format": "ndjson"}, "key-1", OWNER)
    assert raised.value.code == "idempotency_key_reused"


def test_a_bad_request_is_a_problem_naming_what_is_allowed(world: World) -> None:
    with pytest.raises(Problem) as raised:
        world.service.submit({"resource": "users", "filters": {"colour": "red"}}, None, OWNER)
    assert (raised.value.status, raised.value.code) == (400, "unknown_filter")
    assert "role" in raised.value.extra["allowed"]
    assert world.started == []


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_the_worker_writes_the_file_and_completes_the_job(world: World, compression: str | None) -> None:
    body: dict[str, Any] = {"resource": "users", "format": "ndjson", "fields": ["id"], "compression": compression}
    job_id = world.service.submit(body, None, OWNER).body["job_id"]

    result = world.service.run(job_id)

    key = f"exports/{job_id}/users.ndjson" + (".gz" if compression else "")
    stored = world.objects.objects[("export-bucket", key)].data
    content = gzip.decompress(stored) if compression else stored
    assert content == b'{"id":"a"}\n{"id":"b"}\n'
    assert result == {"job_id": job_id, "rows": 2, "bytes": len(stored)}
    view = world.service.view(job_id, CALLER)
    assert (view["status"], view["counters"], view["bytes"]) == ("completed", {"rows": 2}, len(stored))
    assert view["download_url"] and view["expires_at"]
    (query, fmt), *_ = world.store.queries
    assert (query.fields, fmt) == (("id",), ExportFormat.NDJSON)


def test_a_finished_export_does_not_run_again(world: World) -> None:
    job_id = world.service.submit({"resource": "users"}, None, OWNER).body["job_id"]
    world.service.run(job_id)
    with pytest.raises(RuntimeError):
        world.service.run(job_id)


def test_the_catch_branch_records_why_the_export_failed(world: World) -> None:
    job_id = world.service.submit({"resource": "users"}, None, OWNER).body["job_id"]

    world.service.mark_failed(job_id, {"Error": "ValueError", "Cause": '{"errorMessage": "disk full"}'})

    view = world.service.view(job_id, CALLER)
    assert view["status"] == "failed"
    assert view["failure"]["code"] == "export_failed"
    assert "disk full" in view["failure"]["message"]


def test_streaming_rejects_an_unknown_format_or_filter(world: World) -> None:
    with pytest.raises(Problem) as bad_format:
        world.service.stream({"resource": "users", "format": "xml"})
    assert (bad_format.value.code, bad_format.value.extra["allowed"]) == ("invalid_format", ["ndjson", "json", "csv"])
    with pytest.raises(Problem) as bad_filter:
        world.service.stream({"resource": "users", "colour": "red"})
    assert bad_filter.value.code == "unknown_filter"
    export = world.service.stream({"resource": "comments", "format": "csv"})
    assert (export.content_type.split(";")[0], export.filename) == ("text/csv", "comments.csv")
