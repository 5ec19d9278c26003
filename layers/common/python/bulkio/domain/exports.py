"""What an export asks for: a resource, the columns to output, filters, a row limit and a file format.

Pure code: the request (query-string parameters or a JSON body) becomes an ExportQuery whose filters name
only columns of the resource and carry values already parsed to Python types, or an InvalidExportRequest (an
InvalidRequest refusal) that says what is allowed. Turning the query into SQL is the adapter's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from bulkio.domain.errors import InvalidRequest
from bulkio.domain.records import ARTICLE_STATUSES, TIMESTAMP_EXAMPLE, parse_timestamp
from bulkio.domain.resources import COLUMNS, Resource


class ExportFormat(StrEnum):
    NDJSON = "ndjson"
    JSON = "json"
    CSV = "csv"


CONTENT_TYPES: dict[ExportFormat, str] = {
    ExportFormat.NDJSON: "application/x-ndjson",
    ExportFormat.JSON: "application/json",
    ExportFormat.CSV: "text/csv; charset=utf-8",
}

COMPRESSIONS = ("gzip",)
MAX_IDS = 1000
MAX_LIMIT = 10_000_000
DEFAULT_FORMAT = ExportFormat.NDJSON

# Query-string parameters that are not filters (resource and format are read by the caller).
FIELDS_PARAM = "fields"
LIMIT_PARAM = "limit"
FORMAT_PARAM = "format"
RESOURCE_PARAM = "resource"
BODY_KEYS = ("resource", "format", "filters", "fields", "compression", "limit")

FilterOperator = Literal["=", ">", "<", ">=", "in", "contains"]


@dataclass(frozen=True, slots=True)
class Filter:
    """`column <operator> value`; `in`: the column is one of the values (a list); `contains`: the array
    column holds the value."""

    column: str
    operator: FilterOperator
    value: Any


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """Rows of `resource` matching every filter, ordered by id, projected on `fields`, at most `limit`."""

    resource: Resource
    fields: tuple[str, ...]
    filters: tuple[Filter, ...]
    limit: int | None


class InvalidExportRequest(InvalidRequest, ValueError):
    """`code` is stable (the API's problem code); `allowed` lists the accepted values where there is a list,
    and only then is it among the refusal's `extra` (the problem body has no empty `allowed` member)."""

    def __init__(self, code: str, message: str, allowed: list[str] | None = None) -> None:
        super().__init__(code, message, **({"allowed": allowed} if allowed else {}))
        self.allowed = allowed or []


# ------------------------------------------------------------------------------------------- value parsers
# Each takes the raw value (always a string from a query string; any JSON value from a body) and returns the
# parsed value, or raises InvalidExportRequest naming the filter and the expected form.


def _invalid_value(name: str, value: Any, expected: str) -> InvalidExportRequest:
    return InvalidExportRequest("invalid_filter_value", f"{name} {value!r} is not valid: {expected}")


def _is_text(value: Any) -> bool:
    # PostgreSQL text cannot hold NUL, so no stored value could match one.
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


def _text(name: str, value: Any) -> str:
    if not _is_text(value):
        raise _invalid_value(name, value, "give a non-empty string without NUL characters")
    return value.strip()


def _status(name: str, value: Any) -> str:
    if value not in ARTICLE_STATUSES:
        raise _invalid_value(name, value, f"use {' or '.join(ARTICLE_STATUSES)}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _invalid_value(name, value, "use true or false")


def _timestamp(name: str, value: Any) -> datetime:
    parsed = parse_timestamp(value.strip()) if isinstance(value, str) else None
    if parsed is None:
        expected = f"use an ISO 8601 date-time like {TIMESTAMP_EXAMPLE} (no offset means UTC)"
        if isinstance(value, str) and " " in value.strip():
            # A '+' left unencoded in a URL arrives as a space.
            expected += "; in a URL write the '+' of an offset as %2B"
        raise _invalid_value(name, value, expected)
    return parsed


def _id_list(name: str, value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    expected = f"give 1 to {MAX_IDS} non-empty ids, comma-separated (or a JSON array of strings)"
    if not isinstance(items, list) or not items or len(items) > MAX_IDS:
        raise _invalid_value(name, value, expected)
    if not all(_is_text(item) for item in items):
        raise _invalid_value(name, value, expected)
    return list(dict.fromkeys(item.strip() for item in items))


@dataclass(frozen=True, slots=True)
class _FilterSpec:
    column: str
    operator: FilterOperator
    parse: Callable[[str, Any], Any]


_COMMON_FILTERS: dict[str, _FilterSpec] = {
    "ids": _FilterSpec("id", "in", _id_list),
    "created_after": _FilterSpec("created_at", ">", _timestamp),
    "created_before": _FilterSpec("created_at", "<", _timestamp),
    "updated_since": _FilterSpec("updated_at", ">=", _timestamp),
}

FILTERS: dict[Resource, dict[str, _FilterSpec]] = {
    Resource.USERS: {
        "role": _FilterSpec("role", "=", _text),
        "active": _FilterSpec("active", "=", _boolean),
        **_COMMON_FILTERS,
    },
    Resource.ARTICLES: {
        "status": _FilterSpec("status", "=", _status),
        "author_id": _FilterSpec("author_id", "=", _text),
        "tag": _FilterSpec("tags", "contains", _text),
        "published_after": _FilterSpec("published_at", ">", _timestamp),
        "published_before": _FilterSpec("published_at", "<", _timestamp),
        **_COMMON_FILTERS,
    },
    Resource.COMMENTS: {
        "article_id": _FilterSpec("article_id", "=", _text),
        "user_id": _FilterSpec("user_id", "=", _text),
        **_COMMON_FILTERS,
    },
}


def allowed_filters(resource: Resource) -> list[str]:
    return list(FILTERS[resource])


# ------------------------------------------------------------------------------------------------ parsing


def _resource(value: Any) -> Resource:
    allowed = [resource.value for resource in Resource]
    if value in (None, ""):
        raise InvalidExportRequest(
            "invalid_resource", f"resource is required: say which to export, one of {', '.join(allowed)}", allowed
        )
    if value not in allowed:
        raise InvalidExportRequest(
            "invalid_resource", f"resource {value!r} is not exportable: use one of {', '.join(allowed)}", allowed
        )
    return Resource(value)


def parse_export_format(value: Any) -> ExportFormat:
    """The format a request names (NDJSON when it names none); InvalidExportRequest lists the allowed ones."""
    allowed = [fmt.value for fmt in ExportFormat]
    if value is None:
        return DEFAULT_FORMAT
    if not isinstance(value, str) or value.lower() not in allowed:
        raise InvalidExportRequest(
            "invalid_format", f"format {value!r} is not supported: use one of {', '.join(allowed)}", allowed
        )
    return ExportFormat(value.lower())


def _compression(value: Any) -> str | None:
    if value is None or value in COMPRESSIONS:
        return value
    allowed = list(COMPRESSIONS)
    raise InvalidExportRequest(
        "invalid_compression", f"compression {value!r} is not supported: use gzip or leave it out", allowed
    )


def _fields(resource: Resource, value: Any) -> tuple[str, ...]:
    columns = COLUMNS[resource]
    if value is None:
        return columns
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidExportRequest(
            "invalid_fields",
            "fields must be a comma-separated string or an array of field names",
            list(columns),
        )
    requested = [name.strip() for name in names if name.strip()]
    if not requested:
        raise InvalidExportRequest(
            "invalid_fields", f"fields is empty: name at least one of {', '.join(columns)}", list(columns)
        )
    unknown = [name for name in requested if name not in columns]
    if unknown:
        raise InvalidExportRequest(
            "unknown_field",
            f"{resource.value} have no field {', '.join(map(repr, unknown))}: use {', '.join(columns)}",
            list(columns),
        )
    # A repeated name would give a JSON object a duplicate key and a CSV a duplicate column.
    return tuple(dict.fromkeys(requested))


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidExportRequest(
            "invalid_limit", f"limit {value!r} is not valid: use a whole number from 1 to {MAX_LIMIT:,}"
        )
    return value


def _filters(resource: Resource, values: Mapping[str, Any], other_names: tuple[str, ...]) -> tuple[Filter, ...]:
    specs = FILTERS[resource]
    filters = []
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            allowed = allowed_filters(resource)
            also = f" (and the parameters {', '.join(other_names)})" if other_names else ""
            raise InvalidExportRequest(
                "unknown_filter",
                f"{resource.value} cannot be filtered by {name!r}: use {', '.join(allowed)}{also}",
                allowed,
            )
        filters.append(Filter(spec.column, spec.operator, spec.parse(name, value)))
    return tuple(filters)


def parse_export_query(resource: str | None, params: Mapping[str, str]) -> ExportQuery:
    """From query-string parameters: filters by name, `fields`, `limit`; `format` and `resource` may be among
    them (GET /v1/exports?resource=users&format=csv) and are ignored: the caller reads them."""
    parsed_resource = _resource(resource)
    other_names = (FIELDS_PARAM, LIMIT_PARAM, FORMAT_PARAM, RESOURCE_PARAM)
    filter_values = {name: value for name, value in params.items() if name not in other_names}
    return ExportQuery(
        resource=parsed_resource,
        fields=_fields(parsed_resource, params.get(FIELDS_PARAM)),
        filters=_filters(parsed_resource, filter_values, other_names),
        limit=_limit(params.get(LIMIT_PARAM)),
    )


def parse_export_request(body: Mapping[str, Any]) -> tuple[ExportQuery, ExportFormat, str | None]:
    """From a JSON body {"resource", "format"?, "filters"?: {name: value}, "fields"?, "limit"?, "compression"?};
    returns the query, the format (NDJSON when absent) and the compression (None or "gzip")."""
    unknown = [key for key in body if key not in BODY_KEYS]
    if unknown:
        raise InvalidExportRequest(
            "unknown_field",
            f"the request has unknown field(s) {', '.join(map(repr, unknown))}: use {', '.join(BODY_KEYS)}",
            list(BODY_KEYS),
        )
    resource = _resource(body.get("resource"))
    filter_values = body.get("filters") or {}
    if not isinstance(filter_values, Mapping):
        raise InvalidExportRequest(
            "invalid_filters",
            'filters must be an object like {"created_after": "2024-05-01T00:00:00Z"}',
            allowed_filters(resource),
        )
    query = ExportQuery(
        resource=resource,
        fields=_fields(resource, body.get("fields")),
        filters=_filters(resource, filter_values, ()),
        limit=_limit(body.get("limit")),
    )
    return query, parse_export_format(body.get("format")), _compression(body.get("compression"))
