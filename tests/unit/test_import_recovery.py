"""Every job ends: the sweeper, the chunker's lease, pinned sources, re-staging and the writers' backoff, driven
through ImportService with the in-memory fakes (tests/fakes.py) and a clock the tests move.

A crash is a `Killed` raised at one of bulkio.faults' points: a BaseException, so that no `except Exception` of
the service runs after it, as nothing runs after a kill -9.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
import pytest
from bulkio import bootstrap, faults
from bulkio.domain.chunks import ChunkMessage, chunk_key
from bulkio.domain.jobs import ImportJob, JobSource, JobStatus, LeaseLost, SourceKind, utc_now
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.domain.staging import MergeOutcome, StagingLost
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.chunking import ChunkerLease
from bulkio.services.imports.common import MAX_RESTAGES, fetched_key, report_key, source_key

from tests.fakes import OWNER, FakeClock, FakeJobRepository, FakeWorld, build_world, make_settings
from tests.functions import LambdaContext, load_function_app
from tests.unit.conftest import CHUNK_RECORDS

BUCKET = "import-bucket"
LEASE = 60  # Settings.chunker_lease_seconds' default
STALL = 180  # Settings.sweep_stall_seconds' default


class Killed(BaseException):
    """A process killed at a fault point: no handler of the service runs after it."""


def crash_at(monkeypatch: pytest.MonkeyPatch, point: str, nth: int = 1, every_time: bool = False) -> None:
    """Arms `point`: the nth time it is reached (or every time from then on), the process is killed."""
    reached = 0

    def maybe_crash(at: str) -> None:
        nonlocal reached
        if at != point:
            return
        reached += 1
        if reached == nth or (every_time and reached > nth):
            raise Killed(point)

    monkeypatch.setattr(faults, "crash_at", maybe_crash)


def disarm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "crash_at", lambda point: None)


# ============================================================================================ files and runs


def user(number: int, prefix: str = "user") -> dict[str, Any]:
    return {"email": f"{prefix}{number}@example.com", "name": f"User {number}"}


def users_file(count: int = 7, prefix: str = "user", bad: tuple[int, ...] = (3,)) -> bytes:
    """NDJSON users; the records at the 0-based positions in `bad` have an invalid email."""
    records = [{"email": "not-an-email", "name": "Bad"} if n in bad else user(n, prefix) for n in range(count)]
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def submit_upload(world: FakeWorld, content: bytes) -> str:
    """A multipart import: the file is in S3 under uploads/; its S3 event has not reached the chunker yet."""
    request = NewImport(ImportTarget.USERS, Format.NDJSON, filename="users.ndjson", file=io.BytesIO(content))
    return str(world.api.submit(request, None, OWNER).body["job_id"])


def upload_event(world: FakeWorld, job_id: str) -> None:
    key = source_key(job_id)
    info = world.objects.info(key)
    assert info is not None
    world.chunker.on_object_created(BUCKET, key, info.etag)


def deliver(world: FakeWorld, messages: list[ChunkMessage]) -> None:
    for message in messages:
        world.writer.process_chunk(message)


def deliver_all(world: FakeWorld) -> None:
    deliver(world, list(world.queue.messages))


def job_of(world: FakeWorld, job_id: str) -> ImportJob:
    job = world.jobs.get(job_id)
    assert job is not None
    return job


@dataclass(frozen=True)
class Result:
    """What a user and an operator see of an ended job, and the rows its merge wrote."""

    status: JobStatus
    total: int | None
    processed: int
    succeeded: int
    failed: int
    errors_by_code: dict[str, int]
    chunks_total: int | None
    report: bytes
    merged_rows: tuple[tuple[int, int | None, str], ...]


class MergeSpy:
    """Keeps the staged rows of the merge that wrote them (the fake merge forgets them afterwards)."""

    def __init__(self, world: FakeWorld) -> None:
        self.merges: list[tuple[tuple[int, int | None, str], ...]] = []
        self._world = world
        self._try_merge = world.store.try_merge
        world.store.try_merge = self  # type: ignore[method-assign]

    def __call__(self, job_id: str, wait: bool = True) -> MergeOutcome | StagingLost | None:
        run = self._world.store.runs.get(job_id)
        rows = tuple(sorted((r.index, r.line, orjson.dumps(r.row).decode()) for r in run.staged)) if run else ()
        outcome = self._try_merge(job_id, wait)
        if isinstance(outcome, MergeOutcome) and outcome.merged_now:
            self.merges.append(rows)
        return outcome


def result_of(world: FakeWorld, job_id: str, spy: MergeSpy) -> Result:
    job = job_of(world, job_id)
    assert len(spy.merges) == 1, "the job must be merged exactly once"
    return Result(
        status=job.status,
        total=job.counters.total,
        processed=job.counters.processed,
        succeeded=job.counters.succeeded,
        failed=job.counters.failed,
        errors_by_code=job.errors_by_code,
        chunks_total=job.chunks_total,
        report=world.objects.read_bytes(report_key(job_id, "ndjson")),
        merged_rows=spy.merges[0],
    )


def clean_run(content: bytes) -> Result:
    """The same file imported without any fault, in a world of its own."""
    world = build_world(make_settings(chunk_records=CHUNK_RECORDS))
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    upload_event(world, job_id)
    deliver_all(world)
    return result_of(world, job_id, spy)


def chunked_emails(world: FakeWorld, job_id: str) -> list[str]:
    """The emails of the records the job merged, in record order (its chunk objects are gone once it ended)."""
    return [record.row["email"] for record in sorted(world.store.runs[job_id].merged, key=lambda r: r.index)]


# =============================================================================================== the chunker


@pytest.mark.parametrize("crash_after_chunk", [1, 12], ids=["before any message", "after ten messages"])
def test_a_chunker_killed_mid_file_is_relaunched_when_its_lease_runs_out_and_ends_as_a_clean_run(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, crash_after_chunk: int
) -> None:
    content = users_file(25, bad=(3, 20))  # 13 chunks; messages go out ten at a time
    expected = clean_run(content)
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK, crash_after_chunk)

    with pytest.raises(Killed):
        upload_event(world, job_id)
    deliver_all(world)  # the writers stage what was announced before the crash

    job = job_of(world, job_id)
    assert (job.status, job.chunks_total, job.chunker_runs) == (JobStatus.PROCESSING, None, 1)
    assert job.lease_until == int(clock.now) + LEASE
    assert len(world.queue.messages) == (10 if crash_after_chunk > 10 else 0)
    assert world.sweeper.sweep() == {"nothing": 1}  # the lease is live: a chunker may be reading
    clock.advance(LEASE - 1)
    assert world.sweeper.sweep() == {"nothing": 1}
    assert world.launches.job_ids == []

    clock.advance(2)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    assert world.launches.job_ids == [job_id]

    disarm(monkeypatch)
    world.chunker.run_chunker(job_id)  # the launched invocation
    deliver_all(world)  # the first ten chunks' messages come twice: staging them again changes nothing

    assert result_of(world, job_id, spy) == expected
    assert job_of(world, job_id).chunker_runs == 2
    assert world.sweeper.sweep() == {}


def test_a_chunker_that_dies_every_time_fails_the_job_after_the_allowed_runs(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_upload(world, users_file())
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK, every_time=True)
    with pytest.raises(Killed):
        upload_event(world, job_id)

    for run in (2, 3):
        clock.advance(LEASE + 1)
        assert world.sweeper.sweep() == {"launch_chunker": 1}
        with pytest.raises(Killed):
            world.chunker.run_chunker(job_id)
        assert job_of(world, job_id).chunker_runs == run
    clock.advance(LEASE + 1)
    assert world.sweeper.sweep() == {"fail": 1}

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "chunker_failed"
    assert "3 times" in job.failure.message
    assert world.launches.job_ids == [job_id, job_id]
    assert world.sweeper.sweep() == {}


def test_the_sweep_stores_the_totals_the_database_missed_when_the_chunker_ended(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file()
    expected = clean_run(content)
    spy = MergeSpy(world)
    world.queue.deliver = world.writer.process_chunk  # writers faster than the chunker
    real_set_totals = world.store.set_totals

    def database_away(job_id: str, chunks_total: int, records_total: int) -> None:
        raise Killed("the job has its totals, the database went away before it got them")

    monkeypatch.setattr(world.store, "set_totals", database_away)
    job_id = submit_upload(world, content)
    with pytest.raises(Killed):
        upload_event(world, job_id)
    monkeypatch.setattr(world.store, "set_totals", real_set_totals)
    assert job_of(world, job_id).chunks_total == 4
    assert spy.merges == []

    world.store.activity_age_seconds = STALL + 1  # the merging process would have ended the job by now
    assert world.sweeper.sweep() == {"finish": 1}

    assert result_of(world, job_id, spy) == expected
    assert expected.chunks_total == 4


# =============================================================================================== lost chunks


def test_chunks_whose_messages_were_lost_are_sent_again_after_the_stall(world: FakeWorld, clock: FakeClock) -> None:
    content = users_file()
    expected = clean_run(content)
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    upload_event(world, job_id)
    announced = list(world.queue.messages)
    assert [message.chunk for message in announced] == [1, 2, 3, 4]
    deliver(world, [announced[0], announced[2]])  # the messages of chunks 2 and 4 were lost

    world.store.activity_age_seconds = STALL
    assert world.sweeper.sweep() == {"nothing": 1}
    assert world.queue.messages == announced

    world.store.activity_age_seconds = STALL + 1
    assert world.sweeper.sweep() == {"resend_chunks": 1}

    resent = world.queue.messages[len(announced) :]
    assert [orjson.loads(message.to_json()) for message in resent] == [
        {"job_id": job_id, "resource": "users", "chunk": 2, "key": chunk_key(job_id, 2)},
        {"job_id": job_id, "resource": "users", "chunk": 4, "key": chunk_key(job_id, 4)},
    ]
    assert world.store.runs[job_id].resends == 1
    deliver(world, resent)
    assert result_of(world, job_id, spy) == expected


def test_chunks_that_never_get_staged_fail_the_job_after_the_allowed_resends(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    world.store.activity_age_seconds = STALL + 1  # no writer ever stages anything

    for resends in range(1, 6):  # Settings.sweep_max_resends' default
        assert world.sweeper.sweep() == {"resend_chunks": 1}
        assert len(world.queue.messages) == 4 + 4 * resends
    assert world.sweeper.sweep() == {"fail": 1}

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "chunks_stalled"
    assert job.failure.message.startswith("4 of 4 chunks were never staged")
    assert len(world.queue.messages) == 24


# ================================================================================================= the merge


def test_a_job_whose_chunks_are_all_staged_but_never_merged_is_merged_by_the_sweep(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file()
    expected = clean_run(content)
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    upload_event(world, job_id)
    crash_at(monkeypatch, faults.WRITER_AFTER_STAGE, nth=4)  # the last writer dies before it merges

    with pytest.raises(Killed):
        deliver_all(world)
    assert world.store.progress(job_id).chunks == 4
    assert spy.merges == []

    world.store.activity_age_seconds = STALL + 1  # the merging process would have ended the job by now
    assert world.sweeper.sweep() == {"finish": 1}
    assert result_of(world, job_id, spy) == expected


def test_a_merge_whose_job_was_never_told_is_finished_by_the_sweep_without_merging_again(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = users_file()
    expected = clean_run(content)
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    upload_event(world, job_id)
    crash_at(monkeypatch, faults.MERGE_BEFORE_FINISH)

    with pytest.raises(Killed):
        deliver_all(world)
    assert job_of(world, job_id).status is JobStatus.PROCESSING
    assert len(spy.merges) == 1

    world.store.activity_age_seconds = STALL + 1  # the merging process would have ended the job by now
    assert world.sweeper.sweep() == {"finish": 1}
    assert result_of(world, job_id, spy) == expected
    assert world.store.merges == 1


def test_staged_rows_lost_in_a_crash_recovery_are_staged_again_and_the_job_ends_as_a_clean_run(
    world: FakeWorld,
) -> None:
    content = users_file()
    expected = clean_run(content)
    spy = MergeSpy(world)
    job_id = submit_upload(world, content)
    upload_event(world, job_id)
    announced = list(world.queue.messages)
    deliver(world, announced[:3])
    world.store.lose_staged_rows(job_id, [1, 3])  # chunk 3 holds the invalid record too

    deliver(world, announced[3:])  # the last chunk: the merge finds rows missing

    job = job_of(world, job_id)
    assert job.status is JobStatus.PROCESSING
    assert spy.merges == []
    restaged = world.queue.messages[len(announced) :]
    assert [(message.chunk, message.key) for message in restaged] == [
        (1, chunk_key(job_id, 1)),
        (3, chunk_key(job_id, 3)),
    ]
    deliver(world, restaged)
    assert result_of(world, job_id, spy) == expected
    assert world.store.runs[job_id].restages == 1


def test_staged_rows_lost_again_and_again_fail_the_job_as_staging_lost(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    pending = list(world.queue.messages)
    deliver(world, pending[:3])
    pending = pending[3:]

    for losses in range(1, MAX_RESTAGES + 2):
        world.store.lose_staged_rows(job_id, [1])
        sent = len(world.queue.messages)
        deliver(world, pending)
        pending = world.queue.messages[sent:]
        job = job_of(world, job_id)
        if losses <= MAX_RESTAGES:
            assert job.status is JobStatus.PROCESSING
            assert [message.chunk for message in pending] == [1]
    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "staging_lost"
    assert f"lost {MAX_RESTAGES + 1} times" in job.failure.message
    assert pending == []  # nothing is sent again once the job failed


# ========================================================================================= uploads, launches


def test_an_upload_that_never_came_fails_the_job_once_the_upload_window_is_over(
    world: FakeWorld, clock: FakeClock
) -> None:
    job_id = str(world.api.submit(NewImport(ImportTarget.USERS, Format.CSV), None, OWNER).body["job_id"])

    clock.advance(STALL + 1)
    assert world.sweeper.sweep() == {"nothing": 1}
    clock.advance(3600 + 300 - STALL - 2)  # presign_ttl_seconds + the grace for an upload in flight
    assert world.sweeper.sweep() == {"nothing": 1}
    clock.advance(2)
    assert world.sweeper.sweep() == {"fail": 1}

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "upload_expired"
    assert world.sweeper.sweep() == {}


def test_an_upload_whose_s3_event_was_lost_is_chunked_after_the_stall(world: FakeWorld, clock: FakeClock) -> None:
    job_id = str(world.api.submit(NewImport(ImportTarget.USERS, Format.NDJSON), None, OWNER).body["job_id"])
    world.objects.put_bytes(source_key(job_id), users_file())  # the PUT to the presigned URL; no event follows

    assert world.sweeper.sweep() == {"nothing": 1}
    clock.advance(STALL + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    assert world.launches.job_ids == [job_id]

    world.chunker.run_chunker(job_id)
    deliver_all(world)
    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded) == (JobStatus.COMPLETED_WITH_ERRORS, 7, 6)


def test_a_queued_job_whose_chunker_launch_was_lost_is_launched_again(world: FakeWorld, clock: FakeClock) -> None:
    job_id = str(
        world.api.submit(
            NewImport(ImportTarget.USERS, Format.NDJSON, url="https://example.com/u.ndjson"), None, OWNER
        ).body["job_id"]
    )
    assert world.launches.job_ids == [job_id]  # the launch that got lost

    assert world.sweeper.sweep() == {"nothing": 1}
    clock.advance(STALL + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    assert world.launches.job_ids == [job_id, job_id]


def test_a_run_that_failed_without_telling_its_job_fails_the_job_as_interrupted(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    assert world.store.fail_run(job_id)  # a cancel that died before it reached the job

    assert world.sweeper.sweep() == {"fail": 1}

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "job_interrupted"


def test_one_jobs_trouble_does_not_stop_the_sweep_of_the_others(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    presigned = NewImport(ImportTarget.USERS, Format.CSV)
    troubled = str(world.api.submit(presigned, None, OWNER).body["job_id"])
    healthy = str(world.api.submit(presigned, None, OWNER).body["job_id"])
    assert [job.job_id for job in world.jobs.open_jobs()] == [troubled, healthy]  # the troubled one comes first
    real_run_state = world.store.run_state

    def run_state(job_id: str) -> Any:
        if job_id == troubled:
            raise ConnectionError("the database went away")
        return real_run_state(job_id)

    def pushgateway_down(seconds: float) -> int:
        raise OSError("the Pushgateway is down")

    monkeypatch.setattr(world.store, "run_state", run_state)
    monkeypatch.setattr(world.metrics, "delete_job_groups_older_than", pushgateway_down)
    clock.advance(3600 + 300 + 1)

    assert world.sweeper.sweep() == {"error": 1, "fail": 1}

    assert job_of(world, troubled).status is JobStatus.AWAITING_UPLOAD
    assert job_of(world, healthy).status is JobStatus.FAILED
    monkeypatch.setattr(world.store, "run_state", real_run_state)
    assert world.sweeper.sweep() == {"fail": 1}  # the next sweep ends it
    assert job_of(world, troubled).status is JobStatus.FAILED


# ====================================================================================== writers' backoff


def test_a_failed_chunk_backs_off_by_its_receive_count(world: FakeWorld) -> None:
    for receive_count in (1, 2, 3, 5, 6, 10):
        world.writer.retry_later(f"receipt-{receive_count}", receive_count)

    assert world.queue.delays == [
        ("receipt-1", 2),
        ("receipt-2", 4),
        ("receipt-3", 8),
        ("receipt-5", 32),
        ("receipt-6", 60),
        ("receipt-10", 60),
    ]


def test_the_backoff_follows_the_settings() -> None:
    world = build_world(make_settings(chunk_retry_first_seconds=1, chunk_retry_longest_seconds=5))
    for receive_count in (1, 2, 3, 4):
        world.writer.retry_later("receipt", receive_count)

    assert [seconds for _, seconds in world.queue.delays] == [1, 2, 4, 5]


def test_a_backoff_that_cannot_be_set_is_swallowed(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[tuple[str, int]] = []

    def refused(receipt_handle: str, seconds: int) -> None:
        attempts.append((receipt_handle, seconds))
        raise PermissionError("AccessDenied: sqs:ChangeMessageVisibility")

    monkeypatch.setattr(world.queue, "delay", refused)

    world.writer.retry_later("receipt", 3)  # the message comes back after the queue's visibility instead

    assert attempts == [("receipt", 8)]


def sqs_event(*messages: tuple[str, ChunkMessage, int]) -> dict[str, Any]:
    """An SQS event of (message id, body, receive count) triples."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"receipt-of-{message_id}",
                "body": body.to_json(),
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:chunks",
                "awsRegion": "eu-west-1",
            }
            for message_id, body, receive_count in messages
        ]
    }


