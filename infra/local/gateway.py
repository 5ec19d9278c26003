"""API Gateway (REST API, Lambda proxy integration v1) as the local functions host emulates it: the routes
of the template's Api events and the event a function gets for a request."""

from __future__ import annotations

import base64
import fnmatch
import re
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from infra.local.template_model import ACCOUNT_ID, ApiAuthorizer, Function, StackTemplate, TemplateError


@dataclass(frozen=True)
class Route:
    function: Function
    resource: str
    method: str
    pattern: re.Pattern[str]
    authorizer: ApiAuthorizer | None = None


def compile_routes(stack: StackTemplate) -> list[Route]:
    routes = []
    for function in stack.functions.values():
        for event in function.api_events:
            regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(event.path))
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
            if event.authorizer is not None and event.authorizer not in stack.api_authorizers:
                raise TemplateError(f"{function.logical_id}: {event.path} names an unknown authorizer")
            authorizer = stack.api_authorizers.get(event.authorizer) if event.authorizer else None
            routes.append(Route(function, event.path, event.method, re.compile(f"^{regex}$"), authorizer))
    # Literal segments win over parameters, as in API Gateway: /v1/imports/x before /v1/imports/{id}.
    routes.sort(key=lambda route: route.resource.count("{"))
    return routes


def is_binary(content_type: str, binary_media_types: list[str]) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    patterns = [pattern.replace("~1", "/").lower() for pattern in binary_media_types]
    return any(fnmatch.fnmatchcase(media_type or "*/*", pattern) for pattern in patterns)


def api_event(
    handler: BaseHTTPRequestHandler,
    route: Route,
    path_parameters: dict[str, str],
    body: bytes | None,
    stack: StackTemplate,
) -> dict[str, Any]:
    url = urlsplit(handler.path)
    multi_headers: dict[str, list[str]] = {}
    for name, value in handler.headers.items():
        multi_headers.setdefault(name, []).append(value)
    multi_query = parse_qs(url.query, keep_blank_values=True)
    encode = body is not None and is_binary(handler.headers.get("Content-Type", ""), stack.binary_media_types)
    request_id = str(uuid.uuid4())
    return {
        "resource": route.resource,
        "path": unquote(url.path),
        "httpMethod": handler.command,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {name: unquote(value) for name, value in path_parameters.items()} or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.resource,
            "httpMethod": handler.command,
            "path": f"/{stack.api_stage}{url.path}",
            "stage": stack.api_stage,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "protocol": handler.request_version,
            "identity": {"sourceIp": handler.client_address[0], "userAgent": handler.headers.get("User-Agent")},
            "requestTimeEpoch": int(time.time() * 1000),
        },
        "body": (base64.b64encode(body).decode() if encode else body.decode("utf-8", "replace"))
        if body is not None
        else None,
        "isBase64Encoded": bool(encode),
    }
