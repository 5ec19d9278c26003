"""Export requests: query-string and JSON-body parsing into ExportQuery, and the errors that name what is allowed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bulkio.domain.errors import InvalidRequest
from bulkio.domain.exports import (
    CONTENT_TYPES,
    MAX_IDS,
    ExportFormat,
    ExportQuery,
    Filter,
    InvalidExportRequest,
    allowed_filters,
    parse_export_query,
    parse_export_request,
)
from bulkio.domain.resources import COLUMNS, Resource

MAY_1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def only_filter(resource: str, name: str, value: str) -> Filter:
    query = parse_export_query(resource, {name: value})
    assert len(query.filters) == 1
    return query.filters[0]


def rejected(resource: str | None, params: dict[str, str]) -> InvalidExportRequest:
    with pytest.raises(InvalidExportRequest) as caught:
        parse_export_query(resource, params)
    return caught.value


def rejected_body(body: dict[str, Any]) -> InvalidExportRequest:
    with pytest.raises(InvalidExportRequest) as caught:
        parse_export_request(body)
    return caught.value


# ------------------------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize("resource", list(Resource))
def test_no_parameters_export_every_column_unfiltered_and_unlimited(resource: Resource) -> None:
    assert parse_export_query(resource.value, {}) == ExportQuery(resource, COLUMNS[resource], (), None)


def test_format_and_resource_are_accepted_and_left_to_the_caller() -> None:
    assert parse_export_query("users", {"format": "csv", "resource": "users"}).filters == ()


def test_invalid_requests_are_value_errors() -> None:
    assert issubclass(InvalidExportRequest, ValueError)


def test_invalid_requests_are_refusals_whose_extra_lists_the_allowed_values_when_there_is_a_list() -> None:
    assert issubclass(InvalidExportRequest, InvalidRequest)
    unknown_format = rejected_body({"resource": "users", "format": "xml"})
    assert (unknown_format.code, unknown_format.extra) == ("invalid_format", {"allowed": ["ndjson", "json", "csv"]})
    assert unknown_format.message == "format 'xml' is not supported: use one of ndjson, json, csv"
    assert rejected("users", {"limit": "0"}).extra == {}


def test_content_types() -> None:
    assert CONTENT_TYPES == {
        ExportFormat.NDJSON: "application/x-ndjson",
        ExportFormat.JSON: "application/json",
        ExportFormat.CSV: "text/csv; charset=utf-8",
    }


@pytest.mark.parametrize("resource", [None, "", "posts", "USERS"])
def test_unknown_resource_lists_the_resources(resource: str | None) -> None:
    error = rejected(resource, {})
    assert error.code == "invalid_resource"
    assert error.allowed == ["users", "articles", "comments"]


# ------------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("resource", "name", "value", "expected"),
    [
        ("users", "role", "admin", Filter("role", "=", "admin")),
        ("users", "active", "true", Filter("active", "=", True)),
        ("users", "active", "False", Filter("active", "=", False)),
        ("articles", "status", "published", Filter("status", "=", "published")),
        ("articles", "status", "draft", Filter("status", "=", "draft")),
        ("articles", "author_id", "u-1", Filter("author_id", "=", "u-1")),
        ("articles", "tag", "news", Filter("tags", "contains", "news")),
        ("articles", "published_after", "2024-05-01T12:00:00Z", Filter("published_at", ">", MAY_1)),
        ("articles", "published_before", "2024-05-01T12:00:00Z", Filter("published_at", "<", MAY_1)),
        ("comments", "article_id", "a-1", Filter("article_id", "=", "a-1")),
        ("comments", "user_id", "u-1", Filter("user_id", "=", "u-1")),
    ],
)
def test_resource_filters_parse_to_typed_conditions(resource: str, name: str, value: str, expected: Filter) -> None:
    assert only_filter(resource, name, value) == expected


@pytest.mark.parametrize("resource", ["users", "articles", "comments"])
def test_common_filters_on_every_resource(resource: str) -> None:
    assert only_filter(resource, "created_after", "2024-05-01T12:00:00Z") == Filter("created_at", ">", MAY_1)
    assert only_filter(resource, "created_before", "2024-05-01T12:00:00Z") == Filter("created_at", "<", MAY_1)
    assert only_filter(resource, "updated_since", "2024-05-01T12:00:00Z") == Filter("updated_at", ">=", MAY_1)
    assert only_filter(resource, "ids", "a, b,a") == Filter("id", "in", ["a", "b"])


def test_timestamps_are_converted_to_utc_and_no_offset_means_utc() -> None:
    assert only_filter("users", "created_after", "2024-05-01T14:00:00+02:00").value == MAY_1
    assert only_filter("users", "created_after", "2024-05-01T12:00:00").value == MAY_1
    assert only_filter("users", "created_after", "2024-05-01T12:00:00.000Z").value == MAY_1


def test_allowed_filters_per_resource() -> None:
    common = ["ids", "created_after", "created_before", "updated_since"]
    assert sorted(allowed_filters(Resource.USERS)) == sorted(["role", "active", *common])
    assert sorted(allowed_filters(Resource.ARTICLES)) == sorted(
        ["status", "author_id", "tag", "published_after", "published_before", *common]
    )
    assert sorted(allowed_filters(Resource.COMMENTS)) == sorted(["article_id", "user_id", *common])


@pytest.mark.parametrize(
    ("resource", "name"),
    [("users", "status"), ("users", "tag"), ("articles", "role"), ("comments", "author_id"), ("users", "id")],
)
def test_unknown_filter_lists_the_allowed_ones(resource: str, name: str) -> None:
    error = rejected(resource, {name: "x"})
    assert error.code == "unknown_filter"
    assert error.allowed == allowed_filters(Resource(resource))
    assert repr(name) in error.message


@pytest.mark.parametrize(
    ("resource", "name", "value", "hint"),
    [
        ("users", "active", "yes", "true or false"),
        ("users", "role", " ", "non-empty"),
        ("articles", "status", "archived", "draft or published"),
        ("users", "created_after", "2024-05-01", "ISO 8601"),
        ("users", "created_before", "yesterday", "ISO 8601"),
        ("users", "updated_since", "2024-13-01T00:00:00Z", "ISO 8601"),
        ("articles", "published_after", "1714564800", "ISO 8601"),
        ("articles", "published_before", "", "ISO 8601"),
        ("users", "created_after", "2024-05-01T12:00:00 02:00", "%2B"),
        ("users", "ids", "", "comma-separated"),
        ("users", "ids", "a,,b", "comma-separated"),
        ("users", "ids", "a,b\x00", "comma-separated"),
        ("articles", "tag", "news\x00", "without NUL"),
        ("users", "ids", ",".join(f"u{n}" for n in range(MAX_IDS + 1)), f"1 to {MAX_IDS}"),
    ],
)
def test_bad_filter_values_say_the_expected_form(resource: str, name: str, value: str, hint: str) -> None:
    error = rejected(resource, {name: value})
    assert error.code == "invalid_filter_value"
    assert name in error.message
    assert hint in error.message


def test_a_thousand_ids_are_accepted() -> None:
    ids = [f"u{n}" for n in range(MAX_IDS)]
    assert only_filter("users", "ids", ",".join(ids)).value == ids


@pytest.mark.parametrize("value", ["x' OR '1'='1", "admin; DROP TABLE users; --", '"; SELECT 1', "\\x00"])
def test_sql_looking_values_are_plain_values(value: str) -> None:
    assert only_filter("users", "role", value) == Filter("role", "=", value)
    assert only_filter("articles", "tag", value) == Filter("tags", "contains", value)
    assert only_filter("users", "ids", value) == Filter("id", "in", [value])


# --------------------------------------------------------------------------------------- fields and limit


def test_fields_keep_the_requested_order_without_repeats() -> None:
    query = parse_export_query("articles", {"fields": " title , id,title,tags"})
    assert query.fields == ("title", "id", "tags")


def test_fields_need_not_include_id() -> None:
    assert parse_export_query("users", {"fields": "email"}).fields == ("email",)


@pytest.mark.parametrize("fields", ["email,password", "ID", "id; DROP TABLE users"])
def test_unknown_field_lists_the_allowed_ones(fields: str) -> None:
    error = rejected("users", {"fields": fields})
    assert error.code == "unknown_field"
    assert error.allowed == list(COLUMNS[Resource.USERS])


def test_empty_fields_are_rejected() -> None:
    assert rejected("users", {"fields": " , "}).code == "invalid_fields"


def test_limit_is_a_positive_whole_number() -> None:
    assert parse_export_query("users", {"limit": "25"}).limit == 25
    assert parse_export_query("users", {"limit": "10000000"}).limit == 10_000_000


@pytest.mark.parametrize("limit", ["0", "-1", "1.5", "ten", "", "10000001", "\uff11\uff12"])
def test_bad_limit_is_rejected(limit: str) -> None:
    error = rejected("users", {"limit": limit})
    assert error.code == "invalid_limit"
    assert "1 to 10,000,000" in error.message


# ------------------------------------------------------------------------------------------------ JSON body


def test_body_with_everything() -> None:
    query, fmt, compression = parse_export_request(
        {
            "resource": "articles",
            "format": "CSV",
            "filters": {
                "status": "published",
                "tag": "news",
                "ids": ["a1", "a2"],
                "created_after": "2024-05-01T12:00Z",
            },
            "fields": ["slug", "title"],
            "limit": 10,
            "compression": "gzip",
        }
    )
    assert query == ExportQuery(
        Resource.ARTICLES,
        ("slug", "title"),
        (
            Filter("status", "=", "published"),
            Filter("tags", "contains", "news"),
            Filter("id", "in", ["a1", "a2"]),
            Filter("created_at", ">", MAY_1),
        ),
        10,
    )
    assert (fmt, compression) == (ExportFormat.CSV, "gzip")


def test_body_defaults_to_ndjson_uncompressed_everything() -> None:
    assert parse_export_request({"resource": "users"}) == (
        ExportQuery(Resource.USERS, COLUMNS[Resource.USERS], (), None),
        ExportFormat.NDJSON,
        None,
    )


def test_body_accepts_comma_separated_fields_and_json_booleans() -> None:
    query, _, _ = parse_export_request({"resource": "users", "fields": "email,active", "filters": {"active": False}})
    assert query.fields == ("email", "active")
    assert query.filters == (Filter("active", "=", False),)


@pytest.mark.parametrize(
    ("body", "code", "allowed"),
    [
        ({"resource": "users", "format": "xlsx"}, "invalid_format", ["ndjson", "json", "csv"]),
        ({"resource": "users", "compression": "zip"}, "invalid_compression", ["gzip"]),
        (
            {"resource": "users", "filter": {}},
            "unknown_field",
            ["resource", "format", "filters", "fields", "compression", "limit"],
        ),
        ({"resource": "tags"}, "invalid_resource", ["users", "articles", "comments"]),
        ({"resource": "users", "filters": {"tag": "x"}}, "unknown_filter", allowed_filters(Resource.USERS)),
        ({"resource": "users", "filters": ["role"]}, "invalid_filters", allowed_filters(Resource.USERS)),
        ({"resource": "users", "fields": ["email", 3]}, "invalid_fields", list(COLUMNS[Resource.USERS])),
    ],
)
def test_body_errors_list_what_is_allowed(body: dict[str, Any], code: str, allowed: list[str]) -> None:
    error = rejected_body(body)
    assert (error.code, error.allowed) == (code, allowed)


@pytest.mark.parametrize(
    ("filters", "code"),
    [
        ({"role": 1}, "invalid_filter_value"),
        ({"role": ["admin"]}, "invalid_filter_value"),
        ({"active": 1}, "invalid_filter_value"),
        ({"created_after": 1714564800}, "invalid_filter_value"),
        ({"ids": ["a", 2]}, "invalid_filter_value"),
        ({"ids": []}, "invalid_filter_value"),
    ],
)
def test_body_filter_values_of_the_wrong_json_type_are_rejected(filters: dict[str, Any], code: str) -> None:
    assert rejected_body({"resource": "users", "filters": filters}).code == code


@pytest.mark.parametrize("limit", [True, 0, 1.5, "x"])
def test_body_limit_must_be_a_positive_integer(limit: Any) -> None:
    assert rejected_body({"resource": "users", "limit": limit}).code == "invalid_limit"


@pytest.mark.parametrize("resource", [None, ""])
def test_an_export_without_resource_says_that_it_is_required(resource: str | None) -> None:
    refusal = rejected(resource, {})
    assert refusal.code == "invalid_resource"
    assert refusal.message == "resource is required: say which to export, one of users, articles, comments"
    assert rejected_body({}).message == refusal.message
