"""The recovery mechanisms of issue 8 in the adapters, against real PostgreSQL and moto's server.

- ImportStore: chunks staged after a failure are refused; the merge finds staged rows that vanished (UNLOGGED
  staging after a crash recovery) and hands their chunks back; the sweeper's run_state, unstaged_chunks and
  mark_resent; a connection the server closed is opened again on read paths.
- DynamoJobRepository: the sparse index of open jobs, chunker runs with leases, pinned sources.
- S3ObjectStore: object versions and ETags, so that a retry reads the bytes of the first attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.adapters.postgres import ImportStore, connect
from bulkio.adapters.s3 import S3ObjectStore
from bulkio.domain.jobs import Counters, ImportJob, ImportMode, JobSource, JobStatus, LeaseLost, SourceKind, utc_now
from bulkio.domain.objects import ObjectChanged
from bulkio.domain.records import ValidationRules, validate_record
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord, StagingLost
from bulkio.domain.sweep import RunState
from psycopg2.extensions import cursor as Cursor

from infra.local import postgres as local_postgres
from infra.migrate import apply_migrations
from tests.fixtures.aws import create_jobs_table
from tests.fixtures.postgres import query

pytestmark = pytest.mark.integration

CHUNK = 3  # records per chunk in these tests


# ================================================================================================ PostgreSQL


def execute(dsn: str, statement: str, params: Sequence[Any] = ()) -> None:
    query(dsn, statement, params)


def users_records(count: int, bad: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Users u-0..; the positions in `bad` have an invalid email."""
    return [
        {"id": f"u-{n}", "email": "not-an-email" if n in bad else f"user{n}@example.com", "name": f"User {n}"}
        for n in range(count)
    ]


def chunk_rows(records: list[dict[str, Any]], chunk_no: int) -> tuple[list[StagedRecord], list[FailedRecord]]:
    """What a writer stages for chunk `chunk_no` (1-based) of `records`: 0-based record indexes, 1-based lines."""
    staged: list[StagedRecord] = []
    failed: list[FailedRecord] = []
    first = (chunk_no - 1) * CHUNK
    for index in range(first, min(first + CHUNK, len(records))):
        raw = json.dumps(records[index])
        result = validate_record(Resource.USERS, records[index], ValidationRules())
        if result.row is not None:
            staged.append(StagedRecord(index, index + 1, result.row, raw))
        failed += [FailedRecord(index, index + 1, error, raw) for error in result.errors]
    return staged, failed


