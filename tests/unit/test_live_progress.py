"""Live progress against the in-memory fakes: the chunker's reading as the early basis of a job's progress, and
GET /v1/imports/{job_id}?wait=N, the long poll. The rules themselves are in tests/unit/test_jobs_domain.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from bulkio.domain.jobs import JobStatus

from tests.fakes import CALLER, FakeWorld, build_world, make_settings
from tests.unit.test_import_service import deliver_all, job_of, ndjson, upload_and_chunk, user


@pytest.fixture
def world() -> FakeWorld:
    return build_world(make_settings(chunk_records=2))


def test_the_chunker_records_how_far_it_has_read_the_source(world: FakeWorld) -> None:
    content = ndjson([user(n) for n in range(30)])  # 15 chunks: reported after the first ten

    job_id = upload_and_chunk(world, content)

    job = job_of(world, job_id)
    assert job.source.size == len(content)
    assert job.records_read == 20
    assert 0 < job.bytes_read <= len(content)
    assert job.counters.total == 30  # from now on the basis is the counted total
    assert world.api.view(job_id, CALLER)["progress"]["basis"] == "records"


class Clock:
    """A monotonic clock that moves only when the long poll sleeps; `on_sleep` runs at each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for action in self.on_sleep:
            action()


def test_a_long_poll_answers_once_the_percentage_changes(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(n) for n in range(6)]))
    messages = list(world.queue.messages)
    clock = Clock()
    staged: list[int] = []

    def stage_one_chunk_on_the_third_sleep() -> None:
        if len(clock.sleeps) == 3:
            world.writer.process_chunk(messages[0])
            staged.append(1)

    clock.on_sleep = [stage_one_chunk_on_the_third_sleep]
    api = replace(world.api, sleep=clock.sleep, monotonic=clock.monotonic)

    view = api.view(job_id, CALLER, wait_seconds=20)

    assert staged == [1]
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert (view["status"], view["progress"]["percent"]) == ("processing", 33.3)


def test_a_long_poll_with_nothing_changing_answers_when_its_wait_runs_out(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(n) for n in range(6)]))
    clock = Clock()
    api = replace(world.api, sleep=clock.sleep, monotonic=clock.monotonic)

    view = api.view(job_id, CALLER, wait_seconds=3)

    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert (view["status"], view["progress"]["percent"]) == ("processing", 0.0)


def test_a_long_poll_on_an_ended_job_answers_at_once(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(n) for n in range(6)]))
    deliver_all(world)
    assert job_of(world, job_id).status is JobStatus.COMPLETED
    clock = Clock()
    api = replace(world.api, sleep=clock.sleep, monotonic=clock.monotonic)

    assert api.view(job_id, CALLER, wait_seconds=20)["status"] == "completed"
    assert clock.sleeps == []


def test_a_cancelled_job_shows_what_it_did(world: FakeWorld) -> None:
    job_id = upload_and_chunk(world, ndjson([user(n) for n in range(6)]))
    world.writer.process_chunk(world.queue.messages[0])

    world.api.cancel(job_id, CALLER)

    view = world.api.view(job_id, CALLER)
    assert (view["status"], view["progress"]["percent"], view["progress"]["eta_seconds"]) == ("cancelled", 33.3, None)
