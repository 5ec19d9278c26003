"""How a function of template.yaml is invoked: its `Events` (Api, S3, Schedule, SQS; other types are ignored)
and its `FunctionUrlConfig`, read from properties whose intrinsics are already evaluated.

A function with `FunctionUrlConfig` is served by the functions host on its API port, at the path its
resource's `Metadata: {LocalUrlPath: /some/path}` names (the function sees the full request path, as behind
a CDN behaviour that forwards the path), or else at `/_url/<LogicalId>` (which stands for the function URL's
own host: the function sees the path after it). Any method and any sub-path under the path reach it.
"""

from __future__ import annotations

import re
from typing import Any

from infra.local.template_model import (
    ApiEvent,
    Function,
    FunctionUrl,
    Queue,
    S3Event,
    ScheduleEvent,
    SqsEvent,
    TemplateError,
)

_RATE = re.compile(r"^rate\(\s*([1-9]\d*)\s+(minute|minutes|hour|hours|day|days)\s*\)$")  # 0: AWS refuses it
_RATE_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def schedule_interval_seconds(expression: str) -> int:
    match = _RATE.match(expression.strip())
    if not match:
        raise TemplateError(f"schedule {expression!r}: the local stack runs rate(N minutes|hours|days) schedules only")
    return int(match[1]) * _RATE_UNIT_SECONDS[match[2].rstrip("s")]


def attach_events(
    function: Function, events: dict[str, Any], queues: dict[str, Queue], default_authorizer: str | None
) -> None:
    """Add the function's event sources to it; an SQS event must name a queue of the template."""
    for event_name, event in events.items():
        properties = event.get("Properties") or {}
        if event["Type"] == "Api":
            function.api_events.append(_api_event(properties, default_authorizer))
        elif event["Type"] == "S3":
            function.s3_events.append(_s3_event(properties))
        elif event["Type"] == "Schedule":
            function.schedule_events.append(_schedule_event(event_name, properties))
        elif event["Type"] == "SQS":
            function.sqs_events.append(_sqs_event(f"{function.logical_id}.{event_name}", properties, queues))


def _api_event(properties: dict[str, Any], default_authorizer: str | None) -> ApiEvent:
    authorizer = (properties.get("Auth") or {}).get("Authorizer", default_authorizer)
    return ApiEvent(
        properties["Path"],
        properties["Method"].upper(),
        None if authorizer in (None, "NONE") else str(authorizer),
    )


def _s3_event(properties: dict[str, Any]) -> S3Event:
    rules = ((properties.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
    by_name = {rule["Name"].lower(): rule["Value"] for rule in rules}
    events = properties["Events"]
    return S3Event(
        bucket=properties["Bucket"],
        events=events if isinstance(events, list) else [events],
        prefix=by_name.get("prefix"),
        suffix=by_name.get("suffix"),
    )


def _schedule_event(event_name: str, properties: dict[str, Any]) -> ScheduleEvent:
    expression = str(properties["Schedule"])
    return ScheduleEvent(
        event_name,
        expression,
        schedule_interval_seconds(expression),
        # SAM's `Enabled`, or the EventBridge rule's `State`: either one turns the schedule off.
        str(properties.get("Enabled", True)).lower() != "false"
        and str(properties.get("State", "ENABLED")).upper() != "DISABLED",
    )


def _sqs_event(where: str, properties: dict[str, Any], queues: dict[str, Queue]) -> SqsEvent:
    queue_arn = properties["Queue"]
    matching = [queue.url for queue in queues.values() if queue.arn == queue_arn]
    if not matching:
        raise TemplateError(f"{where}: unknown queue {queue_arn}")
    return SqsEvent(
        queue_arn=queue_arn,
        queue_url=matching[0],
        batch_size=int(properties.get("BatchSize", 10)),
        report_batch_item_failures="ReportBatchItemFailures" in (properties.get("FunctionResponseTypes") or []),
    )


def function_url(logical_id: str, config: dict[str, Any], metadata: dict[str, Any]) -> FunctionUrl:
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
