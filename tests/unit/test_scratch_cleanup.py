"""An ended import job's scratch objects (its chunk objects, a URL import's downloaded copy) are deleted with every
version; its upload and its error reports stay. Driven through ImportService with the in-memory fakes
(tests/fakes.py): a completed, a failed and a cancelled job, chunk messages that come after the end, a chunk object
that is missing while the job still runs, and a purge that fails.
"""

from __future__ import annotations

import logging

import orjson
import pytest
from bulkio import faults
from bulkio.domain.chunks import ChunkMessage, chunk_key, chunk_prefix
from bulkio.domain.jobs import JobStatus
from bulkio.domain.resources import Format, ImportTarget
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import fetched_key, fetched_prefix, report_key, source_key

from tests.fakes import CALLER, OWNER, FakeClock, FakeWorld, build_world, make_settings
from tests.unit.conftest import CHUNK_RECORDS
from tests.unit.test_import_recovery import (
    LEASE,
    ChangingUrl,
    Killed,
    crash_at,
    deliver,
    deliver_all,
    disarm,
    job_of,
    submit_upload,
    upload_event,
    users_file,
)

URL = "https://example.com/users.ndjson"


def keys_under(world: FakeWorld, prefix: str) -> list[str]:
    """The keys the bucket shows now under `prefix`."""
    return world.objects.keys(prefix)


def versions_under(world: FakeWorld, prefix: str) -> list[tuple[str, str]]:
    """Every stored version (key, version id) under `prefix`, current or not."""
    return sorted(
        (key, version)
        for bucket, key, version in world.objects.versions
        if bucket == world.objects.bucket and key.startswith(prefix)
    )


def scratch_of(world: FakeWorld, job_id: str) -> list[tuple[str, str]]:
    """What is left of the job's scratch: the versions and the keys under chunks/{job}/ and fetched/{job}/."""
    left: list[tuple[str, str]] = []
    for prefix in (chunk_prefix(job_id), fetched_prefix(job_id)):
        left += versions_under(world, prefix)
        left += [(key, "current") for key in keys_under(world, prefix)]
    return left


def submit_url(world: FakeWorld) -> str:
    request = NewImport(ImportTarget.USERS, Format.NDJSON, url=URL)
    return str(world.api.submit(request, None, OWNER).body["job_id"])


def chunk_keys(job_id: str, count: int) -> list[str]:
    return [chunk_key(job_id, n) for n in range(1, count + 1)]


def announced_for(world: FakeWorld, job_id: str) -> list[ChunkMessage]:
    return [message for message in world.queue.messages if message.job_id == job_id]


def record_chunk_keys_while_chunking(world: FakeWorld, job_id: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job's chunk keys as the bucket showed them after each chunk the chunker wrote (the last sighting)."""
    seen: list[str] = []

    def look(point: str) -> None:
        if point == faults.CHUNKER_AFTER_CHUNK:
            seen[:] = keys_under(world, chunk_prefix(job_id))

    monkeypatch.setattr(faults, "crash_at", look)
    return seen


# ======================================================================================== a completed import


def test_a_completed_import_leaves_no_chunk_object_nor_any_version_and_keeps_its_upload_and_reports(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file(7, bad=(3,))  # 4 chunks; record 3 (chunk 2) is invalid
    job_id = submit_upload(world, content)
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK, nth=3)
    with pytest.raises(Killed):
        upload_event(world, job_id)
    disarm(monkeypatch)
    clock.advance(LEASE + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    world.chunker.run_chunker(job_id)  # the relaunched run writes chunks 1-3 a second time
    other_job = submit_upload(world, users_file(3, prefix="other", bad=()))
    upload_event(world, other_job)  # another job, chunked and still processing

    assert keys_under(world, chunk_prefix(job_id)) == chunk_keys(job_id, 4)
    assert len(versions_under(world, chunk_prefix(job_id))) == 7  # chunks 1-3 twice, chunk 4 once
    other_chunks = versions_under(world, chunk_prefix(other_job))
    assert [key for key, _ in other_chunks] == chunk_keys(other_job, 2)
    upload_versions = versions_under(world, source_key(job_id))

    deliver(world, announced_for(world, job_id))

    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded, job.counters.failed) == (
        JobStatus.COMPLETED_WITH_ERRORS,
        7,
        6,
        1,
    )
    assert keys_under(world, chunk_prefix(job_id)) == []
    assert versions_under(world, chunk_prefix(job_id)) == []
    assert world.objects.read_bytes(source_key(job_id)) == content
    assert versions_under(world, source_key(job_id)) == upload_versions
    report = [orjson.loads(line) for line in world.objects.read_bytes(report_key(job_id, "ndjson")).splitlines()]
    assert [(row["line"], row["code"]) for row in report] == [(4, "invalid_email")]  # the 4th line
    assert world.objects.read_bytes(report_key(job_id, "csv")).startswith(b"line,index,code")
    # The other job's chunks are its own: untouched, and it still completes from them.
    assert versions_under(world, chunk_prefix(other_job)) == other_chunks
    assert job_of(world, other_job).status is JobStatus.PROCESSING
    deliver(world, announced_for(world, other_job))
    assert job_of(world, other_job).status is JobStatus.COMPLETED
    assert scratch_of(world, other_job) == []


def test_a_url_import_leaves_no_downloaded_copy_once_completed(clock: FakeClock) -> None:
    content = users_file(5, bad=())
    url = ChangingUrl(content)
    world = build_world(make_settings(chunk_records=CHUNK_RECORDS), open_source_url=url, clock=clock)
    job_id = submit_url(world)
    assert world.launches.job_ids == [job_id]

    world.chunker.run_chunker(job_id)  # the launched invocation
    assert world.objects.read_bytes(fetched_key(job_id)) == content
    assert keys_under(world, chunk_prefix(job_id)) == chunk_keys(job_id, 3)

    deliver_all(world)

    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded) == (JobStatus.COMPLETED, 5, 5)
    assert keys_under(world, fetched_prefix(job_id)) == []
    assert versions_under(world, fetched_prefix(job_id)) == []
    assert scratch_of(world, job_id) == []
    assert world.objects.info(report_key(job_id, "ndjson")) is not None
    assert world.objects.info(report_key(job_id, "csv")) is not None
    assert url.fetches == 1


