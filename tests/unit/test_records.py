"""Validation and normalization of user, article and comment records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bulkio.domain.errors import ErrorCode
from bulkio.domain.records import Validated, ValidationRules, validate_record
from bulkio.domain.resources import COLUMNS, Resource

RULES = ValidationRules()
USER = {"id": "u1", "email": "ann@example.com", "name": "Ann"}
ARTICLE = {"id": "a1", "slug": "hello-world", "title": "Hello", "author_id": "u1"}
COMMENT = {"id": "c1", "article_id": "a1", "user_id": "u1", "body": "Nice post"}
BASE = {Resource.USERS: USER, Resource.ARTICLES: ARTICLE, Resource.COMMENTS: COMMENT}


def validate(resource: Resource, rules: ValidationRules = RULES, **changes: Any) -> Validated:
    data = {**BASE[resource], **changes}
    return validate_record(resource, {key: value for key, value in data.items() if value is not ...}, rules)


def codes(result: Validated) -> list[tuple[ErrorCode, str | None]]:
    return [(error.code, error.field) for error in result.errors]


def assert_only_error(result: Validated, code: ErrorCode, field: str, value: Any = None) -> None:
    assert result.row is None
    assert codes(result) == [(code, field)]
    assert result.errors[0].value == value


# ----------------------------------------------------------------------------------------------- rules


def test_roles_from_rules_are_enforced() -> None:
    rules = ValidationRules(user_roles=frozenset({"editor"}))
    assert validate(Resource.USERS, rules, role="editor").row is not None
    result = validate(Resource.USERS, rules, role="admin")
    assert_only_error(result, ErrorCode.INVALID_ROLE, "role", "admin")
    assert "use one of editor" in result.errors[0].message


# ------------------------------------------------------------------------------------------ normalized rows


FULL = {
    Resource.USERS: {**USER, "role": "admin", "active": False},
    Resource.ARTICLES: {**ARTICLE, "body": "B", "tags": ["t"], "published_at": "2024-05-01T12:00:00Z"},
    Resource.COMMENTS: COMMENT,
}
STAMPS = {"created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-05-01T12:00:00Z"}


@pytest.mark.parametrize("resource", list(Resource))
def test_a_record_giving_every_field_makes_a_row_of_every_column(resource: Resource) -> None:
    data = {**FULL[resource], **STAMPS, "extra": "ignored"}
    if resource is Resource.ARTICLES:
        data["status"] = "published"
    result = validate_record(resource, data, RULES)
    assert result.errors == []
    assert tuple(result.row or ()) == COLUMNS[resource]


@pytest.mark.parametrize("resource", list(Resource))
def test_a_row_holds_only_the_columns_the_record_gives_in_column_order(resource: Resource) -> None:
    result = validate(resource, extra="ignored")
    assert result.errors == []
    assert tuple(result.row or ()) == tuple(column for column in COLUMNS[resource] if column in BASE[resource])


def test_user_normalization_and_no_defaults_in_the_row() -> None:
    """Defaults apply on insert only, in the merge: the row says only what the record gives."""
    result = validate(
        Resource.USERS, id=..., email="  Ann@Example.com ", name=" Ann ", role=None, active=None, created_at=" "
    )
    assert result.row == {"email": "Ann@Example.com", "name": "Ann"}


def test_article_row_has_no_defaults() -> None:
    assert validate(Resource.ARTICLES).row == ARTICLE


def test_article_status_left_out_is_the_merges_to_default() -> None:
    row = validate(Resource.ARTICLES, published_at="2024-05-01T12:00:00Z").row
    assert row is not None
    assert "status" not in row
    assert row["published_at"] == datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("empty", [None, ""])
def test_null_clears_the_nullable_article_fields(empty: Any) -> None:
    row = validate(Resource.ARTICLES, body=None, tags=None, published_at=empty).row
    assert row is not None
    assert (row["body"], row["tags"], row["published_at"]) == ("", [], None)


@pytest.mark.parametrize(
    ("resource", "field", "empty"),
    [
        (Resource.USERS, "role", None),
        (Resource.USERS, "role", ""),
        (Resource.USERS, "active", None),  # (a JSON "" is no boolean; an empty CSV cell is null)
        (Resource.USERS, "created_at", ""),
        (Resource.ARTICLES, "status", None),
        (Resource.ARTICLES, "status", " "),
        (Resource.ARTICLES, "updated_at", None),
        (Resource.COMMENTS, "created_at", None),
    ],
)
def test_null_means_left_out_for_fields_with_a_default(resource: Resource, field: str, empty: Any) -> None:
    row = validate(resource, **{field: empty}).row
    assert row is not None and field not in row


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (Resource.USERS, "name"),
        (Resource.ARTICLES, "title"),
        (Resource.ARTICLES, "author_id"),
        (Resource.COMMENTS, "article_id"),
        (Resource.COMMENTS, "user_id"),
        (Resource.COMMENTS, "body"),
    ],
)
def test_a_required_field_left_out_is_the_merges_to_judge_but_null_is_missing(resource: Resource, field: str) -> None:
    row = validate(resource, **{field: ...}).row
    assert row is not None and field not in row
    assert_only_error(validate(resource, **{field: None}), ErrorCode.MISSING_FIELD, field)


# ------------------------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize("value", ["u1", "A", "user_1.x:y-z", "9" * 128])
@pytest.mark.parametrize("field", ["id", "author_id"])
def test_valid_ids(field: str, value: str) -> None:
    row = validate(Resource.ARTICLES, **{field: value}).row
    assert row is not None and row[field] == value


@pytest.mark.parametrize("value", ["-u1", "u 1", "u/1", "9" * 129, "ü"])
@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (Resource.USERS, "id"),
        (Resource.ARTICLES, "author_id"),
        (Resource.COMMENTS, "article_id"),
        (Resource.COMMENTS, "user_id"),
    ],
)
def test_invalid_ids(resource: Resource, field: str, value: str) -> None:
    assert_only_error(validate(resource, **{field: value}), ErrorCode.INVALID_ID, field, value)


def test_non_string_id_is_invalid_type() -> None:
    result = validate(Resource.USERS, id=12)
    assert_only_error(result, ErrorCode.INVALID_TYPE, "id", 12)
    assert "got a number" in result.errors[0].message


@pytest.mark.parametrize("resource", [Resource.USERS, Resource.ARTICLES])
@pytest.mark.parametrize("absent", [..., None, ""])
def test_users_and_articles_may_come_without_id(resource: Resource, absent: Any) -> None:
    result = validate(resource, id=absent)
    assert result.errors == []
    assert result.row is not None and "id" not in result.row


# -------------------------------------------------------------------------------------------------- users


def test_user_without_id_and_email_is_missing_key_only() -> None:
    assert codes(validate(Resource.USERS, id=..., email=...)) == [(ErrorCode.MISSING_KEY, "id")]


def test_user_with_id_but_no_email_is_missing_the_email() -> None:
    assert_only_error(validate(Resource.USERS, email=" "), ErrorCode.MISSING_FIELD, "email")
    assert_only_error(validate(Resource.USERS, email=None), ErrorCode.MISSING_FIELD, "email")


def test_user_with_id_may_leave_the_email_out() -> None:
    """A partial update; the merge refuses it when no user has the id."""
    assert validate(Resource.USERS, email=...).row == {"id": "u1", "name": "Ann"}


def test_user_without_id_and_with_a_null_email_is_missing_key() -> None:
    assert codes(validate(Resource.USERS, id=None, email=None)) == [(ErrorCode.MISSING_KEY, "id")]


@pytest.mark.parametrize("email", ["a@b.co", "first.last+tag@sub.example.org", "x@bücher.de", "o'hara@x-y.io"])
def test_valid_emails(email: str) -> None:
    assert validate(Resource.USERS, email=email).errors == []


@pytest.mark.parametrize(
    "email",
    ["foo@bar", "foo", "a b@c.de", "a@@c.de", "@c.de", "a@-c.de", "a@c..de", "a@c.de-", "a@" + "x" * 250 + ".de"],
)
def test_invalid_emails(email: str) -> None:
    result = validate(Resource.USERS, email=email)
    assert_only_error(result, ErrorCode.INVALID_EMAIL, "email", email)
    assert "use name@domain.tld" in result.errors[0].message


def test_email_of_wrong_type() -> None:
    assert_only_error(validate(Resource.USERS, email=42), ErrorCode.INVALID_TYPE, "email", 42)


@pytest.mark.parametrize("name", [None, "", "   "])
def test_name_is_required(name: Any) -> None:
    assert_only_error(validate(Resource.USERS, name=name), ErrorCode.MISSING_FIELD, "name")


def test_name_must_be_a_string() -> None:
    result = validate(Resource.USERS, name={"first": "Ann"})
    assert_only_error(result, ErrorCode.INVALID_TYPE, "name", {"first": "Ann"})
    assert "must be a string, got an object" in result.errors[0].message


def test_name_length_limit() -> None:
    assert validate(Resource.USERS, name="n" * 200).errors == []
    assert_only_error(validate(Resource.USERS, name="n" * 201), ErrorCode.INVALID_NAME, "name", "n" * 201)


@pytest.mark.parametrize("role", ["admin", "author", "reader"])
def test_known_roles(role: str) -> None:
    row = validate(Resource.USERS, role=role).row
    assert row is not None and row["role"] == role


def test_unknown_role_lists_the_allowed_ones() -> None:
    result = validate(Resource.USERS, role="owner")
    assert_only_error(result, ErrorCode.INVALID_ROLE, "role", "owner")
    assert "admin, author, reader" in result.errors[0].message


@pytest.mark.parametrize("active", [True, False])
def test_active_booleans(active: bool) -> None:
    row = validate(Resource.USERS, active=active).row
    assert row is not None and row["active"] is active


@pytest.mark.parametrize("active", ["yes", "true", 1, 0])
def test_active_must_be_a_real_boolean(active: Any) -> None:
    assert_only_error(validate(Resource.USERS, active=active), ErrorCode.INVALID_BOOLEAN, "active", active)


def test_all_problems_of_a_record_are_reported() -> None:
    result = validate(
        Resource.USERS, id="bad id", email="foo@bar", name=3, role="x", active="yes", created_at="2024-05-01"
    )
    assert codes(result) == [
        (ErrorCode.INVALID_ID, "id"),
        (ErrorCode.INVALID_EMAIL, "email"),
        (ErrorCode.INVALID_TYPE, "name"),
        (ErrorCode.INVALID_ROLE, "role"),
        (ErrorCode.INVALID_BOOLEAN, "active"),
        (ErrorCode.INVALID_TIMESTAMP, "created_at"),
    ]


# --------------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01t12:00:00z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01 12:00:00.250-01:00", datetime(2024, 5, 1, 13, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalized_to_utc(value: str, expected: datetime) -> None:
    row = validate(Resource.USERS, created_at=value, updated_at=value).row
    assert row is not None
    assert row["created_at"] == expected and row["created_at"].tzinfo is UTC
    assert row["updated_at"] == expected


@pytest.mark.parametrize(
    "value",
    ["2024-05-01", "yesterday", "2024-13-01T00:00:00Z", "2024-05-01T25:00:00Z", "2024-W18-3T12:00", "05/01/2024"],
)
def test_invalid_timestamps(value: str) -> None:
    result = validate(Resource.COMMENTS, updated_at=value)
    assert_only_error(result, ErrorCode.INVALID_TIMESTAMP, "updated_at", value)
    assert "use ISO 8601 like 2024-05-01T12:00:00Z" in result.errors[0].message


def test_timestamp_of_wrong_type() -> None:
    assert_only_error(validate(Resource.USERS, created_at=1714560000), ErrorCode.INVALID_TYPE, "created_at", 1714560000)


# ----------------------------------------------------------------------------------------------- articles


def test_article_without_id_and_slug_is_missing_key_only() -> None:
    assert codes(validate(Resource.ARTICLES, id=..., slug=...)) == [(ErrorCode.MISSING_KEY, "id")]


def test_article_with_id_but_no_slug_is_missing_the_slug() -> None:
    assert_only_error(validate(Resource.ARTICLES, slug=None), ErrorCode.MISSING_FIELD, "slug")
    assert validate(Resource.ARTICLES, slug=...).errors == []  # left out: a partial update


@pytest.mark.parametrize("slug", ["a", "hello-world-2", "x" * 200])
def test_valid_slugs(slug: str) -> None:
    assert validate(Resource.ARTICLES, slug=slug).errors == []


@pytest.mark.parametrize(
    ("slug", "suggestion"),
    [
        ("Hello World!", "hello-world"),
        ("hello--world", "hello-world"),
        ("-hello", "hello"),
        ("Crème brûlée", "creme-brulee"),
        ("x" * 201, "x" * 200),
    ],
)
def test_invalid_slug_suggests_the_kebab_case_form(slug: str, suggestion: str) -> None:
    result = validate(Resource.ARTICLES, slug=slug)
    assert_only_error(result, ErrorCode.INVALID_SLUG, "slug", slug)
    assert f"e.g. '{suggestion}'" in result.errors[0].message


def test_title_is_required_and_bounded() -> None:
    assert_only_error(validate(Resource.ARTICLES, title=" "), ErrorCode.MISSING_FIELD, "title")
    assert validate(Resource.ARTICLES, title="t" * 500).errors == []
    assert_only_error(validate(Resource.ARTICLES, title="t" * 501), ErrorCode.INVALID_TITLE, "title", "t" * 501)


def test_body_is_an_optional_string() -> None:
    row = validate(Resource.ARTICLES, body="  Text\n").row
    assert row is not None and row["body"] == "  Text\n"
    assert_only_error(validate(Resource.ARTICLES, body=["x"]), ErrorCode.INVALID_TYPE, "body", ["x"])


@pytest.mark.parametrize("author_id", [None, " "])
def test_author_is_required(author_id: Any) -> None:
    assert_only_error(validate(Resource.ARTICLES, author_id=author_id), ErrorCode.MISSING_FIELD, "author_id")


def test_valid_tags_are_stripped() -> None:
    row = validate(Resource.ARTICLES, tags=[" news", "t" * 50, *["x"] * 48]).row
    assert row is not None and row["tags"] == ["news", "t" * 50, *["x"] * 48]


@pytest.mark.parametrize("bad_tag", ["", "  ", "t" * 51, 7, None])
def test_invalid_tags(bad_tag: Any) -> None:
    assert_only_error(validate(Resource.ARTICLES, tags=["ok", bad_tag]), ErrorCode.INVALID_TAGS, "tags", bad_tag)


def test_too_many_tags() -> None:
    assert codes(validate(Resource.ARTICLES, tags=["x"] * 51)) == [(ErrorCode.INVALID_TAGS, "tags")]


def test_tags_must_be_a_list() -> None:
    assert_only_error(validate(Resource.ARTICLES, tags="a|b"), ErrorCode.INVALID_TYPE, "tags", "a|b")


@pytest.mark.parametrize("status", ["draft", "published"])
def test_known_statuses(status: str) -> None:
    row = validate(Resource.ARTICLES, status=status).row
    assert row is not None and row["status"] == status


def test_unknown_status() -> None:
    assert_only_error(validate(Resource.ARTICLES, status="live"), ErrorCode.INVALID_STATUS, "status", "live")


def test_published_article_may_have_published_at() -> None:
    assert validate(Resource.ARTICLES, status="published", published_at="2024-05-01T12:00:00Z").errors == []


def test_draft_with_published_at_is_rejected() -> None:
    result = validate(Resource.ARTICLES, status="draft", published_at="2024-05-01T12:00:00Z")
    assert_only_error(result, ErrorCode.DRAFT_HAS_PUBLISHED_AT, "published_at", "2024-05-01T12:00:00Z")


@pytest.mark.parametrize("published_at", [..., None])
def test_draft_without_published_at_is_fine_here(published_at: Any) -> None:
    """With published_at left out the stored one counts: the merge checks the merged row."""
    assert validate(Resource.ARTICLES, status="draft", published_at=published_at).errors == []


# ----------------------------------------------------------------------------------------------- comments


def test_comment_without_id_is_missing_key() -> None:
    result = validate(Resource.COMMENTS, id=...)
    assert_only_error(result, ErrorCode.MISSING_KEY, "id")
    assert "give every comment an id" in result.errors[0].message


@pytest.mark.parametrize("field", ["article_id", "user_id"])
def test_comment_references_are_required(field: str) -> None:
    assert_only_error(validate(Resource.COMMENTS, **{field: None}), ErrorCode.MISSING_FIELD, field)


def test_comment_body_is_required() -> None:
    assert_only_error(validate(Resource.COMMENTS, body=None), ErrorCode.MISSING_FIELD, "body")


@pytest.mark.parametrize("body", ["", " \n\t "])
def test_blank_comment_body_is_empty(body: str) -> None:
    assert_only_error(validate(Resource.COMMENTS, body=body), ErrorCode.BODY_EMPTY, "body", body)


def test_comment_body_word_limit() -> None:
    rules = ValidationRules(max_body_words=3)
    row = validate(Resource.COMMENTS, rules, body=" one  two\nthree ").row
    assert row is not None and row["body"] == " one  two\nthree "
    result = validate(Resource.COMMENTS, rules, body="one two three four")
    assert codes(result) == [(ErrorCode.BODY_TOO_LONG, "body")]
    assert "4 words" in result.errors[0].message and "at most 3" in result.errors[0].message


def test_comment_body_of_wrong_type() -> None:
    assert_only_error(validate(Resource.COMMENTS, body=5), ErrorCode.INVALID_TYPE, "body", 5)


def test_huge_offending_values_are_cut_in_the_report() -> None:
    body = "word " * 10_000
    result = validate(Resource.COMMENTS, body=body)
    assert len(result.errors[0].value) < 1100


@pytest.mark.parametrize(
    ("resource", "record", "field"),
    [
        (Resource.USERS, {"email": "a@example.com", "name": "A\x00B"}, "name"),
        (Resource.ARTICLES, {"slug": "s", "title": "T", "author_id": "u1", "body": "x\x00"}, "body"),
        (Resource.ARTICLES, {"slug": "s", "title": "T", "author_id": "u1", "tags": ["ok", "b\x00d"]}, "tags"),
        (Resource.COMMENTS, {"id": "c1", "article_id": "a1", "user_id": "u1", "body": "hi\x00"}, "body"),
    ],
)
def test_a_nul_character_is_the_records_error(resource: Resource, record: dict[str, Any], field: str) -> None:
    result = validate_record(resource, record, ValidationRules())
    assert result.row is None
    assert [(e.code, e.field) for e in result.errors] == [(ErrorCode.INVALID_CHARACTER, field)]
    assert "NUL" in result.errors[0].message
