"""Validation and normalization of imported records.

Pure code: every problem of a record is reported (one RecordError each, naming the field and the offending
value), and a valid record becomes a row holding the columns the record provides, in COLUMNS order.

Update semantics (README, "Updates"): a field left out of a record keeps the stored value on update, so a row
only holds what the record gives. null (an empty CSV cell) means "left out" for the fields that have a
default (id, role, active, status, the timestamps); it clears the nullable fields (article body, tags,
published_at: the row holds their empty value); for a required field it is `missing_field`. Defaults, and the
check that a new row has every required field, belong to the merge: only it knows whether a row exists.

The checks are hand-written rather than pydantic models: the rules are mostly cross-field (natural keys,
status defaults, draft vs published_at) and every error needs our own code and message, which with pydantic
meant custom validators plus a translation of its error types; plain checks are shorter and several times
faster.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.resources import COLUMNS, Resource, parse_resource

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
SLUG_PATTERN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_DOMAIN_LABEL = r"(?!-)[\w-]{1,63}(?<!-)"
# Pragmatic: one @, a local part without spaces, a domain of at least two labels.
EMAIL_PATTERN = re.compile(rf"[^@\s]+@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})+")

MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 200
MAX_SLUG_CHARS = 200
MAX_TITLE_CHARS = 500
MAX_TAGS = 50
MAX_TAG_CHARS = 50
ARTICLE_STATUSES = ("draft", "published")
DEFAULT_USER_ROLE = "reader"
DEFAULT_USER_ACTIVE = True
REPORTED_VALUE_CHARS = 1000
TIMESTAMP_EXAMPLE = "2024-05-01T12:00:00Z"


class _Absent:
    """A field the record leaves out: its column is not in the row (the stored value stays on update)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True, slots=True)
class ValidationRules:
    user_roles: frozenset[str] = frozenset({"admin", "author", "reader"})
    max_body_words: int = 500


@dataclass(slots=True)
class Validated:
    row: dict[str, Any] | None
    """Normalized values of the columns the record provides, in COLUMNS[resource] order: a column missing here
    keeps its stored value on update and takes its default on insert. None when there are errors."""
    errors: list[RecordError]


def validate_record(resource: Resource, data: Mapping[str, Any], rules: ValidationRules) -> Validated:
    return _VALIDATORS[resource](_Check(data), rules)


def record_resource(record: Mapping[str, Any] | None) -> Resource | None:
    """The resource a mixed import's record names in its `resource` member, if it names one."""
    return parse_resource(record.get("resource")) if record is not None else None


def unknown_resource(value: Any) -> RecordError:
    """The error of a mixed import's record that names no resource this service imports."""
    allowed = ", ".join(resource.value for resource in Resource)
    if value is None:
        problem = "the record has no resource member"
    else:
        problem = f"resource {_reported(value)!r} is not one this service imports"
    return RecordError(
        ErrorCode.INVALID_RESOURCE,
        "resource",
        f'{problem}: a mixed import\'s record says what it is in "resource": one of {allowed}',
        _reported(value),
    )


