"""RFC 9457 problem details with stable codes: every error response of the API is one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://bulkio.dev/problems/"


@dataclass(slots=True)
class Problem(Exception):
    status: int
    code: str
    title: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


def bad_request(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(400, code, "Bad request", detail, extra)


def not_found(code: str, detail: str) -> Problem:
    return Problem(404, code, "Not found", detail)


def conflict(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(409, code, "Conflict", detail, extra)


def unprocessable(code: str, detail: str, **extra: Any) -> Problem:
    return Problem(422, code, "Unprocessable request", detail, extra)


def payload_too_large(detail: str, **extra: Any) -> Problem:
    return Problem(413, "payload_too_large", "Payload too large", detail, extra)


def unsupported_media_type(detail: str) -> Problem:
    return Problem(415, "unsupported_media_type", "Unsupported media type", detail)


def unauthorized(detail: str, reason: str | None = None) -> Problem:
    """401 with the RFC 6750 challenge; `reason` (missing_token, expired_token, ...) when it is known."""
    challenge = 'Bearer realm="bulkio"'
    if reason and reason != "missing_token":
        challenge += ', error="invalid_token"'
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        {"reason": reason} if reason else {},
        {"WWW-Authenticate": challenge},
    )


def insufficient_scope(scope: str, detail: str) -> Problem:
    return Problem(
        403,
        "insufficient_scope",
        "Forbidden",
        detail,
        {"required_scope": scope},
        {"WWW-Authenticate": f'Bearer realm="bulkio", error="insufficient_scope", scope="{scope}"'},
    )
