"""Local functions host: runs the template's functions for their Api, S3 and SQS events, their function URLs
and the Invoke API.

`python -m infra.local.functions_host` (the supervisor starts it). Configuration from the environment:
LOCAL_TEMPLATE (template.yaml), LOCAL_STATE_DIR (.state), LOCAL_ENV_FILE (infra/local/env.json), DATABASE_URL,
LOCAL_AWS_PORT (4566), LOCAL_API_PORT (3000), LOCAL_INVOKE_PORT (4567), LOCAL_MAX_REQUEST_BYTES (200 MiB; the
only request size limit, for Api routes and function URLs alike), LOCAL_SQS_CONCURRENCY (cpu count),
LOCAL_SQS_RETRY_DELAY_SECONDS (2: the async invoke retry delay), LOCAL_SCHEDULE_SECONDS (the interval of every
`Schedule` event; unset: the template's rate).

SQS event sources behave as Lambda's: a message whose invocation failed is left alone, so it comes back when its
visibility timeout (the queue's, or what the function set with ChangeMessageVisibility) runs out, and after the
queue's maxReceiveCount it moves to the dead-letter queue. `Schedule` events invoke the function with an
EventBridge "Scheduled Event" at their rate, one invocation at a time per schedule.

Function URLs (`FunctionUrlConfig`) are served on the API port too, since locally there is no URL host per
function. Where: the function resource's `Metadata: {LocalUrlPath: /v1/exports}` names the path, and the
function gets the full request path as rawPath (as behind a CDN that routes that path to the function URL);
without it, the path is `/_url/<LogicalId>`, which stands for the URL's own host: rawPath is what follows it.
Any method and any sub-path under the path reach the function, except requests an Api route of the template
matches (path and method): those go to the route. The event is Lambda's function URL event (payload format
2.0). InvokeMode RESPONSE_STREAM sends a handler's generator body with chunked transfer encoding as it is
produced, and closes the generator when the client goes away; BUFFERED collects it first. AuthType AWS_IAM
only asks for a SigV4-signed request (unsigned ones get AWS's 403); the signature is not checked.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.config import Config

from infra.local.stop_signal import StopSignal
from infra.local.template_model import (
    ACCOUNT_ID,
    REGION,
    ApiAuthorizer,
    Function,
    FunctionUrl,
    GatewayResponse,
    ScheduleEvent,
    StackTemplate,
    TemplateError,
)
from infra.local.workers import (
    BufferingSink,
    Functions,
    HostSettings,
    Outcome,
    ReceiverGone,
    WorkerGone,
    invoke_with_retries,
    load_stack,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
READY_PATH = "/_local/ready"


class IdleBackoff:
    """Pause between empty polls, doubling from 50 ms to 1 s: every request costs moto several milliseconds
    of CPU, so idle pollers must not ask often; the first message after a busy spell waits at most 50 ms."""

    SHORTEST_SECONDS = 0.05
    LONGEST_SECONDS = 1.0

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._pause = self.SHORTEST_SECONDS

    def after(self, found: bool) -> None:
        if found:
            self._pause = self.SHORTEST_SECONDS
            return
        self._stopping.wait(self._pause)
        self._pause = min(self._pause * 2, self.LONGEST_SECONDS)


@dataclass(frozen=True)
class HostConfig:
    settings: HostSettings
    api_port: int = 3000
    invoke_port: int = 4567
    max_request_bytes: int = 209_715_200
    sqs_concurrency: int = os.cpu_count() or 2
    retry_delay_seconds: int = 2
    schedule_seconds: float | None = None

    @classmethod
    def from_environment(cls) -> HostConfig:
        environ = os.environ
        return cls(
            settings=HostSettings(
                template_path=Path(environ.get("LOCAL_TEMPLATE", REPOSITORY_ROOT / "template.yaml")),
                state_dir=Path(environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state")).resolve(),
                aws_port=int(environ.get("LOCAL_AWS_PORT", "4566")),
                env_file=Path(environ.get("LOCAL_ENV_FILE", REPOSITORY_ROOT / "infra/local/env.json")),
                database_url=environ.get("DATABASE_URL") or None,
            ),
            api_port=int(environ.get("LOCAL_API_PORT", "3000")),
            invoke_port=int(environ.get("LOCAL_INVOKE_PORT", "4567")),
            max_request_bytes=int(environ.get("LOCAL_MAX_REQUEST_BYTES", "209715200")),
            sqs_concurrency=int(environ.get("LOCAL_SQS_CONCURRENCY", str(os.cpu_count() or 2))),
            retry_delay_seconds=int(environ.get("LOCAL_SQS_RETRY_DELAY_SECONDS", "2")),
            schedule_seconds=float(environ["LOCAL_SCHEDULE_SECONDS"])
            if environ.get("LOCAL_SCHEDULE_SECONDS")
            else None,
        )


def problem(status: int, title: str, detail: str, code: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    ).encode()


# ---------------------------------------------------------------------------- API Gateway (REST, v1 proxy)
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


# What API Gateway answers itself when the template does not customise it (GatewayResponses).
DEFAULT_GATEWAY_RESPONSES = {
    "UNAUTHORIZED": GatewayResponse(
        401, {"Content-Type": "application/json"}, {"application/json": '{"message":"Unauthorized"}'}
    ),
    "ACCESS_DENIED": GatewayResponse(
        403,
        {"Content-Type": "application/json"},
        {"application/json": '{"Message":"User is not authorized to access this resource with an explicit deny"}'},
    ),
    "AUTHORIZER_FAILURE": GatewayResponse(
        500, {"Content-Type": "application/json"}, {"application/json": '{"message": null}'}
    ),
}


@dataclass(frozen=True)
class AuthorizerVerdict:
    """What API Gateway makes of a Lambda authorizer's answer: the requestContext.authorizer the integration
    gets, or the gateway response it answers with instead."""

    context: dict[str, Any] | None = None
    refusal: str | None = None  # UNAUTHORIZED, ACCESS_DENIED or AUTHORIZER_FAILURE


def method_arn(stage: str, method: str, path: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:local/{stage}/{method}{path}"


def policy_allows(policy: Any, arn: str) -> bool:
    """IAM evaluation as API Gateway does it for execute-api:Invoke: an explicit Deny wins, else an Allow must
    match (resources with * and ? wildcards)."""
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict):
            continue  # not a statement: it grants nothing
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        # Action names are case-insensitive in IAM; resources are not.
        if not any(fnmatch.fnmatchcase("execute-api:invoke", str(action).lower()) for action in actions):
            continue
        if any(fnmatch.fnmatchcase(arn, str(resource)) for resource in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def authorizer_verdict(outcome: Outcome, arn: str) -> AuthorizerVerdict:
    if outcome.failed:
        error = outcome.json() or {}
        unauthorized = isinstance(error, dict) and error.get("errorMessage") == "Unauthorized"
        return AuthorizerVerdict(refusal="UNAUTHORIZED" if unauthorized else "AUTHORIZER_FAILURE")
    answer = outcome.json()
    if not isinstance(answer, dict) or "principalId" not in answer or "policyDocument" not in answer:
        return AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")
    statements = answer["policyDocument"].get("Statement") if isinstance(answer["policyDocument"], dict) else None
    statements = [statements] if isinstance(statements, dict) else statements
    if not isinstance(statements, list) or not all(isinstance(statement, dict) for statement in statements):
        return AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")  # API Gateway: a malformed policy is a 500
    if not policy_allows(answer["policyDocument"], arn):
        return AuthorizerVerdict(refusal="ACCESS_DENIED")
    return AuthorizerVerdict(context={**(answer.get("context") or {}), "principalId": answer["principalId"]})


def render_gateway_response(response: GatewayResponse, context: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; $context.<name> variables in the template are filled in."""
    template = response.templates.get("application/json") or next(iter(response.templates.values()), "")
    # Escaped as a JSON string's content: a hostile path must not break the body out of its quotes.
    body = re.sub(r"\$context\.(\w+)", lambda match: json.dumps(context.get(match[1], ""))[1:-1], template)
    return response.status, dict(response.headers), body.encode()


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


