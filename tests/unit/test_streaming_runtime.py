"""The AWS streaming runtime against a fake Lambda Runtime API on loopback."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "layers" / "streaming_runtime"))
import bulkio_streaming_runtime as runtime


class FakeRuntimeApi:
    """Hands out queued events and records what the runtime posts back, chunk by chunk."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)
        self.posts: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps(api.events.pop(0)).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{len(api.posts) + 1}")
                self.send_header("Lambda-Runtime-Deadline-Ms", "9999999999999")
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:1:function:f")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                chunks: list[bytes] = []
                if self.headers.get("Transfer-Encoding") == "chunked":
                    while (size := int(self.rfile.readline().strip(), 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    chunks.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                api.posts.append({"path": self.path, "headers": dict(self.headers), "chunks": chunks})
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def api_with(request: pytest.FixtureRequest) -> Iterator[FakeRuntimeApi]:
    fake = FakeRuntimeApi(request.param)
    yield fake
    fake.close()


@pytest.mark.parametrize("api_with", [[{"rawPath": "/v1/exports"}]], indirect=True)
def test_a_generator_body_is_streamed_after_a_prelude(api_with: FakeRuntimeApi) -> None:
    closed: list[bool] = []

    def body() -> Iterator[bytes]:
        try:
            yield b'{"id":"1"}\n'
            yield '{"id":"2"}\n'  # str pieces are encoded
        finally:
            closed.append(True)

    def handler(event: dict[str, Any], context: runtime.Context) -> dict[str, Any]:
        assert context.aws_request_id == "req-1"
        assert context.get_remaining_time_in_millis() > 0
        return {"statusCode": 200, "headers": {"Content-Type": "application/x-ndjson"}, "body": body()}

    runtime.serve(runtime.RuntimeClient(api_with.address), handler, invocations=1)

    (post,) = api_with.posts
    assert post["path"] == "/2018-06-01/runtime/invocation/req-1/response"
    assert post["headers"]["Lambda-Runtime-Function-Response-Mode"] == "streaming"
    assert post["headers"]["Content-Type"] == runtime.STREAM_CONTENT_TYPE
    prelude, separator, rest = b"".join(post["chunks"]).partition(runtime.PRELUDE_SEPARATOR)
    assert separator
    assert json.loads(prelude) == {"statusCode": 200, "headers": {"Content-Type": "application/x-ndjson"}}
    assert rest == b'{"id":"1"}\n{"id":"2"}\n'
    assert len(post["chunks"]) >= 3  # sent piece by piece, not gathered first
    assert closed == [True]


@pytest.mark.parametrize("api_with", [[{"n": 1}, {"n": 2}]], indirect=True)
def test_plain_responses_and_errors_go_back_whole(api_with: FakeRuntimeApi) -> None:
    def handler(event: dict[str, Any], context: runtime.Context) -> dict[str, Any]:
        if event["n"] == 2:
            raise ValueError("bad request")
        return {"statusCode": 200, "body": "ok"}

    runtime.serve(runtime.RuntimeClient(api_with.address), handler, invocations=2)

    response, error = api_with.posts
    assert response["path"].endswith("/invocation/req-1/response")
    assert json.loads(b"".join(response["chunks"])) == {"statusCode": 200, "body": "ok"}
    assert error["path"].endswith("/invocation/req-2/error")
    assert error["headers"]["Lambda-Runtime-Function-Error-Type"] == "Unhandled.ValueError"
    assert json.loads(b"".join(error["chunks"]))["errorMessage"] == "bad request"
