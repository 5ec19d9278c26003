"""The import service layer against in-memory fakes: submit, chunker, writers, dead letters, S3 drops."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
import pytest
from bulkio.domain.auth import Principal
from bulkio.domain.chunks import FailedChunkerRun, chunk_key, decode_chunk
from bulkio.domain.errors import Conflict, Unprocessable
from bulkio.domain.idempotency import StoredRequest, fingerprint
from bulkio.domain.jobs import ImportJob, JobStatus, SourceKind
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.domain.sources import SourceUnavailable
from bulkio.services import idempotency
from bulkio.services.idempotency import idempotency_scope
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import IDEMPOTENCY_SCOPE, report_key, source_key

from tests.fakes import CALLER, OWNER, FakeClock, FakeWorld, build_world, make_settings

BUCKET = "import-bucket"
SOURCE_URL = "https://example.com/users.ndjson"

CALLER_KEYS = idempotency_scope(IDEMPOTENCY_SCOPE, OWNER)  # where the caller's Idempotency-Keys live


def user(number: int) -> dict[str, Any]:
    return {"email": f"user{number}@example.com", "name": f"User {number}"}


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def multipart_request(content: bytes, filename: str = "users.ndjson", fmt: Format | None = Format.NDJSON) -> NewImport:
    return NewImport(ImportTarget.USERS, fmt, filename=filename, file=io.BytesIO(content), file_sha256="ab")


def url_request(url: str = SOURCE_URL) -> NewImport:
    return NewImport(ImportTarget.USERS, Format.NDJSON, url=url)


def presigned_request() -> NewImport:
    return NewImport(ImportTarget.USERS, Format.CSV)


def job_of(world: FakeWorld, job_id: str) -> ImportJob:
    job = world.jobs.get(job_id)
    assert job is not None
    return job


def upload_and_chunk(
    world: FakeWorld, content: bytes, filename: str = "users.ndjson", fmt: Format | None = Format.NDJSON
) -> str:
    """A multipart import whose upload event has reached the chunker."""
    job_id = world.api.submit(multipart_request(content, filename, fmt), None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    return job_id


def deliver_all(world: FakeWorld) -> None:
    for message in list(world.queue.messages):
        world.writer.process_chunk(message)


@pytest.fixture
def world() -> FakeWorld:
    return build_world()


@pytest.fixture
def small_chunks() -> FakeWorld:
    return build_world(make_settings(chunk_records=2))


# ==================================================================================================== submit


def test_multipart_submit_creates_a_queued_job_and_uploads_the_file(world: FakeWorld) -> None:
    content = ndjson([user(1), user(2)])

    result = world.api.submit(multipart_request(content), None, OWNER)

    job_id = result.body["job_id"]
    assert (result.job_id, result.replayed) == (job_id, False)
    assert result.body == {
        "job_id": job_id,
        "status": "queued",
        "mode": "import",
        "resource": "users",
        "format": "ndjson",
    }
    job = job_of(world, job_id)
    assert (job.status, job.source.kind) == (JobStatus.QUEUED, SourceKind.MULTIPART)
    assert job.source.filename == "users.ndjson"
    assert (job.source.bucket, job.source.key) == (BUCKET, f"uploads/{job_id}/source")
    assert world.objects.read_bytes(f"uploads/{job_id}/source") == content
    assert world.launches.job_ids == []
    assert world.queue.messages == []


def test_url_submit_creates_a_queued_job_and_launches_the_chunker(world: FakeWorld) -> None:
    result = world.api.submit(url_request(), None, OWNER)

    job_id = result.body["job_id"]
    assert not result.replayed
    assert "upload" not in result.body
    job = job_of(world, job_id)
    assert (job.status, job.source.kind, job.source.url) == (JobStatus.QUEUED, SourceKind.URL, SOURCE_URL)
    assert (job.source.bucket, job.source.key) == (None, None)
    assert world.launches.job_ids == [job_id]
    assert world.objects.keys() == []


def test_presigned_submit_awaits_the_upload_and_returns_where_to_put_it(world: FakeWorld) -> None:
    result = world.api.submit(presigned_request(), None, OWNER)

    job_id = result.body["job_id"]
    assert not result.replayed
    assert result.body["status"] == "awaiting_upload"
    upload = result.body["upload"]
    assert upload["method"] == "PUT"
    assert f"uploads/{job_id}/source" in upload["url"]
    assert upload["expires_at"].endswith("Z")
    job = job_of(world, job_id)
    assert (job.status, job.source.kind) == (JobStatus.AWAITING_UPLOAD, SourceKind.PRESIGNED)
    assert job.source.key == source_key(job_id)
    assert world.launches.job_ids == []
    assert world.objects.keys() == []


def test_each_submit_without_key_creates_its_own_job(world: FakeWorld) -> None:
    first = world.api.submit(url_request(), None, OWNER)
    second = world.api.submit(url_request(), None, OWNER)

    assert first.body["job_id"] != second.body["job_id"]
    assert len(world.jobs.all_jobs()) == 2


# ============================================================================================ idempotency


def test_the_same_request_with_the_same_key_is_replayed(world: FakeWorld) -> None:
    first = world.api.submit(presigned_request(), "key-1", OWNER)

    replay = world.api.submit(presigned_request(), "key-1", OWNER)

    assert replay.body == first.body
    assert replay.replayed and not first.replayed
    assert len(world.jobs.all_jobs()) == 1


def test_a_replay_names_the_first_job(world: FakeWorld) -> None:
    first = world.api.submit(presigned_request(), "key-1", OWNER)

    replay = world.api.submit(presigned_request(), "key-1", OWNER)

    assert replay.job_id == first.job_id  # the web layer's Location header names it


def test_a_replayed_url_import_launches_the_chunker_once(world: FakeWorld) -> None:
    world.api.submit(url_request(), "key-1", OWNER)
    world.api.submit(url_request(), "key-1", OWNER)

    assert len(world.launches.job_ids) == 1


def test_a_different_request_with_a_used_key_is_refused(world: FakeWorld) -> None:
    world.api.submit(url_request(), "key-1", OWNER)

    with pytest.raises(Unprocessable) as raised:
        world.api.submit(url_request("https://example.com/other.ndjson"), "key-1", OWNER)

    assert raised.value.code == "idempotency_key_reused"
    assert len(world.jobs.all_jobs()) == 1


def test_a_failed_request_releases_its_key_so_a_retry_can_succeed(world: FakeWorld) -> None:
    world.launches.error = RuntimeError("lambda invoke throttled")

    with pytest.raises(RuntimeError):
        world.api.submit(url_request(), "key-1", OWNER)

    assert world.jobs.stored_request(CALLER_KEYS, "key-1") is None
    world.launches.error = None
    retry = world.api.submit(url_request(), "key-1", OWNER)
    assert not retry.replayed
    assert world.launches.job_ids == [retry.body["job_id"]]


def test_a_request_abandoned_before_answering_is_taken_over_under_its_job_id(world: FakeWorld) -> None:
    request = url_request()
    now = int(time.time())
    world.jobs.idempotency_records[(CALLER_KEYS, "key-1")] = StoredRequest(
        fingerprint(request.identity()), "job-abandoned", expires_at=now + 3600, locked_until=now - 1
    )

    result = world.api.submit(request, "key-1", OWNER)

    assert result.body["job_id"] == "job-abandoned"
    assert world.launches.job_ids == ["job-abandoned"]
    stored = world.jobs.stored_request(CALLER_KEYS, "key-1")
    assert stored is not None
    assert stored.response_status == 202


def test_a_request_still_running_elsewhere_ends_in_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_time = FakeClock()
    monkeypatch.setattr(idempotency, "time", fake_time)
    world = build_world(clock=fake_time.time)
    request = url_request()
    world.jobs.idempotency_records[(CALLER_KEYS, "key-1")] = StoredRequest(
        fingerprint(request.identity()),
        "job-running",
        expires_at=int(fake_time.now) + 3600,
        locked_until=int(fake_time.now) + 60,
    )

    with pytest.raises(Conflict) as raised:
        world.api.submit(request, "key-1", OWNER)

    assert raised.value.code == "idempotency_request_in_progress"
    assert world.launches.job_ids == []


def test_an_expired_key_can_be_used_for_a_new_request() -> None:
    fake_time = FakeClock()
    world = build_world(settings=make_settings(idempotency_ttl_seconds=60), clock=fake_time.time)
    first = world.api.submit(url_request(), "key-1", OWNER)

    fake_time.sleep(61)
    second = world.api.submit(url_request("https://example.com/other.ndjson"), "key-1", OWNER)

    assert second.body["job_id"] != first.body["job_id"]
    assert not second.replayed


# ================================================================================================ chunker


def test_the_chunker_writes_chunks_of_at_most_chunk_records(small_chunks: FakeWorld) -> None:
    records = [user(n) for n in range(1, 6)]

    job_id = upload_and_chunk(small_chunks, ndjson(records))

    assert small_chunks.objects.keys(f"chunks/{job_id}/") == [chunk_key(job_id, n) for n in (1, 2, 3)]
    entries = [list(decode_chunk(small_chunks.objects.read_bytes(chunk_key(job_id, n)))) for n in (1, 2, 3)]
    assert [len(chunk) for chunk in entries] == [2, 2, 1]
    flat = [entry for chunk in entries for entry in chunk]
    assert [(entry.index, entry.line, entry.record) for entry in flat] == [
        (n, n, record) for n, record in enumerate(records, 1)
    ]
    job = job_of(small_chunks, job_id)
    assert job.status is JobStatus.PROCESSING
    assert (job.chunks_total, job.counters.total) == (3, 5)


def test_chunk_messages_carry_references_only(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))

    # Two records per chunk: the third holds record 5 only.
    assert small_chunks.queue.bodies() == [
        {
            "job_id": job_id,
            "resource": "users",
            "chunk": n,
            "key": chunk_key(job_id, n),
            "first": first,
            "records": size,
        }
        for n, first, size in ((1, 1, 2), (2, 3, 2), (3, 5, 1))
    ]


def test_big_records_make_smaller_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_world(make_settings(chunk_records=1000, chunk_max_bytes=500))
    records = [{"email": f"user{n}@example.com", "name": "N" * 150} for n in range(1, 8)]
    job_id = upload_and_chunk(world, ndjson(records))

    sizes = [message.records for message in world.queue.messages]
    assert sizes == [2, 2, 2, 1]  # about 220 bytes each: two fit under 500 bytes, a third does not
    assert all(len(world.objects.read_bytes(message.key)) <= 500 for message in world.queue.messages)
    deliver_all(world)
    assert job_of(world, job_id).counters.succeeded == 7


def test_a_dead_chunk_names_its_records_from_its_message(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))
    small_chunks.dead_letters.on_dead_letter(small_chunks.queue.messages[2])

    failure = job_of(small_chunks, job_id).failure
    assert failure is not None and "chunk 3 (records 5 to 5)" in failure.message


def test_a_second_chunker_run_for_the_same_job_does_nothing(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 4)]))
    messages_before = list(small_chunks.queue.messages)

    small_chunks.chunker.run_chunker(job_id)
    small_chunks.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")

    assert small_chunks.queue.messages == messages_before


def test_the_chunker_ignores_an_unknown_job(world: FakeWorld) -> None:
    world.chunker.run_chunker("no-such-job")

    assert world.queue.messages == []
    assert world.store.runs == {}


def test_an_unreadable_file_fails_the_job_with_the_reason(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, b"", "users.csv", None)

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "empty_file"
    assert "empty" in job.failure.message
    assert world.queue.messages == []


def test_a_file_failing_midway_fails_the_job_and_its_sent_chunks_are_skipped(small_chunks: FakeWorld) -> None:
    # 23 records in chunks of 2: the first ten chunks go out in one SQS batch before the end is found missing.
    truncated_array = b"[" + b",\n".join(orjson.dumps(user(n)) for n in range(1, 24))

    job_id = upload_and_chunk(small_chunks, truncated_array, "users.json", Format.JSON)
    deliver_all(small_chunks)

    job = job_of(small_chunks, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "unterminated_json_array"
    assert len(small_chunks.queue.messages) == 10
    assert small_chunks.store.progress(job_id).chunks == 0
    assert small_chunks.store.merges == 0


def test_a_url_import_reads_the_url() -> None:
    sources: dict[str, bytes] = {SOURCE_URL: ndjson([user(n) for n in range(1, 4)])}
    world = build_world(make_settings(chunk_records=2), open_source_url=lambda url: io.BytesIO(sources[url]))
    job_id = world.api.submit(url_request(), None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    assert [message.chunk for message in world.queue.messages] == [1, 2]
    assert job_of(world, job_id).counters.total == 3


def test_an_unreachable_url_fails_the_job_with_the_reason() -> None:
    def unreachable(url: str) -> BinaryIO:
        raise SourceUnavailable("source_http_error", f"GET {url} answered HTTP 404")

    world = build_world(open_source_url=unreachable)
    job_id = world.api.submit(url_request(), None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert (job.failure.code, job.failure.message) == ("source_http_error", f"GET {SOURCE_URL} answered HTTP 404")


def test_a_vanished_upload_fails_the_job(world: FakeWorld) -> None:
    job_id = world.api.submit(presigned_request(), None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "source_missing"


# ================================================================================================ writers


def test_a_chunk_is_validated_staged_and_counted(world: FakeWorld) -> None:
    content = ndjson([user(1), {"email": "not-an-email", "name": "Bad"}]) + b"{broken\n" + ndjson([user(4)])
    job_id = upload_and_chunk(world, content)

    deliver_all(world)

    run = world.store.runs[job_id]
    assert run.staged_chunks == {1: (4, 2)}  # records, of which failed
    assert sorted((record.index, record.line, record.error.code.value) for record in run.failed) == [
        (2, 2, "invalid_email"),
        (3, 3, "invalid_json"),
    ]
    job = job_of(world, job_id)
    assert (job.counters.processed, job.counters.failed, job.chunks_done) == (4, 2, 1)


def test_a_redelivered_chunk_is_counted_once(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))
    first_message = small_chunks.queue.messages[0]

    small_chunks.writer.process_chunk(first_message)
    small_chunks.writer.process_chunk(first_message)

    view = small_chunks.api.view(job_id, CALLER)
    assert view["status"] == "processing"
    assert (view["progress"]["chunks_done"], view["counters"]["processed"]) == (1, 2)


def count_calls(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    original: Callable[..., Any] = getattr(target, name)

    def recording(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(target, name, recording)
    return calls


def test_the_last_writer_finishes_the_job_exactly_once(
    small_chunks: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    finishes = count_calls(monkeypatch, small_chunks.jobs, "finish")
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))
    *first_messages, last_message = small_chunks.queue.messages

    for message in first_messages:
        small_chunks.writer.process_chunk(message)
    assert job_of(small_chunks, job_id).status is JobStatus.PROCESSING

    small_chunks.writer.process_chunk(last_message)
    small_chunks.writer.process_chunk(last_message)
    small_chunks.writer.process_chunk(first_messages[0])

    job = job_of(small_chunks, job_id)
    assert job.status is JobStatus.COMPLETED
    assert (job.counters.total, job.counters.processed, job.counters.succeeded, job.counters.failed) == (5, 5, 5, 0)
    assert job.finished_at is not None
    assert small_chunks.store.merges == 1
    assert len(finishes) == 1


def test_the_chunker_finishes_the_job_when_writers_were_faster(
    small_chunks: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    finishes = count_calls(monkeypatch, small_chunks.jobs, "finish")
    small_chunks.queue.deliver = small_chunks.writer.process_chunk

    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))

    job = job_of(small_chunks, job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.chunks_done == job.chunks_total == 3
    assert small_chunks.store.merges == 1
    assert len(finishes) == 1


def test_a_job_with_invalid_records_completes_with_errors_and_a_report(world: FakeWorld) -> None:
    content = ndjson([user(1), {"email": "nope", "name": "Bad"}, {"name": "No key"}])
    job_id = upload_and_chunk(world, content)

    deliver_all(world)

    job = job_of(world, job_id)
    assert job.status is JobStatus.COMPLETED_WITH_ERRORS
    assert (job.counters.succeeded, job.counters.failed) == (1, 2)
    assert job.errors_by_code == {"invalid_email": 1, "missing_key": 1}
    report = [orjson.loads(line) for line in world.objects.read_bytes(report_key(job_id, "ndjson")).splitlines()]
    assert [(row["line"], row["code"]) for row in report] == [(2, "invalid_email"), (3, "missing_key")]
    assert world.objects.read_bytes(report_key(job_id, "csv")).startswith(b"line,")


def test_chunks_of_a_failed_job_are_skipped(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 4)]))
    small_chunks.ending.fail(job_id, "cancelled_by_test", "stopped")

    deliver_all(small_chunks)

    assert small_chunks.store.progress(job_id).chunks == 0
    assert job_of(small_chunks, job_id).chunks_done == 0


def test_a_chunk_the_database_refuses_records_why_and_is_retried(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(1)]))
    world.store.staging_error = RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        world.writer.process_chunk(world.queue.messages[0])

    assert world.store.chunk_failure(job_id, 1) == "RuntimeError: disk full"
    assert job_of(world, job_id).chunks_done == 0


# =========================================================================================== dead letters


def test_a_dead_letter_fails_the_job_with_the_chunks_recorded_reason(small_chunks: FakeWorld) -> None:
    job_id = upload_and_chunk(small_chunks, ndjson([user(n) for n in range(1, 6)]))
    small_chunks.store.staging_error = RuntimeError("value too long for type character varying(254)")
    second_chunk = small_chunks.queue.messages[1]
    with pytest.raises(RuntimeError):
        small_chunks.writer.process_chunk(second_chunk)

    small_chunks.dead_letters.on_dead_letter(second_chunk)

    job = job_of(small_chunks, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None
    assert job.failure.code == "chunk_failed"
    assert "chunk 2 (records 3 to 4)" in job.failure.message
    assert "RuntimeError: value too long for type character varying(254)" in job.failure.message
    assert small_chunks.store.runs[job_id].failed_run


def test_a_dead_letter_without_recorded_reason_says_so(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(1)]))

    world.dead_letters.on_dead_letter(world.queue.messages[0])

    failure = job_of(world, job_id).failure
    assert failure is not None
    assert "the writer crashed without recording a reason" in failure.message


def test_a_dead_letter_for_a_finished_job_changes_nothing(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(1)]))
    deliver_all(world)

    world.dead_letters.on_dead_letter(world.queue.messages[0])

    job = job_of(world, job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.failure is None


# ================================================================================================= drops


def test_a_dropped_file_becomes_one_job_per_object_version(world: FakeWorld) -> None:
    key = "drop/users/2024/new users.ndjson"
    world.objects.put_bytes(key, ndjson([user(1), user(2)]))
    first_etag = world.objects.info(key).etag  # type: ignore[union-attr]

    world.chunker.on_object_created(BUCKET, key, first_etag)
    world.chunker.on_object_created(BUCKET, key, first_etag)

    (job,) = world.jobs.all_jobs()
    assert (job.resource, job.source.kind, job.source.filename) == (Resource.USERS, SourceKind.DROP, "new users.ndjson")
    assert (job.source.bucket, job.source.key, job.source.etag) == (BUCKET, key, first_etag)
    assert job.status is JobStatus.PROCESSING
    assert len(world.queue.messages) == 1

    world.objects.put_bytes(key, ndjson([user(3)]))
    world.chunker.on_object_created(BUCKET, key, world.objects.info(key).etag)  # type: ignore[union-attr]

    assert len(world.jobs.all_jobs()) == 2
    assert len(world.queue.messages) == 2


@pytest.mark.parametrize("key", ["drop/orders/orders.csv", "drop/user/users.csv", "drop/users.csv"])
def test_a_file_dropped_outside_the_drop_folders_is_a_failed_job_naming_them(world: FakeWorld, key: str) -> None:
    world.objects.put_bytes(key, ndjson([user(1)]))

    world.chunker.on_object_created(BUCKET, key, "etag-1")
    world.chunker.on_object_created(BUCKET, key, "etag-1")  # the same object's event again: no second job

    [job] = world.jobs.all_jobs()
    assert (job.status, job.resource, job.source.key) == (JobStatus.FAILED, None, key)
    assert job.failure is not None and job.failure.code == "unknown_drop_folder"
    assert "drop/users/, drop/articles/, drop/comments/, drop/mixed/" in job.failure.message
    assert world.queue.messages == []
    admin = Principal("ops", frozenset({"admin"}))
    [listed] = world.api.list_jobs(10, None, admin)["jobs"]
    assert (listed["status"], listed["resource"], listed["failure"]["code"]) == ("failed", None, "unknown_drop_folder")
    assert [detail["status"] for _, detail in world.events.published] == ["failed"]


def test_objects_outside_uploads_and_drop_are_ignored(world: FakeWorld) -> None:
    world.chunker.on_object_created(BUCKET, "reports/x/errors.ndjson", "etag-1")

    assert world.jobs.all_jobs() == []
    assert world.queue.messages == []


def test_a_drop_folder_marker_is_not_an_import(world: FakeWorld) -> None:
    world.objects.put_bytes("drop/users/", b"")

    world.chunker.on_object_created(BUCKET, "drop/users/", "d41d8cd98f00b204e9800998ecf8427e")

    assert world.jobs.all_jobs() == []


def test_a_chunker_retry_after_a_crash_chunks_the_file(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = world.api.submit(multipart_request(ndjson([user(1)])), None, OWNER).body["job_id"]
    real_put_bytes = world.objects.put_bytes

    def unavailable(*_: object) -> None:
        raise ConnectionError("S3 unavailable")

    monkeypatch.setattr(world.objects, "put_bytes", unavailable)
    with pytest.raises(ConnectionError):
        world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    monkeypatch.setattr(world.objects, "put_bytes", real_put_bytes)

    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")

    assert len(world.queue.messages) == 1


# ============================================================================================== cancel


def test_a_cancelled_job_stages_and_merges_nothing(world: FakeWorld) -> None:
    job_id = world.api.submit(NewImport(resource=ImportTarget.USERS, format=Format.NDJSON), None, OWNER).body["job_id"]
    world.objects.put_bytes(source_key(job_id), b'{"email": "a@example.com", "name": "A"}\n')

    view = world.api.cancel(job_id, CALLER)

    assert view["status"] == "cancelled"
    world.chunker.run_chunker(job_id)  # the upload's event arrives after the cancel
    job = world.jobs.get(job_id)
    assert job is not None and job.status is JobStatus.CANCELLED
    assert world.queue.messages == []


def test_cancelling_an_ended_job_is_a_conflict(world: FakeWorld) -> None:
    job_id = world.api.submit(NewImport(resource=ImportTarget.USERS, format=Format.NDJSON), None, OWNER).body["job_id"]
    world.api.cancel(job_id, CALLER)
    with pytest.raises(Conflict) as raised:
        world.api.cancel(job_id, CALLER)
    assert raised.value.code == "job_already_ended"


# ====================================================================================== failed invocations


def test_a_chunker_invocation_that_ran_out_of_retries_fails_its_jobs(world: FakeWorld) -> None:
    upload_job = world.api.submit(NewImport(resource=ImportTarget.USERS, format=Format.CSV), None, OWNER).body["job_id"]
    url_job = world.api.submit(
        NewImport(resource=ImportTarget.USERS, format=Format.CSV, url="https://example.com/u.csv"), None, OWNER
    ).body["job_id"]
    s3_event = {
        "Records": [
            {"s3": {"bucket": {"name": "imports"}, "object": {"key": f"uploads/{upload_job}/source", "eTag": "e"}}}
        ]
    }
    for payload in (s3_event, {"job_id": url_job}):
        world.dead_letters.on_failed_invocation(
            FailedChunkerRun.model_validate(
                {
                    "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
                    "requestPayload": payload,
                    "responsePayload": {"errorMessage": "connection reset by peer", "errorType": "ConnectionError"},
                }
            )
        )

    for job_id in (upload_job, url_job):
        job = job_of(world, job_id)
        assert job.status is JobStatus.FAILED
        assert job.failure is not None and job.failure.code == "chunker_failed"
        assert "failed 3 times: connection reset by peer" in job.failure.message


# ============================================================================================== metrics


def test_a_finished_job_is_counted_in_the_metrics_once(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(1), user(2), {"email": "not-an-email", "name": "Bad"}]))
    deliver_all(world)
    world.ending.finish_if_complete(job_id)  # a replay (a redelivered last chunk) finishes nothing again

    registry = world.metrics.registry
    records = "bulkio_records_total"
    assert registry.get_sample_value(records, {"resource": "users", "outcome": "succeeded"}) == 2
    assert registry.get_sample_value(records, {"resource": "users", "outcome": "failed"}) == 1
    errors = registry.get_sample_value("bulkio_record_errors_total", {"resource": "users", "code": "invalid_email"})
    assert errors == 1
    assert registry.get_sample_value("bulkio_chunks_total", {"resource": "users"}) == 1


def test_logs_at_info_and_above_carry_no_record_content(world: FakeWorld, caplog: pytest.LogCaptureFixture) -> None:
    """Record content belongs in the error report only: not in the job's log lines, even when it fails."""
    caplog.set_level(logging.DEBUG)
    secret_records = [
        {"email": "private.person@example.com", "name": "Private Person"},
        {"email": "not-an-email-of-someone", "name": "Hidden Name"},
    ]
    job_id = upload_and_chunk(world, ndjson(secret_records))
    deliver_all(world)
    other_job = upload_and_chunk(world, ndjson([user(9)]))
    world.ending.fail(other_job, "chunk_failed", "Key (email)=(private.person@example.com) already exists")

    def text(records: list[logging.LogRecord]) -> str:
        return "\n".join(f"{record.getMessage()} {record.__dict__}" for record in records)

    loud = [record for record in caplog.records if record.levelno >= logging.INFO]
    assert any(getattr(record, "job_id", None) == job_id for record in loud)  # the job does log
    for secret in ("private.person", "Private Person", "not-an-email-of-someone", "Hidden Name"):
        assert secret not in text(loud)
    assert "private.person@example.com" in job_of(world, other_job).failure.message  # the owner still sees why


