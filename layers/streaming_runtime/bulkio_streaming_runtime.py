"""A Lambda Runtime API client that streams responses (standard library only).

Handlers are called as usual (`handler(event, context)`, from _HANDLER in LAMBDA_TASK_ROOT). A response whose
`body` is an iterator is sent in Lambda's streaming mode, as an HTTP-integration response (a JSON prelude
with status and headers, eight NUL bytes, then the body pieces as they come); any other response is sent
whole, as the managed runtime would. Only the function's own code and /opt/python are importable.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

RUNTIME_API_VERSION = "2018-06-01"
STREAM_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_SEPARATOR = b"\0" * 8


class Context:
    """The parts of Lambda's context object that handlers and Powertools use."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def load_handler(spec: str) -> Any:
    module_name, _, function_name = spec.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def error_body(error: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": traceback.format_exception(error),
        }
    ).encode()


def streamed(prelude: dict[str, Any], body: Iterable[bytes | str]) -> Iterator[bytes]:
    yield json.dumps(prelude).encode() + PRELUDE_SEPARATOR
    for piece in body:
        if piece:
            yield piece.encode() if isinstance(piece, str) else piece


class RuntimeClient:
    def __init__(self, address: str) -> None:
        self._address = address

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._address, timeout=None)

    def next_invocation(self) -> tuple[dict[str, Any], Context]:
        connection = self._connection()
        connection.request("GET", f"/{RUNTIME_API_VERSION}/runtime/invocation/next")
        response = connection.getresponse()
        event = json.loads(response.read() or b"null")
        context = Context(
            response.getheader("Lambda-Runtime-Aws-Request-Id", ""),
            int(response.getheader("Lambda-Runtime-Deadline-Ms", "0")),
            response.getheader("Lambda-Runtime-Invoked-Function-Arn", ""),
        )
        connection.close()
        return event, context

    def _post(self, path: str, body: bytes | Iterable[bytes], headers: dict[str, str], chunked: bool) -> None:
        connection = self._connection()
        connection.request("POST", f"/{RUNTIME_API_VERSION}/runtime/{path}", body, headers, encode_chunked=chunked)
        connection.getresponse().read()
        connection.close()

    def respond(self, request_id: str, result: Any) -> None:
        if isinstance(result, dict) and isinstance(result.get("body"), Iterator):
            prelude = {key: result[key] for key in ("statusCode", "headers", "cookies") if key in result}
            headers = {
                "Lambda-Runtime-Function-Response-Mode": "streaming",
                "Content-Type": STREAM_CONTENT_TYPE,
                "Transfer-Encoding": "chunked",
            }
            body = result["body"]
            try:
                self._post(f"invocation/{request_id}/response", streamed(prelude, body), headers, chunked=True)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # the handler's cleanup (e.g. cancelling its query) runs even if the client left
            return
        self._post(f"invocation/{request_id}/response", json.dumps(result).encode(), {}, chunked=False)

    def report_error(self, path: str, error: BaseException) -> None:
        headers = {"Lambda-Runtime-Function-Error-Type": f"Unhandled.{type(error).__name__}"}
        self._post(path, error_body(error), headers, chunked=False)


def serve(client: RuntimeClient, handler: Any, invocations: int | None = None) -> None:
    """Handles invocations forever (or `invocations` of them, for tests)."""
    served = 0
    while invocations is None or served < invocations:
        event, context = client.next_invocation()
        try:
            result = handler(event, context)
        except Exception as error:
            client.report_error(f"invocation/{context.aws_request_id}/error", error)
        else:
            client.respond(context.aws_request_id, result)
        served += 1


def main() -> None:
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    sys.path[:0] = [task_root, "/opt/python"]
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(os.environ["_HANDLER"])
    except Exception as error:
        client.report_error("init/error", error)
        raise
    serve(client, handler)


if __name__ == "__main__":
    main()
