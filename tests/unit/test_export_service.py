"""ExportService with in-memory fakes: the job lifecycle, the worker's file, and request problems."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from bulkio import bootstrap
from bulkio.adapters.metrics import Metrics
from bulkio.adapters.tokens import mint_token
from bulkio.domain.errors import InvalidRequest, NotFound, Unprocessable
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.export_messages import TaskError
from bulkio.domain.exports import ExportFormat, ExportQuery
from bulkio.domain.jobs import JobFailure, utc_now
from bulkio.services.exports import ExportService
from pydantic import ValidationError

from tests.fakes import CALLER, OWNER, FakeEvents, FakeJobRepository, FakeObjectStore, make_settings
from tests.functions import LambdaContext, load_function_app


class FakeExportJobs:
    """DynamoExportJobRepository in a dict, with the same status transitions."""

    def __init__(self) -> None:
        self.jobs: dict[str, ExportJob] = {}

    def create(self, job: ExportJob) -> None:
        self.jobs.setdefault(job.job_id, job)

    def get(self, job_id: str) -> ExportJob | None:
        job = self.jobs.get(job_id)
        return replace(job) if job else None

    def list_jobs(
        self,
        limit: int,
        cursor: dict[str, Any] | None,
        owner: str | None = None,
        status: str | None = None,
        resource: str | None = None,
    ) -> tuple[list[ExportJob], dict[str, Any] | None]:
        listed = sorted(
            (
                job
                for job in self.jobs.values()
                if (owner is None or job.owner == owner)
                and (status is None or job.status.value == status)
                and (resource is None or job.resource == resource)
            ),
            key=lambda job: job.created_at,
            reverse=True,
        )
        start = int(cursor["offset"]) if cursor else 0
        more = start + limit < len(listed)
        return [replace(job) for job in listed[start : start + limit]], {"offset": start + limit} if more else None

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
    events: FakeEvents


@pytest.fixture
def world() -> World:
    jobs, objects, store, events = FakeExportJobs(), FakeObjectStore("export-bucket"), FakeExportStore(), FakeEvents()
    started: list[str] = []
    metrics = Metrics("", "exports")  # no Pushgateway: nothing is pushed
    service = ExportService(make_settings(), jobs, FakeJobRepository(), objects, store, started.append, metrics, events)
    return World(service, jobs, objects, store, started, events)


def test_submitting_creates_a_queued_job_and_starts_the_state_machine(world: World) -> None:
    result = world.service.submit({"resource": "users", "format": "csv", "filters": {"role": "admin"}}, None, OWNER)

    job_id = result.job_id
    assert (result.body, result.replayed) == ({"job_id": job_id, "status": "queued"}, False)
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
    assert again.body == first.body and (again.job_id, again.replayed) == (first.job_id, True)
    assert len(world.started) == 1
    with pytest.raises(Unprocessable) as raised:
        world.service.submit({"resource": "users", "format": "ndjson"}, "key-1", OWNER)
    assert raised.value.code == "idempotency_key_reused"


def test_a_bad_request_is_refused_naming_what_is_allowed(world: World) -> None:
    with pytest.raises(InvalidRequest) as raised:
        world.service.submit({"resource": "users", "filters": {"colour": "red"}}, None, OWNER)
    assert raised.value.code == "unknown_filter"
    assert "role" in raised.value.extra["allowed"]
    assert world.started == []


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_the_worker_writes_the_file_and_completes_the_job(world: World, compression: str | None) -> None:
    body: dict[str, Any] = {"resource": "users", "format": "ndjson", "fields": ["id"], "compression": compression}
    job_id = world.service.submit(body, None, OWNER).job_id

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
    job_id = world.service.submit({"resource": "users"}, None, OWNER).job_id
    world.service.run(job_id)
    with pytest.raises(RuntimeError):
        world.service.run(job_id)


def test_the_catch_branch_records_why_the_export_failed(world: World) -> None:
    job_id = world.service.submit({"resource": "users"}, None, OWNER).job_id

    world.service.mark_failed(job_id, TaskError(Error="ValueError", Cause='{"errorMessage": "disk full"}'))

    view = world.service.view(job_id, CALLER)
    assert view["status"] == "failed"
    assert view["failure"]["code"] == "export_failed"
    assert "disk full" in view["failure"]["message"]


def test_an_ended_export_publishes_its_completion_event_without_a_download_url(world: World) -> None:
    completed = world.service.submit({"resource": "users"}, None, OWNER).job_id
    world.service.run(completed)
    failed = world.service.submit({"resource": "users"}, None, OWNER).job_id
    world.service.mark_failed(failed, TaskError(Error="ValueError", Cause="disk full"))

    world.service.publish_completion(completed)
    world.service.publish_completion(failed)

    assert [(kind, detail["job_id"], detail["status"]) for kind, detail in world.events.published] == [
        ("Export Job Completed", completed, "completed"),
        ("Export Job Completed", failed, "failed"),
    ]
    assert world.events.published[0][1]["counters"] == {"rows": 2}
    assert "download_url" not in world.events.published[0][1]


def test_publishing_before_the_export_ended_or_without_the_bus_raises_for_a_retry(world: World) -> None:
    job_id = world.service.submit({"resource": "users"}, None, OWNER).job_id
    with pytest.raises(RuntimeError):
        world.service.publish_completion(job_id)  # still queued
    world.service.run(job_id)
    world.events.error = ConnectionError("the bus is away")
    with pytest.raises(ConnectionError):
        world.service.publish_completion(job_id)  # the state machine retries the task
    assert world.events.published == []


def test_streaming_rejects_an_unknown_format_or_filter(world: World) -> None:
    with pytest.raises(InvalidRequest) as bad_format:
        world.service.stream({"resource": "users", "format": "xml"})
    assert (bad_format.value.code, bad_format.value.extra["allowed"]) == ("invalid_format", ["ndjson", "json", "csv"])
    with pytest.raises(InvalidRequest) as bad_filter:
        world.service.stream({"resource": "users", "colour": "red"})
    assert bad_filter.value.code == "unknown_filter"
    export = world.service.stream({"resource": "comments", "format": "csv"})
    assert (export.content_type.split(";")[0], export.filename) == ("text/csv", "comments.csv")


def test_an_unknown_job_or_another_callers_job_is_not_found(world: World) -> None:
    with pytest.raises(NotFound) as unknown:
        world.service.view("no-such-job", CALLER)
    assert (unknown.value.code, unknown.value.message) == (
        "job_not_found",
        "no export job no-such-job: check the id returned by POST /v1/exports",
    )
    job_id = world.service.submit({"resource": "users"}, None, "someone-else").job_id
    with pytest.raises(NotFound):
        world.service.view(job_id, CALLER)


# ================================================================================= the functions around it

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture
def wired(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The export functions' bootstrap answers the world's service; tokens are HS256 with SECRET."""
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    for variable in ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE", "PUSHGATEWAY_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(bootstrap, "wiring", bootstrap.Wiring(export_service=world.service))
    yield world
    bootstrap.reset()