def test_the_writer_backs_off_a_failed_chunk_and_reports_it_failed(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    first, second = world.queue.messages[:2]
    writer = load_function_app("writer")
    monkeypatch.setattr(bootstrap, "wiring", world.wiring())
    stage_chunk = world.store.stage_chunk

    def database_down_for_chunk_two(job: str, resource: Resource, chunk_no: int, *rows: Any) -> bool:
        if chunk_no == 2:
            raise ConnectionError("the database is restarting")
        return stage_chunk(job, resource, chunk_no, *rows)

    monkeypatch.setattr(world.store, "stage_chunk", database_down_for_chunk_two)

    response = writer.handler(sqs_event(("m-1", first, 1), ("m-2", second, 3)), LambdaContext())

    assert response == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}
    assert world.queue.delays == [("receipt-of-m-2", 8)]  # the third receive waits 8 s
    assert world.store.is_staged(job_id, 1) and not world.store.is_staged(job_id, 2)


# ============================================================================================= dead letters


def test_a_dead_letter_for_a_chunk_staged_meanwhile_is_ignored(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    announced = list(world.queue.messages)
    deliver(world, announced[:1])

    world.dead_letters.on_dead_letter(announced[0])  # a copy that failed, while a re-send staged the chunk

    assert job_of(world, job_id).status is JobStatus.PROCESSING
    deliver(world, announced[1:])
    assert job_of(world, job_id).status is JobStatus.COMPLETED_WITH_ERRORS


def test_a_dead_letter_for_a_chunk_never_staged_still_fails_the_job(world: FakeWorld) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    announced = list(world.queue.messages)
    deliver(world, announced[:1])

    world.dead_letters.on_dead_letter(announced[1])

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "chunk_failed"


def test_a_dead_letter_for_the_last_chunk_staged_by_a_writer_that_died_finishes_the_job(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit_upload(world, users_file())
    upload_event(world, job_id)
    announced = list(world.queue.messages)
    crash_at(monkeypatch, faults.WRITER_AFTER_STAGE, nth=4)
    with pytest.raises(Killed):
        deliver(world, announced)

    world.dead_letters.on_dead_letter(announced[3])

    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.failed) == (JobStatus.COMPLETED_WITH_ERRORS, 7, 1)


# ============================================================================================ the lease


def leased_job(clock: FakeClock, run_id: str = "run-1") -> FakeJobRepository:
    jobs = FakeJobRepository(clock)
    source = JobSource(SourceKind.MULTIPART, bucket=BUCKET, key="uploads/job-1/source")
    jobs.create(ImportJob("job-1", Resource.USERS, Format.CSV, JobStatus.QUEUED, source, utc_now()))
    assert jobs.start_processing("job-1", None, run_id, LEASE)
    return jobs


def test_the_lease_is_renewed_at_most_every_third_of_its_length(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = leased_job(clock)
    renewals: list[float] = []
    renew = jobs.renew_chunker_lease

    def counted(job_id: str, run_id: str, lease_seconds: int) -> None:
        renewals.append(clock.now)
        renew(job_id, run_id, lease_seconds)

    monkeypatch.setattr(jobs, "renew_chunker_lease", counted)
    lease = ChunkerLease(jobs, "job-1", "run-1", LEASE)  # type: ignore[arg-type]
    started = clock.now

    for _ in range(20):  # a reader calling keep_alive for every chunk, one chunk a second
        lease.keep_alive()
        clock.advance(1)
    assert renewals == []
    lease.keep_alive()  # 20 s after the start: a third of 60
    assert renewals == [started + 20]
    assert job_of_repo(jobs).lease_until == int(started + 20) + LEASE
    for _ in range(19):
        clock.advance(1)
        lease.keep_alive()
    assert len(renewals) == 1
    clock.advance(1)
    lease.keep_alive()
    assert renewals == [started + 20, started + 40]


def job_of_repo(jobs: FakeJobRepository) -> ImportJob:
    job = jobs.get("job-1")
    assert job is not None
    return job


def test_keep_alive_raises_lease_lost_once_another_run_took_the_job(clock: FakeClock) -> None:
    jobs = leased_job(clock)
    lease = ChunkerLease(jobs, "job-1", "run-1", LEASE)  # type: ignore[arg-type]

    clock.advance(LEASE + 1)  # run-1 stalled (no keep_alive) and its lease ran out
    assert jobs.start_processing("job-1", None, "run-2", LEASE)

    with pytest.raises(LeaseLost):
        lease.keep_alive()
    assert job_of_repo(jobs).lease_until == int(clock.now) + LEASE  # run-2's lease, untouched


def test_keep_alive_raises_lease_lost_once_the_job_ended(clock: FakeClock) -> None:
    jobs = leased_job(clock)
    lease = ChunkerLease(jobs, "job-1", "run-1", LEASE)  # type: ignore[arg-type]
    assert jobs.cancel("job-1")

    clock.advance(LEASE / 3)
    with pytest.raises(LeaseLost):
        lease.keep_alive()


def test_a_chunker_that_lost_its_lease_stops_without_failing_the_job(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build_world(make_settings(chunk_records=1), clock=clock)
    content = users_file(5, bad=())
    job_id = submit_upload(world, content)
    usurper_lease: list[int] = []

    def stall_then_lose_the_job(point: str) -> None:
        if point == faults.CHUNKER_AFTER_CHUNK and not usurper_lease:
            clock.advance(LEASE + 1)  # this run stalls past its lease; another run takes the job
            assert world.jobs.start_processing(job_id, Format.NDJSON, "another-run", LEASE)
            usurper_lease.append(int(clock.now) + LEASE)

    monkeypatch.setattr(faults, "crash_at", stall_then_lose_the_job)

    upload_event(world, job_id)  # returns: losing the lease is no error

    job = job_of(world, job_id)
    assert (job.status, job.failure, job.chunks_total) == (JobStatus.PROCESSING, None, None)
    assert job.lease_until == usurper_lease[0]  # the other run's lease was neither released nor touched
    assert world.queue.messages == []  # this run announced nothing after it lost the job
    assert job_id not in world.store.runs  # the chunker touches the database only once it has announced every chunk

    disarm(monkeypatch)
    clock.advance(LEASE + 1)  # the other run died too: the sweeper hands the job to a third
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    world.chunker.run_chunker(job_id)
    deliver_all(world)
    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded, job.chunker_runs) == (
        JobStatus.COMPLETED,
        5,
        5,
        3,
    )


# ========================================================================================== pinned sources


class ChangingUrl:
    """A URL whose answer the test changes; counts how often it is fetched."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.fetches = 0

    def __call__(self, url: str) -> BinaryIO:
        self.fetches += 1
        return io.BytesIO(self.body)


def test_a_url_import_is_kept_in_s3_and_a_retry_reads_those_bytes_not_the_url_again(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_file = users_file(5, prefix="first", bad=())
    url = ChangingUrl(first_file)
    world = build_world(make_settings(chunk_records=CHUNK_RECORDS), open_source_url=url, clock=clock)
    request = NewImport(ImportTarget.USERS, Format.NDJSON, url="https://example.com/users.ndjson")
    job_id = str(world.api.submit(request, None, OWNER).body["job_id"])
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK)

    with pytest.raises(Killed):
        world.chunker.run_chunker(job_id)  # the launched invocation dies after its first chunk

    assert world.objects.read_bytes(fetched_key(job_id)) == first_file
    pinned = job_of(world, job_id).source
    assert (pinned.kind, pinned.pinned, pinned.bucket, pinned.key) == (
        SourceKind.URL,
        True,
        BUCKET,
        fetched_key(job_id),
    )
    assert pinned.version_id is not None and pinned.etag is not None
    url.body = users_file(9, prefix="second", bad=())  # the URL now serves another file

    disarm(monkeypatch)
    clock.advance(LEASE + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    world.chunker.run_chunker(job_id)
    deliver_all(world)

    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded) == (JobStatus.COMPLETED, 5, 5)
    assert chunked_emails(world, job_id) == [f"first{n}@example.com" for n in range(5)]
    assert url.fetches == 1


def reupload_mid_job(world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> str:
    """An upload whose chunker dies after its first chunk; then the same key is PUT again with another file."""
    job_id = submit_upload(world, users_file(5, prefix="first", bad=()))
    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK)
    with pytest.raises(Killed):
        upload_event(world, job_id)
    disarm(monkeypatch)

    world.objects.put_bytes(source_key(job_id), users_file(9, prefix="second", bad=()))
    upload_event(world, job_id)  # its S3 event: the first run's lease is live, so it is ignored
    assert world.launches.job_ids == [] and world.queue.messages == []

    clock.advance(LEASE + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    world.chunker.run_chunker(job_id)
    deliver_all(world)
    return job_id


def test_an_upload_put_again_mid_job_is_read_as_first_uploaded_in_a_versioned_bucket(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = reupload_mid_job(world, clock, monkeypatch)

    job = job_of(world, job_id)
    assert (job.status, job.counters.total, job.counters.succeeded) == (JobStatus.COMPLETED, 5, 5)
    assert chunked_emails(world, job_id) == [f"first{n}@example.com" for n in range(5)]


def test_an_upload_put_again_mid_job_fails_the_job_as_source_changed_in_an_unversioned_bucket(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.objects.versioned = False

    job_id = reupload_mid_job(world, clock, monkeypatch)

    job = job_of(world, job_id)
    assert job.status is JobStatus.FAILED
    assert job.failure is not None and job.failure.code == "source_changed"
    assert "versioning" in job.failure.message
    assert job_id not in world.store.runs or world.store.runs[job_id].chunks_total is None  # nothing announced
    assert world.queue.messages == []


def test_a_dropped_file_put_again_mid_job_makes_its_own_job_and_each_job_reads_its_own_version(
    world: FakeWorld, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "drop/users/users.ndjson"

    def drop(content: bytes) -> None:
        world.objects.put_bytes(key, content)
        info = world.objects.info(key)
        assert info is not None
        world.chunker.on_object_created(BUCKET, key, info.etag)

    crash_at(monkeypatch, faults.CHUNKER_AFTER_CHUNK)
    with pytest.raises(Killed):
        drop(users_file(5, prefix="first", bad=()))
    disarm(monkeypatch)
    drop(users_file(3, prefix="second", bad=()))
    deliver_all(world)
    clock.advance(LEASE + 1)
    assert world.sweeper.sweep() == {"launch_chunker": 1}
    (first_job,) = world.launches.job_ids
    world.chunker.run_chunker(first_job)
    deliver_all(world)

    by_total = {job.counters.total: job for job in world.jobs.all_jobs()}
    assert sorted(by_total) == [3, 5]
    assert all(job.status is JobStatus.COMPLETED for job in by_total.values())
    assert by_total[5].job_id == first_job
    assert chunked_emails(world, first_job) == [f"first{n}@example.com" for n in range(5)]
    assert chunked_emails(world, by_total[3].job_id) == [f"second{n}@example.com" for n in range(3)]
