"""CloudFormation intrinsic functions, evaluated against the embedded stack's *local* physical values: queues
resolve to URLs on the local endpoint, tables and buckets to their names, state machines to their ARNs.

TemplateLoader reads the YAML short forms (`!Ref x`, `!GetAtt A.b`, `!Sub ...`) as their long forms, so that
Resolver.evaluate handles both.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from infra.local.template_model import ACCOUNT_ID, PARTITION, REGION, STATE_MACHINE_TYPES, TemplateError

NO_VALUE = object()  # AWS::NoValue: the enclosing key or list item disappears


class TemplateLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Ref x` into `{"Ref": "x"}` (the long form), so one evaluator handles both."""


def _construct_short_form(loader: TemplateLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
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


TemplateLoader.add_multi_constructor("!", _construct_short_form)


class Resolver:
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
        if resource_type in STATE_MACHINE_TYPES:
            return self.get_att(name, "Arn")
        # Layers (the host maps logical ids to folders), APIs and anything else: the logical id.
        return name

    def get_att(self, logical_id: str, attribute: str) -> Any:
        if logical_id not in self.resources:
            raise TemplateError(f"GetAtt on unknown resource {logical_id}")
        resource_type = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        state_machine = {"Arn": f"arn:{PARTITION}:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}", "Name": name}
        attributes_by_type: dict[str, dict[str, str]] = {
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
        }
        attributes = attributes_by_type.get(resource_type, {})
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
            result.append(as_text(value))
            position = end + 1


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def parameter_values(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
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
