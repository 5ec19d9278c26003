"""Mixed imports against a real PostgreSQL: one file holding users, articles and comments (children before their
parents in it) ends with the tables, the counters per resource and the errors that importing its three parts one
after the other gives; a child of a parent the file rejected names that parent's line; a dry run reports the
same and writes nothing; a mixed chunk whose staged rows vanished is staged again."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from bulkio.adapters.postgres import ImportStore
from bulkio.domain.resources import DEPENDENCY_ORDER, ImportTarget, Resource
from bulkio.domain.staging import MergeOutcome, StagingLost

from tests.fixtures.postgres import DATA_TABLES, query
from tests.integration.test_dry_run_merge import FILES, PRIOR_STATE
from tests.integration.test_update_semantics import Importer

pytestmark = pytest.mark.integration

VALUES = {
    "users": "id, email, name, role, active",
    "articles": "id, slug, title, body, author_id, tags, published_at, status",
    "comments": "id, article_id, user_id, body",
}


@pytest.fixture
def importer(store: ImportStore) -> Importer:
    return Importer(store)


def lines(content: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in content.splitlines() if line.strip()]


def mixed_file() -> bytes:
    """The three files of test_dry_run_merge as one, children first: comments, then articles, then users."""
    records = [
        {"resource": resource.value, **record}
        for resource in reversed(DEPENDENCY_ORDER)
        for record in lines(FILES[resource])
    ]
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def table_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the resource tables without their timestamps (now() differs from run to run)."""
    return {table: query(dsn, f"SELECT {columns} FROM {table} ORDER BY id") for table, columns in VALUES.items()}


def reset(dsn: str, importer: Importer) -> None:
    query(dsn, f"TRUNCATE {', '.join(DATA_TABLES)}")
    for resource in DEPENDENCY_ORDER:
        importer.file(resource, PRIOR_STATE[resource])


def error_keys(importer: Importer, job_id: str) -> list[tuple[str, str | None, str]]:
    """Each error as (code, field, the record without its resource member): lines differ between the files."""
    keys = []
    for error in importer.store.first_errors(job_id, 10_000):
        record = error["record"]
        if isinstance(record, dict):
            record = {name: value for name, value in record.items() if name != "resource"}
        keys.append((error["code"], error["field"], orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()))
    return sorted(keys)


def test_a_mixed_file_ends_as_its_three_parts_imported_one_after_the_other(importer: Importer, clean_db: str) -> None:
    reset(clean_db, importer)
    parts = {resource: importer.file(resource, FILES[resource]) for resource in DEPENDENCY_ORDER}
    after_parts = table_rows(clean_db)
    part_errors = sorted(key for job_id, _ in parts.values() for key in error_keys(importer, job_id))

    reset(clean_db, importer)
    job_id, mixed = importer.file(ImportTarget.MIXED, mixed_file())

    assert table_rows(clean_db) == after_parts
    assert error_keys(importer, job_id) == part_errors
    assert mixed.counters_by_resource == {
        resource.value: {
            "total": outcome.records_total,
            "processed": outcome.records_total,
            "succeeded": outcome.succeeded,
            "failed": outcome.failed,
        }
        for resource, (_, outcome) in parts.items()
    }
    assert (mixed.records_total, mixed.succeeded, mixed.failed) == (
        sum(outcome.records_total for _, outcome in parts.values()),
        sum(outcome.succeeded for _, outcome in parts.values()),
        sum(outcome.failed for _, outcome in parts.values()),
    )
    assert query(clean_db, "SELECT count(*) FROM stage_users")[0][0] == 0  # every staging table emptied


def test_a_child_of_a_parent_rejected_in_the_same_file_names_the_parents_line(
    importer: Importer, clean_db: str
) -> None:
    content = b"".join(
        orjson.dumps(record) + b"\n"
        for record in [
            {"resource": "articles", "id": "a-1", "slug": "s-1", "title": "T", "author_id": "u-bad"},
            {"resource": "users", "id": "u-bad", "email": "broken", "name": "Bad"},  # invalid_email: line 2
            {"resource": "users", "id": "u-ok", "email": "ok@x.io", "name": "Ok"},
            {"resource": "comments", "id": "c-1", "article_id": "a-1", "user_id": "u-ok", "body": "Hi"},
            {"resource": "comments", "id": "c-2", "article_id": "a-404", "user_id": "u-ok", "body": "Lost"},
        ]
    )
    job_id, outcome = importer.file(ImportTarget.MIXED, content)

    errors = {(error["line"], error["code"]): error["message"] for error in importer.store.first_errors(job_id)}
    assert errors[(1, "unknown_author")] == (
        "user u-bad was rejected at line 2 of this file: fix that record, then import both again"
    )
    assert errors[(4, "unknown_article")].startswith("article a-1 was rejected at line 1 of this file")
    assert errors[(5, "unknown_article")].startswith("no article has id a-404")  # not in the file at all
    assert outcome.counters_by_resource == {
        "users": {"total": 2, "processed": 2, "succeeded": 1, "failed": 1},
        "articles": {"total": 1, "processed": 1, "succeeded": 0, "failed": 1},
        "comments": {"total": 2, "processed": 2, "succeeded": 0, "failed": 2},
    }


