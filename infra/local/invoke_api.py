"""The functions host's Lambda Invoke API (POST /2015-03-31/functions/<name>/invocations) and readiness check."""

from __future__ import annotations

import json
import re
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from infra.local.functions_host import FunctionsHost


INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
READY_PATH = "/_local/ready"


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
