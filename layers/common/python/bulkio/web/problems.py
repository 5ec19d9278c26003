"""Refusals and invalid requests as RFC 9457 problems: the one place that decides each one's HTTP status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bulkio.domain.errors import Conflict, Gone, InvalidRequest, NotFound, Refusal, TooLarge, Unprocessable
from bulkio.problems import Problem

# The most specific kind first: a subclass of a kind gets that kind's status.
STATUS_OF_REFUSAL: tuple[tuple[type[Refusal], int, str], ...] = (
    (InvalidRequest, 400, "Bad request"),
    (NotFound, 404, "Not found"),
    (Conflict, 409, "Conflict"),
    (Gone, 410, "Gone"),
    (TooLarge, 413, "Payload too large"),
    (Unprocessable, 422, "Unprocessable request"),
)


def problem_from_refusal(refusal: Refusal) -> Problem:
    for kind, status, title in STATUS_OF_REFUSAL:
        if isinstance(refusal, kind):
            return Problem(status, refusal.code, title, refusal.message, dict(refusal.extra))
    return Problem(400, refusal.code, "Bad request", refusal.message, dict(refusal.extra))


def _field(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location[1:]) or str(location[0] if location else "request")


def problem_from_validation(errors: Sequence[Mapping[str, Any]]) -> Problem:
    """The first broken rule of a request. The models' own rules carry their problem code as the error type
    and their detail in the context (bulkio.web.models.rule_broken); pydantic's built-in errors get a code here."""
    first = errors[0]
    kind, location = str(first.get("type")), tuple(first.get("loc") or ())
    context = dict(first.get("ctx") or {})
    if "message" in context:
        return Problem(400, kind, "Bad request", str(context.pop("message")), context)
    if kind == "json_invalid":
        return Problem(
            400, "invalid_json_body", "Bad request", f"the request body is not valid JSON: {context.get('error')}"
        )
    if location == ("body",) and kind in {"model_attributes_type", "dict_type", "model_type"}:
        return Problem(400, "invalid_json_body", "Bad request", "the request body must be a JSON object")
    return Problem(400, "invalid_request", "Bad request", f"{_field(location)}: {first.get('msg')}")
