"""The three resources this service imports and exports, what one import loads, and the file formats it reads."""

from __future__ import annotations

from enum import StrEnum

from bulkio.domain.errors import InvalidRequest


class Resource(StrEnum):
    USERS = "users"
    ARTICLES = "articles"
    COMMENTS = "comments"


# Parents before children: a mixed import merges its parts in this order, so that an article finds the users of
# the same file, and a comment the articles and users.
DEPENDENCY_ORDER: tuple[Resource, ...] = (Resource.USERS, Resource.ARTICLES, Resource.COMMENTS)


class ImportTarget(StrEnum):
    """What an import job loads: one resource, or `mixed`: records of all three in one file (each NDJSON/JSON
    record names its `resource`; an archive's members are named after theirs), imported in dependency order."""

    USERS = "users"
    ARTICLES = "articles"
    COMMENTS = "comments"
    MIXED = "mixed"

    @property
    def resources(self) -> tuple[Resource, ...]:
        """The resources it loads, in the order they are merged."""
        return DEPENDENCY_ORDER if self is ImportTarget.MIXED else (Resource(self.value),)

    @property
    def single(self) -> Resource | None:
        return None if self is ImportTarget.MIXED else Resource(self.value)


class Format(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"
    # Archives of a mixed import: members users.*, articles.*, comments.* (each CSV, NDJSON or JSON, gzip allowed)
    ZIP = "zip"
    TAR = "tar"  # plain or gzip-compressed (.tar.gz, .tgz)

    @property
    def is_archive(self) -> bool:
        return self in {Format.ZIP, Format.TAR}


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


def parse_import_target(value: object) -> ImportTarget | None:
    try:
        return ImportTarget(value) if isinstance(value, str) else None
    except ValueError:
        return None


def parse_format(value: object) -> Format | None:
    try:
        return Format(value.lower()) if isinstance(value, str) else None
    except ValueError:
        return None


def check_format_fits(target: ImportTarget, fmt: Format | None) -> None:
    """Raises InvalidRequest when the file's format cannot hold what the import loads: an archive may hold
    several resources, and a CSV row cannot say which resource it is."""
    if fmt is not None and fmt.is_archive and target is not ImportTarget.MIXED:
        raise InvalidRequest(
            "invalid_format",
            f"a {fmt.value} archive may hold several resources: send it with resource=mixed (members named "
            "users.*, articles.*, comments.*)",
        )
    if fmt is Format.CSV and target is ImportTarget.MIXED:
        raise InvalidRequest(
            "invalid_format",
            'a mixed import is NDJSON or JSON records with a "resource" member, or a zip or tar of users.csv, '
            "articles.csv and comments.csv: a CSV file holds one resource",
        )
