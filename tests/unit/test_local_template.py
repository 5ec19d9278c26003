"""Intrinsic functions and SAM conventions in the local stack's template loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local.template import load_template
from infra.local.template_model import TemplateError

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def write_template(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return path


INTRINSICS = """
Parameters:
  Stage: {Type: String, Default: dev}
  Subnets: {Type: CommaDelimitedList, Default: ""}
  Names: {Type: CommaDelimitedList, Default: "a,b,c"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [{Condition: IsProd}]
  InVpc: !Not [!Equals [!Join ["", !Ref Subnets], ""]]
  Both: !And [{Condition: NotProd}, !Or [{Condition: InVpc}, !Equals [x, x]]]
Globals:
  Function:
    Timeout: 30
    CodeUri: src
    Environment:
      Variables:
        SHARED: global
        OVERRIDDEN: global
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-q"
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dlq.Arn, maxReceiveCount: 3}
  Dlq:
    Type: AWS::SQS::Queue
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Join ["-", [!Ref AWS::StackName, t]]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Environment:
        Variables:
          OVERRIDDEN: function
          QUEUE_URL: !Ref Queue
          QUEUE_NAME: !GetAtt Queue.QueueName
          TABLE_ARN: {"Fn::GetAtt": [Table, Arn]}
          STAGE_KIND: !If [IsProd, production, !Sub "not-${Stage}"]
          BOTH: !If [Both, "yes", "no"]
          SECOND: !Select [1, !Ref Names]
          SPLIT: !Select [2, !Split [",", "x,y,z"]]
          PSEUDO: !Sub "${AWS::Region}/${AWS::AccountId}/${AWS::Partition}"
          LITERAL: !Sub "${!NotAVariable}"
          VARS: !Sub ["${A}-${Stage}", {A: !Ref AWS::Region}]
          GONE: !If [IsProd, here, !Ref AWS::NoValue]
      Events:
        Work:
          Type: SQS
          Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 5, FunctionResponseTypes: [ReportBatchItemFailures]}
"""


def test_intrinsics_resolve_to_local_physical_values(tmp_path: Path) -> None:
    stack = load_template(write_template(tmp_path, INTRINSICS), aws_endpoint="http://127.0.0.1:9999")

    variables = stack.functions["Fn"].environment
    assert variables["QUEUE_URL"] == "http://127.0.0.1:9999/123456789012/bulkio-local-q"
    assert variables["QUEUE_NAME"] == "bulkio-local-q"
    assert variables["TABLE_ARN"] == "arn:aws:dynamodb:us-east-1:123456789012:table/bulkio-local-t"
    assert variables["STAGE_KIND"] == "not-dev"
    assert variables["BOTH"] == "yes"
    assert variables["SECOND"] == "b"
    assert variables["SPLIT"] == "z"
    assert variables["PSEUDO"] == "us-east-1/123456789012/aws"
    assert variables["LITERAL"] == "${NotAVariable}"
    assert variables["VARS"] == "us-east-1-dev"
    assert "GONE" not in variables


def test_globals_merge_into_functions_and_function_wins(tmp_path: Path) -> None:
    function = load_template(write_template(tmp_path, INTRINSICS)).functions["Fn"]

    assert function.environment["SHARED"] == "global"
    assert function.environment["OVERRIDDEN"] == "function"
    assert function.timeout == 30
    assert function.code_dir == (tmp_path / "src").resolve()


def test_parameter_overrides_and_stack_name(tmp_path: Path) -> None:
    stack = load_template(
        write_template(tmp_path, INTRINSICS), parameter_overrides={"Stage": "prod"}, stack_name="other"
    )

    assert stack.functions["Fn"].environment["STAGE_KIND"] == "production"
    assert stack.functions["Fn"].environment["GONE"] == "here"
    assert stack.tables["Table"].name == "other-t"


def test_queues_tables_and_sqs_events(tmp_path: Path) -> None:
    stack = load_template(write_template(tmp_path, INTRINSICS))

    queue = stack.queues["Queue"]
    assert queue.dead_letter_arn == stack.queues["Dlq"].arn
    assert json.loads(queue.attributes["RedrivePolicy"])["maxReceiveCount"] == 3
    assert stack.queues["Dlq"].name == "bulkio-local-Dlq"  # unnamed resources get a stable local name
    assert stack.tables["Table"].ttl_attribute == "ttl"
    (event,) = stack.functions["Fn"].sqs_events
    assert (event.queue_url, event.batch_size, event.report_batch_item_failures) == (queue.url, 5, True)


def test_missing_parameter_value_is_an_error(tmp_path: Path) -> None:
    template = write_template(tmp_path, "Parameters:\n  Needed: {Type: String}\nResources: {}\n")

    with pytest.raises(TemplateError, match="Needed"):
        load_template(template)


def test_project_template_loads_with_local_values() -> None:
    stack = load_template(
        REPOSITORY_ROOT / "template.yaml", parameter_overrides={"DatabaseUrl": "postgresql://db", "MaxUploadBytes": "5"}
    )

    api = stack.function("bulkio-local-api")
    assert api.environment["DATABASE_URL"] == "postgresql://db"
    assert api.environment["MAX_UPLOAD_BYTES"] == "5"
    assert api.environment["IMPORT_BUCKET"] == stack.buckets["ImportBucket"].name == "bulkio-local-imports-123456789012"
    assert {(event.method, event.path) for event in api.api_events} >= {("GET", "/v1/imports/{job_id}")}
    layers = {layer.logical_id: layer for layer in api.layers}
    assert layers["CommonLayer"].folder == REPOSITORY_ROOT / "layers/common/python"
    assert layers["DependenciesLayer"].is_site_dir  # BuildMethod: the virtualenv's site-packages
    chunker = stack.functions["ChunkerFunction"]
    assert {event.prefix for event in chunker.s3_events} == {"uploads/", "drop/"}
    assert stack.binary_media_types == ["*~1*"]


STATE_MACHINES = """
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: jobs
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      Environment:
        Variables:
          MACHINE_ARN: !Ref FromFile
          MACHINE_NAME: !GetAtt Inline.Name
          SUBBED: !Sub "${FromFile}|${Inline.Arn}"
  FromFile:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: exports
      DefinitionUri: machines/export.asl.yaml
      DefinitionSubstitutions:
        WorkerArn: !GetAtt Worker.Arn
        JobsTable: !Ref Table
        Attempts: 3
  Inline:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      StateMachineType: EXPRESS
      Definition:
        StartAt: Call
        States:
          Call: {Type: Task, Resource: "${WorkerArn}", End: true}
      DefinitionSubstitutions:
        WorkerArn: !GetAtt Worker.Arn
