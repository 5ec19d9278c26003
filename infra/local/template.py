"""Load template.yaml into a typed model the embedded stack can run.

Intrinsic functions are evaluated against *local* physical values: queues resolve to URLs on the local
endpoint, tables and buckets to their names, state machines to their ARNs. Only what the stack uses is
modelled; unknown resource types are ignored.

State machines (AWS::Serverless::StateMachine, AWS::StepFunctions::StateMachine) take their definition from
`DefinitionUri` (a JSON or YAML file relative to the template), `Definition` (inline) or `DefinitionString`;
`${Name}` placeholders are replaced from `DefinitionSubstitutions`, whose values may be intrinsics.

A function with `FunctionUrlConfig` is served by the functions host on its API port, at the path its
resource's `Metadata: {LocalUrlPath: /some/path}` names (the function sees the full request path, as behind
a CDN behaviour that forwards the path), or else at `/_url/<LogicalId>` (which stands for the function URL's
own host: the function sees the path after it). Any method and any sub-path under the path reach it.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_STACK_NAME = "bulkio-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
PARTITION = "aws"
NO_VALUE = object()  # AWS::NoValue: the enclosing key or list item disappears

_SHORT_FORMS = (
    "Ref",
    "GetAtt",
    "Sub",
    "Join",
    "If",
    "Equals",
    "Not",
    "Select",
    "Split",
    "And",
    "Or",
    "Condition",
    "FindInMap",
    "Base64",
    "GetAZs",
    "ImportValue",
    "Cidr",
)


_STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
_DEFINITION_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` into `{"Ref": "x"}` (the long form), so one evaluator handles both."""


def _construct_short_form(loader: _TemplateLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            # !GetAtt Res.Attr is the string form of ["Res", "Attr"].
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _construct_short_form)


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


_RATE = re.compile(r"^rate\(\s*([1-9]\d*)\s+(minute|minutes|hour|hours|day|days)\s*\)$")  # 0: AWS refuses it
_RATE_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_interval_seconds(expression: str) -> int:
    match = _RATE.match(expression.strip())
    if not match:
        raise TemplateError(f"schedule {expression!r}: the local stack runs rate(N minutes|hours|days) schedules only")
    return int(match[1]) * _RATE_UNIT_SECONDS[match[2].rstrip("s")]


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


def virtualenv_site_packages() -> Path:
    return Path(sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})["purelib"])


