"""State machines of the fixture template run on the local endpoint, their tasks answered by the functions host."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest

from infra.local.provision import provision_state_machines
from tests.fixtures.aws import FixtureStack
from tests.fixtures.local_stack.helpers import eventually

pytestmark = pytest.mark.integration


def run_to_end(fixture_stack: FixtureStack, execution_input: dict[str, Any]) -> dict[str, Any]:
    """Start an execution of the fixture state machine (unnamed, as most callers do) and wait for its end."""
    stepfunctions = fixture_stack.stack.client("stepfunctions")
    machine = fixture_stack.stack.template.state_machines["StepsStateMachine"]
    execution_arn = stepfunctions.start_execution(stateMachineArn=machine.arn, input=json.dumps(execution_input))[
        "executionArn"
    ]

    def ended() -> dict[str, Any] | None:
        described = stepfunctions.describe_execution(executionArn=execution_arn)
        return None if described["status"] == "RUNNING" else dict(described)

    return dict(eventually(ended, wait_seconds=30))


def history(fixture_stack: FixtureStack, execution_arn: str) -> list[dict[str, Any]]:
    stepfunctions = fixture_stack.stack.client("stepfunctions")
    return list(stepfunctions.get_execution_history(executionArn=execution_arn)["events"])


def test_state_machine_is_provisioned_under_the_arn_functions_get(fixture_stack: FixtureStack) -> None:
    machine = fixture_stack.stack.template.state_machines["StepsStateMachine"]

    described = fixture_stack.stack.client("stepfunctions").describe_state_machine(stateMachineArn=machine.arn)

    assert machine.arn == "arn:aws:states:us-east-1:123456789012:stateMachine:bulkio-local-steps"
    assert described["type"] == "STANDARD"
    assert json.loads(described["definition"]) == machine.definition


def test_provisioning_again_updates_a_changed_definition_in_place(fixture_stack: FixtureStack) -> None:
    stack = fixture_stack.stack
    machine = stack.template.state_machines["StepsStateMachine"]
    changed = replace(machine, definition={"StartAt": "Only", "States": {"Only": {"Type": "Succeed"}}})
    stepfunctions = stack.client("stepfunctions")
    try:
        provision_state_machines(
            replace(stack.template, state_machines={machine.logical_id: changed}), stack.aws_endpoint_url
        )

        described = stepfunctions.describe_state_machine(stateMachineArn=machine.arn)
        assert json.loads(described["definition"]) == changed.definition
        named = [m for m in stepfunctions.list_state_machines()["stateMachines"] if m["name"] == machine.name]
        assert len(named) == 1
    finally:
        provision_state_machines(stack.template, stack.aws_endpoint_url)
    restored = stepfunctions.describe_state_machine(stateMachineArn=machine.arn)
    assert json.loads(restored["definition"]) == machine.definition


def test_executions_retry_flaky_tasks_and_succeed_while_tasks_call_the_endpoint(fixture_stack: FixtureStack) -> None:
    ids = [f"steps-{uuid4().hex}" for _ in range(3)]

    # At once: the endpoint serves the executions' task calls and the functions' own calls all together.
    with ThreadPoolExecutor(len(ids)) as executor:
        executions = list(executor.map(lambda id_: run_to_end(fixture_stack, {"id": id_, "fail_times": 1}), ids))

    stack = fixture_stack.stack
    for id_, execution in zip(ids, executions, strict=True):
        assert execution["status"] == "SUCCEEDED"
        assert json.loads(execution["output"]) == {
            "id": id_,
            "fail_times": 1,
            "config": {"table": stack.tables["NotesTable"]},
            "attempt": {"attempts": 2},
        }
        assert [entry["attempt"] for entry in fixture_stack.records("steps") if entry["id"] == id_] == [1, 2]
        failures = [e for e in history(fixture_stack, execution["executionArn"]) if e["type"] == "TaskFailed"]
        assert [failure["taskFailedEventDetails"]["error"] for failure in failures] == ["FlakyError"]
        stored = stack.client("s3").get_object(Bucket=stack.buckets["FilesBucket"], Key=f"steps/{id_}")
        assert stored["Body"].read() == b"stepped"
        # The dynamodb:updateItem task ran against the same endpoint.
        item = stack.client("dynamodb").get_item(TableName=stack.tables["NotesTable"], Key={"pk": {"S": id_}})
        assert item["Item"]["step_runs"] == {"N": "1"}


def test_event_invocation_task_reaches_the_host_in_the_background(fixture_stack: FixtureStack) -> None:
    id_ = f"steps-{uuid4().hex}"

    execution = run_to_end(fixture_stack, {"id": id_})

    notify = [
        e["taskSucceededEventDetails"]["output"]
        for e in history(fixture_stack, execution["executionArn"])
        if e["type"] == "TaskSucceeded" and e["taskSucceededEventDetails"]["resource"] == "invoke"
    ]
    assert json.loads(notify[-1])["StatusCode"] == 202  # the Notify task did not wait for the function
    assert eventually(lambda: [r for r in fixture_stack.records("tool") if r["event"] == {"record": id_}])


def test_failing_task_is_caught_and_routed_to_the_recovery_function(fixture_stack: FixtureStack) -> None:
    id_ = f"steps-{uuid4().hex}"

    execution = run_to_end(fixture_stack, {"id": id_, "fail": "broken on purpose"})

    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"]) == {"id": id_, "recovered": "ValueError", "message": "broken on purpose"}
    # ValueError is not retried (the Retry names FlakyError only): one attempt, then the Catch.
    assert [entry["attempt"] for entry in fixture_stack.records("steps") if entry["id"] == id_] == [1]
    events = history(fixture_stack, execution["executionArn"])
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")]
    assert entered == ["Configure", "Attempt", "Recover", "Done"]
    (failure,) = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert failure["error"] == "ValueError"
    recovery = [e for e in events if e["type"] == "LambdaFunctionSucceeded"]
    assert json.loads(recovery[0]["lambdaFunctionSucceededEventDetails"]["output"])["recovered"] == "ValueError"
