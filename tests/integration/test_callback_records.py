"""The callback's state on the job record in DynamoDB (moto's server): each automatic attempt is claimed once, the
attempts are kept in order with what the endpoint said, and a settled callback takes the job out of the open jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.domain.callbacks import CallbackState, DeliveryAttempt, DeliveryTrigger, JobCallback
from bulkio.domain.jobs import Counters, ImportJob, JobSource, JobStatus, SourceKind, utc_now
from bulkio.domain.resources import Format, ImportTarget

from tests.fixtures.aws import create_jobs_table


@pytest.fixture
def jobs(aws_environment: str) -> DynamoJobRepository:
    return DynamoJobRepository(create_jobs_table(boto3.session.Session(), f"callback-jobs-{uuid.uuid4().hex[:8]}"))


def ended_job_with_callback(jobs: DynamoJobRepository) -> str:
    job_id = str(uuid.uuid4())
    jobs.create(
        ImportJob(
            job_id=job_id,
            resource=ImportTarget.USERS,
            format=Format.CSV,
            status=JobStatus.QUEUED,
            source=JobSource(kind=SourceKind.URL, url="https://example.com/u.csv"),
            created_at=utc_now(),
            owner="ann",
            callback=JobCallback("https://hooks.example.com/x", "whsec_s"),
        )
    )
    assert jobs.finish(job_id, Counters(total=1, processed=1, succeeded=1), {})
    return job_id


def attempt(status: int | None, trigger: DeliveryTrigger = DeliveryTrigger.AUTOMATIC) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=str(uuid.uuid4()),
        trigger=trigger,
        at=datetime.now(UTC).replace(microsecond=0),
        duration_ms=12,
        status_code=status,
        delivered=status == 200,
        error=None if status == 200 else f"answered {status}",
        response_excerpt="body",
    )


def open_ids(jobs: DynamoJobRepository) -> set[str]:
    return {job.job_id for job in jobs.open_jobs()}


def test_attempts_are_claimed_once_recorded_in_order_and_settle_the_job(jobs: DynamoJobRepository) -> None:
    job_id = ended_job_with_callback(jobs)
    jobs.completion_published(job_id, keep_open=True)
    job = jobs.get(job_id)
    assert job is not None and job.callback is not None
    assert (job.callback.state, job.callback.attempts, job.callback.secret) == (CallbackState.PENDING, 0, "whsec_s")
    assert job.callback.next_attempt_at is not None  # the first attempt is due now
    assert job_id in open_ids(jobs)

    lease = utc_now() + timedelta(seconds=40)
    assert jobs.claim_callback_attempt(job_id, 1, lease)
    assert not jobs.claim_callback_attempt(job_id, 1, lease)  # a duplicate message
    assert not jobs.claim_callback_attempt(job_id, 3, lease)  # a stale or future one
    retry_at = (utc_now() + timedelta(seconds=30)).replace(microsecond=0)
    failed = attempt(503)
    jobs.record_delivery(job_id, failed, None, retry_at)
    job = jobs.get(job_id)
    assert job is not None and job.callback is not None
    assert (job.callback.attempts, job.callback.deliveries, job.callback.next_attempt_at) == (1, 1, retry_at)

    assert jobs.claim_callback_attempt(job_id, 2, lease)
    taken = attempt(200)
    jobs.record_delivery(job_id, taken, CallbackState.DELIVERED, None)

    assert jobs.deliveries(job_id) == [failed, taken]
    job = jobs.get(job_id)
    assert job is not None and job.callback is not None
    assert (job.callback.state, job.callback.next_attempt_at) == (CallbackState.DELIVERED, None)
    assert job_id not in open_ids(jobs)
    jobs.settle_callback(job_id, CallbackState.FAILED)  # settled before: unchanged
    assert jobs.get(job_id).callback.state is CallbackState.DELIVERED  # type: ignore[union-attr]


def test_a_callback_given_up_leaves_the_open_jobs_and_a_redelivery_is_still_recorded(jobs: DynamoJobRepository) -> None:
    job_id = ended_job_with_callback(jobs)
    jobs.completion_published(job_id, keep_open=True)

    jobs.settle_callback(job_id, CallbackState.FAILED)
    assert job_id not in open_ids(jobs)
    assert not jobs.claim_callback_attempt(job_id, 1, utc_now())

    jobs.record_delivery(job_id, attempt(200, DeliveryTrigger.REDELIVERY), CallbackState.DELIVERED, None)
    job = jobs.get(job_id)
    assert job is not None and job.callback is not None
    assert (job.callback.state, job.callback.deliveries) == (CallbackState.DELIVERED, 1)


def test_a_completion_not_kept_open_takes_the_job_out_of_the_open_jobs(jobs: DynamoJobRepository) -> None:
    job_id = ended_job_with_callback(jobs)
    jobs.completion_published(job_id)
    assert job_id not in open_ids(jobs)