def chunks_of(records: list[dict[str, Any]]) -> int:
    return -(-len(records) // CHUNK)


def stage(store: ImportStore, job_id: str, records: list[dict[str, Any]], chunk_no: int) -> bool:
    return store.stage_chunk(job_id, ImportTarget.USERS, chunk_no, *chunk_rows(records, chunk_no))


def stage_all(store: ImportStore, job_id: str, records: list[dict[str, Any]]) -> None:
    store.register_job(job_id, ImportTarget.USERS)
    for chunk_no in range(1, chunks_of(records) + 1):
        assert stage(store, job_id, records, chunk_no)
    store.set_totals(job_id, chunks_of(records), len(records))


def count(dsn: str, table: str, job_id: str) -> int:
    return int(query(dsn, f"SELECT count(*) FROM {table} WHERE job_id = %s", (job_id,))[0][0])


def users_table(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT id, email, name, role, active FROM users ORDER BY id")


def errors_of(store: ImportStore, job_id: str) -> list[tuple[Any, ...]]:
    return [(e["index"], e["line"], e["code"], e["field"], e["message"]) for e in store.first_errors(job_id, 1000)]


def reset_tables(dsn: str) -> None:
    execute(
        dsn,
        "TRUNCATE users, articles, comments, import_runs, import_chunks, stage_users, import_errors,"
        " import_chunk_failures",
    )


# ---------------------------------------------------------------------------------- writers after the end


def test_a_chunk_staged_after_the_run_failed_is_refused_and_leaves_no_rows(store: ImportStore, clean_db: str) -> None:
    records = users_records(6, bad=[4])
    store.register_job("job", ImportTarget.USERS)
    assert stage(store, "job", records, 1)

    assert store.fail_run("job")  # a cancel, or the job failed; a writer is still in flight
    assert stage(store, "job", records, 2) is False

    # fail_run dropped chunk 1's staged rows (its claim stays: the failed job shows its progress), and chunk 2
    # (with the invalid record 4) left neither a claim, nor a staged row, nor an error.
    assert query(clean_db, "SELECT chunk_no FROM import_chunks WHERE job_id = 'job'") == [(1,)]
    assert count(clean_db, "stage_users", "job") == 0
    assert count(clean_db, "import_errors", "job") == 0
    assert store.progress("job").chunks == 1
    assert store.run_state("job") is not None and store.run_state("job").failed  # type: ignore[union-attr]


def test_a_chunk_staged_after_the_merge_is_refused(store: ImportStore, clean_db: str) -> None:
    records = users_records(6)
    store.register_job("job", ImportTarget.USERS)
    assert stage(store, "job", records, 1)
    store.set_totals("job", 1, 3)  # say the chunker announced a single chunk
    outcome = store.try_merge("job")
    assert isinstance(outcome, MergeOutcome) and outcome.merged_now

    assert stage(store, "job", records, 2) is False

    assert count(clean_db, "import_chunks", "job") == 1
    assert count(clean_db, "stage_users", "job") == 0
    assert [row[0] for row in users_table(clean_db)] == ["u-0", "u-1", "u-2"]


# ------------------------------------------------------------------------------------ staged rows that vanish


RECORDS = users_records(13, bad=[1, 7, 8])  # 5 chunks; chunk 3 (records 6-8) holds two invalid ones


def merged(store: ImportStore, job_id: str) -> MergeOutcome:
    outcome = store.try_merge(job_id)
    assert isinstance(outcome, MergeOutcome) and outcome.merged_now, outcome
    return outcome


def clean_result(store: ImportStore, dsn: str) -> tuple[MergeOutcome, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The outcome, the users table and the error report of RECORDS imported without a fault; then it is all
    removed again."""
    stage_all(store, "job", RECORDS)
    result = (merged(store, "job"), users_table(dsn), errors_of(store, "job"))
    reset_tables(dsn)
    return result


def test_the_merge_hands_back_exactly_the_chunks_whose_staged_rows_vanished(store: ImportStore, clean_db: str) -> None:
    expected = clean_result(store, clean_db)
    stage_all(store, "job", RECORDS)
    # A crash recovery empties the UNLOGGED staging table; say it took the rows of chunks 2 and 3 (records 3-8).
    execute(clean_db, "DELETE FROM stage_users WHERE job_id = 'job' AND idx BETWEEN 3 AND 8")

    lost = store.try_merge("job")

    assert lost == StagingLost(chunks=(2, 3), restages=1)
    assert users_table(clean_db) == []  # nothing merged
    claimed = query(clean_db, "SELECT chunk_no FROM import_chunks WHERE job_id = 'job' ORDER BY chunk_no")
    assert claimed == [(1,), (4,), (5,)]
    assert store.unstaged_chunks("job") == [2, 3]
    # Their validation errors went with their claims (the errors are logged and survived): staging the chunks
    # again writes them once more.
    assert [error[0] for error in errors_of(store, "job")] == [1]
    assert store.try_merge("job") is None  # not every chunk is staged now

    assert stage(store, "job", RECORDS, 3) and stage(store, "job", RECORDS, 2)
    outcome = merged(store, "job")

    assert (outcome, users_table(clean_db), errors_of(store, "job")) == expected


def test_a_whole_staging_table_lost_in_a_crash_recovery_is_staged_again(store: ImportStore, clean_db: str) -> None:
    records = users_records(9, bad=[3, 4, 5])  # chunk 2 has no valid record: it has no staged row to lose
    stage_all(store, "job", records)
    expected_users = [(f"u-{n}", f"user{n}@example.com", f"User {n}", "reader", True) for n in (0, 1, 2, 6, 7, 8)]
    execute(clean_db, "TRUNCATE stage_users")

    assert store.try_merge("job") == StagingLost(chunks=(1, 3), restages=1)
    assert [error[0] for error in errors_of(store, "job")] == [3, 4, 5]

    execute(clean_db, "TRUNCATE stage_users")  # and again, before anything was staged again: nothing more lost
    assert stage(store, "job", records, 1) and stage(store, "job", records, 3)
    execute(clean_db, "DELETE FROM stage_users WHERE job_id = 'job' AND idx = 7")  # a second crash takes a row
    assert store.try_merge("job") == StagingLost(chunks=(3,), restages=2)
    assert stage(store, "job", records, 3)

    outcome = merged(store, "job")

    assert (outcome.records_total, outcome.succeeded, outcome.failed) == (9, 6, 3)
    assert users_table(clean_db) == expected_users
    assert query(clean_db, "SELECT restages FROM import_runs WHERE job_id = 'job'") == [(2,)]


# ----------------------------------------------------------------------------------------- the sweeper's view


def test_run_state_tells_the_sweeper_what_postgresql_knows(store: ImportStore, clean_db: str) -> None:
    assert store.run_state("no-such-job") is None
    store.register_job("job", ImportTarget.USERS)
    assert store.run_state("job") == RunState(None, None, 0, False, False, None, 0)

    assert stage(store, "job", RECORDS, 1)
    store.set_totals("job", 5, 13)
    state = store.run_state("job")
    assert state is not None
    assert (state.chunks_total, state.records_total, state.chunks_staged, state.merged, state.failed) == (
        5,
        13,
        1,
        False,
        False,
    )
    assert state.last_activity_age_seconds is not None and 0 <= state.last_activity_age_seconds < 30

    # Ten minutes of silence: the age is that of the newest sign of life (a chunk staged, the announcement).
    execute(clean_db, "UPDATE import_runs SET chunked_at = now() - interval '10 minutes' WHERE job_id = 'job'")
    execute(clean_db, "UPDATE import_chunks SET staged_at = now() - interval '12 minutes' WHERE job_id = 'job'")
    silent = store.run_state("job")
    assert silent is not None and silent.last_activity_age_seconds is not None
    assert 599 < silent.last_activity_age_seconds < 630

    store.mark_resent("job")  # a re-send is a sign of life too, and is counted
    resent = store.run_state("job")
    assert resent is not None and resent.last_activity_age_seconds is not None
    assert resent.last_activity_age_seconds < 30 and resent.resends == 1
    store.mark_resent("job")
    assert store.run_state("job").resends == 2  # type: ignore[union-attr]
    # Progress in between (a chunk staged): the count of re-sends without progress starts again.
    assert stage(store, "job", RECORDS, 2)
    store.mark_resent("job")
    assert store.run_state("job").resends == 1  # type: ignore[union-attr]
    store.mark_resent("job")
    assert store.run_state("job").resends == 2  # type: ignore[union-attr]

    for chunk_no in range(3, 6):
        assert stage(store, "job", RECORDS, chunk_no)
    merged(store, "job")
    done = store.run_state("job")
    assert done is not None and (done.chunks_staged, done.merged, done.failed) == (5, True, False)


def test_run_state_shows_a_failed_run(store: ImportStore) -> None:
    store.register_job("job", ImportTarget.USERS)
    assert store.fail_run("job")

    state = store.run_state("job")
    assert state is not None and (state.failed, state.merged) == (True, False)


def test_unstaged_chunks_are_the_announced_chunks_no_writer_staged(store: ImportStore) -> None:
    store.register_job("job", ImportTarget.USERS)
    assert stage(store, "job", RECORDS, 1)
    assert store.unstaged_chunks("job") == []  # nothing announced yet: nothing to re-send

    assert stage(store, "job", RECORDS, 3) and stage(store, "job", RECORDS, 5)
    store.set_totals("job", 5, 13)

    assert store.unstaged_chunks("job") == [2, 4]
    assert (store.is_staged("job", 3), store.is_staged("job", 4)) == (True, False)
    assert store.unstaged_chunks("other-job") == []


# ------------------------------------------------------------------------------ a connection the server closed


def terminate_connection(dsn: str, store: ImportStore) -> int:
    """Terminates the server side of the store's connection, as a PostgreSQL restart does (other connections to
    the session database, the embedded stack's, are left alone); returns its backend pid."""
    pid = store._connected().get_backend_pid()
    ((terminated,),) = query(dsn, f"SELECT pg_terminate_backend({int(pid)})")
    assert terminated
    # The backend exits a moment after the signal.
    deadline = time.monotonic() + 10
    while query(dsn, f"SELECT 1 FROM pg_stat_activity WHERE pid = {int(pid)}"):
        assert time.monotonic() < deadline, "the terminated backend did not exit"
        time.sleep(0.05)
    return int(pid)


@pytest.mark.parametrize("read", ["progress", "first_errors", "run_state", "unstaged_chunks", "is_staged"])
def test_a_read_after_the_server_closed_the_connection_reconnects_instead_of_failing(
    store: ImportStore, clean_db: str, read: str
) -> None:
    stage_all(store, "job", RECORDS)
    before: Any = {
        "progress": lambda: store.progress("job"),
        "first_errors": lambda: store.first_errors("job"),
        "run_state": lambda: store.run_state("job").chunks_staged,  # type: ignore[union-attr]
        "unstaged_chunks": lambda: store.unstaged_chunks("job"),
        "is_staged": lambda: store.is_staged("job", 2),
    }[read]
    expected = before()

    terminated = terminate_connection(clean_db, store)

    assert before() == expected  # answered on a new connection, not a DatabaseError (a 502 in the API)
    assert store._connected().get_backend_pid() != terminated


@pytest.fixture
def restartable_database(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL cluster of this test's own (so that restarting it disturbs no other test), migrated, and a
    function that restarts it as `pg_ctl restart -m immediate` does: a crash, then crash recovery. Stopped and
    removed at the end."""
    state_dir = tmp_path / "restartable"
    dsn = local_postgres.ensure_cluster(state_dir, port=None)

    def restart_immediately() -> None:
        data_dir = (state_dir / "postgres").resolve()
        command = [str(local_postgres.find_bin_dir() / "pg_ctl"), "restart", "--pgdata", str(data_dir)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", local_postgres.SERVICE_USER, "--", *command]
        # The new server inherits the output: a file, so that nothing waits for a pipe it holds open.
        with (state_dir / "restart.log").open("ab") as log:
            subprocess.run(
                [*command, "--mode", "immediate", "--wait"],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
                timeout=120,
            )

    try:
        apply_migrations(dsn)
        yield dsn, restart_immediately
    finally:
        local_postgres.stop_cluster(state_dir)
        local_postgres.remove_data_outside(state_dir)


def test_after_an_immediate_restart_reads_reconnect_and_the_merge_restages_what_crash_recovery_emptied(
    store: ImportStore, clean_db: str, restartable_database: tuple[str, Callable[[], None]]
) -> None:
    """Observations 2 and 7 of issue 8 on a real crash: `pg_ctl restart -m immediate` breaks every connection
    and its crash recovery empties the UNLOGGED staging tables, while the logged chunk claims remain."""
    expected = clean_result(store, clean_db)  # on the shared test database
    dsn, restart_immediately = restartable_database
    restarted = ImportStore(lambda: connect(dsn))
    try:
        stage_all(restarted, "job", RECORDS)
        progress, first_errors = restarted.progress("job"), restarted.first_errors("job")
        assert progress.chunks == 5 and count(dsn, "stage_users", "job") == 10

        restart_immediately()

        assert restarted.progress("job") == progress  # a new connection, not an error
        assert restarted.first_errors("job") == first_errors
        assert count(dsn, "stage_users", "job") == 0  # crash recovery emptied the UNLOGGED staging table
        assert restarted.try_merge("job") == StagingLost(chunks=(1, 2, 3, 4, 5), restages=1)
        for chunk_no in restarted.unstaged_chunks("job"):
            assert stage(restarted, "job", RECORDS, chunk_no)
        outcome = restarted.try_merge("job")

        assert (outcome, users_table(dsn), errors_of(restarted, "job")) == expected
        # The service reports the merge (the job completed) as soon as it committed: a crash right after it must
        # not take it back (the embedded cluster runs with synchronous_commit = off).
        restart_immediately()
        assert users_table(dsn) == expected[1]
        assert restarted.try_merge("job") == replace(expected[0], merged_now=False)
    finally:
        restarted.close()


def test_a_statement_error_is_not_taken_for_a_broken_connection(store: ImportStore) -> None:
    """A plain SQL error is raised as it is, without a retry, and the connection stays usable."""
    store.register_job("job", ImportTarget.USERS)
    statements: list[str] = []

    def bad_statement(cursor: Cursor) -> None:
        statements.append("tried")
        cursor.execute("SELECT no_such_column FROM import_runs")

    with pytest.raises(psycopg2.errors.UndefinedColumn):
        store._transaction(bad_statement)

    assert statements == ["tried"]
    assert store.progress("job").chunks == 0


# ============================================================================================ DynamoDB and S3


@pytest.fixture
def session(aws_environment: str) -> boto3.session.Session:
    return boto3.session.Session()


@pytest.fixture
def jobs(session: boto3.session.Session) -> DynamoJobRepository:
    """A fresh jobs table with the keys and indexes template.yaml declares."""
    return DynamoJobRepository(create_jobs_table(session, f"recovery-jobs-{uuid.uuid4().hex[:8]}"))


def new_job(job_id: str, status: JobStatus = JobStatus.QUEUED) -> ImportJob:
    source = JobSource(SourceKind.MULTIPART, bucket="imports", key=f"uploads/{job_id}/source")
    return ImportJob(job_id, Resource.USERS, Format.CSV, status, source, utc_now(), owner="ann")


def raw_item(jobs: DynamoJobRepository, job_id: str) -> dict[str, Any]:
    return dict(jobs._table.get_item(Key={"pk": f"job#{job_id}"}, ConsistentRead=True)["Item"])


def expire_lease(jobs: DynamoJobRepository, job_id: str) -> None:
    """What time does to a lease nobody renews."""
    jobs._table.update_item(
        Key={"pk": f"job#{job_id}"},
        UpdateExpression="SET lease_until = :past",
        ExpressionAttributeValues={":past": int(time.time()) - 1},
    )


def test_open_jobs_lists_the_unfinished_jobs_oldest_first(jobs: DynamoJobRepository) -> None:
    for job_id, status in (
        ("a", JobStatus.QUEUED),
        ("b", JobStatus.AWAITING_UPLOAD),
        ("c", JobStatus.QUEUED),
        ("d", JobStatus.QUEUED),
        ("e", JobStatus.QUEUED),
    ):
        jobs.create(new_job(job_id, status))
        time.sleep(0.002)  # distinct creation times
    assert jobs.start_processing("c", None, "run-1", 60)

    assert [job.job_id for job in jobs.open_jobs(page_size=2)] == ["a", "b", "c", "d", "e"]

    assert jobs.finish("a", Counters(total=1, processed=1, succeeded=1), {})
    assert jobs.fail("c", "chunker_failed", "it kept dying")
    assert jobs.cancel("e")

    # Ended, they stay until their completion event is out (the sweeper's outbox)...
    listed = {job.job_id: job for job in jobs.open_jobs(page_size=2)}
    assert list(listed) == ["a", "b", "c", "d", "e"]
    assert [job_id for job_id, job in listed.items() if job.completion_pending] == ["a", "c", "e"]
    for job_id in ("a", "c", "e"):
        jobs.completion_published(job_id)

    # ... then drop out of the sparse index itself, not only out of the listing.
    assert [job.job_id for job in jobs.open_jobs(page_size=1)] == ["b", "d"]
    assert "open_kind" not in raw_item(jobs, "a") and raw_item(jobs, "b")["open_kind"] == "import"
    assert "completion_pending" not in raw_item(jobs, "a")


def test_a_second_chunker_run_is_refused_while_the_lease_is_live_and_accepted_after(
    jobs: DynamoJobRepository,
) -> None:
    jobs.create(new_job("job"))
    now = int(time.time())

    assert jobs.start_processing("job", Format.CSV, "run-1", 60)
    job = jobs.get("job")
    assert job is not None
    assert (job.status, job.chunker_runs, job.format) == (JobStatus.PROCESSING, 1, Format.CSV)
    assert job.lease_until is not None and now + 59 <= job.lease_until <= now + 62
    assert raw_item(jobs, "job")["chunker_run"] == "run-1"

    assert jobs.start_processing("job", None, "run-2", 60) is False
    assert raw_item(jobs, "job")["chunker_run"] == "run-1"

    expire_lease(jobs, "job")
    assert jobs.start_processing("job", None, "run-2", 60)
    job = jobs.get("job")
    assert job is not None and job.chunker_runs == 2
    assert raw_item(jobs, "job")["chunker_run"] == "run-2"
    assert job.started_at is not None


def test_no_chunker_run_starts_once_chunking_is_done_or_the_job_ended(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("chunked"))
    assert jobs.start_processing("chunked", None, "run-1", 60)
    jobs.set_totals("chunked", 3, 2500)
    expire_lease(jobs, "chunked")
    assert jobs.start_processing("chunked", None, "run-2", 60) is False

    jobs.create(new_job("failed"))
    assert jobs.fail("failed", "upload_expired", "no file came")
    assert jobs.start_processing("failed", None, "run-1", 60) is False
    assert jobs.get("chunked").chunker_runs == 1  # type: ignore[union-attr]


def test_a_stale_run_cannot_renew_the_lease(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("job"))
    assert jobs.start_processing("job", None, "run-1", 60)
    jobs.renew_chunker_lease("job", "run-1", 600)  # its own lease: extended
    assert jobs.get("job").lease_until >= int(time.time()) + 599  # type: ignore[union-attr,operator]

    expire_lease(jobs, "job")
    assert jobs.start_processing("job", None, "run-2", 60)
    lease_of_run_2 = jobs.get("job").lease_until  # type: ignore[union-attr]

    with pytest.raises(LeaseLost):
        jobs.renew_chunker_lease("job", "run-1", 600)
    jobs.release_chunker_lease("job", "run-1")  # a stale run's release changes nothing either
    assert jobs.get("job").lease_until == lease_of_run_2  # type: ignore[union-attr]

    jobs.release_chunker_lease("job", "run-2")  # the holder's release frees the job at once
    assert jobs.get("job").lease_until == 0  # type: ignore[union-attr]
    assert jobs.cancel("job")
    with pytest.raises(LeaseLost):
        jobs.renew_chunker_lease("job", "run-2", 60)


def test_the_holder_records_its_reading_and_a_stale_run_cannot(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("job"))
    assert jobs.start_processing("job", None, "run-1", 60)

    jobs.record_reading("job", "run-1", 4096, 250, 600)

    job = jobs.get("job")
    assert job is not None and (job.bytes_read, job.records_read) == (4096, 250)
    assert job.lease_until is not None and job.lease_until >= int(time.time()) + 599  # renewed with it
    expire_lease(jobs, "job")
    assert jobs.start_processing("job", None, "run-2", 60)
    with pytest.raises(LeaseLost):
        jobs.record_reading("job", "run-1", 8192, 500, 600)
    assert (jobs.get("job").bytes_read, jobs.get("job").records_read) == (4096, 250)  # type: ignore[union-attr]


def test_a_dry_run_keeps_its_mode_and_is_claimed_by_one_commit(jobs: DynamoJobRepository) -> None:
    jobs.create(replace(new_job("dry"), mode=ImportMode.VALIDATE))
    assert jobs.claim_commit("dry", "commit-1") is False  # not validated yet
    assert jobs.start_processing("dry", None, "run-1", 60)
    assert jobs.finish(
        "dry", Counters(total=2, processed=2, succeeded=1, failed=1), {"invalid_email": 1}, ImportMode.VALIDATE
    )
    dry = jobs.get("dry")
    assert dry is not None and (dry.status, dry.mode) == (JobStatus.VALIDATED, ImportMode.VALIDATE)

    assert jobs.claim_commit("dry", "commit-1")
    assert jobs.claim_commit("dry", "commit-1")  # a retried commit claims it again
    assert jobs.claim_commit("dry", "commit-2") is False
    assert jobs.get("dry").committed_job_id == "commit-1"  # type: ignore[union-attr]
    jobs.create(replace(new_job("commit-1"), parent_job_id="dry"))
    assert jobs.get("commit-1").parent_job_id == "dry"  # type: ignore[union-attr]


def test_a_parent_is_credited_once_per_re_import(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("parent"))

    jobs.credit_reimport("parent", "child-1", 40)
    jobs.credit_reimport("parent", "child-1", 40)  # a retried end
    jobs.credit_reimport("parent", "child-2", 2)
    jobs.credit_reimport("gone", "child-3", 5)  # a parent that no longer exists: nothing to credit

    assert jobs.get("parent").rejected_reimported == 42  # type: ignore[union-attr]
    assert jobs.get("gone") is None


def test_a_source_is_pinned_once(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("job"))
    first = JobSource(SourceKind.MULTIPART, "imports", "uploads/job/source", etag="etag-1", version_id="v-1")
    second = JobSource(SourceKind.MULTIPART, "imports", "uploads/job/source", etag="etag-2", version_id="v-2")

    assert jobs.pin_source("job", first) == JobSource(
        SourceKind.MULTIPART, "imports", "uploads/job/source", etag="etag-1", version_id="v-1", pinned=True
    )
    assert jobs.pin_source("job", second).version_id == "v-1"  # another run pinned first: its version wins

    job = jobs.get("job")
    assert job is not None and job.source.pinned and (job.source.etag, job.source.version_id) == ("etag-1", "v-1")
    with pytest.raises(LookupError):
        jobs.pin_source("no-such-job", first)


def test_an_unpinned_source_stays_unpinned_when_written_back(jobs: DynamoJobRepository) -> None:
    jobs.create(new_job("job"))

    job = jobs.get("job")
    assert job is not None and job.source.pinned is False
    assert "pinned" not in raw_item(jobs, "job")["source"]


@pytest.fixture
def buckets(session: boto3.session.Session) -> tuple[S3ObjectStore, S3ObjectStore]:
    """A versioned bucket (as template.yaml's ImportBucket) and one without versioning."""
    s3 = session.client("s3")
    versioned, plain = f"versioned-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=versioned)
    s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket=plain)
    return S3ObjectStore(s3, versioned), S3ObjectStore(s3, plain)


def test_an_old_version_stays_readable_in_a_versioned_bucket(buckets: tuple[S3ObjectStore, S3ObjectStore]) -> None:
    store, _ = buckets
    store.put_bytes("uploads/job/source", b"first file\n")
    first = store.info("uploads/job/source")
    store.put_bytes("uploads/job/source", b"second file, longer\n")
    second = store.info("uploads/job/source")

    assert first is not None and second is not None
    assert first.version_id is not None and second.version_id is not None
    assert first.version_id != second.version_id and first.etag != second.etag
    with store.open_version("uploads/job/source", None, first.version_id, first.etag) as body:
        assert body.read() == b"first file\n"
    with store.open_version("uploads/job/source", store.bucket, second.version_id, None) as body:
        assert body.read() == b"second file, longer\n"
    with pytest.raises(FileNotFoundError):
        store.open_version("uploads/other/source", None, first.version_id, None)


def test_an_unversioned_bucket_reads_the_pinned_etag_or_reports_the_object_changed(
    buckets: tuple[S3ObjectStore, S3ObjectStore],
) -> None:
    _, store = buckets
    store.put_bytes("uploads/job/source", b"first file\n")
    first = store.info("uploads/job/source")
    assert first is not None and first.version_id is None
    with store.open_version("uploads/job/source", None, None, first.etag) as body:
        assert body.read() == b"first file\n"

    store.put_bytes("uploads/job/source", b"second file\n")

    with pytest.raises(ObjectChanged):
        store.open_version("uploads/job/source", None, None, first.etag)
    second = store.info("uploads/job/source")
    assert second is not None
    with store.open_version("uploads/job/source", None, None, second.etag) as body:
        assert body.read() == b"second file\n"
    with pytest.raises(FileNotFoundError):
        store.open_version("uploads/gone/source", None, None, first.etag)
    assert store.info("uploads/gone/source") is None


def test_a_chunk_failure_reason_quoting_a_nul_is_recorded(store: ImportStore) -> None:
    store.record_chunk_failure("job", 1, "value '\x00' refused")

    assert store.chunk_failure("job", 1) == "value '\\u0000' refused"


def test_the_sweeper_leaves_a_merge_under_way_alone(store: ImportStore, clean_db: str) -> None:
    stage_all(store, "job", RECORDS)
    merging = psycopg2.connect(clean_db)  # another process holding the run's row, as a merge does
    try:
        with merging.cursor() as cursor:
            cursor.execute("SELECT 1 FROM import_runs WHERE job_id = 'job' FOR UPDATE")
        started = time.monotonic()

        assert store.try_merge("job", wait=False) is None

        assert time.monotonic() - started < 5
        assert store.run_state("job").merged is False  # type: ignore[union-attr]
    finally:
        merging.rollback()
        merging.close()
    assert isinstance(store.try_merge("job", wait=False), MergeOutcome)


def test_of_writers_finishing_one_job_at_once_exactly_one_finishes_it(jobs: DynamoJobRepository) -> None:
    """The conditional write that ends a job succeeds once, however many writers race for it (DynamoDB's
    guarantee; the local endpoint's moto keeps it with infra.local.aws_endpoint.make_dynamodb_writes_atomic)."""
    racers = 8
    for round_no in range(25):
        job_id = f"race-{round_no}-{uuid.uuid4().hex[:6]}"
        jobs.create(new_job(job_id, JobStatus.PROCESSING))
        start = threading.Barrier(racers)

        def finish(_: int, job_id: str = job_id, start: threading.Barrier = start) -> bool:
            start.wait()
            return jobs.finish(job_id, Counters(total=10, processed=10, succeeded=9, failed=1), {"invalid_email": 1})

        with ThreadPoolExecutor(racers) as pool:
            finished = list(pool.map(finish, range(racers)))
        assert finished.count(True) == 1, (round_no, finished)
