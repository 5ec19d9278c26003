"""Job views, progress, metrics and the final status: what GET /v1/imports/{job_id} shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bulkio.domain.jobs import (
    Counters,
    ImportJob,
    JobFailure,
    JobSource,
    JobStatus,
    SourceKind,
    final_status,
    job_metrics,
    job_view,
    progress,
)
from bulkio.domain.resources import Format, ImportTarget

CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STARTED = CREATED + timedelta(seconds=5)


def make_job(status: JobStatus = JobStatus.QUEUED, **changes: object) -> ImportJob:
    job = ImportJob(
        job_id="job-1",
        resource=ImportTarget.USERS,
        format=Format.CSV,
        status=status,
        source=JobSource(SourceKind.MULTIPART, bucket="b", key="uploads/job-1/source", filename="users.csv"),
        created_at=CREATED,
    )
    for name, value in changes.items():
        setattr(job, name, value)
    return job


def test_final_status_depends_on_failed_records() -> None:
    assert final_status(0) is JobStatus.COMPLETED
    assert final_status(1) is JobStatus.COMPLETED_WITH_ERRORS


def test_progress_is_zero_until_the_chunker_has_read_something() -> None:
    job = make_job(JobStatus.PROCESSING, chunks_done=3, started_at=STARTED)

    assert progress(job, STARTED + timedelta(seconds=5)) == {
        "chunks_total": None,
        "chunks_done": 3,
        "percent": 0.0,
        "basis": "bytes",
        "eta_seconds": None,
    }


def test_before_the_total_is_known_progress_rests_on_the_bytes_read() -> None:
    # A quarter of a 1,000-byte source read held 50 records: about 200 in all; 40 are staged, in 10 s.
    job = make_job(JobStatus.PROCESSING, started_at=STARTED, bytes_read=250, records_read=50)
    job.source.size = 1000
    job.counters.processed = 40

    shown = progress(job, STARTED + timedelta(seconds=10))

    assert (shown["basis"], shown["percent"], shown["eta_seconds"]) == ("bytes", 20.0, 40.0)


def test_an_estimate_never_counts_fewer_records_than_were_read() -> None:
    job = make_job(JobStatus.PROCESSING, started_at=STARTED, bytes_read=1200, records_read=90)
    job.source.size = 1000  # the last piece read past the end
    job.counters.processed = 90

    assert progress(job, STARTED + timedelta(seconds=10))["percent"] == 99.9


def test_once_the_total_is_known_progress_is_the_share_of_records_staged() -> None:
    job = make_job(JobStatus.PROCESSING, chunks_total=3, chunks_done=1, started_at=STARTED, bytes_read=10)
    job.counters.total, job.counters.processed = 3000, 1000

    shown = progress(job, STARTED + timedelta(seconds=20))

    assert shown == {"chunks_total": 3, "chunks_done": 1, "percent": 33.3, "basis": "records", "eta_seconds": 40.0}


def test_a_job_with_every_record_staged_is_not_done_before_its_merge() -> None:
    job = make_job(JobStatus.PROCESSING, chunks_total=2, chunks_done=2, started_at=STARTED)
    job.counters.total, job.counters.processed = 2000, 2000

    assert progress(job, STARTED + timedelta(seconds=20))["percent"] == 99.9


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.VALIDATED])
def test_progress_of_a_completed_job_is_full(status: JobStatus) -> None:
    job = make_job(status, chunks_total=4, chunks_done=2)

    assert progress(job)["percent"] == 100.0


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_progress_of_a_stopped_job_stays_where_it_stopped(status: JobStatus) -> None:
    job = make_job(status, chunks_total=4, chunks_done=1, started_at=STARTED)
    job.counters.total, job.counters.processed = 4000, 1000

    shown = progress(job, STARTED + timedelta(seconds=20))

    assert (shown["percent"], shown["eta_seconds"]) == (25.0, None)


def test_metrics_are_empty_before_processing_starts() -> None:
    metrics = job_metrics(make_job(), CREATED + timedelta(minutes=1))

    assert (metrics.rows_per_second, metrics.error_rate, metrics.duration_seconds) == (None, None, None)


def test_metrics_of_a_running_job_measure_up_to_now() -> None:
    job = make_job(JobStatus.PROCESSING, started_at=STARTED, counters=Counters(processed=1000, failed=10))

    metrics = job_metrics(job, STARTED + timedelta(seconds=4))

    assert metrics.rows_per_second == 250.0
    assert metrics.error_rate == 0.01
    assert metrics.duration_seconds == 4.0


def test_metrics_of_a_finished_job_stop_at_its_end() -> None:
    job = make_job(
        JobStatus.COMPLETED,
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=2),
        counters=Counters(total=300, processed=300, succeeded=300),
    )

    metrics = job_metrics(job, STARTED + timedelta(hours=1))

    assert metrics.duration_seconds == 2.0
    assert metrics.rows_per_second == 150.0
    assert metrics.error_rate == 0.0


def test_metrics_without_records_or_elapsed_time_have_no_rates() -> None:
    job = make_job(JobStatus.PROCESSING, started_at=STARTED)

    metrics = job_metrics(job, STARTED)

    assert metrics.rows_per_second is None
    assert metrics.error_rate is None
    assert metrics.duration_seconds == 0.0


def test_job_view_shows_the_job_with_utc_timestamps_and_no_links() -> None:
    job = make_job(
        JobStatus.COMPLETED_WITH_ERRORS,
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=10),
        chunks_total=2,
        chunks_done=2,
        counters=Counters(total=20, processed=20, succeeded=18, failed=2),
        errors_by_code={"invalid_email": 2},
    )
    first_errors = [{"line": 3, "code": "invalid_email"}]

    view = job_view(job, first_errors, STARTED + timedelta(hours=1))

    assert view == {
        "job_id": "job-1",
        "status": "completed_with_errors",
        "mode": "import",
        "resource": "users",
        "format": "csv",
        "source": {"kind": "multipart", "filename": "users.csv"},
        "counters": {"total": 20, "processed": 20, "succeeded": 18, "failed": 2},
        "progress": {"chunks_total": 2, "chunks_done": 2, "percent": 100.0, "basis": "records", "eta_seconds": None},
        "metrics": {"rows_per_second": 2.0, "error_rate": 0.1, "duration_seconds": 10.0},
        "errors_by_code": {"invalid_email": 2},
        "created_at": "2024-05-01T12:00:00.000000Z",
        "started_at": "2024-05-01T12:00:05.000000Z",
        "finished_at": "2024-05-01T12:00:15.000000Z",
        "errors": first_errors,
    }


def test_job_view_of_a_queued_job_has_no_format_yet_and_no_failure() -> None:
    view = job_view(make_job(format=None), [], CREATED)

    assert view["format"] is None
    assert view["started_at"] is None
    assert view["finished_at"] is None
    assert "failure" not in view


def test_job_view_converts_timestamps_to_utc() -> None:
    paris = datetime(2024, 5, 1, 16, 0, 0, tzinfo=ZoneInfo("Europe/Paris"))

    view = job_view(make_job(created_at=paris), [], CREATED)

    assert view["created_at"] == "2024-05-01T14:00:00.000000Z"


def test_job_view_of_a_failed_job_says_why() -> None:
    job = make_job(JobStatus.FAILED, failure=JobFailure("invalid_gzip", "the file is not gzip: upload it again"))

    view = job_view(job, [], CREATED)

    assert view["status"] == "failed"
    assert view["failure"] == {"code": "invalid_gzip", "message": "the file is not gzip: upload it again"}
