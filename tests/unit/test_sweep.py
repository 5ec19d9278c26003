"""The sweeper's rules (bulkio/domain/sweep.py) and the writers' retry backoff, one rule at a time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bulkio.domain.jobs import FINAL_STATUSES, ImportJob, JobSource, JobStatus, SourceKind
from bulkio.domain.resources import Format, ImportTarget
from bulkio.domain.sweep import RunState, SweepAction, SweepDecision, SweepSettings, decide, retry_delay_seconds

from infra.local.template import load_template

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SETTINGS = SweepSettings(stall_seconds=180, max_chunker_runs=3, max_resends=5, upload_window_seconds=3900)


def job(
    status: JobStatus,
    age_seconds: float = 0,
    lease_until: float | None = None,
    chunker_runs: int = 0,
) -> ImportJob:
    """A job created `age_seconds` before NOW; `lease_until` in seconds from NOW."""
    return ImportJob(
        job_id="job-1",
        resource=ImportTarget.USERS,
        format=Format.CSV,
        status=status,
        source=JobSource(SourceKind.PRESIGNED, bucket="b", key="uploads/job-1/source"),
        created_at=NOW - timedelta(seconds=age_seconds),
        lease_until=None if lease_until is None else int(NOW.timestamp() + lease_until),
        chunker_runs=chunker_runs,
    )


def run(
    chunks_total: int | None = None,
    chunks_staged: int = 0,
    merged: bool = False,
    failed: bool = False,
    idle_seconds: float | None = 0.0,
    resends: int = 0,
) -> RunState:
    return RunState(
        chunks_total=chunks_total,
        records_total=None if chunks_total is None else chunks_total * 1000,
        chunks_staged=chunks_staged,
        merged=merged,
        failed=failed,
        last_activity_age_seconds=idle_seconds,
        resends=resends,
    )


def sweep(job_: ImportJob, run_: RunState | None, upload_present: bool = False) -> SweepDecision:
    return decide(job_, run_, NOW.timestamp(), SETTINGS, upload_present)


# ================================================================================================ final jobs


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_a_final_job_is_left_alone_whatever_its_run_says(status: JobStatus) -> None:
    assert sweep(job(status, age_seconds=10**6), run(failed=True)).action is SweepAction.NOTHING
    assert sweep(job(status, age_seconds=10**6), run(chunks_total=3, chunks_staged=3)).action is SweepAction.NOTHING
    assert sweep(job(status, age_seconds=10**6), None, upload_present=True).action is SweepAction.NOTHING


# ============================================================================== the run ended, the item not


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.AWAITING_UPLOAD, JobStatus.PROCESSING])
def test_a_failed_run_fails_the_job_as_interrupted(status: JobStatus) -> None:
    decision = sweep(job(status, lease_until=600), run(chunks_total=3, chunks_staged=1, failed=True))

    assert decision.action is SweepAction.FAIL
    assert decision.code == "job_interrupted"
    assert decision.message and "submit the import again" in decision.message


def test_a_merged_run_finishes_the_job_even_with_a_live_lease() -> None:
    merged = run(chunks_total=3, chunks_staged=3, merged=True, idle_seconds=181)
    decision = sweep(job(JobStatus.PROCESSING, lease_until=600), merged)

    assert decision == SweepDecision(SweepAction.FINISH)


def test_a_run_merged_just_now_is_left_to_the_process_that_merged_it() -> None:
    # It is writing the error report and will end the job itself: a second report would be wasted work.
    just_merged = run(chunks_total=3, chunks_staged=3, merged=True, idle_seconds=5)

    assert sweep(job(JobStatus.PROCESSING), just_merged) == SweepDecision(SweepAction.NOTHING)


# ============================================================================================ awaiting upload


def test_an_upload_that_arrived_without_its_event_launches_the_chunker_after_the_stall() -> None:
    assert sweep(job(JobStatus.AWAITING_UPLOAD, age_seconds=181), None, upload_present=True) == SweepDecision(
        SweepAction.LAUNCH_CHUNKER
    )
    # Present, but the S3 event may still be on its way: not yet.
    assert sweep(job(JobStatus.AWAITING_UPLOAD, age_seconds=179), None, upload_present=True).action is (
        SweepAction.NOTHING
    )
    # Present after the upload window too: the file is there, so it is imported rather than expired.
    assert sweep(job(JobStatus.AWAITING_UPLOAD, age_seconds=4000), None, upload_present=True).action is (
        SweepAction.LAUNCH_CHUNKER
    )


def test_an_upload_that_never_came_expires_after_the_upload_window() -> None:
    expired = sweep(job(JobStatus.AWAITING_UPLOAD, age_seconds=3901), None)

    assert expired.action is SweepAction.FAIL
    assert expired.code == "upload_expired"
    assert expired.message and "POST /v1/imports" in expired.message
    for age in (0, 181, 3899):
        assert sweep(job(JobStatus.AWAITING_UPLOAD, age_seconds=age), None).action is SweepAction.NOTHING


# ===================================================================================================== queued


def test_a_queued_job_nobody_started_gets_its_chunker_after_the_stall() -> None:
    assert sweep(job(JobStatus.QUEUED, age_seconds=181), None).action is SweepAction.LAUNCH_CHUNKER
    assert sweep(job(JobStatus.QUEUED, age_seconds=180), None).action is SweepAction.NOTHING
    assert sweep(job(JobStatus.QUEUED, age_seconds=5), None).action is SweepAction.NOTHING


# ======================================================================================= processing, unchunked


@pytest.mark.parametrize("the_run", [None, run()], ids=["no run yet", "run without totals"])
def test_a_chunker_with_a_live_lease_is_left_alone(the_run: RunState | None) -> None:
    assert sweep(job(JobStatus.PROCESSING, 10**4, lease_until=1, chunker_runs=1), the_run).action is (
        SweepAction.NOTHING
    )
    # However often it ran: a live lease means a run is reading right now.
    assert sweep(job(JobStatus.PROCESSING, 10**4, lease_until=30, chunker_runs=9), the_run).action is (
        SweepAction.NOTHING
    )


@pytest.mark.parametrize("the_run", [None, run()], ids=["no run yet", "run without totals"])
@pytest.mark.parametrize("lease_until", [0, -1, -3600, None], ids=["now", "just out", "long out", "released"])
def test_a_chunker_whose_lease_ran_out_is_launched_again(the_run: RunState | None, lease_until: float | None) -> None:
    decision = sweep(job(JobStatus.PROCESSING, 300, lease_until=lease_until, chunker_runs=2), the_run)

    assert decision == SweepDecision(SweepAction.LAUNCH_CHUNKER)


def test_a_chunker_that_keeps_dying_fails_the_job_after_max_runs() -> None:
    decision = sweep(job(JobStatus.PROCESSING, 300, lease_until=-1, chunker_runs=3), run())

    assert decision.action is SweepAction.FAIL
    assert decision.code == "chunker_failed"
    assert decision.message and "3 times" in decision.message
    assert sweep(job(JobStatus.PROCESSING, 300, lease_until=-1, chunker_runs=4), None).code == "chunker_failed"


# ========================================================================================= processing, chunked


def test_every_chunk_staged_without_a_merge_finishes_the_job() -> None:
    chunked_job = job(JobStatus.PROCESSING, 300, lease_until=-200, chunker_runs=1)

    assert sweep(chunked_job, run(chunks_total=4, chunks_staged=4, idle_seconds=181)) == SweepDecision(
        SweepAction.FINISH
    )
    # The last chunk was just staged: its writer is merging (the sweeper does not wait for a merge under way).
    assert sweep(chunked_job, run(chunks_total=4, chunks_staged=4, idle_seconds=1)).action is SweepAction.NOTHING
    # Even after the resends ran out: nothing is missing any more.
    assert sweep(chunked_job, run(chunks_total=4, chunks_staged=4, idle_seconds=900, resends=9)).action is (
        SweepAction.FINISH
    )


def test_a_chunked_job_is_judged_by_its_chunks_not_its_lease() -> None:
    # The chunker's lease is still live (it just announced its chunks): the chunks decide.
    all_staged = run(chunks_total=2, chunks_staged=2, idle_seconds=181)
    assert sweep(job(JobStatus.PROCESSING, 300, lease_until=50), all_staged).action is SweepAction.FINISH
    # And runs of the chunker no longer matter once it announced every chunk.
    stalled = run(chunks_total=2, chunks_staged=1, idle_seconds=181)
    assert sweep(job(JobStatus.PROCESSING, 300, lease_until=-1, chunker_runs=7), stalled).action is (
        SweepAction.RESEND_CHUNKS
    )


def test_stalled_writers_get_the_unstaged_chunks_again() -> None:
    decision = sweep(job(JobStatus.PROCESSING, 900), run(chunks_total=10, chunks_staged=7, idle_seconds=181))

    assert decision == SweepDecision(SweepAction.RESEND_CHUNKS)
    assert sweep(job(JobStatus.PROCESSING, 900), run(10, 7, idle_seconds=181, resends=4)).action is (
        SweepAction.RESEND_CHUNKS
    )


@pytest.mark.parametrize("idle_seconds", [0.0, 60.0, 180.0, None])
def test_writers_still_within_the_stall_bound_are_left_alone(idle_seconds: float | None) -> None:
    decision = sweep(job(JobStatus.PROCESSING, 900), run(chunks_total=10, chunks_staged=7, idle_seconds=idle_seconds))

    assert decision.action is SweepAction.NOTHING


def test_too_many_resends_fail_the_job_with_what_is_missing() -> None:
    decision = sweep(job(JobStatus.PROCESSING, 900), run(chunks_total=10, chunks_staged=7, idle_seconds=181, resends=5))

    assert decision.action is SweepAction.FAIL
    assert decision.code == "chunks_stalled"
    assert decision.message and decision.message.startswith("3 of 10 chunks were never staged")
    assert "sent 6 times" in decision.message


def test_the_bounds_are_the_settings_not_constants() -> None:
    strict = SweepSettings(stall_seconds=10, max_chunker_runs=1, max_resends=0, upload_window_seconds=60)
    at = NOW.timestamp()

    assert decide(job(JobStatus.QUEUED, 11), None, at, strict).action is SweepAction.LAUNCH_CHUNKER
    assert decide(job(JobStatus.AWAITING_UPLOAD, 61), None, at, strict).code == "upload_expired"
    assert decide(job(JobStatus.PROCESSING, 61, -1, 1), None, at, strict).code == "chunker_failed"
    assert decide(job(JobStatus.PROCESSING, 61), run(3, 1, idle_seconds=11), at, strict).code == "chunks_stalled"


# ================================================================================================ retry backoff


def test_the_retry_delay_doubles_from_two_seconds_up_to_a_minute() -> None:
    assert [retry_delay_seconds(count) for count in range(1, 11)] == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    assert retry_delay_seconds(0) == 2  # a missing receive count is a first receive
    assert retry_delay_seconds(1000) == 60  # no overflow, no growth past the cap


def test_the_retry_delay_follows_its_settings() -> None:
    assert [retry_delay_seconds(count, 1, 5) for count in range(1, 6)] == [1, 2, 4, 5, 5]
    assert [retry_delay_seconds(count, 3, 100) for count in range(1, 4)] == [3, 6, 12]


def _template_chunk_retries() -> tuple[int, int, int]:
    """maxReceiveCount of the chunk queue, and the writer's first and longest retry delays, from template.yaml."""
    stack = load_template(REPOSITORY_ROOT / "template.yaml", parameter_overrides={"DatabaseUrl": ""})
    redrive = json.loads(stack.queues["ChunkQueue"].attributes["RedrivePolicy"])
    writer = stack.functions["WriterFunction"].environment
    return (
        int(redrive["maxReceiveCount"]),
        int(writer["CHUNK_RETRY_FIRST_SECONDS"]),
        int(writer["CHUNK_RETRY_LONGEST_SECONDS"]),
    )


def test_a_thirty_second_outage_cannot_exhaust_the_chunk_queue_receives() -> None:
    max_receives, first, longest = _template_chunk_retries()
    delays = [retry_delay_seconds(count, first, longest) for count in range(1, max_receives)]

    # A message dead-letters on receive number max_receives: the delays before it span far more than 30 s.
    assert sum(delays) > 4 * 30
    # Receive by receive through an outage of 30 s that starts with the first receive: every receive inside
    # it fails and backs off; the first one after it succeeds. It comes long before the last allowed receive.
    moment, receives = 0, 0
    while moment < 30:
        receives += 1
        moment += retry_delay_seconds(receives, first, longest)
    assert receives + 1 < max_receives
    assert receives <= 5


def test_the_template_retry_settings_are_the_service_defaults() -> None:
    _, first, longest = _template_chunk_retries()

    assert [retry_delay_seconds(count, first, longest) for count in range(1, 11)] == [
        retry_delay_seconds(count) for count in range(1, 11)
    ]
