"""Schemathesis against the embedded stack, from the served OpenAPI document: a bounded run in which no
generated request gets a 5xx, no response breaks the schema the document gives it, and every error is an
RFC 9457 problem."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.client import FINAL, Api
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 25
FUZZ_SUBJECT = "schemathesis"


@pytest.fixture(scope="module")
def fuzz_api(local_stack: RunningStack) -> Iterator[Api]:
    """An admin caller of its own; once the run is over its import jobs are cancelled and waited for, so that
    nothing it started writes to the database during later tests."""
    token = local_stack.token(["admin"], FUZZ_SUBJECT)
    api = Api(local_stack, {"Authorization": f"Bearer {token}"})
    yield api
    settle_jobs(api)


def settle_jobs(api: Api) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [job for job in own_jobs(api) if job["status"] not in FINAL | {"awaiting_upload"}]
        if not running:
            return
        for job in running:
            api.call("POST", f"/imports/{job['job_id']}/cancel")
        time.sleep(0.5)
    raise AssertionError("jobs started by the fuzzing run did not end")


def own_jobs(api: Api) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = api.call("GET", f"/imports?limit=100{'&cursor=' + cursor if cursor else ''}").json()
        jobs.extend(job for job in page["jobs"] if job.get("owner", FUZZ_SUBJECT) == FUZZ_SUBJECT)
        if not page["next"]:
            return jobs
        cursor = page["next"]


def test_no_server_error_and_every_error_is_a_problem(fuzz_api: Api, local_stack: RunningStack) -> None:
    schema = schemathesis.openapi.from_url(f"{local_stack.api_url}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # every documented operation is exercised
    statuses: Counter[int] = Counter()

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same requests every run: a failure here is reproducible
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def answers_without_server_error(case: Any) -> None:
            response = case.call(base_url=local_stack.api_url, headers=fuzz_api.headers, timeout=30)
            request = f"{case.method} {case.formatted_path}"
            # Raises, naming the request, when the status is a 5xx or the body breaks the documented schema.
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            statuses[response.status_code] += 1
            assert response.status_code < 500, f"{request}: {response.status_code} {response.text[:500]}"
            if response.status_code >= 400:
                content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
                assert content_type in ("application/problem+json", ["application/problem+json"]), request
                problem = response.json()
                assert {"type", "title", "status", "detail", "code"} <= set(problem), request
                assert problem["status"] == response.status_code, request

        answers_without_server_error()

    # The run got past validation into the handlers, not only bounced off the front door.
    assert sum(statuses.values()) >= len(operations) * 10, statuses
    assert {200, 202} <= set(statuses) and 400 in statuses, statuses
