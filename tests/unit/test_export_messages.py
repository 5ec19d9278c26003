"""The export job's messages: its DynamoDB item (the stored format must not change) and the state machine's inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.export_messages import ExportExecutionInput, ExportFailedInput, ExportJobItem, TaskError
from bulkio.domain.jobs import JobFailure
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
CREATED = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
REQUEST = {"resource": "users", "format": "csv", "filters": {"role": "admin"}, "fields": ["id"], "compression": None}


def queued_job(owner: str | None = "user-1") -> ExportJob:
    return ExportJob(
        job_id="job-1",
        resource="users",
        format="csv",
        filters={"role": "admin"},
        fields=["id"],
        compression=None,
        status=ExportStatus.QUEUED,
        created_at=CREATED,
        request=REQUEST,
        owner=owner,
    )


def test_a_new_job_is_written_with_the_attributes_it_always_had_and_its_owners_listing_key() -> None:
    assert ExportJobItem.from_job(queued_job()).to_item() == {
        "pk": "export#job-1",
        "kind": "export",
        "job_id": "job-1",
        "resource": "users",
        "format": "csv",
        "request_json": orjson.dumps(REQUEST).decode(),
        "status": "queued",
        "created_at": "2026-01-01T09:30:00.000000Z",
        "rows": 0,
        "bytes": 0,
        "owner": "user-1",
        "owner_kind": "user-1#export",
    }


@pytest.mark.parametrize("owner", [None, ""])
def test_a_job_without_an_owner_has_no_owner_attribute(owner: str | None) -> None:
    assert "owner" not in ExportJobItem.from_job(queued_job(owner)).to_item()


def test_an_item_as_dynamodb_returns_it_loads_with_decimals_and_the_transitions_attributes() -> None:
    item: dict[str, Any] = {
        "pk": "export#job-1",
        "kind": "export",
        "job_id": "job-1",
        "resource": "users",
        "format": "csv",
        "request_json": '{"resource": "users", "format": "csv", "filters": {"role": "admin"}, "fields": ["id"]}',
        "status": "failed",
        "created_at": "2026-01-01T09:30:00.000000Z",
        "started_at": "2026-01-01T09:30:01.500000Z",
        "finished_at": "2026-01-01T09:30:02.000000Z",
        "rows": Decimal("12"),
        "bytes": Decimal("345"),
        "object_key": "exports/job-1/users.csv",
        "failure": {"code": "export_failed", "message": "the export failed: disk full"},
        "owner": "user-1",
        "created_by_a_later_version": "ignored",
    }

    job = ExportJobItem.model_validate(item).to_job()

    assert (job.status, job.rows, job.bytes, job.object_key) == (ExportStatus.FAILED, 12, 345, item["object_key"])
    assert (job.created_at, job.started_at) == (CREATED, datetime(2026, 1, 1, 9, 30, 1, 500000, tzinfo=UTC))
    assert job.failure == JobFailure("export_failed", "the export failed: disk full")
    assert (job.filters, job.fields, job.compression, job.owner) == ({"role": "admin"}, ["id"], None, "user-1")
    assert job.request["resource"] == "users"


def test_an_item_written_before_the_model_loads_without_counters_or_owner() -> None:
    # As the e2e test's hand-made item: no rows, bytes or optional attributes.
    item = {
        "pk": "export#job-2",
        "kind": "export",
        "job_id": "job-2",
        "resource": "users",
        "format": "ndjson",
        "request_json": '{"resource": "users", "format": "ndjson"}',
        "status": "queued",
        "created_at": "2026-01-01T00:00:00.000000Z",
    }
    job = ExportJobItem.model_validate(item).to_job()
    assert (job.rows, job.bytes, job.owner, job.started_at, job.failure) == (0, 0, None, None, None)
    assert (job.filters, job.fields) == ({}, None)


def test_a_job_survives_the_round_trip() -> None:
    job = queued_job()
    job.status, job.started_at, job.rows, job.failure = ExportStatus.FAILED, CREATED, 3, JobFailure("x", "y")
    assert ExportJobItem.model_validate(ExportJobItem.from_job(job).to_item()).to_job() == job


def test_the_execution_input_is_the_job_id_only() -> None:
    assert orjson.loads(ExportExecutionInput(job_id="job-1").model_dump_json()) == {"job_id": "job-1"}
    assert ExportExecutionInput.model_validate({"job_id": "job-1"}).job_id == "job-1"
    with pytest.raises(ValidationError):
        ExportExecutionInput.model_validate({})


def test_mark_failed_reads_the_catch_error_or_none() -> None:
    caught = ExportFailedInput.model_validate(
        {"job_id": "job-1", "error": {"Error": "ValueError", "Cause": '{"errorMessage": "disk full"}'}}
    )
    assert caught.error == TaskError(Error="ValueError", Cause='{"errorMessage": "disk full"}')
    assert (caught.error.error, caught.error.cause) == ("ValueError", '{"errorMessage": "disk full"}')
    assert ExportFailedInput.model_validate({"job_id": "job-1"}).error is None
    assert ExportFailedInput.model_validate({"job_id": "job-1", "error": None}).error is None
    assert ExportFailedInput.model_validate({"job_id": "job-1", "error": {}}).error == TaskError()


def test_the_state_machine_passes_its_tasks_what_their_models_read() -> None:
    machine = json.loads((ROOT / "infra/statemachines/export.asl.json").read_text())
    run_payload = machine["States"]["RunExport"]["Parameters"]["Payload"]
    failed_payload = machine["States"]["MarkFailed"]["Parameters"]["Payload"]
    catch = machine["States"]["RunExport"]["Catch"][0]
    assert {name.removesuffix(".$") for name in run_payload} == set(ExportExecutionInput.model_fields)
    assert {name.removesuffix(".$") for name in failed_payload} == set(ExportFailedInput.model_fields)
    assert (failed_payload["error.$"], catch["ResultPath"]) == ("$.error", "$.error")
