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


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem with one record. `message` says what is wrong and how to fix it."""

    code: ErrorCode
    field: str | None
    message: str
    value: Any = None
