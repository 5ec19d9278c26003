"""The three resources this service imports and exports, and the file formats it reads."""

from __future__ import annotations

from enum import StrEnum


class Resource(StrEnum):
    USERS = "users"
    ARTICLES = "articles"
    COMMENTS = "comments"


class Format(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"


# Column order of each resource, as stored in PostgreSQL and staged by the writers.
COLUMNS: dict[Resource, tuple[str, ...]] = {
    Resource.USERS: ("id", "email", "name", "role", "active", "created_at", "updated_at"),
    Resource.ARTICLES: (
        "id",
        "slug",
        "title",
        "body",
        "author_id",
        "tags",
        "published_at",
        "status",
        "created_at",
        "updated_at",
    ),
    Resource.COMMENTS: ("id", "article_id", "user_id", "body", "created_at", "updated_at"),
}


def parse_resource(value: object) -> Resource | None:
    """None for anything that is not a resource's name, a JSON number or list included."""
    try:
        return Resource(value) if isinstance(value, str) else None
    except ValueError:
        return None


def parse_format(value: object) -> Format | None:
    try:
        return Format(value.lower()) if isinstance(value, str) else None
    except ValueError:
        return None
