"""Completion events against the in-memory fakes: every job that ends puts one "Import Job Completed" event on
the bus, whoever ends it; an event that could not go out keeps the job among the open jobs until the sweeper
publishes it (an outbox on the job record)."""

from __future__ import annotations

import pytest
from bulkio.domain.jobs import IMPORT_COMPLETED, JobStatus

from tests.fakes import CALLER, FakeWorld, build_world, make_settings
from tests.unit.test_import_service import deliver_all, job_of, ndjson, upload_and_chunk, user


@pytest.fixture
def world() -> FakeWorld:
    return build_world(make_settings(chunk_records=2))


def open_ids(world: FakeWorld) -> list[str]:
    return [job.job_id for job in world.jobs.open_jobs()]


def test_a_finished_job_publishes_its_summary_once(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(1), user(2), {"email": "bad", "name": "Bad"}]))
    deliver_all(world)
    deliver_all(world)  # redelivered chunks end nothing twice

    [(detail_type, detail)] = world.events.published
    assert detail_type == IMPORT_COMPLETED == "Import Job Completed"
    assert (detail["job_id"], detail["status"], detail["mode"]) == (job_id, "completed_with_errors", "import")
    assert detail["counters"] == {"total": 3, "processed": 3, "succeeded": 2, "failed": 1}
    assert detail["errors_by_code"] == {"invalid_email": 1}
    assert "errors" not in detail
    assert open_ids(world) == []


def test_a_cancelled_job_publishes_its_event(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(n) for n in range(4)]))

    world.api.cancel(job_id, CALLER)

    assert [(kind, detail["status"]) for kind, detail in world.events.published] == [(IMPORT_COMPLETED, "cancelled")]


def test_a_failed_job_publishes_its_event_with_the_reason(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, b"")  # an empty file fails the job

    [(_, detail)] = world.events.published
    assert (detail["job_id"], detail["status"], detail["failure"]["code"]) == (job_id, "failed", "empty_file")


def test_an_event_that_could_not_go_out_is_published_by_the_sweeper(world: FakeWorld) -> None:
    world.events.error = ConnectionError("the bus is away")
    job_id = upload_and_chunk(world, ndjson([user(1)]))
    deliver_all(world)
    assert job_of(world, job_id).status is JobStatus.COMPLETED
    assert world.events.published == []
    assert open_ids(world) == [job_id]  # still in the outbox

    assert world.sweeper.sweep()["error"] == 1
    world.events.error = None
    actions = world.sweeper.sweep()

    assert actions == {"published": 1}
    assert [detail["job_id"] for _, detail in world.events.published] == [job_id]
    assert open_ids(world) == []
    assert world.sweeper.sweep() == {}
