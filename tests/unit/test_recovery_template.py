"""template.yaml and the local template loader for issue 8: Schedule events, versioned buckets, the sweeper, the
dead-letter chain and the permissions the recovery paths need on AWS (where nothing here can try them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.local.intrinsics import TemplateLoader
from infra.local.template import load_template
from infra.local.template_events import schedule_interval_seconds
from infra.local.template_model import ScheduleEvent, TemplateError

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPOSITORY_ROOT / "template.yaml"
IMPORT_BUCKET_NAME = {"Fn::Sub": "${AWS::StackName}-imports-${AWS::AccountId}"}
CHUNK_QUEUE_NAME = {"Fn::GetAtt": ["ChunkQueue", "QueueName"]}


# ================================================================================== Schedule expressions


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(1 minute)", 60),
        ("rate(5 minutes)", 300),
        ("rate(1 hour)", 3600),
        ("rate(12 hours)", 43200),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 604800),
        ("  rate( 3 minutes )  ", 180),
    ],
)
def test_rate_expressions_become_intervals(expression: str, seconds: int) -> None:
    assert schedule_interval_seconds(expression) == seconds


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 12 * * ? *)",
        "rate(30 seconds)",
        "rate(minutes)",
        "rate(1.5 hours)",
        "rate(-1 minutes)",
        "rate(0 minutes)",  # AWS refuses it; locally it would invoke the function in a tight loop
        "every 5 minutes",
        "",
    ],
)
def test_unsupported_schedule_expressions_are_refused(expression: str) -> None:
    with pytest.raises(TemplateError, match="rate"):
        schedule_interval_seconds(expression)


def write_template(tmp_path: Path, resources: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "template.yaml"
    path.write_text(
        "Globals:\n  Function:\n    Runtime: python3.12\n    CodeUri: src\n    Handler: app.handler\n"
        "Resources:\n" + resources
    )
    return path


SCHEDULED = """
  Ticker:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(2 minutes)
        Nightly:
          Type: Schedule
          Properties:
            Schedule: rate(1 day)
            Enabled: false
        Paused:
          Type: Schedule
          Properties:
            Schedule: rate(10 minutes)
            State: DISABLED
  Plain:
    Type: AWS::Serverless::Function
