"""The HTTP server of the functions host's API port: Api routes (with their authorizers) and function URLs."""

from __future__ import annotations

import base64
import json
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from infra.local.function_urls import UrlMount, function_url_event, sigv4_access_key
from infra.local.gateway import api_event
from infra.local.gateway_auth import (
    DEFAULT_GATEWAY_RESPONSES,
    AuthorizerVerdict,
    authorizer_verdict,
    method_arn,
    render_gateway_response,
)
from infra.local.template_model import ApiAuthorizer
from infra.local.workers import BufferingSink, Outcome, ReceiverGone

if TYPE_CHECKING:
    from infra.local.functions_host import FunctionsHost


def problem(status: int, title: str, detail: str, code: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    ).encode()


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
