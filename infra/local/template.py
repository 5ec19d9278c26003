"""Load template.yaml into the typed model the embedded stack runs (infra/local/template_model.py).

Intrinsic functions are evaluated against *local* physical values (infra/local/intrinsics.py); a function's
events and function URL are read by infra/local/template_events.py. Only what the stack uses is modelled;
unknown resource types are ignored.

State machines (AWS::Serverless::StateMachine, AWS::StepFunctions::StateMachine) take their definition from
`DefinitionUri` (a JSON or YAML file relative to the template), `Definition` (inline) or `DefinitionString`;
`${Name}` placeholders are replaced from `DefinitionSubstitutions`, whose values may be intrinsics.
"""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from infra.local.intrinsics import Resolver, TemplateLoader, as_text, parameter_values
from infra.local.template_events import attach_events, function_url
from infra.local.template_model import (
    DEFAULT_STACK_NAME,
    STATE_MACHINE_TYPES,
    ApiAuthorizer,
    Bucket,
    Function,
    GatewayResponse,
    Layer,
    Queue,
    StackTemplate,
    StateMachine,
    Table,
    TemplateError,
)

_DEFINITION_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def virtualenv_site_packages() -> Path:
    return Path(sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})["purelib"])


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
    raw = yaml.load(path.read_text(), Loader=TemplateLoader)  # a SafeLoader subclass
    root = path.parent
    resolver = Resolver(raw, stack_name, parameter_values(raw, parameter_overrides or {}), aws_endpoint)
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
        elif resource_type in STATE_MACHINE_TYPES:
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
            functions[logical_id].url = function_url(logical_id, properties["FunctionUrlConfig"], metadata)

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


def _queue(resolver: Resolver, logical_id: str, properties: dict[str, Any]) -> Queue:
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
    resolver: Resolver,
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
        environment={name: as_text(value) for name, value in variables.items()},
        layers=[layers[layer] for layer in properties.get("Layers") or [] if layer in layers],
    )
    invoke_config = properties.get("EventInvokeConfig") or {}
    if "MaximumRetryAttempts" in invoke_config:
        function.async_attempts = int(invoke_config["MaximumRetryAttempts"]) + 1
    on_failure = (invoke_config.get("DestinationConfig") or {}).get("OnFailure") or {}
    if on_failure.get("Type") == "SQS":
        function.on_failure_queue_arn = str(on_failure["Destination"])
    attach_events(function, properties.get("Events") or {}, queues, default_authorizer)
    return function


def _state_machine(
    resolver: Resolver, logical_id: str, resource_type: str, properties: dict[str, Any], root: Path
) -> StateMachine:
    substitutions = {name: as_text(value) for name, value in (properties.get("DefinitionSubstitutions") or {}).items()}

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