"""


def test_schedule_events_are_read_with_their_rate_and_state(tmp_path: Path) -> None:
    stack = load_template(write_template(tmp_path, SCHEDULED))

    assert stack.functions["Ticker"].schedule_events == [
        ScheduleEvent("Tick", "rate(2 minutes)", 120, enabled=True),
        ScheduleEvent("Nightly", "rate(1 day)", 86400, enabled=False),
        ScheduleEvent("Paused", "rate(10 minutes)", 600, enabled=False),
    ]
    assert stack.functions["Plain"].schedule_events == []
    assert stack.functions["Ticker"].sqs_events == [] and stack.functions["Ticker"].api_events == []


def test_a_template_with_a_schedule_the_local_stack_cannot_run_is_refused(tmp_path: Path) -> None:
    path = write_template(tmp_path, SCHEDULED.replace("rate(2 minutes)", "cron(0/5 * * * ? *)"))

    with pytest.raises(TemplateError, match="cron"):
        load_template(path)


@pytest.mark.parametrize(
    ("versioning", "versioned"),
    [
        ("", False),
        ("      VersioningConfiguration: {Status: Enabled}\n", True),
        ("      VersioningConfiguration: {Status: Suspended}\n", False),
    ],
)
def test_bucket_versioning_is_read_from_the_template(tmp_path: Path, versioning: str, versioned: bool) -> None:
    path = write_template(
        tmp_path, "  Files:\n    Type: AWS::S3::Bucket\n    Properties:\n" + (versioning or "      {}\n")
    )

    assert load_template(path).buckets["Files"].versioned is versioned


# ======================================================================================= template.yaml facts


def raw_template() -> dict[str, Any]:
    return dict(yaml.load(TEMPLATE.read_text(), Loader=TemplateLoader))


def resource(name: str) -> dict[str, Any]:
    return dict(raw_template()["Resources"][name]["Properties"])


def policies(function: str) -> list[Any]:
    return list(resource(function).get("Policies") or [])


def has_policy(function: str, template_name: str, **arguments: Any) -> bool:
    return any(isinstance(p, dict) and p.get(template_name) == arguments for p in policies(function))


def test_the_import_bucket_keeps_versions_for_pinned_sources() -> None:
    stack = load_template(TEMPLATE, parameter_overrides={"DatabaseUrl": ""})

    assert stack.buckets["ImportBucket"].versioned is True
    assert resource("ImportBucket")["BucketName"] == IMPORT_BUCKET_NAME
    rules = {rule["Id"]: rule for rule in resource("ImportBucket")["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-fetched-sources"]["Prefix"] == "fetched/"  # the copies of URL imports
    assert "NoncurrentVersionExpiration" in rules["expire-replaced-versions"]


def test_the_sweeper_runs_on_a_schedule_with_the_settings_it_needs() -> None:
    stack = load_template(TEMPLATE, parameter_overrides={"DatabaseUrl": ""})
    sweeper = stack.functions["SweeperFunction"]

    assert sweeper.handler == "app.handler" and sweeper.code_dir == REPOSITORY_ROOT / "functions/sweeper"
    assert [(event.expression, event.interval_seconds, event.enabled) for event in sweeper.schedule_events] == [
        ("rate(1 minute)", 60, True)
    ]
    for name in ("SWEEP_STALL_SECONDS", "SWEEP_MAX_CHUNKER_RUNS", "SWEEP_MAX_RESENDS", "PRESIGN_TTL_SECONDS"):
        assert int(sweeper.environment[name]) > 0
    assert sweeper.environment["CHUNKER_FUNCTION_NAME"] == stack.functions["ChunkerFunction"].name
    # It expires an upload once the presigned URL the API handed out has expired: the same lifetime.
    assert (
        sweeper.environment["PRESIGN_TTL_SECONDS"] == stack.functions["ApiFunction"].environment["PRESIGN_TTL_SECONDS"]
    )
    # It may merge a job whose writer died: as long as a writer may take, at least.
    assert sweeper.timeout >= stack.functions["WriterFunction"].timeout
    # What its actions touch: the job table, the import bucket (error reports), the chunk queue (re-sends), the
    # chunker (launches).
    assert has_policy("SweeperFunction", "S3CrudPolicy", BucketName=IMPORT_BUCKET_NAME)
    assert has_policy("SweeperFunction", "DynamoDBCrudPolicy", TableName={"Ref": "JobsTable"})
    assert has_policy("SweeperFunction", "SQSSendMessagePolicy", QueueName=CHUNK_QUEUE_NAME)
    assert has_policy("SweeperFunction", "LambdaInvokePolicy", FunctionName={"Fn::Sub": "${AWS::StackName}-chunker"})


def test_the_dead_letter_function_may_write_the_error_report() -> None:
    """Issue 8, item 10: failing a job whose rows were merged finishes it, which writes its report to S3."""
    assert has_policy("DeadLetterFunction", "S3CrudPolicy", BucketName=IMPORT_BUCKET_NAME)


def test_the_dead_letter_queue_has_a_bound_on_retries() -> None:
    """Issue 8, item 10: a dead letter whose consumer keeps failing ends up in an archive, not in a loop."""
    stack = load_template(TEMPLATE, parameter_overrides={"DatabaseUrl": ""})
    dead_letters = stack.queues["ChunkDeadLetterQueue"]
    redrive = json.loads(dead_letters.attributes["RedrivePolicy"])
    chunk_queue_redrive = json.loads(stack.queues["ChunkQueue"].attributes["RedrivePolicy"])

    assert redrive["deadLetterTargetArn"] == stack.queues["ChunkDeadLetterArchive"].arn
    assert chunk_queue_redrive["deadLetterTargetArn"] == dead_letters.arn
    # A moved message keeps its receive count: the dead-letter consumer still gets tries of its own.
    assert chunk_queue_redrive["maxReceiveCount"] < redrive["maxReceiveCount"] <= 100
    assert "RedrivePolicy" not in stack.queues["ChunkDeadLetterArchive"].attributes


@pytest.mark.parametrize("function", ["WriterFunction", "DeadLetterFunction", "SweeperFunction", "ChunkerFunction"])
def test_every_function_that_may_send_chunks_again_may_send_to_the_chunk_queue(function: str) -> None:
    """A merge that finds staged rows missing sends their chunks again (ImportService._restage); the writers, the
    dead-letter consumer and the sweeper all merge."""
    assert has_policy(function, "SQSSendMessagePolicy", QueueName=CHUNK_QUEUE_NAME)


def test_the_writer_may_change_the_visibility_of_the_chunks_it_backs_off() -> None:
    """The SQS event source's managed policy (AWSLambdaSQSQueueExecutionRole) allows ReceiveMessage,
    DeleteMessage and GetQueueAttributes only: without ChangeMessageVisibility (in SQSPollerPolicy) every
    backoff is refused, and a failed chunk comes back after the queue's 720 s instead of 2 s."""
    assert has_policy("WriterFunction", "SQSPollerPolicy", QueueName=CHUNK_QUEUE_NAME)
    assert resource("WriterFunction")["Environment"]["Variables"]["CHUNK_RETRY_FIRST_SECONDS"] == "2"


def test_the_local_stack_runs_the_sweeper_and_the_chunker_with_short_bounds() -> None:
    """On the embedded stack a job interrupted by a fault finishes within two minutes (issue 8)."""
    local = json.loads((REPOSITORY_ROOT / "infra/local/env.json").read_text())
    lease = int(local["ChunkerFunction"]["CHUNKER_LEASE_SECONDS"])
    stall = int(local["SweeperFunction"]["SWEEP_STALL_SECONDS"])
    schedule = 10  # infra/local/stack.py's LOCAL_SCHEDULE_SECONDS default

    assert lease + schedule <= 60 and stall + schedule <= 60