class _RequestTooLarge(Exception):
    pass


class _StreamingResponse:
    """Forwards a streamed function response to the HTTP client with chunked transfer encoding."""

    def __init__(self, handler: BaseHTTPRequestHandler):
        self.handler = handler

    def start(self, metadata: dict[str, Any]) -> None:
        try:
            self.handler.send_response(int(metadata.get("statusCode", 200)))
            for name, value in _response_headers(metadata):
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.handler.send_header(name, value)
            self.handler.send_header("Transfer-Encoding", "chunked")
            self.handler.end_headers()
        except OSError as error:
            raise ReceiverGone from error

    def write(self, data: bytes) -> None:
        try:
            self.handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.handler.wfile.flush()
        except OSError as error:  # a reset or broken pipe: the client disconnected
            raise ReceiverGone from error

    def end(self, outcome: Outcome) -> None:
        """Complete the body, or cut the connection so that the client sees a truncated one."""
        if outcome.failed or outcome.receiver_gone:
            self.handler.close_connection = True
            return
        try:
            self.handler.wfile.write(b"0\r\n\r\n")
            self.handler.wfile.flush()
        except OSError:
            self.handler.close_connection = True


def _response_headers(response: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [(name, str(value)) for name, value in (response.get("headers") or {}).items()]
    single = {name.lower() for name, _ in headers}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        if name.lower() not in single:
            headers.extend((name, str(value)) for value in values)
    # Payload format 2.0 (function URLs) returns cookies apart from the headers.
    headers.extend(("Set-Cookie", str(cookie)) for cookie in response.get("cookies") or [])
    return headers


# ---------------------------------------------------------------------------- Lambda function URLs
@dataclass(frozen=True)
class UrlMount:
    function: Function
    url: FunctionUrl

    def serves(self, path: str) -> bool:
        return path == self.url.path or path.startswith(self.url.path + "/")


def compile_url_mounts(stack: StackTemplate) -> list[UrlMount]:
    mounts = [UrlMount(function, function.url) for function in stack.functions.values() if function.url]
    # A path below another function's path belongs to its own function.
    return sorted(mounts, key=lambda mount: len(mount.url.path), reverse=True)


_TEXT_MEDIA_TYPES = {
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/yaml",
}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def is_text(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in _TEXT_MEDIA_TYPES or media_type.endswith(("+json", "+xml"))


def sigv4_access_key(handler: BaseHTTPRequestHandler) -> str | None:
    """The access key of a SigV4-signed request (header or presigned query), None if it is unsigned."""
    authorization = handler.headers.get("Authorization", "")
    if authorization.startswith("AWS4-HMAC-SHA256") and (match := _CREDENTIAL.search(authorization)):
        return match[1]
    credential = parse_qs(urlsplit(handler.path).query).get("X-Amz-Credential")
    return credential[0].split("/", 1)[0] if credential else None


def function_url_event(
    handler: BaseHTTPRequestHandler, mount: UrlMount, body: bytes | None, access_key: str | None
) -> dict[str, Any]:
    """Lambda's function URL event (payload format 2.0): lower-case headers, repeated values comma-joined."""
    url = urlsplit(handler.path)
    raw_path = url.path
    if mount.url.strips_path:
        raw_path = raw_path[len(mount.url.path) :] or "/"
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in handler.headers.items():
        if name.lower() == "cookie":
            cookies.extend(cookie.strip() for cookie in value.split(";") if cookie.strip())
        else:
            headers[name.lower()] = f"{headers[name.lower()]},{value}" if name.lower() in headers else value
    query = {name: ",".join(values) for name, values in parse_qs(url.query, keep_blank_values=True).items()}
    url_id = uuid.uuid5(uuid.NAMESPACE_URL, mount.function.arn).hex
    now = time.time()
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID if access_key else "anonymous",
        "apiId": url_id,
        "domainName": headers.get("host", url_id),
        "domainPrefix": url_id,
        "http": {
            "method": handler.command,
            "path": unquote(raw_path),
            "protocol": handler.request_version,
            "sourceIp": handler.client_address[0],
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if access_key:
        request_context["authorizer"] = {
            "iam": {
                "accessKey": access_key,
                "accountId": ACCOUNT_ID,
                "callerId": access_key,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/local",
                "userId": access_key,
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    # As on AWS, absent parts are left out rather than null.
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        text = is_text(headers.get("content-type", ""))
        event["body"] = body.decode("utf-8", "replace") if text else base64.b64encode(body).decode()
        event["isBase64Encoded"] = not text
    return event


def make_api_handler(host: FunctionsHost) -> type[BaseHTTPRequestHandler]:
    class ApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "bulkio-local-api"

        def log_message(self, format: str, *args: Any) -> None:
            host.access_log(f"API {self.address_string()} {format % args}")

        def _problem(self, status: int, title: str, detail: str, code: str, close: bool = False) -> None:
            body = problem(status, title, detail, code)
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _read_body(self) -> bytes | None:
            limit = host.config.max_request_bytes
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked(limit)
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                raise _RequestTooLarge
            return self.rfile.read(length) if length else None

        def _read_chunked(self, limit: int) -> bytes:
            parts: list[bytes] = []
            size = 0
            while chunk_size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
                size += chunk_size
                if size > limit:
                    raise _RequestTooLarge
                parts.append(self.rfile.read(chunk_size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                continue  # trailers
            return b"".join(parts)

        def _handle(self) -> None:
            path = urlsplit(self.path).path
            matching = [(route, match) for route in host.routes if (match := route.pattern.match(path))]
            allowed = [(route, match) for route, match in matching if route.method in (self.command, "ANY")]
            if not allowed and (mount := next((m for m in host.url_mounts if m.serves(path)), None)):
                self._serve_function_url(mount)
                return
            if not matching:
                self._problem(404, "Not Found", f"No route for {path}.", "not_found")
                return
            if not allowed:
                methods = ", ".join(sorted({route.method for route, _ in matching}))
                self._problem(405, "Method Not Allowed", f"{path} accepts {methods}.", "method_not_allowed")
                return
            route, match = allowed[0]
            authorizer_context = None
            if route.authorizer is not None:
                verdict = self._authorize(route.authorizer, path)
                if verdict.refusal:
                    self._gateway_response(verdict.refusal, path)
                    return
                authorizer_context = verdict.context
            accepted, body = self._body_within_limit(
                'For large files, POST /v1/imports with a JSON body without "url" to get a presigned upload URL, '
                "then PUT the file there."
            )
            if not accepted:
                return
            event = api_event(self, route, match.groupdict(), body, host.stack)
            if authorizer_context is not None:
                event["requestContext"]["authorizer"] = authorizer_context
            streaming = _StreamingResponse(self)
            outcome = host.functions.pool(route.function.logical_id).invoke(json.dumps(event).encode(), streaming)
            if outcome.streamed:
                streaming.end(outcome)
                return
            self._send_proxy_response(outcome)

        def _authorize(self, authorizer: ApiAuthorizer, path: str) -> AuthorizerVerdict:
            """As API Gateway runs a TOKEN authorizer: no identity header, no call (401)."""
            token = self.headers.get(authorizer.header)
            if not token:
                return AuthorizerVerdict(refusal="UNAUTHORIZED")
            arn = method_arn(host.stack.api_stage, self.command, path)
            event = {"type": "TOKEN", "authorizationToken": token, "methodArn": arn}
            pool = host.functions.pool(host.stack.function(authorizer.function_arn).logical_id)
            return authorizer_verdict(pool.invoke(json.dumps(event).encode()), arn)

        def _gateway_response(self, response_type: str, path: str) -> None:
            self._read_body_discarding()
            response = host.stack.gateway_responses.get(response_type) or DEFAULT_GATEWAY_RESPONSES[response_type]
            context = {"path": f"/{host.stack.api_stage}{path}", "requestId": str(uuid.uuid4())}
            status, headers, body = render_gateway_response(response, context)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read_body_discarding(self) -> None:
            """A refused request's body is read all the same, so the connection stays usable."""
            try:
                self._read_body()
            except _RequestTooLarge:
                self.close_connection = True

        def _body_within_limit(self, advice: str) -> tuple[bool, bytes | None]:
            """(True, the request body or None), or (False, None) after answering 413: the body is over
            LOCAL_MAX_REQUEST_BYTES."""
            try:
                return True, self._read_body()
            except _RequestTooLarge:
                detail = f"The request body exceeds {host.config.max_request_bytes} bytes. {advice}".strip()
                self._problem(413, "Payload Too Large", detail, "payload_too_large", close=True)
                return False, None

        def _serve_function_url(self, mount: UrlMount) -> None:
            access_key = sigv4_access_key(self)
            if mount.url.auth_type == "AWS_IAM" and access_key is None:
                self._send_response(
                    {
                        "statusCode": 403,
                        "headers": {"Content-Type": "application/json"},
                        "body": '{"Message":"Forbidden"}',
                    }
                )
                return
            accepted, body = self._body_within_limit("")
            if not accepted:
                return
            payload = json.dumps(function_url_event(self, mount, body, access_key)).encode()
            pool = host.functions.pool(mount.function.logical_id)
            if mount.url.invoke_mode == "RESPONSE_STREAM":
                streaming = _StreamingResponse(self)
                outcome = pool.invoke(payload, streaming)
                if outcome.streamed:
                    streaming.end(outcome)
                    return
            else:
                buffered = BufferingSink()
                outcome = pool.invoke(payload, buffered)
                if outcome.streamed and not outcome.failed:
                    body_bytes = b"".join(buffered.chunks)
                    self._send_response(
                        {**buffered.metadata, "body": base64.b64encode(body_bytes).decode(), "isBase64Encoded": True}
                    )
                    return
            if outcome.failed:
                self._function_failed(outcome, "The function failed.")
                return
            response = outcome.json()
            if not isinstance(response, dict) or "statusCode" not in response:
                # What Lambda infers for a function URL: the returned JSON is the body of a 200.
                response = {
                    "statusCode": 200,
                    "headers": {"Content-Type": "application/json"},
                    "body": outcome.payload.decode(),
                }
            self._send_response(response)

        def _function_failed(self, outcome: Outcome, detail: str) -> None:
            host.access_log(f"API 502: {outcome.payload[:2000].decode('utf-8', 'replace')}")
            self._problem(502, "Bad Gateway", detail, "function_error")

        def _send_proxy_response(self, outcome: Outcome) -> None:
            response = None if outcome.failed else outcome.json()
            if not isinstance(response, dict) or "statusCode" not in response:
                self._function_failed(
                    outcome, "The function failed." if outcome.failed else "The function returned no proxy response."
                )
                return
            self._send_response(response)

        def _send_response(self, response: dict[str, Any]) -> None:
            raw_body = response.get("body") or ""
            body = base64.b64decode(raw_body) if response.get("isBase64Encoded") else str(raw_body).encode()
            self.send_response(int(response.get("statusCode", 200)))
            for name, value in _response_headers(response):
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return ApiHandler


# ---------------------------------------------------------------------------- Lambda Invoke API
def make_invoke_handler(host: FunctionsHost) -> type[BaseHTTPRequestHandler]:
    class InvokeHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            host.access_log(f"Invoke {format % args}")

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if urlsplit(self.path).path == READY_PATH and host.ready.is_set():
                self._reply(200, b'{"ready": true}')
            else:
                self._reply(503 if urlsplit(self.path).path == READY_PATH else 404, b"{}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length) if length else b"{}"
            match = INVOKE_PATH.match(urlsplit(self.path).path)
            if not match:
                self._reply(404, json.dumps({"message": f"Unknown path {self.path}"}).encode())
                return
            name = unquote(match["name"])
            try:
                pool = host.functions.pool(name)
            except KeyError:
                error = {"Type": "User", "message": f"Function not found: {name}"}
                self._reply(404, json.dumps(error).encode(), {"x-amzn-ErrorType": "ResourceNotFoundException"})
                return
            request_id = str(uuid.uuid4())
            headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
            invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if invocation_type == "DryRun":
                self._reply(204, b"", headers)
                return
            if invocation_type == "Event":
                host.invoke_async(pool.function.logical_id, payload)
                self._reply(202, b"", headers)
                return
            outcome = pool.invoke(payload, request_id=request_id)
            if outcome.failed:
                headers["X-Amz-Function-Error"] = "Unhandled"
            self._reply(200, outcome.payload, headers)

    return InvokeHandler


# ---------------------------------------------------------------------------- event sources
def sqs_records(messages: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """SQS messages as Lambda's SQS event source hands them to a function."""
    records = []
    for message in messages:
        attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            attributes[name] = {
                "stringValue": value.get("StringValue"),
                "binaryValue": base64.b64encode(value["BinaryValue"]).decode() if "BinaryValue" in value else None,
                "stringListValues": value.get("StringListValues", []),
                "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])],
                "dataType": value["DataType"],
            }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": attributes,
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return records


def failed_message_ids(outcome: Outcome, message_ids: list[str], report_item_failures: bool) -> set[str]:
    """Messages to keep: all of them on an error; with ReportBatchItemFailures, the ones the function names."""
    if outcome.failed:
        return set(message_ids)
    if not report_item_failures:
        return set()
    response = outcome.json()
    failures = response.get("batchItemFailures") if isinstance(response, dict) else None
    if not failures:
        return set()
    named = {failure.get("itemIdentifier") for failure in failures if isinstance(failure, dict)}
    if not named <= set(message_ids):
        return set(message_ids)  # Lambda treats an unknown or empty identifier as a failure of the whole batch
    return {message_id for message_id in message_ids if message_id in named}


def internal_s3_queue_name(stack: StackTemplate, function: Function) -> str:
    return f"{stack.stack_name}-local-s3-events-{function.logical_id}"


class FunctionsHost:
    def __init__(self, config: HostConfig):
        self.config = config
        self.stack = load_stack(config.settings)
        self.functions = Functions(self.stack, config.settings)
        self.routes = compile_routes(self.stack)
        self.url_mounts = compile_url_mounts(self.stack)
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: list[ThreadingHTTPServer] = []
        self._access_log_lock = threading.Lock()

    def access_log(self, text: str) -> None:
        with self._access_log_lock:
            print(f"[host] {text}", flush=True)

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.config.settings.aws_endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2}),
        )

    def start(self) -> None:
        for port, handler in (
            (self.config.api_port, make_api_handler(self)),
            (self.config.invoke_port, make_invoke_handler(self)),
        ):
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            server.daemon_threads = True
            self._servers.append(server)
            self._spawn(server.serve_forever, f"http-{port}")
        self._wire_s3_notifications()
        for function in self.stack.functions.values():
            for schedule in function.schedule_events:
                if schedule.enabled:
                    self._spawn(
                        lambda f=function, s=schedule: self._run_schedule(f, s), f"schedule-{function.logical_id}"
                    )
            for event in function.sqs_events:
                for poller_no in range(self.config.sqs_concurrency):
                    self._spawn(
                        lambda f=function, e=event: self._poll_sqs(
                            f, e.queue_url, e.queue_arn, e.batch_size, e.report_batch_item_failures
                        ),
                        f"sqs-{function.logical_id}-{poller_no}",
                    )
        self.ready.set()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _wire_s3_notifications(self) -> None:
        """Buckets notify an internal queue per function (moto delivers to SQS); a poller invokes the function."""
        s3, sqs = self.client("s3"), self.client("sqs")
        configurations: dict[str, list[dict[str, Any]]] = {}
        for function in self.stack.functions.values():
            if not function.s3_events:
                continue
            queue_name = internal_s3_queue_name(self.stack, function)
            queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
            queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}"
            for index, event in enumerate(function.s3_events):
                rules = [
                    {"Name": name, "Value": value}
                    for name, value in (("prefix", event.prefix), ("suffix", event.suffix))
                    if value
                ]
                configuration: dict[str, Any] = {
                    "Id": f"{function.logical_id}-{index}",
                    "QueueArn": queue_arn,
                    "Events": event.events,
                }
                if rules:
                    configuration["Filter"] = {"Key": {"FilterRules": rules}}
                configurations.setdefault(event.bucket, []).append(configuration)
            self._spawn(lambda f=function, url=queue_url: self._poll_s3(f, url), f"s3-{function.logical_id}")
        for bucket, queue_configurations in configurations.items():
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configurations}
            )

    def _poll_s3(self, function: Function, queue_url: str) -> None:
        sqs = self.client("sqs")
        pool = self.functions.pool(function.logical_id)
        idle = IdleBackoff(self.stopping)
        while not self.stopping.is_set():
            messages = self._receive(sqs, queue_url, 1)
            idle.after(found=bool(messages))
            for message in messages:
                body = json.loads(message["Body"])
                attempts = int(message["Attributes"].get("ApproximateReceiveCount", "1"))
                if "Records" in body:  # the first message of a configured bucket is an s3:TestEvent
                    event = {"Records": body["Records"]}
                    outcome = pool.invoke(json.dumps(event).encode())
                    if outcome.failed and attempts < function.async_attempts:
                        sqs.change_message_visibility(
                            QueueUrl=queue_url,
                            ReceiptHandle=message["ReceiptHandle"],
                            VisibilityTimeout=self.config.retry_delay_seconds,
                        )
                        continue
                    if outcome.failed:
                        self._async_invocation_failed(function, event, outcome, attempts)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _receive(self, sqs: Any, queue_url: str, batch_size: int) -> list[dict[str, Any]]:
        try:
            messages = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch_size,
                # Short polls: moto's long poll spins while the queue holds in-flight messages, which would
                # burn a core during every import. An idle poller backs off instead (IdleBackoff).
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            return messages
        except Exception as error:  # the endpoint restarting must not kill the poller
            if not self.stopping.is_set():
                self.access_log(f"receive from {queue_url} failed: {error}")
                self.stopping.wait(1)
            return []

    def _poll_sqs(
        self, function: Function, queue_url: str, queue_arn: str, batch_size: int, report_item_failures: bool
    ) -> None:
        sqs = self.client("sqs")
        pool = self.functions.pool(function.logical_id)
        idle = IdleBackoff(self.stopping)
        while not self.stopping.is_set():
            messages = self._receive(sqs, queue_url, batch_size)
            idle.after(found=bool(messages))
            if not messages:
                continue
            outcome = pool.invoke(json.dumps({"Records": sqs_records(messages, queue_arn)}).encode())
            message_ids = [message["MessageId"] for message in messages]
            kept = failed_message_ids(outcome, message_ids, report_item_failures)
            done = [m for m in messages if m["MessageId"] not in kept]
            if done:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)],
                )
            # The kept ones are left as they are: they come back when their visibility timeout ends, the
            # queue's or the one the function chose (a writer backs off with ChangeMessageVisibility).

    def _run_schedule(self, function: Function, schedule: ScheduleEvent) -> None:
        interval = self.config.schedule_seconds or schedule.interval_seconds
        pool = self.functions.pool(function.logical_id)
        rule_arn = (
            f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{self.stack.stack_name}-{function.logical_id}-{schedule.name}"
        )
        while not self.stopping.wait(interval):
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": REGION,
                "resources": [rule_arn],
                "detail": {},
            }
            try:
                pool.invoke(json.dumps(event).encode())
            except WorkerGone:
                return  # the host is stopping

    def invoke_async(self, logical_id: str, payload: bytes) -> None:
        pool = self.functions.pool(logical_id)

        def run() -> None:
            attempts = pool.function.async_attempts
            outcome = invoke_with_retries(
                lambda: pool.invoke(payload), attempts, self.config.retry_delay_seconds, self.stopping
            )
            if outcome.failed:
                self._async_invocation_failed(pool.function, json.loads(payload or b"{}"), outcome, attempts)

        threading.Thread(target=run, name=f"async-{logical_id}", daemon=True).start()

    def _async_invocation_failed(self, function: Function, event: Any, outcome: Outcome, attempts: int) -> None:
        """Retries are exhausted: send Lambda's invocation record to the OnFailure destination, if any."""
        self.access_log(f"{function.name}: asynchronous invocation failed after {attempts} attempts")
        if not function.on_failure_queue_arn:
            return
        try:
            response_payload = json.loads(outcome.payload or b"null")
        except ValueError:
            response_payload = {"errorMessage": outcome.payload.decode("utf-8", "replace")}
        record = {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"{function.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": response_payload,
        }
        sqs = self.client("sqs")
        queue_name = function.on_failure_queue_arn.rsplit(":", 1)[-1]
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.functions.close()


def main() -> None:
    host = FunctionsHost(HostConfig.from_environment())
    stopped = StopSignal().install()
    host.start()
    config = host.config
    print(
        f"[host] functions host ready: API http://127.0.0.1:{config.api_port}, "
        f"Invoke API http://127.0.0.1:{config.invoke_port}",
        flush=True,
    )
    for mount in host.url_mounts:
        print(
            f"[host] function URL http://127.0.0.1:{config.api_port}{mount.url.path}/ -> {mount.function.name} "
            f"({mount.url.invoke_mode}, auth {mount.url.auth_type})",
            flush=True,
        )
    stopped.wait()
    host.stop()


if __name__ == "__main__":
    main()
