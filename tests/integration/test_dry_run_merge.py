"""A dry run against a real PostgreSQL: the same counters and the same error report as the real run on the same
state, for each resource, and not a row written. The files mix every outcome the merge decides: new rows,
updates, unchanged rows, duplicates in the file, natural keys held by other rows, unknown references, the
draft rule, and a record whose parent is rejected in the same file."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from bulkio.adapters.postgres import ImportStore
from bulkio.domain.resources import ImportTarget, Resource

from tests.fixtures.postgres import query
from tests.integration.test_update_semantics import Importer

pytestmark = pytest.mark.integration


def ndjson(*records: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def tables(dsn: str) -> dict[str, tuple[Any, ...]]:
    """Every row of the resource tables, as a count and a digest (timestamps included)."""
    return {
        table: tuple(query(dsn, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t")[0])
        for table in ("users", "articles", "comments")
    }


PRIOR_STATE = {
    Resource.USERS: ndjson(
        {"id": "u-1", "email": "ada@x.io", "name": "Ada", "role": "author"},
        {"id": "u-2", "email": "bob@x.io", "name": "Bob"},
    ),
    Resource.ARTICLES: ndjson(
        {"id": "a-1", "slug": "hello", "title": "Hello", "author_id": "u-1", "status": "draft"},
    ),
    Resource.COMMENTS: ndjson(
        {"id": "c-1", "article_id": "a-1", "user_id": "u-2", "body": "First!"},
    ),
}

FILES = {
    Resource.USERS: ndjson(
        {"email": "new@x.io", "name": "New"},
        {"id": "u-1", "email": "ada@x.io", "name": "Ada Lovelace", "role": "author"},  # an update
        {"id": "u-2", "email": "bob@x.io", "name": "Bob"},  # unchanged
        {"email": "BOB@x.io", "name": "Bobby"},  # the key resolves to u-2: targets it a second time
        {"id": "u-3", "email": "ada@x.io", "name": "Copy"},  # email_taken
        {"email": "new@x.io", "name": "Again"},  # duplicate_in_file
        {"email": "broken", "name": "Broken"},  # invalid_email (a writer's check)
    ),
    Resource.ARTICLES: ndjson(
        {"slug": "second", "title": "Second", "author_id": "u-2", "published_at": "2024-05-01T12:00:00Z"},
        {"id": "a-1", "title": "Hello again"},  # a partial update
        {"slug": "hello", "title": "Taken", "author_id": "u-2", "id": "a-9"},  # slug_taken
        {"slug": "orphan", "title": "Orphan", "author_id": "u-404"},  # unknown_author
        {"slug": "second", "title": "Twice", "author_id": "u-1"},  # duplicate_in_file
        {"id": "a-1", "published_at": "2024-06-01T00:00:00Z"},  # a draft with published_at, merged
    ),
    Resource.COMMENTS: ndjson(
        {"id": "c-2", "article_id": "a-1", "user_id": "u-1", "body": "Nice"},
        {"id": "c-1", "article_id": "a-1", "user_id": "u-2", "body": "First, edited"},
        {"id": "c-3", "article_id": "a-404", "user_id": "u-1", "body": "Lost"},  # unknown_article
        {"id": "c-4", "article_id": "a-1", "user_id": "u-404", "body": "Who?"},  # unknown_user
        {"id": "c-2", "article_id": "a-1", "user_id": "u-2", "body": "Again"},  # duplicate_in_file
    ),
}


@pytest.fixture
def importer(store: ImportStore) -> Importer:
    return Importer(store)


def report(importer: Importer, job_id: str) -> list[dict[str, Any]]:
    return importer.store.first_errors(job_id, 10_000)


@pytest.mark.parametrize("resource", list(Resource), ids=lambda resource: resource.value)
def test_a_dry_run_reports_what_the_real_run_does_and_writes_nothing(
    importer: Importer, clean_db: str, resource: Resource
) -> None:
    for prior in (Resource.USERS, Resource.ARTICLES, Resource.COMMENTS):
        importer.file(prior, PRIOR_STATE[prior])
    before = tables(clean_db)

    dry_job, dry = importer.file(resource, FILES[resource], dry_run=True)

    assert tables(clean_db) == before
    real_job, real = importer.file(resource, FILES[resource])
    assert tables(clean_db) != before  # the file changes something, so the dry run's silence means something
    assert (dry.records_total, dry.succeeded, dry.failed, dry.errors_by_code) == (
        real.records_total,
        real.succeeded,
        real.failed,
        real.errors_by_code,
    )
    assert report(importer, dry_job) == report(importer, real_job)
    assert len(report(importer, real_job)) >= 3


def test_a_dry_run_stays_one_whoever_creates_its_run(importer: Importer, clean_db: str) -> None:
    """A writer may create the run row before the chunker registers the job: either way it is a dry run."""
    store = importer.store
    store.register_job("dry", ImportTarget.USERS)  # as if a plain run row came first
    store.register_job("dry", ImportTarget.USERS, dry_run=True)
    store.register_job("dry", ImportTarget.USERS)

    assert query(clean_db, "SELECT dry_run FROM import_runs WHERE job_id = 'dry'") == [(True,)]
