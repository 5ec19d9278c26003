"""The embedded functions host for issue 8: `Schedule` events run (the sweeper's), a failed SQS message keeps the
visibility its queue or its function gave it (the writers' backoff), and provisioning versions buckets and
chains dead-letter queues. On a stack of tests/fixtures/local_stack/schedules.yaml of this module's own."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.functions_host import HostConfig
from infra.local.stack import REPOSITORY_ROOT, LocalStack
from infra.local.template_model import ACCOUNT_ID, REGION
from tests.fixtures.aws import RunningStack, running_stack
from tests.fixtures.local_stack.helpers import eventually

SCHEDULES_TEMPLATE = REPOSITORY_ROOT / "tests/fixtures/local_stack/schedules.yaml"
SCHEDULE_SECONDS = 1.0
HOST_RETRY_DELAY_SECONDS = 1  # what the host used to reset every failed message's visibility to
RETRIED_QUEUE_VISIBILITY = 6  # schedules.yaml's RetriedQueue


class ScheduleStack:
    def __init__(self, stack: RunningStack, record_dir: Path) -> None:
        self.stack = stack
        self.record_dir = record_dir

    def records(self, kind: str) -> list[dict[str, Any]]:
        path = self.record_dir / f"{kind}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def send(self, queue: str, body: dict[str, Any]) -> str:
        text = json.dumps(body)
        self.stack.client("sqs").send_message(QueueUrl=self.stack.queues[queue], MessageBody=text)
        return text


@pytest.fixture(scope="module")
def schedule_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScheduleStack]:
    root = tmp_path_factory.mktemp("schedule-stack")
    record_dir = root / "records"
    record_dir.mkdir()
    env_file = root / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"RecordDir": str(record_dir)}}))
    settings = {
        "LOCAL_SCHEDULE_SECONDS": str(SCHEDULE_SECONDS),
        "LOCAL_SQS_RETRY_DELAY_SECONDS": str(HOST_RETRY_DELAY_SECONDS),
        "LOCAL_SQS_CONCURRENCY": "1",
    }
    with running_stack(SCHEDULES_TEMPLATE, root / "state", env_file, None, settings) as running:
        yield ScheduleStack(running, record_dir)


# ================================================================================================= schedules


def test_a_schedule_invokes_its_function_at_the_local_interval(schedule_stack: ScheduleStack) -> None:
    ticks = eventually(lambda: (found := schedule_stack.records("ticks")) and len(found) >= 4 and found, 30)

    gaps = [later["at"] - earlier["at"] for earlier, later in itertools.pairwise(ticks)]
    # Every LOCAL_SCHEDULE_SECONDS (not the template's hour), one invocation at a time: never two at once.
    assert all(0.8 * SCHEDULE_SECONDS <= gap < 5 * SCHEDULE_SECONDS for gap in gaps), gaps
    event = ticks[0]["event"]
    assert (event["detail-type"], event["source"], event["detail"]) == ("Scheduled Event", "aws.events", {})
    assert (event["account"], event["region"]) == (ACCOUNT_ID, REGION)
    # Only the enabled schedule runs: its rule, never the `Enabled: false` one's.
    rules = {tick["event"]["resources"][0] for tick in ticks}
    assert len(rules) == 1
    assert rules.pop().startswith(f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/") and event["resources"][0].endswith(
        "-TickFunction-Tick"
    )
    assert len({tick["event"]["id"] for tick in ticks}) == len(ticks)


# ============================================================================================= SQS visibility


def receives(schedule_stack: ScheduleStack, kind: str, body: str, count: int) -> list[dict[str, Any]]:
    return list(
        eventually(
            lambda: (
                (found := [r for r in schedule_stack.records(kind) if r["body"] == body])
                and len(found) >= count
                and found
            ),
            45,
        )
    )


def test_a_failed_message_comes_back_after_the_queues_visibility_timeout(schedule_stack: ScheduleStack) -> None:
    body = schedule_stack.send("RetriedQueue", {"id": uuid.uuid4().hex})

    first, second = receives(schedule_stack, "retried", body, 2)[:2]

    assert (first["receive_count"], second["receive_count"]) == (1, 2)
    gap = second["at"] - first["at"]
    # Not the host's old reset to LOCAL_SQS_RETRY_DELAY_SECONDS (1 s here), which spent receives several times as
    # fast and sent chunks to the dead-letter queue within seconds. (The first receive may have waited for a cold
    # start before it was recorded: hence the margin below the timeout.)
    assert RETRIED_QUEUE_VISIBILITY - 2 <= gap < RETRIED_QUEUE_VISIBILITY + 10, gap
    time.sleep(0.5)  # it succeeded on the second receive: deleted, never received again
    assert len([r for r in schedule_stack.records("retried") if r["body"] == body]) == 2


def test_a_failed_message_comes_back_when_its_function_asked(schedule_stack: ScheduleStack) -> None:
    """As a writer backs off: ChangeMessageVisibility to 3 s, then the invocation fails. The queue's own
    visibility timeout is 60 s; the host's retry delay 1 s: neither may win."""
    body = schedule_stack.send("BackedOffQueue", {"id": uuid.uuid4().hex, "delay": 3})

    first, second = receives(schedule_stack, "backed_off", body, 2)[:2]

    assert (first["receive_count"], second["receive_count"]) == (1, 2)
    gap = second["at"] - first["at"]
    assert 2.5 <= gap < 20, gap


# ============================================================================================== provisioning


def test_provisioning_versions_buckets_and_chains_dead_letter_queues(schedule_stack: ScheduleStack) -> None:
    stack = schedule_stack.stack
    s3, sqs = stack.client("s3"), stack.client("sqs")

    assert s3.get_bucket_versioning(Bucket=stack.buckets["VersionedBucket"]).get("Status") == "Enabled"
    assert "Status" not in s3.get_bucket_versioning(Bucket=stack.buckets["PlainBucket"])

    def redrive_target(queue: str) -> str:
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queues[queue], AttributeNames=["RedrivePolicy"])
        return str(json.loads(attributes["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"])

    def arn(queue: str) -> str:
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queues[queue], AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    assert redrive_target("RetriedQueue") == arn("DeadLetterQueue")
    assert redrive_target("DeadLetterQueue") == arn("DeadLetterArchive")  # a dead-letter queue with its own


# ============================================================================================ configuration


def test_the_schedule_interval_comes_from_the_environment_or_the_template(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_SCHEDULE_SECONDS", "2.5")
    assert HostConfig.from_environment().schedule_seconds == 2.5
    monkeypatch.setenv("LOCAL_SCHEDULE_SECONDS", "")
    assert HostConfig.from_environment().schedule_seconds is None  # each schedule's own rate
    monkeypatch.delenv("LOCAL_SCHEDULE_SECONDS")
    assert HostConfig.from_environment().schedule_seconds is None


def test_a_stacks_own_settings_choose_the_schedule_interval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCAL_SCHEDULE_SECONDS", raising=False)
    assert LocalStack(SCHEDULES_TEMPLATE, tmp_path)._environment()["LOCAL_SCHEDULE_SECONDS"] == "10"

    monkeypatch.setenv("LOCAL_SCHEDULE_SECONDS", "30")
    assert LocalStack(SCHEDULES_TEMPLATE, tmp_path)._environment()["LOCAL_SCHEDULE_SECONDS"] == "30"

    chosen = LocalStack(SCHEDULES_TEMPLATE, tmp_path, extra_environment={"LOCAL_SCHEDULE_SECONDS": "1"})
    assert chosen._environment()["LOCAL_SCHEDULE_SECONDS"] == "1"