def stream_event(query: dict[str, str], scopes: list[str]) -> dict[str, Any]:
    return {
        "rawPath": "/v1/exports",
        "requestContext": {"http": {"method": "GET"}},
        "headers": {"authorization": f"Bearer {mint_token(SECRET, OWNER, scopes)}"},
        "queryStringParameters": query,
    }


def test_the_streamed_export_maps_a_bad_request_as_the_api_does(wired: World) -> None:
    handler = load_function_app("export_stream").handler

    bad = handler(stream_event({"resource": "users", "format": "xml"}, ["exports:read"]), LambdaContext())
    assert (bad["statusCode"], bad["headers"]["Content-Type"]) == (400, "application/problem+json")
    problem = orjson.loads(bad["body"])
    assert (problem["code"], problem["title"], problem["allowed"]) == (
        "invalid_format",
        "Bad request",
        ["ndjson", "json", "csv"],
    )
    assert problem["instance"] == "/v1/exports"

    forbidden = handler(stream_event({"resource": "users"}, ["imports:read"]), LambdaContext())
    assert (forbidden["statusCode"], orjson.loads(forbidden["body"])["code"]) == (403, "insufficient_scope")

    streamed = handler(stream_event({"resource": "users", "format": "csv"}, ["exports:read"]), LambdaContext())
    assert streamed["statusCode"] == 200 and b"".join(streamed["body"]) == b'{"id":"a"}\n{"id":"b"}\n'


def test_the_worker_tasks_read_the_state_machines_payloads(wired: World) -> None:
    worker = load_function_app("export_worker")
    job_id = wired.service.submit({"resource": "users"}, None, OWNER).job_id
    assert worker.run_export({"job_id": job_id}, LambdaContext())["rows"] == 2

    other = wired.service.submit({"resource": "users"}, None, OWNER).job_id
    caught = {"Error": "States.TaskFailed", "Cause": "worker crashed"}
    assert worker.mark_failed({"job_id": other, "error": caught}, LambdaContext()) == {
        "job_id": other,
        "status": "failed",
    }
    assert wired.service.view(other, CALLER)["failure"]["message"] == "the export failed: worker crashed"
    assert worker.publish_completion({"job_id": other}, LambdaContext()) == {"job_id": other, "published": True}
    assert [detail["job_id"] for _, detail in wired.events.published] == [other]
    with pytest.raises(ValidationError):
        worker.run_export({}, LambdaContext())
