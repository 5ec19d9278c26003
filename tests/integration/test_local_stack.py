"""The embedded local stack, driven by the fixture template (tests/fixtures/local_stack)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from tests.fixtures.aws import FIXTURE_MAX_REQUEST_BYTES, FIXTURE_TEMPLATE, FixtureStack
from tests.fixtures.local_stack.helpers import eventually, http

pytestmark = pytest.mark.integration


def test_api_route_passes_path_parameter_and_base64_body_both_ways(fixture_stack: FixtureStack) -> None:
    payload = bytes(range(256))

    status, headers, body = http(
        "POST", f"{fixture_stack.stack.api_url}/items/a%20b?x=1", payload, {"Content-Type": "application/octet-stream"}
    )

    assert status == 201
    assert headers["X-Item-Id"] == "a b"
    assert headers["X-Was-Base64"] == "true"
    assert body == payload[::-1]


def test_environment_comes_from_template_env_file_and_layer(fixture_stack: FixtureStack) -> None:
    status, _, body = http("GET", f"{fixture_stack.stack.api_url}/v1/health")

    assert status == 200
    health = json.loads(body)
    assert health["greeting"] == "overridden"  # env.json section of ApiFunction
    assert health["layer"] == "fixture-layer"
    assert health["function_name"] == fixture_stack.stack.functions["ApiFunction"]
    assert 0 < health["remaining_ms"] <= 10_000


def test_streamed_response_arrives_chunked(fixture_stack: FixtureStack) -> None:
    status, headers, body = http("GET", f"{fixture_stack.stack.api_url}/stream")

    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked"
    assert body == b"part-0\npart-1\npart-2\n"


def test_request_over_the_limit_gets_413_problem(fixture_stack: FixtureStack) -> None:
    status, headers, body = http(
        "POST", f"{fixture_stack.stack.api_url}/items/big", b"x" * (FIXTURE_MAX_REQUEST_BYTES + 1)
    )

    assert status == 413
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["code"] == "payload_too_large"
    assert problem["status"] == 413
    assert "POST /v1/imports" in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("DELETE", "/v1/health", 405, "method_not_allowed"),
        ("GET", "/fail", 502, "function_error"),
    ],
)
def test_api_errors_are_problems(fixture_stack: FixtureStack, method: str, path: str, status: int, code: str) -> None:
    answered, headers, body = http(method, f"{fixture_stack.stack.api_url}{path}")

    assert answered == status
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == code


def test_s3_notification_invokes_function_with_url_encoded_key(fixture_stack: FixtureStack) -> None:
    s3 = fixture_stack.stack.client("s3")
    bucket = fixture_stack.stack.buckets["FilesBucket"]
    name = f"{uuid4().hex} a+b.csv"
    s3.put_object(Bucket=bucket, Key=f"ignored/{name}", Body=b"not for the function")
    s3.put_object(Bucket=bucket, Key=f"uploads/{name}", Body=b"id\n1\n")

    def matching() -> list[dict[str, Any]]:
        return [r for r in fixture_stack.records("s3") if uuid_in(r["s3"]["object"]["key"], name)]

    records = eventually(matching)
    assert records[0]["s3"]["object"]["key"] == f"uploads%2F{name.split(' ')[0]}+a%2Bb.csv"
    assert records[0]["eventName"].startswith("ObjectCreated:")
    assert records[0]["s3"]["bucket"]["name"] == bucket
    # The object outside the uploads/ prefix never reached the function.
    assert len(matching()) == 1


def uuid_in(encoded_key: str, name: str) -> bool:
    return name.split(" ")[0] in encoded_key


def test_partial_batch_failure_redelivers_only_the_failed_message(fixture_stack: FixtureStack) -> None:
    sqs = fixture_stack.stack.client("sqs")
    queue_url = fixture_stack.stack.queues["WorkQueue"]
    failing, succeeding = f"fail-once-{uuid4().hex}", f"ok-{uuid4().hex}"
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": failing, "fail_times": 1}))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"id": succeeding}))

    def seen(message_id: str) -> list[int]:
        return [r["receive_count"] for r in fixture_stack.records("work") if r["id"] == message_id]

    assert eventually(lambda: seen(failing) == [1, 2], wait_seconds=30)
    assert seen(succeeding) == [1]
    assert all(r["source"] == "aws:sqs" for r in fixture_stack.records("work"))


def test_repeatedly_failing_message_ends_in_dead_letter_queue(fixture_stack: FixtureStack) -> None:
    sqs = fixture_stack.stack.client("sqs")
    poison = f"poison-{uuid4().hex}"
    sqs.send_message(
        QueueUrl=fixture_stack.stack.queues["WorkQueue"], MessageBody=json.dumps({"id": poison, "fail_times": 99})
    )
    dead_letter_url = fixture_stack.stack.queues["WorkDeadLetterQueue"]

    def dead_letter() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=dead_letter_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        return [m for m in messages if poison in m["Body"]]

    assert eventually(dead_letter)
    # maxReceiveCount is 2: the function saw the message exactly twice.
    assert [r["receive_count"] for r in fixture_stack.records("work") if r["id"] == poison] == [1, 2]


def test_sqs_pollers_invoke_in_parallel(fixture_stack: FixtureStack) -> None:
    sqs = fixture_stack.stack.client("sqs")
    for _ in range(2):
        sqs.send_message(QueueUrl=fixture_stack.stack.queues["ParallelQueue"], MessageBody="{}")

    # Each invocation waits for another one to start: it only records "overlapped" when two run at once.
    overlapped = eventually(lambda: [r for r in fixture_stack.records("parallel") if r["event"] == "overlapped"])
    assert overlapped


def test_invoke_api_through_boto3_synchronously(fixture_stack: FixtureStack) -> None:
    lambda_client = fixture_stack.stack.client("lambda")
    function_name = fixture_stack.stack.functions["ToolFunction"]

    response = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"value": 42}))

    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    result = json.loads(response["Payload"].read())
    assert result["echo"] == {"value": 42}
    assert result["arn"].endswith(f":function:{function_name}")


def test_invoke_api_reports_function_errors(fixture_stack: FixtureStack) -> None:
    lambda_client = fixture_stack.stack.client("lambda")

    response = lambda_client.invoke(
        FunctionName=fixture_stack.stack.functions["ToolFunction"], Payload=json.dumps({"fail": "on purpose"})
    )

    assert response["FunctionError"] == "Unhandled"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "on purpose"
    assert error["stackTrace"]


def test_invoke_api_event_invocation_runs_in_background(fixture_stack: FixtureStack) -> None:
    lambda_client = fixture_stack.stack.client("lambda")
    marker = uuid4().hex

    response = lambda_client.invoke(
        FunctionName=fixture_stack.stack.functions["ToolFunction"],
        InvocationType="Event",
        Payload=json.dumps({"record": marker}),
    )

    assert response["StatusCode"] == 202
    assert eventually(lambda: [r for r in fixture_stack.records("tool") if r["event"]["record"] == marker])


def test_failed_event_invocation_goes_to_its_on_failure_destination(fixture_stack: FixtureStack) -> None:
    stack = fixture_stack.stack
    marker = uuid4().hex
    stack.client("lambda").invoke(
        FunctionName=stack.functions["ToolFunction"], InvocationType="Event", Payload=json.dumps({"fail": marker})
    )

    def destination_record() -> dict[str, Any] | None:
        sqs = stack.client("sqs")
        messages = sqs.receive_message(QueueUrl=stack.queues["FailedInvocationsQueue"], WaitTimeSeconds=1)
        for message in messages.get("Messages", []):
            record = json.loads(message["Body"])
            if record["requestPayload"] == {"fail": marker}:
                return dict(record)
        return None

    record = eventually(destination_record, wait_seconds=30)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2  # MaximumRetryAttempts: 1
    assert record["responsePayload"]["errorMessage"] == marker


def test_invoke_api_dry_run_and_unknown_function(fixture_stack: FixtureStack) -> None:
    lambda_client = fixture_stack.stack.client("lambda")

    dry_run = lambda_client.invoke(FunctionName="ToolFunction", InvocationType="DryRun")

    assert dry_run["StatusCode"] == 204
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName="no-such-function")


def test_worker_exceeding_timeout_is_killed_and_invocation_fails(fixture_stack: FixtureStack) -> None:
    lambda_client = fixture_stack.stack.client("lambda")
    function_name = fixture_stack.stack.functions["ToolFunction"]  # Timeout: 1

    timed_out = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"sleep": 30}))

    assert timed_out["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in json.loads(timed_out["Payload"].read())["errorMessage"]
    # A fresh worker replaces the killed one.
    after = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"value": 1}))
    assert "FunctionError" not in after


FIXTURE_FUNCTIONS = FIXTURE_TEMPLATE.parent / "functions"


def _workers_in(folder: Path) -> list[int]:
    """The functions host's worker processes running code from `folder` (their working directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"lambda_runtime.py" in (proc / "cmdline").read_bytes() and (proc / "cwd").resolve() == folder:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_worker_ignores_ctrl_c_and_the_host_stops_it(fixture_stack: FixtureStack) -> None:
    """Ctrl-C reaches the whole process group: a worker prints no KeyboardInterrupt traceback and keeps serving
    (the host stops its workers itself when it shuts down)."""
    lambda_client = fixture_stack.stack.client("lambda")
    function_name = fixture_stack.stack.functions["ToolFunction"]
    assert lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"value": 1}))["StatusCode"] == 200
    workers = _workers_in(FIXTURE_FUNCTIONS)
    assert workers

    for pid in workers:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)

    assert all(Path(f"/proc/{pid}").exists() for pid in workers)
    response = lambda_client.invoke(FunctionName=function_name, Payload=json.dumps({"value": 2}))
    assert json.loads(response["Payload"].read())["echo"] == {"value": 2}
    logs = "".join(path.read_text() for path in fixture_stack.stack.logs_dir.glob("*.log"))
    assert "KeyboardInterrupt" not in logs
