"""Exports end to end through the embedded stack: the streaming function URL, and async export jobs run by the
real state machine (moto's Step Functions interpreter calling our functions through the Invoke API)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
import uuid
from typing import Any

import orjson
import pytest

from tests.e2e.client import Api, generated, request
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e

SEED = 909
SIZES = {"user_rows": 300, "article_rows": 200}
FORMATS = ("ndjson", "json", "csv")
RESOURCES = ("users", "articles", "comments")


@pytest.fixture(scope="module")
def api(local_stack: RunningStack) -> Api:
    """The stack with users, articles and comments of its own imported."""
    api = Api(local_stack)
    for resource, rows, fmt in (("users", 300, "csv"), ("articles", 200, "ndjson"), ("comments", 300, "ndjson")):
        reply = api.upload(resource, f"{resource}.{fmt}", generated(resource, rows, SEED, fmt, **SIZES))
        assert api.wait(reply.json()["job_id"])["status"] == "completed_with_errors"
    return api


def export(api: Api, **params: str) -> Any:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return api.call("GET", f"/exports?{query}")


def parse(fmt: str, body: bytes) -> list[dict[str, Any]]:
    if fmt == "ndjson":
        return [orjson.loads(line) for line in body.splitlines()]
    if fmt == "json":
        return list(json.loads(body))
    return list(csv.DictReader(io.StringIO(body.decode())))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("resource", RESOURCES)
def test_every_resource_streams_in_every_format(api: Api, resource: str, fmt: str) -> None:
    reply = export(api, resource=resource, format=fmt)
    assert reply.status == 200
    rows = parse(fmt, reply.body)
    assert len(rows) >= {"users": 250, "articles": 150, "comments": 250}[resource]
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids)  # stable order
    assert len(set(ids)) == len(ids)


def test_filters_and_projection(api: Api) -> None:
    admins = parse("ndjson", export(api, resource="users", role="admin", fields="id,role").body)
    assert admins and all(row == {"id": row["id"], "role": "admin"} for row in admins)
    drafts = parse("ndjson", export(api, resource="articles", status="draft", limit="5").body)
    assert 0 < len(drafts) <= 5 and all(row["status"] == "draft" for row in drafts)


def test_unknown_filter_or_field_is_a_problem_listing_the_allowed_ones(api: Api) -> None:
    unknown = export(api, resource="users", colour="red")
    assert unknown.status == 400
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["code"] == "unknown_filter"
    assert "role" in unknown.json()["allowed"]
    field = export(api, resource="users", fields="id,password")
    assert (field.status, field.json()["code"]) == (400, "unknown_field")
    injected = export(api, resource="users", role="admin'%3B%20DROP%20TABLE%20users%3B--")
    assert injected.status in (200, 400)
    assert export(api, resource="users").status == 200  # the table is still there


def wait_for_export(api: Api, job_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.call("GET", f"/exports/{job_id}").json()
        if job["status"] in ("completed", "failed"):
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"export {job_id} did not finish")


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_async_export_runs_the_state_machine_to_a_downloadable_file(api: Api, compression: str | None) -> None:
    body = {"resource": "articles", "format": "ndjson", "filters": {"status": "published"}, "fields": ["id", "slug"]}
    if compression:
        body["compression"] = compression
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"export-{uuid.uuid4()}"}
    reply = api.call("POST", "/exports", orjson.dumps(body), headers)
    assert reply.status == 202
    assert reply.json()["status"] == "queued"

    job = wait_for_export(api, reply.json()["job_id"])
    assert job["status"] == "completed", job
    assert job["counters"]["rows"] > 0 and job["bytes"] > 0
    download = request("GET", job["download_url"])
    assert download.status == 200
    content = gzip.decompress(download.body) if compression else download.body
    rows = parse("ndjson", content)
    assert len(rows) == job["counters"]["rows"]
    assert all(set(row) == {"id", "slug"} for row in rows)


def test_an_export_whose_worker_fails_ends_failed_with_the_reason(api: Api, local_stack: RunningStack) -> None:
    job_id = str(uuid.uuid4())
    # A job whose stored request the worker cannot run: the state machine's Catch must record why.
    local_stack.client("dynamodb").put_item(
        TableName=local_stack.tables["JobsTable"],
        Item={
            "pk": {"S": f"export#{job_id}"},
            "kind": {"S": "export"},
            "job_id": {"S": job_id},
            "resource": {"S": "users"},
            "format": {"S": "ndjson"},
            "request_json": {"S": '{"resource": "users", "format": "ndjson", "fields": ["password"]}'},
            "status": {"S": "queued"},
            "created_at": {"S": "2026-01-01T00:00:00.000000Z"},
            "owner": {"S": "e2e-user"},  # the client's caller: only the owner (or an admin) may read a job
        },
    )
    machine = local_stack.client("stepfunctions").list_state_machines()["stateMachines"][0]["stateMachineArn"]
    local_stack.client("stepfunctions").start_execution(
        stateMachineArn=machine, name=job_id, input=json.dumps({"job_id": job_id})
    )
    job = wait_for_export(api, job_id)
    assert job["status"] == "failed"
    assert job["failure"]["code"] == "export_failed"
    assert "password" in job["failure"]["message"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("resource", RESOURCES)
def test_an_export_imports_back_unchanged(api: Api, resource: str, fmt: str) -> None:
    before = export(api, resource=resource, format=fmt)
    exported_rows = parse(fmt, before.body)

    reply = api.upload(resource, f"{resource}.{fmt}", before.body)
    job = api.wait(reply.json()["job_id"])
    assert (job["status"], job["counters"]["failed"]) == ("completed", 0), job.get("errors")
    assert job["counters"]["succeeded"] == len(exported_rows)

    after = export(api, resource=resource, format=fmt)
    assert after.body == before.body


def test_export_jobs_are_listed_newest_first_and_filtered(api: Api) -> None:
    body = {"resource": "comments", "format": "csv", "fields": ["id"], "limit": 1}
    created = api.call("POST", "/exports", orjson.dumps(body), {"Content-Type": "application/json"}).json()
    wait_for_export(api, created["job_id"])

    listed = api.call("GET", "/exports/jobs?limit=5&resource=comments&status=completed")
    assert listed.status == 200, listed.body
    jobs = listed.json()["jobs"]
    assert jobs[0]["job_id"] == created["job_id"]
    assert all((job["resource"], job["status"]) == ("comments", "completed") for job in jobs)
    assert "download_url" not in jobs[0]  # GET /v1/exports/{job_id} hands it out
    assert api.call("GET", "/exports/jobs?state=done").json()["code"] == "unknown_parameter"
    assert api.call("GET", "/exports/jobs?status=done").json()["code"] == "invalid_status"
    assert api.call("GET", f"/exports/{created['job_id']}").json()["job_id"] == created["job_id"]


def test_an_export_without_resource_says_it_is_required(api: Api) -> None:
    reply = api.call("GET", "/exports?format=csv")
    assert (reply.status, reply.json()["code"]) == (400, "invalid_resource")
    assert reply.json()["detail"].startswith("resource is required")
