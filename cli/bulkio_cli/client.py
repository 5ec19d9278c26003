"""The REST API over HTTP (the standard library's urllib): JSON calls, problem+json errors, streamed bodies."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any, BinaryIO

TIMEOUT_SECONDS = 60
USER_AGENT = "bulkio-cli/1"


class ApiError(Exception):
    """The API refused a call: its HTTP status, its stable problem code and what to do."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} ({status} {code})")
        self.status = status
        self.code = code
        self.detail = detail


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 303 to a download is followed by the caller, without the API's bearer token."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True, slots=True)
class Api:
    base: str  # up to /v1, e.g. http://127.0.0.1:3000/v1
    token: str
    export_base: str  # where GET /v1/exports streams from (a function URL on AWS; the API locally)

    def call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        """A JSON call; the decoded answer. Raises ApiError for a refusal."""
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        with self.open(method, self.base + path, body, headers) as response:
            return json.loads(response.read() or b"null")

    def open(
        self, method: str, url: str, body: bytes | BinaryIO | None = None, headers: Mapping[str, str] | None = None
    ) -> HTTPResponse:
        """The response, to be read in pieces (or a 303's Location, for the caller to follow)."""
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("User-Agent", USER_AGENT)
        if url.startswith((self.base, self.export_base)):
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            response: HTTPResponse = _OPENER.open(request, timeout=TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            if error.code == 303 and error.headers.get("Location"):
                return self.open("GET", urllib.parse.urljoin(url, error.headers["Location"]))
            raise _refusal(error) from None
        except urllib.error.URLError as error:
            raise ApiError(
                0, "unreachable", f"could not reach {url}: {error.reason}; is the API up (make run)?"
            ) from None
        return response

    def export_url(self, query: Mapping[str, str]) -> str:
        return f"{self.export_base}/exports?{urllib.parse.urlencode(query)}"


def _refusal(error: urllib.error.HTTPError) -> ApiError:
    text = error.read()
    try:
        problem = json.loads(text)
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = problem.get("detail") or problem.get("message") or text.decode("utf-8", "replace")[:300] or error.reason
    return ApiError(error.code, str(problem.get("code") or "http_error"), str(detail))