def test_the_scratch_is_purged_only_once_the_job_has_ended(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submit_upload(world, users_file(5, bad=()))
    upload_event(world, job_id)
    purges: list[tuple[str, JobStatus]] = []
    real_purge = world.objects.purge

    def spy(prefix: str) -> int:
        purges.append((prefix, job_of(world, job_id).status))
        return real_purge(prefix)

    monkeypatch.setattr(world.objects, "purge", spy)
    messages = announced_for(world, job_id)

    deliver(world, messages[:-1])
    assert purges == []  # chunks are still needed while the job runs (a restage reads them again)
    deliver(world, messages[-1:])

    assert sorted(purges) == [
        (chunk_prefix(job_id), JobStatus.COMPLETED),
        (fetched_prefix(job_id), JobStatus.COMPLETED),
    ]


# ====================================================================================== failed and cancelled


def test_a_job_that_fails_mid_file_leaves_no_chunk_object(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    world = build_world(make_settings(chunk_records=CHUNK_RECORDS, max_records_per_job=5), clock=clock)
    content = users_file(9, bad=())
    job_id = submit_upload(world, content)
    written = record_chunk_keys_while_chunking(world, job_id, monkeypatch)

    upload_event(world, job_id)  # the sixth record is over the limit: the chunker fails the job

    assert written == chunk_keys(job_id, 2)  # chunks were written before the limit was hit
    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "too_many_records"
    assert scratch_of(world, job_id) == []
    assert world.objects.read_bytes(source_key(job_id)) == content


def chunker_died_after_three_chunks(world: FakeWorld, content: bytes, monkeypatch: pytest.MonkeyPatch) -> str:
    """An upload whose chunker was killed after writing three of its chunk objects."""
    job_id = submit_upload(world, content)
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK, nth=3)
    with pytest.raises(Killed):
        upload_event(world, job_id)
    disarm(monkeypatch)
    assert keys_under(world, chunk_prefix(job_id)) == chunk_keys(job_id, 3)
    return job_id


def test_a_job_failed_after_its_chunker_died_mid_file_leaves_no_chunk_object(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file(9, bad=())
    job_id = chunker_died_after_three_chunks(world, content, monkeypatch)

    world.ending.fail(job_id, "chunker_failed", "reading the source failed 3 times")

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "chunker_failed"
    assert scratch_of(world, job_id) == []
    assert world.objects.read_bytes(source_key(job_id)) == content


@pytest.mark.parametrize("end", ["fail", "cancel"])
def test_a_url_import_ended_mid_file_leaves_neither_chunks_nor_its_downloaded_copy(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    world = build_world(
        make_settings(chunk_records=CHUNK_RECORDS), open_source_url=ChangingUrl(users_file(9, bad=())), clock=clock
    )
    job_id = submit_url(world)
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK, nth=2)
    with pytest.raises(Killed):
        world.chunker.run_chunker(job_id)
    disarm(monkeypatch)
    assert keys_under(world, chunk_prefix(job_id)) == chunk_keys(job_id, 2)
    assert keys_under(world, fetched_prefix(job_id)) == [fetched_key(job_id)]

    if end == "fail":
        world.ending.fail(job_id, "chunker_failed", "reading the source failed 3 times")
    else:
        world.api.cancel(job_id, CALLER)

    assert job_of(world, job_id).status is (JobStatus.FAILED if end == "fail" else JobStatus.CANCELLED)
    assert scratch_of(world, job_id) == []


def test_a_job_cancelled_after_its_chunker_died_mid_file_leaves_no_chunk_object(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file(9, bad=())
    job_id = chunker_died_after_three_chunks(world, content, monkeypatch)

    view = world.api.cancel(job_id, CALLER)

    assert view["status"] == "cancelled"
    assert scratch_of(world, job_id) == []
    assert world.objects.read_bytes(source_key(job_id)) == content
    clock.advance(LEASE + 1)  # the dead run's lease runs out: no chunker is launched for an ended job
    world.sweeper.sweep()
    assert world.launches.job_ids == []
    assert scratch_of(world, job_id) == []


def test_a_job_cancelled_while_its_chunks_are_staged_leaves_no_chunk_object_and_skips_the_rest(
    world: FakeWorld,
) -> None:
    job_id = submit_upload(world, users_file(7, bad=()))
    upload_event(world, job_id)
    messages = announced_for(world, job_id)
    assert len(messages) == 4
    deliver(world, messages[:2])

    assert world.api.cancel(job_id, CALLER)["status"] == "cancelled"
    assert scratch_of(world, job_id) == []

    deliver(world, messages[2:])  # their objects are gone: skipped, not failed

    assert world.store.chunk_failures == {}
    assert world.store.progress(job_id).chunks == 2
    assert job_of(world, job_id).status is JobStatus.CANCELLED


# ============================================================================= chunks that come after the end


def test_a_chunk_delivered_again_after_the_job_completed_is_skipped(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file(7, bad=(3,)))
    upload_event(world, job_id)
    messages = announced_for(world, job_id)
    deliver(world, messages)
    completed = job_of(world, job_id)
    assert completed.status is JobStatus.COMPLETED_WITH_ERRORS
    assert scratch_of(world, job_id) == []
    report = world.objects.read_bytes(report_key(job_id, "ndjson"))

    deliver(world, messages)  # SQS delivers at least once: every chunk again, its object gone

    job = job_of(world, job_id)
    assert (job.status, job.counters, job.errors_by_code, job.finished_at) == (
        completed.status,
        completed.counters,
        completed.errors_by_code,
        completed.finished_at,
    )
    assert world.store.chunk_failures == {}
    assert world.store.merges == 1
    assert world.objects.read_bytes(report_key(job_id, "ndjson")) == report


@pytest.mark.parametrize("end", ["fail", "cancel"])
def test_a_chunk_delivered_after_the_job_failed_or_was_cancelled_is_skipped(world: FakeWorld, end: str) -> None:
    job_id = submit_upload(world, users_file(7, bad=()))
    upload_event(world, job_id)
    if end == "fail":
        world.ending.fail(job_id, "chunker_failed", "stopped")
    else:
        world.api.cancel(job_id, CALLER)
    assert scratch_of(world, job_id) == []

    deliver_all(world)

    assert world.store.chunk_failures == {}
    assert world.store.progress(job_id).chunks == 0
    assert job_of(world, job_id).status is (JobStatus.FAILED if end == "fail" else JobStatus.CANCELLED)


def test_a_chunk_whose_object_is_missing_while_the_job_runs_is_recorded_and_retried(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file(7, bad=()))
    upload_event(world, job_id)
    messages = announced_for(world, job_id)
    assert world.objects.purge(chunk_key(job_id, 2)) == 1  # chunk 2's object vanished; the job runs on

    with pytest.raises(FileNotFoundError):
        world.writer.process_chunk(messages[1])  # raised: SQS delivers it again after a backoff

    assert list(world.store.chunk_failures) == [(job_id, 2)]
    failure = world.store.chunk_failures[(job_id, 2)]
    assert "is missing" in failure and chunk_key(job_id, 2) in failure
    assert job_of(world, job_id).status is JobStatus.PROCESSING
    assert not world.store.is_staged(job_id, 2)
    deliver(world, [messages[0], *messages[2:]])  # the others stage; the job waits for chunk 2
    assert world.store.progress(job_id).chunks == 3
    assert job_of(world, job_id).status is JobStatus.PROCESSING


def test_a_chunk_whose_job_ends_while_it_is_read_is_skipped(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = submit_upload(world, users_file(7, bad=()))
    upload_event(world, job_id)
    messages = announced_for(world, job_id)
    real_read = world.objects.read_bytes

    def cancelled_meanwhile(key: str) -> bytes:
        world.api.cancel(job_id, CALLER)  # between the writer's look at the job and its read of the chunk
        return real_read(key)

    monkeypatch.setattr(world.objects, "read_bytes", cancelled_meanwhile)

    world.writer.process_chunk(messages[0])  # raises nothing

    assert world.store.chunk_failures == {}
    assert world.store.progress(job_id).chunks == 0
    assert job_of(world, job_id).status is JobStatus.CANCELLED


# ============================================================================================ a failed purge


def refuse_purges(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    tried: list[str] = []

    def refuse(prefix: str) -> int:
        tried.append(prefix)
        raise RuntimeError("AccessDenied: s3:DeleteObjectVersion")

    monkeypatch.setattr(world.objects, "purge", refuse)
    return tried


def test_a_purge_that_fails_still_finishes_the_job(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    job_id = submit_upload(world, users_file(7, bad=(3,)))
    upload_event(world, job_id)
    tried = refuse_purges(world, monkeypatch)

    deliver_all(world)  # the last writer merges and finishes: the failed purge raises nothing

    assert tried != []
    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded, job.counters.failed) == (
        JobStatus.COMPLETED_WITH_ERRORS,
        7,
        6,
        1,
    )
    assert job.errors_by_code == {"invalid_email": 1}
    assert world.objects.info(report_key(job_id, "ndjson")) is not None
    assert world.objects.info(report_key(job_id, "csv")) is not None
    assert world.store.merges == 1
    assert keys_under(world, chunk_prefix(job_id)) == chunk_keys(job_id, 4)  # left for the lifecycle rules
    assert any("could not delete" in record.getMessage() for record in caplog.records)
    assert world.sweeper.sweep() == {}  # nothing left to do for the sweeper


def test_a_purge_that_fails_still_cancels_and_fails_jobs(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    to_cancel = submit_upload(world, users_file(5, bad=()))
    upload_event(world, to_cancel)
    to_fail = submit_upload(world, users_file(5, bad=()))
    upload_event(world, to_fail)
    tried = refuse_purges(world, monkeypatch)

    assert world.api.cancel(to_cancel, CALLER)["status"] == "cancelled"
    world.ending.fail(to_fail, "chunker_failed", "stopped")

    assert len(tried) >= 2
    assert job_of(world, to_cancel).status is JobStatus.CANCELLED
    failed = job_of(world, to_fail)
    assert failed.status is JobStatus.FAILED
    assert failed.failure is not None and failed.failure.code == "chunker_failed"


# ================================================================================ stragglers and versions


def test_a_job_cancelled_while_its_chunker_runs_leaves_no_chunk_object(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_upload(world, users_file(9, bad=()))
    cancelled: list[str] = []

    def cancel_after_the_first_chunk(point: str) -> None:
        if point == faults.CHUNKER_AFTER_CHUNK and not cancelled:
            cancelled.append(world.api.cancel(job_id, CALLER)["status"])

    monkeypatch.setattr(faults, "crash_at", cancel_after_the_first_chunk)

    upload_event(world, job_id)
    deliver_all(world)

    assert cancelled == ["cancelled"]
    assert job_of(world, job_id).status is JobStatus.CANCELLED
    assert world.store.chunk_failures == {}
    assert scratch_of(world, job_id) == []


def test_a_version_kept_before_another_jobs_purge_still_reads_as_it_was(world: FakeWorld) -> None:
    key = "uploads/job-b/source"
    world.objects.put_bytes(key, b"first")
    world.objects.put_bytes(chunk_key("job-a", 1), b"chunk 1")
    world.objects.put_bytes(chunk_key("job-a", 2), b"chunk 2")
    world.objects.put_bytes(key, b"pinned")
    info = world.objects.info(key)
    assert info is not None and info.version_id is not None

    assert world.objects.purge(chunk_prefix("job-a")) == 2
    for body in (b"third", b"fourth", b"fifth"):
        world.objects.put_bytes(key, body)

    assert world.objects.open_version(key, None, info.version_id, None).read() == b"pinned"
    assert len(versions_under(world, key)) == 5
