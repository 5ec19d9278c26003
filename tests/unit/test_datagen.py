"""The seeded data generator: shape, determinism, dirty rows and references between the files of `all`.

Dirty rows are recognised here with plain predicates rather than the service's validator, so that a bug in
either one cannot hide the same bug in the other.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.tools import datagen

ROWS = 5_000
SEED = 11
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ROLES = {"admin", "author", "reader"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as file:
        return [orjson.loads(line) for line in file]


def user_problems(users: list[dict[str, Any]]) -> list[set[str]]:
    seen_emails: set[str] = set()
    problems = []
    for user in users:
        found = set()
        if not user["id"]:
            found.add("empty_id")
        if not EMAIL.match(user["email"]):
            found.add("invalid_email")
        if user["email"].lower() in seen_emails:
            found.add("duplicate_email")
        if user["role"] not in ROLES:
            found.add("invalid_role")
        seen_emails.add(user["email"].lower())
        problems.append(found)
    return problems


def article_problems(articles: list[dict[str, Any]], user_ids: set[str]) -> list[set[str]]:
    seen_slugs: set[str] = set()
    problems = []
    for article in articles:
        found = set()
        if not SLUG.match(article["slug"]):
            found.add("invalid_slug")
        if article["slug"] in seen_slugs:
            found.add("duplicate_slug")
        if article["author_id"] not in user_ids:
            found.add("unknown_author")
        if article["status"] == "draft" and article["published_at"]:
            found.add("draft_with_published_at")
        if not article.get("id"):
            found.add("missing_id")
        seen_slugs.add(article["slug"])
        problems.append(found)
    return problems


def comment_problems(comments: list[dict[str, Any]], article_ids: set[str], user_ids: set[str]) -> list[set[str]]:
    problems = []
    for comment in comments:
        found = set()
        body = comment.get("body") or ""
        if comment["article_id"] not in article_ids:
            found.add("unknown_article")
        if comment["user_id"] not in user_ids:
            found.add("unknown_user")
        if len(body.split()) > datagen.COMMENT_MAX_WORDS:
            found.add("body_too_long")
        if not body.strip():
            found.add("empty_body")
        if not comment.get("id"):
            found.add("missing_id")
        problems.append(found)
    return problems


class GeneratedFiles:
    """The three files of one `all` run, with the problems the predicates find in each row."""

    def __init__(self, directory: Path) -> None:
        self.users = read_csv(directory / "users.csv")
        self.articles = read_ndjson(directory / "articles.ndjson")
        self.comments = read_ndjson(directory / "comments.ndjson")
        all_user_ids = {user["id"] for user in self.users if user["id"]}
        all_article_ids = {article["id"] for article in self.articles if article.get("id")}
        self.problems = {
            "users": user_problems(self.users),
            "articles": article_problems(self.articles, all_user_ids),
            "comments": comment_problems(self.comments, all_article_ids, all_user_ids),
        }

    def valid(self, resource: str) -> list[dict[str, Any]]:
        records = getattr(self, resource)
        return [record for record, found in zip(records, self.problems[resource], strict=True) if not found]


def generate_all(directory: Path, *extra: str) -> GeneratedFiles:
    assert datagen.main(["all", "--rows", str(ROWS), "--seed", str(SEED), "--out-dir", str(directory), *extra]) == 0
    return GeneratedFiles(directory)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFiles:
    return generate_all(tmp_path_factory.mktemp("dirty"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> GeneratedFiles:
    return generate_all(tmp_path_factory.mktemp("clean"), "--clean")


def file_bytes(tmp_path: Path, resource: str, seed: int, fmt: str, gzipped: bool = False) -> bytes:
    path = tmp_path / f"{resource}-{seed}-{fmt}-{gzipped}"
    datagen.write(resource, datagen.generate(resource, 500, seed), fmt, path, gzip=gzipped)
    return path.read_bytes()


@pytest.mark.parametrize("fmt", datagen.FORMATS)
@pytest.mark.parametrize("resource", datagen.RESOURCES)
def test_same_seed_gives_the_same_bytes_and_another_seed_other_bytes(tmp_path: Path, resource: str, fmt: str) -> None:
    assert file_bytes(tmp_path, resource, 1, fmt) == file_bytes(tmp_path, resource, 1, fmt)
    assert file_bytes(tmp_path, resource, 1, fmt) != file_bytes(tmp_path, resource, 2, fmt)


def test_gzipped_files_are_deterministic_and_decompress_to_the_plain_file(tmp_path: Path) -> None:
    gzipped = file_bytes(tmp_path, "comments", 5, "ndjson", gzipped=True)

    assert gzipped == file_bytes(tmp_path, "comments", 5, "ndjson", gzipped=True)
    assert gzip.decompress(gzipped) == file_bytes(tmp_path, "comments", 5, "ndjson")


def test_all_writes_the_requested_number_of_rows(dirty: GeneratedFiles) -> None:
    assert (len(dirty.users), len(dirty.articles), len(dirty.comments)) == (ROWS, ROWS, ROWS)


def test_users_csv_has_the_reference_header(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    datagen.main(["users", "--rows", "3", "--seed", "1", "--out", str(path)])

    assert path.read_text().splitlines()[0] == "id,email,name,role,active,created_at,updated_at"


def test_valid_users_look_like_the_reference_data(dirty: GeneratedFiles) -> None:
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    timestamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    for user in dirty.valid("users"):
        assert uuid.match(user["id"])
        assert user["active"] in ("true", "false")
        assert timestamp.match(user["created_at"])
        assert user["created_at"] <= user["updated_at"]
    assert {user["role"] for user in dirty.valid("users")} == ROLES
    comment_ids = [comment["id"] for comment in dirty.valid("comments")]
    assert all(comment_id.startswith("cm_") and uuid.match(comment_id[3:]) for comment_id in comment_ids)


@pytest.mark.parametrize(
    ("resource", "kind"),
    [(resource, kind) for resource, kinds in datagen.DIRTY_KINDS.items() for kind in kinds],
)
def test_every_dirty_kind_appears_but_rarely(dirty: GeneratedFiles, resource: str, kind: str) -> None:
    rows_of_kind = sum(kind in found for found in dirty.problems[resource])

    assert 0 < rows_of_kind < 0.05 * ROWS


def test_the_predicates_here_cover_every_dirty_kind_of_the_generator(dirty: GeneratedFiles) -> None:
    for resource, kinds in datagen.DIRTY_KINDS.items():
        assert set().union(*dirty.problems[resource]) == set(kinds)


@pytest.mark.parametrize("resource", datagen.RESOURCES)
def test_files_are_mostly_valid(dirty: GeneratedFiles, resource: str) -> None:
    assert len(dirty.valid(resource)) > 0.85 * ROWS


def test_dirty_rows_come_in_their_different_variants(dirty: GeneratedFiles) -> None:
    first_spelling: dict[str, str] = {}
    repeated_exactly = repeated_in_other_case = 0
    for user in dirty.users:
        key = user["email"].lower()
        if key not in first_spelling:
            first_spelling[key] = user["email"]
        elif first_spelling[key] == user["email"]:
            repeated_exactly += 1
        else:
            repeated_in_other_case += 1
    invalid_slugs = [article["slug"] for article in dirty.articles if not SLUG.match(article["slug"])]
    empty_bodies = [comment.get("body") for comment in dirty.comments if not (comment.get("body") or "").strip()]

    assert repeated_exactly and repeated_in_other_case
    assert any(re.match(r"^[^@\s]+@[^@.\s]+$", user["email"]) for user in dirty.users)  # like foo@bar
    assert any(" " in slug for slug in invalid_slugs) and any(slug != slug.lower() for slug in invalid_slugs)
    assert None in empty_bodies and "" in empty_bodies
    assert "manager" in {user["role"] for user in dirty.users}


@pytest.mark.parametrize("resource", datagen.RESOURCES)
def test_clean_files_have_no_dirty_rows(clean: GeneratedFiles, resource: str) -> None:
    assert len(clean.valid(resource)) == ROWS


def test_valid_rows_reference_valid_rows_of_the_other_files(dirty: GeneratedFiles) -> None:
    valid_user_ids = {user["id"] for user in dirty.valid("users")}
    valid_article_ids = {article["id"] for article in dirty.valid("articles")}

    assert {article["author_id"] for article in dirty.valid("articles")} <= valid_user_ids
    assert {comment["article_id"] for comment in dirty.valid("comments")} <= valid_article_ids
    assert {comment["user_id"] for comment in dirty.valid("comments")} <= valid_user_ids
    # Spread over the other file rather than piled on a few rows.
    assert len({article["author_id"] for article in dirty.valid("articles")}) > 0.5 * len(valid_user_ids)


def test_record_id_is_the_id_of_that_row_in_any_file(dirty: GeneratedFiles, clean: GeneratedFiles) -> None:
    for index in (0, 1, 2, ROWS - 1):
        assert datagen.record_id("articles", SEED, index) == clean.articles[index]["id"]
    assert datagen.record_id("users", SEED, 0) == dirty.users[0]["id"]


def test_clean_file_repairs_only_the_dirty_rows(dirty: GeneratedFiles, clean: GeneratedFiles) -> None:
    for resource in datagen.RESOURCES:
        dirty_rows = getattr(dirty, resource)
        clean_rows = getattr(clean, resource)
        for dirty_row, clean_row, found in zip(dirty_rows, clean_rows, dirty.problems[resource], strict=True):
            assert (dirty_row == clean_row) == (not found)


def test_a_file_is_a_prefix_of_a_longer_file_of_the_same_seed() -> None:
    for resource in datagen.RESOURCES:
        shorter = list(datagen.generate(resource, 50, 3, user_rows=80, article_rows=80))
        longer = list(datagen.generate(resource, 80, 3))

        assert shorter == longer[:50]


def parse_csv(data: bytes) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def parse_ndjson(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def parse_json(data: bytes) -> list[dict[str, Any]]:
    return json.load(io.BytesIO(data))


PARSERS: dict[str, Callable[[bytes], list[dict[str, Any]]]] = {
    "csv": parse_csv,
    "ndjson": parse_ndjson,
    "json": parse_json,
}


def as_csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "|".join(value)
    return "" if value is None else value


@pytest.mark.parametrize("fmt", datagen.FORMATS)
@pytest.mark.parametrize("resource", datagen.RESOURCES)
def test_every_format_parses_back_to_the_generated_records(tmp_path: Path, resource: str, fmt: str) -> None:
    records = list(datagen.generate(resource, 500, 4))

    parsed = PARSERS[fmt](file_bytes(tmp_path, resource, 4, fmt))

    if fmt == "csv":
        assert list(parsed[0]) == list(datagen.FIELDS[resource])
        records = [{field: as_csv_text(record.get(field)) for field in datagen.FIELDS[resource]} for record in records]
    assert parsed == records


def test_empty_files_still_parse(tmp_path: Path) -> None:
    for fmt, parse in PARSERS.items():
        path = tmp_path / f"empty.{fmt}"
        assert datagen.write("users", iter(()), fmt, path) == 0
        assert parse(path.read_bytes()) == []


def test_articles_without_users_to_point_at_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one user"):
        datagen.generate("articles", 10, 1, user_rows=0)


def test_cli_reports_rows_and_seconds_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datagen.main(["articles", "--rows", "20", "--seed", "2", "--out", str(tmp_path / "a.json"), "--format", "json"])

    report = capsys.readouterr().err
    assert re.search(r"articles: 20 rows in \d+\.\d\d s", report)
    assert len(json.loads((tmp_path / "a.json").read_text())) == 20
