"""The end-to-end tests' HTTP client for the embedded stack's API."""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import orjson

from infra.chaos.api import FINAL_STATUSES, Reply
from infra.tools import datagen
from tests.fixtures.aws import RunningStack

FINAL = FINAL_STATUSES


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def generated(resource: str, rows: int, seed: int, fmt: str, **sizes: int) -> bytes:
    sink = io.BytesIO()
    datagen.write(resource, datagen.generate(resource, rows, seed, **sizes), fmt, sink)
    return sink.getvalue()


class Api:
    """The API under /v1. Every call goes through `call`, which adds the caller's credentials."""

    def __init__(self, stack: RunningStack, headers: dict[str, str] | None = None) -> None:
        """By default a caller with the three working scopes (not admin); `headers` replace its credentials."""
        self.base = stack.api_url.rstrip("/") + "/v1"
        self.headers = {"Authorization": f"Bearer {stack.token()}"} if headers is None else dict(headers)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        """`path` is relative to /v1, e.g. "/imports?limit=5"."""
        return request(method, f"{self.base}{path}", body, {**self.headers, **(headers or {})})

    def upload(self, resource: str, filename: str, content: bytes, **headers: str) -> Reply:
        body, content_type = multipart({"resource": resource}, filename, content)
        return self.call("POST", "/imports", body, {"Content-Type": content_type, **headers})

    def post_json(self, payload: dict[str, Any], **headers: str) -> Reply:
        return self.call("POST", "/imports", orjson.dumps(payload), {"Content-Type": "application/json", **headers})

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/imports/{job_id}")
        assert reply.status == 200, reply.body
        return dict(reply.json())

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in FINAL:
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}")

    def errors(self, job_id: str, fmt: str = "ndjson") -> Reply:
        return self.call("GET", f"/imports/{job_id}/errors?format={fmt}")
