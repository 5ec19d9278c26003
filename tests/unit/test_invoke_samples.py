"""`make invoke`'s sample events work as they are (run here against the fakes, as the functions would run them),
and a missing event file is a clear refusal naming the samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bulkio import bootstrap

from infra.local import invoke
from tests.fakes import FakeWorld, build_world
from tests.functions import LambdaContext, load_function_app

SAMPLES = Path(__file__).resolve().parents[1] / "events"


def sample(name: str) -> dict[str, object]:
    return dict(json.loads((SAMPLES / name).read_text()))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = build_world()
    monkeypatch.setattr(bootstrap, "wiring", world.wiring())
    return world


def test_the_presigned_import_sample_creates_a_job_as_its_caller(world: FakeWorld) -> None:
    answer = load_function_app("api").handler(sample("create_import_presigned.json"), LambdaContext())

    assert answer["statusCode"] == 202, answer["body"]
    [job] = world.jobs.all_jobs()
    assert (job.owner, job.status.value) == ("invoke-sample", "awaiting_upload")


def test_the_health_sample_reads_only(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bulkio.web.api.health_report", lambda: {"status": "ok", "checks": {}})
    answer = load_function_app("api").handler(sample("health.json"), LambdaContext())
    assert answer["statusCode"] == 200
    assert world.jobs.all_jobs() == []


def test_the_chunk_sample_names_no_job_and_changes_nothing(world: FakeWorld) -> None:
    answer = load_function_app("writer").handler(sample("chunk_message.json"), LambdaContext())

    assert answer == {"batchItemFailures": []}
    assert world.store.runs == {}


def test_a_missing_event_file_is_refused_with_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert invoke.main(["ApiFunction", "tests/events/nope.json"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("no event file tests/events/nope.json: give a JSON event, or one of the samples:")
    assert "create_import_presigned.json" in message and "Traceback" not in message