"""

EXPORT_DEFINITION = """
StartAt: Run
States:
  Run:
    Type: Task
    Resource: arn:aws:states:::lambda:invoke
    Parameters: {FunctionName: "${WorkerArn}", Payload.$: $}
    Retry: [{ErrorEquals: [States.ALL], MaxAttempts: ${Attempts}}]
    Next: Mark
  Mark:
    Type: Task
    Resource: arn:aws:states:::dynamodb:updateItem
    Parameters: {TableName: "${JobsTable}", Key: {pk: {S.$: $.id}}}
    End: true
"""

WORKER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:bulkio-local-Worker"


def write_state_machines(tmp_path: Path, template: str = STATE_MACHINES) -> Path:
    (tmp_path / "machines").mkdir()
    (tmp_path / "machines/export.asl.yaml").write_text(EXPORT_DEFINITION)
    return write_template(tmp_path, template)


def test_state_machine_definitions_are_substituted_from_file_and_inline(tmp_path: Path) -> None:
    stack = load_template(write_state_machines(tmp_path))

    from_file = stack.state_machines["FromFile"]
    assert from_file.name == "exports"
    assert from_file.arn == "arn:aws:states:us-east-1:123456789012:stateMachine:exports"
    assert from_file.type == "STANDARD"
    run = from_file.definition["States"]["Run"]
    assert run["Parameters"]["FunctionName"] == WORKER_ARN == stack.functions["Worker"].arn
    assert run["Retry"][0]["MaxAttempts"] == 3  # substituted into the text, so a number stays a number
    assert from_file.definition["States"]["Mark"]["Parameters"]["TableName"] == "jobs"
    inline = stack.state_machines["Inline"]
    assert inline.name == "bulkio-local-Inline"
    assert inline.type == "EXPRESS"
    assert inline.definition["States"]["Call"]["Resource"] == WORKER_ARN


def test_functions_reference_state_machines_by_arn_and_name(tmp_path: Path) -> None:
    variables = load_template(write_state_machines(tmp_path)).functions["Worker"].environment

    assert variables["MACHINE_ARN"] == "arn:aws:states:us-east-1:123456789012:stateMachine:exports"
    assert variables["MACHINE_NAME"] == "bulkio-local-Inline"
    assert variables["SUBBED"] == (
        "arn:aws:states:us-east-1:123456789012:stateMachine:exports|"
        "arn:aws:states:us-east-1:123456789012:stateMachine:bulkio-local-Inline"
    )


def test_placeholder_without_substitution_is_an_error(tmp_path: Path) -> None:
    template = write_state_machines(tmp_path, STATE_MACHINES.replace("        JobsTable: !Ref Table\n", ""))

    with pytest.raises(TemplateError, match="JobsTable"):
        load_template(template)


FUNCTION_URLS = """
Resources:
  Exports:
    Type: AWS::Serverless::Function
    Metadata:
      LocalUrlPath: /v1/exports/
    Properties:
      Handler: app.handler
      FunctionUrlConfig: {AuthType: AWS_IAM, InvokeMode: RESPONSE_STREAM}
  Plain:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
      FunctionUrlConfig: {AuthType: NONE}
  NoUrl:
    Type: AWS::Serverless::Function
    Properties:
      Handler: app.handler
"""


def test_function_urls_are_served_at_their_local_path_or_under_url(tmp_path: Path) -> None:
    functions = load_template(write_template(tmp_path, FUNCTION_URLS)).functions

    exports, plain = functions["Exports"].url, functions["Plain"].url
    assert exports is not None and plain is not None
    assert (exports.path, exports.strips_path, exports.auth_type, exports.invoke_mode) == (
        "/v1/exports",
        False,
        "AWS_IAM",
        "RESPONSE_STREAM",
    )
    assert (plain.path, plain.strips_path, plain.auth_type, plain.invoke_mode) == (
        "/_url/Plain",
        True,
        "NONE",
        "BUFFERED",
    )
    assert functions["NoUrl"].url is None


@pytest.mark.parametrize(
    ("replaced", "replacement", "message"),
    [
        ("AuthType: NONE", "AuthType: OPEN", "AuthType"),
        ("InvokeMode: RESPONSE_STREAM", "InvokeMode: STREAM", "InvokeMode"),
        ("LocalUrlPath: /v1/exports/", "LocalUrlPath: v1/exports", "LocalUrlPath"),
    ],
)
def test_invalid_function_url_settings_are_errors(
    tmp_path: Path, replaced: str, replacement: str, message: str
) -> None:
    template = write_template(tmp_path, FUNCTION_URLS.replace(replaced, replacement))

    with pytest.raises(TemplateError, match=message):
        load_template(template)
