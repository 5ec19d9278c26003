"""The typed model of template.yaml that the embedded stack runs: the stack's functions with their event
sources, its buckets, queues, tables, state machines and API settings, named by their *local* physical values
(see infra/local/template.py, which builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STACK_NAME = "bulkio-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


@dataclass(frozen=True)
class ApiEvent:
    path: str
    method: str
    authorizer: str | None = None  # the name of the Api's authorizer that guards the route; None: open


@dataclass(frozen=True)
class ApiAuthorizer:
    """A Lambda authorizer of the Api (TOKEN type: the identity is one header)."""

    name: str
    function_arn: str
    header: str


@dataclass(frozen=True)
class GatewayResponse:
    """An answer API Gateway gives itself (UNAUTHORIZED, ACCESS_DENIED...), from the Api's GatewayResponses."""

    status: int
    headers: dict[str, str]
    templates: dict[str, str]


@dataclass(frozen=True)
class S3Event:
    bucket: str
    events: list[str]
    prefix: str | None = None
    suffix: str | None = None


@dataclass(frozen=True)
class ScheduleEvent:
    """An EventBridge schedule (`Type: Schedule`): rate(N minute|minutes|hour|hours|day|days) only."""

    name: str
    expression: str
    interval_seconds: int
    enabled: bool = True


@dataclass(frozen=True)
class FunctionUrl:
    auth_type: str  # NONE or AWS_IAM
    invoke_mode: str  # BUFFERED or RESPONSE_STREAM
    path: str  # where the functions host serves it: no trailing slash
    strips_path: bool  # the function sees the request path after `path` (the default mount), not all of it


@dataclass(frozen=True)
class SqsEvent:
    queue_arn: str
    queue_url: str
    batch_size: int
    report_batch_item_failures: bool


@dataclass
class Layer:
    logical_id: str
    folder: Path
    # A layer built from requirements (Metadata.BuildMethod) is served by the virtualenv's site-packages.
    is_site_dir: bool


@dataclass
class Function:
    logical_id: str
    name: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    layers: list[Layer]
    api_events: list[ApiEvent] = field(default_factory=list)
    s3_events: list[S3Event] = field(default_factory=list)
    sqs_events: list[SqsEvent] = field(default_factory=list)
    schedule_events: list[ScheduleEvent] = field(default_factory=list)
    # Asynchronous invocations (S3 events, InvocationType=Event): tries in all, and where a failure goes.
    async_attempts: int = 3
    on_failure_queue_arn: str | None = None
    url: FunctionUrl | None = None

    @property
    def arn(self) -> str:
        return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{self.name}"


@dataclass
class Bucket:
    logical_id: str
    name: str
    versioned: bool = False


@dataclass
class Queue:
    logical_id: str
    name: str
    url: str
    arn: str
    attributes: dict[str, str]
    dead_letter_arn: str | None = None


@dataclass
class Table:
    logical_id: str
    name: str
    arn: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    ttl_attribute: str | None = None
    global_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StateMachine:
    logical_id: str
    name: str
    arn: str
    definition: dict[str, Any]
    type: str


@dataclass
class StackTemplate:
    stack_name: str
    root: Path
    functions: dict[str, Function]
    buckets: dict[str, Bucket]
    queues: dict[str, Queue]
    tables: dict[str, Table]
    binary_media_types: list[str]
    api_stage: str = "prod"
    state_machines: dict[str, StateMachine] = field(default_factory=dict)
    api_authorizers: dict[str, ApiAuthorizer] = field(default_factory=dict)
    gateway_responses: dict[str, GatewayResponse] = field(default_factory=dict)

    def function(self, name_or_logical_id: str) -> Function:
        """Find a function by logical id, FunctionName or ARN (with or without a qualifier)."""
        wanted = name_or_logical_id
        if wanted.startswith("arn:"):
            wanted = wanted.split(":")[6]
        for function in self.functions.values():
            if wanted in (function.logical_id, function.name):
                return function
        raise KeyError(name_or_logical_id)
