"""A bounded HTTP client for a drill: every request has a timeout, every loop a deadline and a count."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

FINAL_STATUSES = frozenset({"completed", "completed_with_errors", "failed", "cancelled", "validated"})
REQUEST_TIMEOUT_SECONDS = 60.0
UPLOAD_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.5
TRANSIENT_STATUSES = frozenset({502, 503, 504})
CONTENT_TYPES = {"csv": "text/csv", "ndjson": "application/x-ndjson", "json": "application/json"}


class ApiError(RuntimeError):
    """The API answered something a drill cannot go on with."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 303 comes back as it is; the presigned URL it names must not get our bearer token


_OPENER = urllib.request.build_opener(_NoRedirects)


def http(
    method: str,
    url: str,
    body: bytes | Any | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Reply:
    """One request; HTTP errors are answers (never raised), connection trouble raises OSError."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@dataclass
class JobWait:
    job: dict[str, Any] | None  # the last view of the job that was seen
    ended: bool
    ended_at: float | None  # time.monotonic() when the final status was first seen


@dataclass
class Api:
    """The stack's API under /v1, as one admin caller."""

    base_url: str
    token: str
    transient_answers: list[str] = field(default_factory=list)  # 5xx and refused connections seen while polling

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Reply:
        body = orjson.dumps(payload) if payload is not None else None
        headers = self._headers({"Content-Type": "application/json"} if body is not None else None)
        return http(method, f"{self.base_url}/v1{path}", body, headers)

    def call_retrying(self, method: str, path: str, payload: dict[str, Any] | None = None, attempts: int = 20) -> Reply:
        """For reads: retries refused connections and 502/503/504 (a database restart, a stack restart)."""
        for attempt in range(attempts):
            try:
                reply = self.call(method, path, payload)
            except OSError as error:
                self.transient_answers.append(f"{method} {path}: {type(error).__name__}")
            else:
                if reply.status not in TRANSIENT_STATUSES:
                    return reply
                self.transient_answers.append(f"{method} {path}: {reply.status} {reply.body[:200]!r}")
            time.sleep(min(0.5 * (attempt + 1), 3.0))
        raise ApiError(f"{method} {path} kept failing: {self.transient_answers[-1]}")

    # ------------------------------------------------------------------ imports
    def import_file(self, resource: str, fmt: str, path: Path) -> str:
        """POST /v1/imports for a presigned upload, then PUT the file to the URL; returns the job id."""
        created = self.call("POST", "/imports", {"resource": resource, "format": fmt})
        if created.status != 202:
            raise ApiError(f"POST /v1/imports answered {created.status}: {created.body[:500]!r}")
        answer = created.json()
        with path.open("rb") as source:
            put = http(
                "PUT",
                answer["upload"]["url"],
                source,
                {"Content-Type": CONTENT_TYPES[fmt], "Content-Length": str(path.stat().st_size)},
                timeout=UPLOAD_TIMEOUT_SECONDS,
            )
        if put.status != 200:
            raise ApiError(f"the presigned PUT answered {put.status}: {put.body[:500]!r}")
        return str(answer["job_id"])

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's view, or None while the API cannot answer (recorded in transient_answers)."""
        try:
            reply = self.call("GET", f"/imports/{job_id}")
        except OSError as error:
            self.transient_answers.append(f"GET /imports/{{id}}: {type(error).__name__}")
            return None
        if reply.status in TRANSIENT_STATUSES:
            self.transient_answers.append(f"GET /imports/{{id}}: {reply.status} {reply.body[:200]!r}")
            return None
        if reply.status != 200:
            raise ApiError(f"GET /v1/imports/{job_id} answered {reply.status}: {reply.body[:500]!r}")
        return dict(reply.json())

    def wait_job(self, job_id: str, deadline: float, while_waiting: Callable[[], None] | None = None) -> JobWait:
        """Polls until the job ends or time.monotonic() passes `deadline`."""
        last: dict[str, Any] | None = None
        for _ in range(int((deadline - time.monotonic()) / POLL_SECONDS) + 2):
            job = self.job(job_id)
            if job is not None:
                last = job
                if job["status"] in FINAL_STATUSES:
                    return JobWait(job, True, time.monotonic())
            if time.monotonic() >= deadline:
                break
            if while_waiting is not None:
                while_waiting()
            time.sleep(POLL_SECONDS)
        return JobWait(last, False, None)

    def error_report(self, job_id: str) -> list[dict[str, Any]] | str:
        """The job's full error report (NDJSON, following a 303 to S3), or why there is none."""
        reply = self.call_retrying("GET", f"/imports/{job_id}/errors?format=ndjson")
        if reply.status == 303:
            reply = http("GET", reply.headers["location"], timeout=UPLOAD_TIMEOUT_SECONDS)
        if reply.status != 200:
            return f"HTTP {reply.status} {reply.body[:200].decode(errors='replace')}"
        return [orjson.loads(line) for line in reply.body.splitlines() if line.strip()]

    # ------------------------------------------------------------------ exports
    def stream_export(self, resource: str) -> tuple[int, bytes]:
        """GET /v1/exports?resource=…&format=ndjson, read to the end."""
        reply = http(
            "GET",
            f"{self.base_url}/v1/exports?resource={resource}&format=ndjson",
            headers=self._headers(),
        )
        return reply.status, reply.body

    def async_export(self, resource: str, deadline: float, abandon: threading.Event | None = None) -> tuple[str, bytes]:
        """POST /v1/exports, wait for the job (bounded; `abandon` stops waiting), download its file;
        (final status, file or reason)."""
        created = self.call("POST", "/exports", {"resource": resource, "format": "ndjson"})
        if created.status != 202:
            return f"HTTP {created.status}", created.body[:500]
        job_id = created.json()["job_id"]
        for _ in range(int((deadline - time.monotonic()) / POLL_SECONDS) + 2):
            job = self.call_retrying("GET", f"/exports/{job_id}")
            view = job.json() if job.status == 200 else {"status": f"HTTP {job.status}"}
            if view["status"] == "completed":
                download = http("GET", view["download_url"], timeout=UPLOAD_TIMEOUT_SECONDS)
                if download.status != 200:
                    return f"download HTTP {download.status}", download.body[:500]
                return "completed", download.body
            if view["status"] not in {"queued", "running"}:
                return str(view["status"]), orjson.dumps(view.get("failure"))
            if time.monotonic() >= deadline:
                return f"still {view['status']} at the deadline", b""
            if abandon is not None and abandon.is_set():
                return "abandoned", b""
            time.sleep(POLL_SECONDS)
        return "no answer before the deadline", b""