def test_records_naming_no_resource_fail_and_count_in_the_job_only(importer: Importer, clean_db: str) -> None:
    content = (
        b"".join(
            orjson.dumps(record) + b"\n"
            for record in [
                {"resource": "users", "email": "a@x.io", "name": "A"},
                {"email": "b@x.io", "name": "B"},
                {"resource": "orders", "id": "o-1"},
            ]
        )
        + b"{not json\n"
    )
    job_id, outcome = importer.file(ImportTarget.MIXED, content)

    codes = [(error["line"], error["code"], error["field"]) for error in importer.store.first_errors(job_id)]
    assert codes == [
        (2, "invalid_resource", "resource"),
        (3, "invalid_resource", "resource"),
        (4, "invalid_json", None),
    ]
    assert (outcome.records_total, outcome.succeeded, outcome.failed) == (4, 1, 3)
    assert outcome.counters_by_resource is not None
    assert outcome.counters_by_resource["users"] == {"total": 1, "processed": 1, "succeeded": 1, "failed": 0}
    assert query(clean_db, "SELECT email FROM users") == [("a@x.io",)]


def test_a_mixed_dry_run_reports_what_the_import_does_and_writes_nothing(importer: Importer, clean_db: str) -> None:
    reset(clean_db, importer)
    before = table_rows(clean_db)
    content = mixed_file() + b'{"resource": "articles", "slug": "new-author", "title": "T", "author_id": "u-new"}\n'
    content += b'{"resource": "users", "id": "u-new", "email": "new-author@x.io", "name": "New"}\n'

    dry_job, dry = importer.file(ImportTarget.MIXED, content, dry_run=True)
    assert table_rows(clean_db) == before
    real_job, real = importer.file(ImportTarget.MIXED, content)

    assert table_rows(clean_db) != before
    assert (dry.succeeded, dry.failed, dry.errors_by_code, dry.counters_by_resource) == (
        real.succeeded,
        real.failed,
        real.errors_by_code,
        real.counters_by_resource,
    )
    assert importer.store.first_errors(dry_job, 10_000) == importer.store.first_errors(real_job, 10_000)
    assert "unknown_author" not in {e["code"] for e in importer.store.first_errors(real_job, 10_000)} - {
        e["code"] for e in importer.store.first_errors(dry_job, 10_000)
    }
    assert query(clean_db, "SELECT author_id FROM articles WHERE slug = 'new-author'") == [("u-new",)]


def test_a_mixed_chunk_whose_rows_vanished_from_one_staging_table_is_staged_again(
    importer: Importer, clean_db: str
) -> None:
    content = b"".join(
        orjson.dumps(record) + b"\n"
        for record in [
            {"resource": "users", "id": "u-1", "email": "a@x.io", "name": "A"},
            {"resource": "articles", "id": "a-1", "slug": "s", "title": "T", "author_id": "u-1"},
        ]
    )
    job_id = importer.stage(ImportTarget.MIXED, content)
    # A crash recovery empties the UNLOGGED staging tables; here only one of the chunk's two.
    query(clean_db, "DELETE FROM stage_articles WHERE job_id = %s", (job_id,))

    lost = importer.store.try_merge(job_id)

    assert lost == StagingLost((0,), 1)
    assert query(clean_db, "SELECT count(*) FROM stage_users")[0][0] == 0  # the chunk's other rows went too
    assert query(clean_db, "SELECT count(*) FROM users")[0][0] == 0
    assert importer.store.stage_chunk(job_id, ImportTarget.MIXED, 0, *importer.last_chunk)  # staged again
    merged = importer.store.try_merge(job_id)
    assert isinstance(merged, MergeOutcome) and (merged.succeeded, merged.failed) == (2, 0)
    assert query(clean_db, "SELECT author_id FROM articles") == [("u-1",)]


def test_only_mixed_runs_may_hold_several_resources(store: ImportStore, clean_db: str) -> None:
    store.register_job("mixed-run", ImportTarget.MIXED)
    assert query(clean_db, "SELECT resource FROM import_runs") == [("mixed",)]
    assert {resource.value for resource in ImportTarget.MIXED.resources} == {r.value for r in Resource}