class _Resolver:
    def __init__(self, raw: dict[str, Any], stack_name: str, parameters: dict[str, Any], aws_endpoint: str):
        self.raw = raw
        self.resources: dict[str, Any] = raw.get("Resources") or {}
        self.stack_name = stack_name
        self.parameters = parameters
        self.aws_endpoint = aws_endpoint.rstrip("/")
        self.conditions: dict[str, bool] = {}
        self._raw_conditions: dict[str, Any] = raw.get("Conditions") or {}

    # ------------------------------------------------------------------ references
    def pseudo(self, name: str) -> Any:
        values = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
            "AWS::NoValue": NO_VALUE,
        }
        if name not in values:
            raise TemplateError(f"unsupported pseudo parameter {name}")
        return values[name]

    def physical_name(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        properties = resource.get("Properties") or {}
        name_property = {
            "AWS::S3::Bucket": "BucketName",
            "AWS::SQS::Queue": "QueueName",
            "AWS::DynamoDB::Table": "TableName",
            "AWS::Serverless::Function": "FunctionName",
            "AWS::Serverless::StateMachine": "Name",
            "AWS::StepFunctions::StateMachine": "StateMachineName",
        }.get(resource["Type"])
        if name_property and properties.get(name_property) is not None:
            return str(self.evaluate(properties[name_property]))
        # CloudFormation would generate a name; a stable, readable one is enough locally.
        return f"{self.stack_name}-{logical_id}"

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise TemplateError(f"Ref to unknown parameter or resource {name}")
        resource_type = self.resources[name]["Type"]
        if resource_type == "AWS::SQS::Queue":
            return f"{self.aws_endpoint}/{ACCOUNT_ID}/{self.physical_name(name)}"
        if resource_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::Serverless::Function"):
            return self.physical_name(name)
        if resource_type in _STATE_MACHINE_TYPES:
            return self.get_att(name, "Arn")
        # Layers (the host maps logical ids to folders), APIs and anything else: the logical id.
        return name

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self.resources:
            raise TemplateError(f"GetAtt on unknown resource {logical_id}")
        resource_type = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        state_machine = {"Arn": f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}", "Name": name}
        attributes: dict[str, dict[str, str]] = {
            "AWS::SQS::Queue": {
                "Arn": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT_ID}:{name}",
                "QueueName": name,
                "QueueUrl": f"{self.aws_endpoint}/{ACCOUNT_ID}/{name}",
            },
            "AWS::DynamoDB::Table": {"Arn": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"},
            "AWS::S3::Bucket": {"Arn": f"arn:{PARTITION}:s3:::{name}"},
            "AWS::Serverless::Function": {"Arn": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"},
            "AWS::Serverless::StateMachine": state_machine,
            "AWS::StepFunctions::StateMachine": state_machine,
        }.get(resource_type, {})
        if attribute not in attributes:
            raise TemplateError(f"unsupported GetAtt {logical_id}.{attribute}")
        return attributes[attribute]

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            if name not in self._raw_conditions:
                raise TemplateError(f"unknown condition {name}")
            self.conditions[name] = bool(self.evaluate(self._raw_conditions[name]))
        return self.conditions[name]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.evaluate(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key[4:], argument)
        evaluated = {key: self.evaluate(value) for key, value in node.items()}
        return {key: value for key, value in evaluated.items() if value is not NO_VALUE}

    def _function(self, name: str, argument: Any) -> Any:
        if name == "GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.get_att(self.evaluate(logical_id), self.evaluate(attribute))
        if name == "Sub":
            return self._sub(argument)
        if name == "Join":
            delimiter, values = argument
            return str(delimiter).join(str(value) for value in self._as_list(values))
        if name == "If":
            condition_name, when_true, when_false = argument
            return self.evaluate(when_true if self.condition(condition_name) else when_false)
        if name == "Equals":
            left, right = (self.evaluate(value) for value in argument)
            return str(left) == str(right) if not isinstance(left, list | dict) else left == right
        if name == "Not":
            return not self.evaluate(argument[0])
        if name == "And":
            return all(self.evaluate(value) for value in argument)
        if name == "Or":
            return any(self.evaluate(value) for value in argument)
        if name == "Select":
            index, values = argument
            return self._as_list(values)[int(self.evaluate(index))]
        if name == "Split":
            delimiter, value = argument
            return str(self.evaluate(value)).split(delimiter)
        if name == "Base64":
            return base64.b64encode(str(self.evaluate(argument)).encode()).decode()
        if name == "FindInMap":
            map_name, top_key, second_key = (self.evaluate(value) for value in argument)
            return self.evaluate(self.raw["Mappings"][map_name][top_key][second_key])
        raise TemplateError(f"unsupported intrinsic Fn::{name}")

    def _as_list(self, values: Any) -> list[Any]:
        evaluated = self.evaluate(values)
        if not isinstance(evaluated, list):
            raise TemplateError(f"expected a list, got {evaluated!r}")
        return evaluated

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {key: self.evaluate(value) for key, value in argument[1].items()}
        else:
            text, variables = argument, {}
        result: list[str] = []
        position = 0
        while True:
            start = text.find("${", position)
            if start < 0:
                result.append(text[position:])
                return "".join(result)
            result.append(text[position:start])
            if text.startswith("${!", start):  # ${!Literal} is the escape for a literal ${Literal}
                end = text.index("}", start)
                result.append("${" + text[start + 3 : end] + "}")
                position = end + 1
                continue
            end = text.index("}", start)
            variable = text[start + 2 : end].strip()
            if variable in variables:
                value = variables[variable]
            elif "." in variable and not variable.startswith("AWS::"):
                value = self.get_att(*variable.split(".", 1))
            else:
                value = self.ref(variable)
            result.append(_as_text(value))
            position = end + 1


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _parameter_values(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, declaration in (raw.get("Parameters") or {}).items():
        if name in overrides and overrides[name] is not None:
            value = overrides[name]
        elif "Default" in declaration:
            value = declaration["Default"]
        else:
            raise TemplateError(f"parameter {name} has no default and no override")
        if declaration.get("Type") == "CommaDelimitedList" and not isinstance(value, list):
            value = str(value).split(",")
        values[name] = value
    return values


def _merge_globals(properties: dict[str, Any], globals_: dict[str, Any]) -> dict[str, Any]:
    merged = {**globals_, **properties}
    global_variables = (globals_.get("Environment") or {}).get("Variables") or {}
    own_variables = (properties.get("Environment") or {}).get("Variables") or {}
    merged["Environment"] = {"Variables": {**global_variables, **own_variables}}
    if "Layers" in globals_ and "Layers" in properties:
        # SAM appends the function's layers to the global ones.
        merged["Layers"] = [*globals_["Layers"], *properties["Layers"]]
    return merged


def load_template(
    path: Path,
    *,
    parameter_overrides: dict[str, Any] | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    aws_endpoint: str = "http://127.0.0.1:4566",
    site_packages: Path | None = None,
) -> StackTemplate:
    path = path.resolve()
    raw = yaml.load(path.read_text(), Loader=_TemplateLoader)  # a SafeLoader subclass
    root = path.parent
    resolver = _Resolver(raw, stack_name, _parameter_values(raw, parameter_overrides or {}), aws_endpoint)
    resources: dict[str, Any] = raw.get("Resources") or {}
    function_globals = ((raw.get("Globals") or {}).get("Function")) or {}
    api_globals = ((raw.get("Globals") or {}).get("Api")) or {}

    layers: dict[str, Layer] = {}
    buckets: dict[str, Bucket] = {}
    queues: dict[str, Queue] = {}
    tables: dict[str, Table] = {}
    state_machines: dict[str, StateMachine] = {}
    binary_media_types: list[str] = list(api_globals.get("BinaryMediaTypes") or [])
    api_stage = "prod"
    api_authorizers: dict[str, ApiAuthorizer] = {}
    default_authorizer: str | None = None
    gateway_responses: dict[str, GatewayResponse] = {}
    for logical_id, resource in resources.items():
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        properties = resolver.evaluate(resource.get("Properties") or {})
        resource_type = resource["Type"]
        if resource_type in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            built = bool((resource.get("Metadata") or {}).get("BuildMethod"))
            content = properties.get("ContentUri") or properties.get("Content") or "."
            folder = (site_packages or virtualenv_site_packages()) if built else root / content / "python"
            layers[logical_id] = Layer(logical_id, folder, is_site_dir=built)
        elif resource_type == "AWS::S3::Bucket":
            versioning = (properties.get("VersioningConfiguration") or {}).get("Status")
            buckets[logical_id] = Bucket(logical_id, resolver.physical_name(logical_id), versioning == "Enabled")
        elif resource_type == "AWS::SQS::Queue":
            queues[logical_id] = _queue(resolver, logical_id, properties)
        elif resource_type == "AWS::DynamoDB::Table":
            ttl = properties.get("TimeToLiveSpecification") or {}
            tables[logical_id] = Table(
                logical_id=logical_id,
                name=resolver.physical_name(logical_id),
                arn=resolver.get_att(logical_id, "Arn"),
                key_schema=properties["KeySchema"],
                attribute_definitions=properties["AttributeDefinitions"],
                ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled", True) else None,
                global_secondary_indexes=properties.get("GlobalSecondaryIndexes") or [],
            )
        elif resource_type == "AWS::Serverless::Api":
            binary_media_types.extend(properties.get("BinaryMediaTypes") or [])
            api_stage = str(properties.get("StageName") or api_stage)
            auth = properties.get("Auth") or {}
            api_authorizers.update(_api_authorizers(logical_id, auth))
            default_authorizer = auth.get("DefaultAuthorizer") or default_authorizer
            gateway_responses.update(_gateway_responses(properties.get("GatewayResponses") or {}))
        elif resource_type in _STATE_MACHINE_TYPES:
            state_machines[logical_id] = _state_machine(resolver, logical_id, resource_type, properties, root)

    functions: dict[str, Function] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        properties = resolver.evaluate(_merge_globals(resource.get("Properties") or {}, function_globals))
        functions[logical_id] = _function(resolver, logical_id, properties, root, layers, queues, default_authorizer)
        if properties.get("FunctionUrlConfig"):
            metadata = resolver.evaluate(resource.get("Metadata") or {})
            functions[logical_id].url = _function_url(logical_id, properties["FunctionUrlConfig"], metadata)

    return StackTemplate(
        stack_name=stack_name,
        root=root,
        functions=functions,
        buckets=buckets,
        queues=queues,
        tables=tables,
        binary_media_types=binary_media_types,
        api_stage=api_stage,
        state_machines=state_machines,
        api_authorizers=api_authorizers,
        gateway_responses=gateway_responses,
    )


def _api_authorizers(api_logical_id: str, auth: dict[str, Any]) -> dict[str, ApiAuthorizer]:
    authorizers = {}
    for name, config in (auth.get("Authorizers") or {}).items():
        if "FunctionArn" not in config:
            raise TemplateError(f"{api_logical_id}.Auth.Authorizers.{name}: only Lambda authorizers run locally")
        if str(config.get("FunctionPayloadType", "TOKEN")).upper() != "TOKEN":
            raise TemplateError(f"{api_logical_id}.Auth.Authorizers.{name}: only TOKEN authorizers run locally")
        header = str((config.get("Identity") or {}).get("Header") or "Authorization")
        authorizers[name] = ApiAuthorizer(name, str(config["FunctionArn"]), header)
    return authorizers


def _gateway_responses(responses: dict[str, Any]) -> dict[str, GatewayResponse]:
    def unquoted(value: Any) -> str:  # header values are mapping expressions: 'literal' in single quotes
        text = str(value)
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text

    return {
        response_type: GatewayResponse(
            status=int(config.get("StatusCode", 0)),
            headers={
                name: unquoted(value)
                for name, value in ((config.get("ResponseParameters") or {}).get("Headers") or {}).items()
            },
            templates={name: str(body) for name, body in (config.get("ResponseTemplates") or {}).items()},
        )
        for response_type, config in responses.items()
    }


def _queue(resolver: _Resolver, logical_id: str, properties: dict[str, Any]) -> Queue:
    name = resolver.physical_name(logical_id)
    attributes: dict[str, str] = {}
    for property_name in (
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "ReceiveMessageWaitTimeSeconds",
        "MaximumMessageSize",
    ):
        if property_name in properties:
            attributes[property_name] = str(properties[property_name])
    dead_letter_arn = None
    if "RedrivePolicy" in properties:
        policy = properties["RedrivePolicy"]
        dead_letter_arn = policy["deadLetterTargetArn"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": int(policy["maxReceiveCount"])}
        )
    return Queue(
        logical_id=logical_id,
        name=name,
        url=resolver.ref(logical_id),
        arn=resolver.get_att(logical_id, "Arn"),
        attributes=attributes,
        dead_letter_arn=dead_letter_arn,
    )


def _function(
    resolver: _Resolver,
    logical_id: str,
    properties: dict[str, Any],
    root: Path,
    layers: dict[str, Layer],
    queues: dict[str, Queue],
    default_authorizer: str | None = None,
) -> Function:
    variables = (properties.get("Environment") or {}).get("Variables") or {}
    function = Function(
        logical_id=logical_id,
        name=str(properties.get("FunctionName") or resolver.physical_name(logical_id)),
        code_dir=(root / properties.get("CodeUri", ".")).resolve(),
        handler=properties["Handler"],
        timeout=int(properties.get("Timeout", 3)),
        memory=int(properties.get("MemorySize", 128)),
        environment={name: _as_text(value) for name, value in variables.items()},
        layers=[layers[layer] for layer in properties.get("Layers") or [] if layer in layers],
    )
    invoke_config = properties.get("EventInvokeConfig") or {}
    if "MaximumRetryAttempts" in invoke_config:
        function.async_attempts = int(invoke_config["MaximumRetryAttempts"]) + 1
    on_failure = (invoke_config.get("DestinationConfig") or {}).get("OnFailure") or {}
    if on_failure.get("Type") == "SQS":
        function.on_failure_queue_arn = str(on_failure["Destination"])
    for event_name, event in (properties.get("Events") or {}).items():
        event_properties = event.get("Properties") or {}
        if event["Type"] == "Api":
            authorizer = (event_properties.get("Auth") or {}).get("Authorizer", default_authorizer)
            function.api_events.append(
                ApiEvent(
                    event_properties["Path"],
                    event_properties["Method"].upper(),
                    None if authorizer in (None, "NONE") else str(authorizer),
                )
            )
        elif event["Type"] == "S3":
            rules = ((event_properties.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            by_name = {rule["Name"].lower(): rule["Value"] for rule in rules}
            events = event_properties["Events"]
            function.s3_events.append(
                S3Event(
                    bucket=event_properties["Bucket"],
                    events=events if isinstance(events, list) else [events],
                    prefix=by_name.get("prefix"),
                    suffix=by_name.get("suffix"),
                )
            )
        elif event["Type"] == "Schedule":
            expression = str(event_properties["Schedule"])
            function.schedule_events.append(
                ScheduleEvent(
                    event_name,
                    expression,
                    schedule_interval_seconds(expression),
                    # SAM's `Enabled`, or the EventBridge rule's `State`: either one turns the schedule off.
                    str(event_properties.get("Enabled", True)).lower() != "false"
                    and str(event_properties.get("State", "ENABLED")).upper() != "DISABLED",
                )
            )
        elif event["Type"] == "SQS":
            queue_arn = event_properties["Queue"]
            matching = [queue.url for queue in queues.values() if queue.arn == queue_arn]
            if not matching:
                raise TemplateError(f"{logical_id}.{event_name}: unknown queue {queue_arn}")
            queue_url = matching[0]
            function.sqs_events.append(
                SqsEvent(
                    queue_arn=queue_arn,
                    queue_url=queue_url,
                    batch_size=int(event_properties.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures"
                    in (event_properties.get("FunctionResponseTypes") or []),
                )
            )
    return function


def _state_machine(
    resolver: _Resolver, logical_id: str, resource_type: str, properties: dict[str, Any], root: Path
) -> StateMachine:
    substitutions = {name: _as_text(value) for name, value in (properties.get("DefinitionSubstitutions") or {}).items()}

    def substitute(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            if match[1] not in substitutions:
                raise TemplateError(f"{logical_id}: no DefinitionSubstitutions value for ${{{match[1]}}}")
            return substitutions[match[1]]

        return _DEFINITION_PLACEHOLDER.sub(value, text)

    definition_uri = properties.get("DefinitionUri")
    if isinstance(definition_uri, str):
        path = root / definition_uri
        # As CloudFormation does with a definition file: the text is substituted, then parsed.
        text = substitute(path.read_text())
        definition = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    elif definition_uri is not None:
        raise TemplateError(f"{logical_id}: only a local file path is supported as DefinitionUri")
    elif "DefinitionString" in properties:
        definition = json.loads(substitute(str(properties["DefinitionString"])))
    elif "Definition" in properties:
        definition = _substitute_strings(properties["Definition"], substitute)
    else:
        raise TemplateError(f"{logical_id}: a state machine needs DefinitionUri, Definition or DefinitionString")
    type_property = "Type" if resource_type == "AWS::Serverless::StateMachine" else "StateMachineType"
    return StateMachine(
        logical_id=logical_id,
        name=resolver.physical_name(logical_id),
        arn=resolver.get_att(logical_id, "Arn"),
        definition=definition,
        type=str(properties.get(type_property) or "STANDARD"),
    )


def _substitute_strings(node: Any, substitute: Any) -> Any:
    """An inline definition is substituted string by string, keys included, so no value can break its shape."""
    if isinstance(node, dict):
        return {substitute(key): _substitute_strings(value, substitute) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute_strings(item, substitute) for item in node]
    return substitute(node) if isinstance(node, str) else node


def _function_url(logical_id: str, config: dict[str, Any], metadata: dict[str, Any]) -> FunctionUrl:
    auth_type = str(config.get("AuthType") or "")
    invoke_mode = str(config.get("InvokeMode") or "BUFFERED")
    if auth_type not in ("NONE", "AWS_IAM"):
        raise TemplateError(f"{logical_id}: FunctionUrlConfig.AuthType must be NONE or AWS_IAM")
    if invoke_mode not in ("BUFFERED", "RESPONSE_STREAM"):
        raise TemplateError(f"{logical_id}: FunctionUrlConfig.InvokeMode must be BUFFERED or RESPONSE_STREAM")
    local_path = metadata.get("LocalUrlPath")
    if local_path is None:
        return FunctionUrl(auth_type, invoke_mode, f"/_url/{logical_id}", strips_path=True)
    if not str(local_path).startswith("/") or str(local_path) == "/":
        raise TemplateError(f"{logical_id}: Metadata.LocalUrlPath must be a path below /, such as /v1/exports")
    return FunctionUrl(auth_type, invoke_mode, str(local_path).rstrip("/"), strips_path=False)
