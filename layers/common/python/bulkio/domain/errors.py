"""Per-record error codes: stable strings that clients may match on."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_CSV_ROW = "invalid_csv_row"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    INVALID_ID = "invalid_id"
    INVALID_EMAIL = "invalid_email"
    EMAIL_TAKEN = "email_taken"
    INVALID_NAME = "invalid_name"
    INVALID_ROLE = "invalid_role"
    INVALID_BOOLEAN = "invalid_boolean"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_SLUG = "invalid_slug"
    SLUG_TAKEN = "slug_taken"
    INVALID_TITLE = "invalid_title"
    INVALID_TAGS = "invalid_tags"
    INVALID_STATUS = "invalid_status"
    DRAFT_HAS_PUBLISHED_AT = "draft_has_published_at"
    UNKNOWN_AUTHOR = "unknown_author"
    UNKNOWN_ARTICLE = "unknown_article"
    UNKNOWN_USER = "unknown_user"
    BODY_EMPTY = "body_empty"
    BODY_TOO_LONG = "body_too_long"
    MISSING_KEY = "missing_key"
    DUPLICATE_IN_FILE = "duplicate_in_file"
    RECORD_TOO_LARGE = "record_too_large"
    INVALID_CHARACTER = "invalid_character"
    INVALID_RESOURCE = "invalid_resource"  # a mixed import's record names no resource it imports


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem with one record. `message` says what is wrong and how to fix it."""

    code: ErrorCode
    field: str | None
    message: str
    value: Any = None


class Refusal(Exception):
    """A request the service turns down: a stable `code` clients may match on, a `message` that says what is
    wrong and how to fix it, and `extra` facts (the allowed values, a limit). Services raise these; the web
    layer alone decides which HTTP status and problem title each kind gets."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class InvalidRequest(Refusal):
    """The request itself is wrong: a value, a missing part, an unknown field."""


class NotFound(Refusal):
    """The job does not exist, or the caller may not know that it does."""


class Conflict(Refusal):
    """The job's state does not allow this now (already ended, still running, another request in progress)."""


class Gone(Refusal):
    """What the request needs existed but no longer does (a dry run's source past its retention)."""


class Unprocessable(Refusal):
    """Well-formed, but at odds with an earlier request (an Idempotency-Key reused for another request)."""


class TooLarge(Refusal):
    """Over a size limit: `extra` names the limit."""