def test_caller_chosen_names_never_reach_object_keys(world: FakeWorld) -> None:
    hostile = "../../reports/other-job/errors.ndjson\r\n%2e%2e;rm -rf ~.csv"
    request = NewImport(ImportTarget.USERS, Format.NDJSON, filename=hostile, file=io.BytesIO(ndjson([user(1)])))
    job_id = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    deliver_all(world)

    keys = world.objects.keys()
    assert keys and all(job_id in key for key in keys)
    assert all(set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-/._") for key in keys), keys
    assert job_of(world, job_id).source.filename == hostile  # kept as data, shown back to the owner


def test_a_cancelled_job_keeps_the_errors_of_the_chunks_it_staged(small_chunks: FakeWorld) -> None:
    world = small_chunks
    records = [user(1), {"email": "bad", "name": "Bad"}, user(3), {"email": "worse", "name": "Worse"}, user(5)]
    job_id = upload_and_chunk(world, ndjson(records))
    first, second = world.queue.messages[:2]
    world.writer.process_chunk(first)
    world.writer.process_chunk(second)  # 4 records staged, 2 of them rejected; one chunk never staged

    view = world.api.cancel(job_id, CALLER)

    assert view["status"] == "cancelled"
    assert (view["counters"]["processed"], view["counters"]["failed"]) == (4, 2)
    assert view["errors_by_code"] == {"invalid_email": 2}
    report = world.api.error_report(job_id, "ndjson", CALLER).body or b""
    assert [orjson.loads(line)["line"] for line in report.splitlines()] == [2, 4]