def _json_type_with_article(value: Any) -> str:
    """The JSON type of `value` as a message says it: "a string", "an array"."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _quoted(text: str) -> str:
    return f"'{text[:100]}…'" if len(text) > 100 else f"'{text}'"


def _reported(value: Any) -> Any:
    """The offending value as it goes into the error report; huge strings (comment bodies) are cut."""
    if isinstance(value, str) and len(value) > REPORTED_VALUE_CHARS:
        return value[:REPORTED_VALUE_CHARS] + "…"
    return value


def _kebab_case(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "-".join(re.findall(r"[a-z0-9]+", ascii_text.lower()))[:MAX_SLUG_CHARS].rstrip("-")


def _has_date_and_time(text: str) -> bool:
    """YYYY-MM-DD, a separator, HH:MM: fromisoformat alone would also take bare dates, week or ordinal dates
    and hour-only times. (Checked by position: a regex costs more than the parse.)"""
    return len(text) >= 16 and text[4] == "-" and text[7] == "-" and text[10] in "Tt " and text[13] == ":"


def parse_timestamp(text: str) -> datetime | None:
    if not _has_date_and_time(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.upper())  # lowercase 't' and 'z' are valid RFC 3339
        except ValueError:
            return None
    if parsed.tzinfo is UTC:
        return parsed
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Check:
    """The record under validation and the problems found so far. Field checks assume the field is
    present (see `has`) and return the normalized value, or None after reporting a problem."""

    __slots__ = ("data", "errors")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.errors: list[RecordError] = []

    def has(self, name: str) -> bool:
        """null, an empty or a whitespace-only string count as absent."""
        value = self.data.get(name)
        return value is not None and not (isinstance(value, str) and not value.strip())

    def given(self, name: str) -> bool:
        """The record names the field, maybe as null (an empty CSV cell); a field it leaves out is not given."""
        return name in self.data

    def fail(self, code: ErrorCode, name: str, message: str, value: Any = None) -> None:
        self.errors.append(RecordError(code, name, message, _reported(value)))

    def missing(self, name: str, fix: str) -> None:
        self.fail(ErrorCode.MISSING_FIELD, name, f"{name} is required: {fix}")

    def string(self, name: str, expected: str = "a string") -> str | None:
        value = self.data[name]
        if isinstance(value, str):
            return value if self.storable(name, value) else None
        self.fail(
            ErrorCode.INVALID_TYPE,
            name,
            f"{name} must be {expected}, got {_json_type_with_article(value)}: write it as {expected}",
            value,
        )
        return None

    def storable(self, name: str, text: str) -> bool:
        """PostgreSQL text cannot hold NUL characters: such a value is the record's error, not the chunk's."""
        if "\x00" not in text:
            return True
        self.fail(
            ErrorCode.INVALID_CHARACTER,
            name,
            f"{name} contains a NUL character (\\u0000), which cannot be stored: remove it from the source",
            text,
        )
        return False

    def id(self, name: str) -> str | None:
        value = self.string(name, "a string id")
        if value is None:
            return None
        value = value.strip()
        if ID_PATTERN.fullmatch(value) is None:
            self.fail(
                ErrorCode.INVALID_ID,
                name,
                f"{name} {_quoted(value)} is not a valid id: use 1 to 128 letters, digits, '_', '.', ':' or '-', "
                "starting with a letter or digit",
                value,
            )
            return None
        return value

    def required_id(self, name: str, fix: str) -> str | None:
        if self.has(name):
            return self.id(name)
        self.missing(name, fix)
        return None

    def bounded_text(self, name: str, max_chars: int, code: ErrorCode) -> str | None:
        value = self.string(name)
        if value is None:
            return None
        value = value.strip()
        if len(value) > max_chars:
            self.fail(code, name, f"{name} has {len(value)} characters: shorten it to at most {max_chars}", value)
            return None
        return value

    def timestamp(self, name: str) -> datetime | None:
        """ABSENT when left out, null or blank (created_at and updated_at then keep or take their default;
        published_at, which null clears, is handled by its caller)."""
        if not self.has(name):
            return ABSENT
        value = self.string(name, f"a string with an ISO 8601 date-time like {TIMESTAMP_EXAMPLE}")
        if value is None:
            return None
        parsed = parse_timestamp(value.strip())
        if parsed is None:
            self.fail(
                ErrorCode.INVALID_TIMESTAMP,
                name,
                f"{name} {_quoted(value)} is not a date-time: use ISO 8601 like {TIMESTAMP_EXAMPLE}",
                value,
            )
        return parsed

    def email(self) -> str | None:
        value = self.string("email")
        if value is None:
            return None
        value = value.strip()
        if len(value) > MAX_EMAIL_CHARS or EMAIL_PATTERN.fullmatch(value) is None:
            self.fail(
                ErrorCode.INVALID_EMAIL,
                "email",
                f"email {_quoted(value)} is not a valid address: use name@domain.tld "
                f"(at most {MAX_EMAIL_CHARS} characters)",
                value,
            )
            return None
        return value

    def role(self, roles: frozenset[str]) -> str | None:
        if not self.has("role"):
            return ABSENT  # the default (reader) applies on insert, in the merge
        value = self.string("role")
        if value is None:
            return None
        value = value.strip()
        if value not in roles:
            self.fail(
                ErrorCode.INVALID_ROLE,
                "role",
                f"role {_quoted(value)} is not allowed: use one of {', '.join(sorted(roles))}",
                value,
            )
            return None
        return value

    def active(self) -> bool | None:
        value = self.data.get("active")
        if value is None:
            return ABSENT  # the default (true) applies on insert, in the merge
        if isinstance(value, bool):
            return value
        shown = _quoted(value) if isinstance(value, str) else repr(value)
        self.fail(
            ErrorCode.INVALID_BOOLEAN,
            "active",
            f"active must be true or false, got {shown}: write true or false (in JSON without quotes)",
            value,
        )
        return None

    def slug(self) -> str | None:
        value = self.string("slug")
        if value is None:
            return None
        value = value.strip()
        if len(value) <= MAX_SLUG_CHARS and SLUG_PATTERN.fullmatch(value) is not None:
            return value
        suggestion = _kebab_case(value) or "my-first-article"
        self.fail(
            ErrorCode.INVALID_SLUG,
            "slug",
            f"slug {_quoted(value)} is not kebab-case of at most {MAX_SLUG_CHARS} characters: use lowercase "
            f"letters, digits and single hyphens, e.g. '{suggestion}'",
            value,
        )
        return None

    def tags(self) -> list[str] | None:
        if not self.given("tags"):
            return ABSENT
        value = self.data["tags"]
        if value is None:
            return []  # null clears the tags
        if not isinstance(value, list):
            self.fail(
                ErrorCode.INVALID_TYPE,
                "tags",
                f"tags must be an array of strings, got {_json_type_with_article(value)}: "
                'write ["news", "tech"] (in CSV: news|tech)',
                value,
            )
            return None
        problems_before = len(self.errors)
        if len(value) > MAX_TAGS:
            self.fail(ErrorCode.INVALID_TAGS, "tags", f"there are {len(value)} tags: keep at most {MAX_TAGS}", value)
        tags: list[str] = []
        for tag in value[:MAX_TAGS]:
            if isinstance(tag, str) and 1 <= len(tag.strip()) <= MAX_TAG_CHARS:
                if self.storable("tags", tag):
                    tags.append(tag.strip())
                continue
            what = _quoted(tag) if isinstance(tag, str) else _json_type_with_article(tag)
            self.fail(
                ErrorCode.INVALID_TAGS,
                "tags",
                f"tag {what} is not valid: every tag must be a string of 1 to {MAX_TAG_CHARS} characters",
                tag,
            )
        return tags if len(self.errors) == problems_before else None

    def article_body(self) -> str | None:
        if not self.given("body"):
            return ABSENT
        return "" if self.data["body"] is None else self.string("body")  # null clears the body

    def status(self) -> str | None:
        value = self.string("status")
        if value is None:
            return None
        value = value.strip()
        if value not in ARTICLE_STATUSES:
            self.fail(
                ErrorCode.INVALID_STATUS,
                "status",
                f"status {_quoted(value)} is not valid: use {' or '.join(ARTICLE_STATUSES)}",
                value,
            )
            return None
        return value

    def comment_body(self, max_words: int) -> str | None:
        if not self.given("body"):
            return ABSENT
        if self.data["body"] is None:
            self.missing("body", "write the comment text")
            return None
        body = self.string("body")
        if body is None:
            return None
        if not body.strip():
            self.fail(ErrorCode.BODY_EMPTY, "body", "body is empty: write the comment text", body)
            return None
        words = len(body.split())
        if words > max_words:
            self.fail(
                ErrorCode.BODY_TOO_LONG,
                "body",
                f"body has {words} words but at most {max_words} are allowed: shorten the comment",
                body,
            )
            return None
        return body


def _natural_key(
    check: _Check, name: str, read: Callable[[], str | None], fix: str, neither_message: str
) -> str | None:
    """The natural key (users: email, articles: slug), or `missing_key` when the id is absent too. With an id,
    a record may leave the key out (an update keeps the stored one; the merge refuses to insert without it),
    but not give it as null."""
    if check.has(name):
        return read()
    if not check.has("id"):
        check.fail(ErrorCode.MISSING_KEY, "id", neither_message)
        return None
    if check.given(name):
        check.missing(name, fix)
        return None
    return ABSENT


def _required(check: _Check, name: str, read: Callable[[], Any], fix: str) -> Any:
    """A required field: null or blank is `missing_field`; left out, it is the merge's to judge (an update keeps
    the stored value, an insert misses it)."""
    if check.has(name):
        return read()
    if check.given(name):
        check.missing(name, fix)
        return None
    return ABSENT


def _required_text(check: _Check, name: str, max_chars: int, code: ErrorCode, fix: str) -> str | None:
    return _required(check, name, lambda: check.bounded_text(name, max_chars, code), fix)


def _row(resource: Resource, values: tuple[Any, ...]) -> dict[str, Any]:
    """The row of the provided columns: values in COLUMNS order, ABSENT ones left out."""
    return {column: value for column, value in zip(COLUMNS[resource], values, strict=True) if value is not ABSENT}


def _validate_user(check: _Check, rules: ValidationRules) -> Validated:
    user_id = check.id("id") if check.has("id") else ABSENT
    email = _natural_key(
        check,
        "email",
        check.email,
        "add the user's email address",
        "the user has neither id nor email: give it an email (and optionally an id)",
    )
    name = _required_text(check, "name", MAX_NAME_CHARS, ErrorCode.INVALID_NAME, "add the user's name")
    role = check.role(rules.user_roles)
    active = check.active()
    created_at = check.timestamp("created_at")
    updated_at = check.timestamp("updated_at")
    if check.errors:
        return Validated(None, check.errors)
    return Validated(_row(Resource.USERS, (user_id, email, name, role, active, created_at, updated_at)), [])


def _validate_article(check: _Check, rules: ValidationRules) -> Validated:
    article_id = check.id("id") if check.has("id") else ABSENT
    slug = _natural_key(
        check,
        "slug",
        check.slug,
        "add a kebab-case slug like 'my-first-article'",
        "the article has neither id nor slug: give it a slug (and optionally an id)",
    )
    title = _required_text(check, "title", MAX_TITLE_CHARS, ErrorCode.INVALID_TITLE, "add the article's title")
    body = check.article_body()
    author_id = _required(
        check, "author_id", lambda: check.id("author_id"), "add the id of the user who wrote the article"
    )
    tags = check.tags()
    published_at = check.timestamp("published_at")
    if published_at is ABSENT and check.given("published_at"):
        published_at = None  # null (or blank) clears it
    status = check.status() if check.has("status") else ABSENT
    # The record's own contradiction; the merge checks the row it makes with the stored values.
    if status == "draft" and isinstance(published_at, datetime):
        check.fail(
            ErrorCode.DRAFT_HAS_PUBLISHED_AT,
            "published_at",
            "a draft cannot have published_at: remove published_at or set status to published",
            check.data["published_at"],
        )
    created_at = check.timestamp("created_at")
    updated_at = check.timestamp("updated_at")
    if check.errors:
        return Validated(None, check.errors)
    values = (article_id, slug, title, body, author_id, tags, published_at, status, created_at, updated_at)
    return Validated(_row(Resource.ARTICLES, values), [])


def _validate_comment(check: _Check, rules: ValidationRules) -> Validated:
    comment_id = None
    if check.has("id"):
        comment_id = check.id("id")
    else:
        check.fail(ErrorCode.MISSING_KEY, "id", "comments have no natural key: give every comment an id")
    article_id = _required(
        check, "article_id", lambda: check.id("article_id"), "add the id of the article the comment belongs to"
    )
    user_id = _required(check, "user_id", lambda: check.id("user_id"), "add the id of the user who wrote the comment")
    body = check.comment_body(rules.max_body_words)
    created_at = check.timestamp("created_at")
    updated_at = check.timestamp("updated_at")
    if check.errors:
        return Validated(None, check.errors)
    return Validated(_row(Resource.COMMENTS, (comment_id, article_id, user_id, body, created_at, updated_at)), [])


_VALIDATORS: dict[Resource, Callable[[_Check, ValidationRules], Validated]] = {
    Resource.USERS: _validate_user,
    Resource.ARTICLES: _validate_article,
    Resource.COMMENTS: _validate_comment,
}
