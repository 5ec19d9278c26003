"""What an import does to rows that already exist, against a real PostgreSQL: the README's update semantics.

Each import here goes the writers' way: the file is parsed and framed into a chunk, each record is validated,
then the chunk is staged with COPY and the job merged. The rules under test:

- a key absent from a JSON record, or a column absent from the CSV header, keeps the stored value on update;
  null (an empty CSV cell) is "absent" for fields with a default, clears the nullable ones (article body, tags,
  published_at) and is `missing_field` for required ones; defaults apply on insert only; a partial record that
  would insert a row misses its required fields; cross-field rules hold on the merged row; `updated_at` moves
  only when a value changes;
- a record without id resolves by natural key to the row holding that key now; a generated id that belongs to
  another row is replaced by a random one (a rename, then the old key used again);
- the first accepted record wins: a record rejected for any reason claims no id and no natural key;
- text that is only reported (messages, values, records) may hold NUL characters: it never fails a chunk.
"""

from __future__ import annotations

import hashlib
import io
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from bulkio.adapters.postgres import ImportStore
from bulkio.domain.chunks import decode_chunk, encode_chunks
from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.records import ValidationRules
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord, validate_chunk

from tests.fixtures.parsing import iter_source_records
from tests.fixtures.postgres import query

pytestmark = pytest.mark.integration

MAY_1 = datetime(2024, 5, 1, 12, tzinfo=UTC)
JUNE_1 = datetime(2024, 6, 1, 8, tzinfo=UTC)


class Importer:
    """Runs whole imports the way the chunker and a writer do, in one chunk."""

    def __init__(self, store: ImportStore) -> None:
        self.store = store
        self.jobs = 0
        self.last_chunk: tuple[list[StagedRecord], list[FailedRecord]] = ([], [])

    def file(
        self, target: ImportTarget | Resource, content: bytes, fmt: Format = Format.NDJSON, dry_run: bool = False
    ) -> tuple[str, MergeOutcome]:
        job_id = self.stage(target, content, fmt, dry_run)
        outcome = self.store.try_merge(job_id)
        assert isinstance(outcome, MergeOutcome), outcome
        return job_id, outcome

    def stage(
        self, target: ImportTarget | Resource, content: bytes, fmt: Format = Format.NDJSON, dry_run: bool = False
    ) -> str:
        """Stages the file as chunk 0 of a new job (kept in `last_chunk`), without merging it."""
        target = ImportTarget(target.value)
        self.jobs += 1
        job_id = f"job-{self.jobs}"
        source = iter_source_records(io.BytesIO(content), fmt, target)
        # One chunk, whatever the file's size: the chunker's encoding without its limits.
        chunk = b"".join(piece.body for piece in encode_chunks(source, max_records=1 << 62, max_bytes=1 << 62))
        self.last_chunk = validate_chunk(target, decode_chunk(chunk), ValidationRules())
        self.store.register_job(job_id, target, dry_run)
        assert self.store.stage_chunk(job_id, target, 0, *self.last_chunk, dry_run)
        self.store.set_totals(job_id, 1, len(list(decode_chunk(chunk))))
        return job_id

    def records(self, resource: Resource, *records: dict[str, Any]) -> tuple[str, MergeOutcome]:
        return self.file(resource, b"".join(orjson.dumps(record) + b"\n" for record in records))

    def errors(self, job_id: str) -> list[tuple[int, str, str | None]]:
        return [(error["line"], error["code"], error["field"]) for error in self.store.first_errors(job_id, 1000)]


@pytest.fixture
def importer(store: ImportStore) -> Importer:
    return Importer(store)


def users(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT id, email, name, role, active FROM users ORDER BY email")


def article_row(dsn: str, article_id: str) -> tuple[Any, ...]:
    [row] = query(
        dsn,
        "SELECT slug, title, body, author_id, tags, published_at, status FROM articles WHERE id = %s",
        (article_id,),
    )
    return row


def generated_id(resource: str, key: str) -> str:
    """The id the merge derives from a natural key: md5('<resource>:<key>')::uuid."""
    return str(uuid.UUID(hashlib.md5(f"{resource}:{key}".encode()).hexdigest()))


AUTHOR = {"id": "au-1", "email": "author@x.io", "name": "Author", "role": "author"}
PUBLISHED = {
    "id": "ar-1",
    "slug": "first-post",
    "title": "First",
    "body": "Long text",
    "author_id": "au-1",
    "tags": ["news", "tech"],
    "published_at": "2024-05-01T12:00:00Z",
}


# ================================================================== 3. renames, then the old key used again


def test_a_renamed_users_old_email_makes_a_new_user(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, {"email": "a@x.io", "name": "A", "role": "admin"})
    renamed = generated_id("users", "a@x.io")
    importer.records(Resource.USERS, {"id": renamed, "email": "b@x.io", "name": "B"})

    job_id, outcome = importer.records(Resource.USERS, {"email": "A@x.io", "name": "Other"})

    assert (outcome.succeeded, outcome.failed) == (1, 0), importer.errors(job_id)
    assert [row[1:] for row in users(clean_db)] == [
        ("A@x.io", "Other", "reader", True),
        ("b@x.io", "B", "admin", True),
    ]
    assert [row[0] for row in users(clean_db)][1] == renamed
    [(new_id,)] = query(clean_db, "SELECT id FROM users WHERE email = 'A@x.io'")
    assert new_id != renamed
    # From now on the key resolves to the row holding it: a re-import updates the new user.
    importer.records(Resource.USERS, {"email": "a@x.io", "name": "Other again"})
    assert query(clean_db, "SELECT id, name FROM users WHERE lower(email) = 'a@x.io'") == [(new_id, "Other again")]


def test_a_renamed_articles_old_slug_makes_a_new_article_and_its_comments_stay(
    importer: Importer, clean_db: str
) -> None:
    importer.records(Resource.USERS, AUTHOR)
    importer.records(Resource.ARTICLES, {"slug": "hello", "title": "Hello", "author_id": "au-1"})
    renamed = generated_id("articles", "hello")
    importer.records(Resource.COMMENTS, {"id": "cm-1", "article_id": renamed, "user_id": "au-1", "body": "Nice"})
    importer.records(Resource.ARTICLES, {"id": renamed, "slug": "hello-renamed", "title": "Hello"})

    job_id, outcome = importer.records(
        Resource.ARTICLES, {"slug": "hello", "title": "Another article", "author_id": "au-1"}
    )

    assert (outcome.succeeded, outcome.failed) == (1, 0), importer.errors(job_id)
    assert query(clean_db, "SELECT slug, title FROM articles WHERE id = %s", (renamed,)) == [("hello-renamed", "Hello")]
    assert query(
        clean_db, "SELECT a.slug FROM comments c JOIN articles a ON a.id = c.article_id WHERE c.id = 'cm-1'"
    ) == [("hello-renamed",)]
    assert query(clean_db, "SELECT count(*) FROM articles WHERE slug = 'hello' AND id <> %s", (renamed,)) == [(1,)]


def test_a_generated_id_taken_by_an_explicit_id_of_the_same_file_is_replaced(importer: Importer, clean_db: str) -> None:
    taken = generated_id("users", "a@x.io")

    job_id, outcome = importer.records(
        Resource.USERS,
        {"email": "a@x.io", "name": "A"},
        {"id": taken, "email": "b@x.io", "name": "B"},
    )

    assert (outcome.succeeded, outcome.failed) == (2, 0), importer.errors(job_id)
    rows = dict((email, user_id) for user_id, email, *_ in users(clean_db))
    assert rows["b@x.io"] == taken
    assert rows["a@x.io"] != taken


# ================================================================ 4. an update keeps what the record leaves out


def test_an_update_keeps_the_fields_the_record_leaves_out(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, {"id": "u-keep", "email": "k@x.io", "name": "K", "role": "admin", "active": False})

    importer.records(Resource.USERS, {"id": "u-keep", "email": "k@x.io", "name": "K2"})

    assert users(clean_db) == [("u-keep", "k@x.io", "K2", "admin", False)]


def test_null_means_absent_for_fields_with_a_default(importer: Importer, clean_db: str) -> None:
    importer.records(
        Resource.USERS,
        {
            "id": "u1",
            "email": "k@x.io",
            "name": "K",
            "role": "admin",
            "active": False,
            "created_at": "2024-05-01T12:00:00Z",
        },
    )

    job_id, outcome = importer.records(
        Resource.USERS, {"id": "u1", "email": "k@x.io", "name": "K", "role": None, "active": None, "created_at": None}
    )

    assert outcome.failed == 0, importer.errors(job_id)
    assert users(clean_db) == [("u1", "k@x.io", "K", "admin", False)]
    assert query(clean_db, "SELECT created_at FROM users") == [(MAY_1,)]


def test_defaults_apply_on_insert_only(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, {"id": "u1", "email": "k@x.io", "name": "K"})
    assert users(clean_db) == [("u1", "k@x.io", "K", "reader", True)]
    importer.records(Resource.USERS, {"id": "u1", "role": "admin", "active": False})

    importer.records(Resource.USERS, {"id": "u1", "name": "Renamed"})

    assert users(clean_db) == [("u1", "k@x.io", "Renamed", "admin", False)]


def test_a_required_field_is_needed_to_insert_not_to_update(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, {"id": "u1", "email": "k@x.io", "name": "K"})

    job_id, outcome = importer.records(
        Resource.USERS,
        {"id": "u1", "role": "author"},  # an update: fine
        {"id": "u2", "role": "author"},  # would insert: email and name missing
        {"id": "u3", "email": "new@x.io", "name": None},  # null for a required field
    )

    assert (outcome.succeeded, outcome.failed) == (1, 2)
    assert importer.errors(job_id) == [
        (2, "missing_field", "email"),
        (2, "missing_field", "name"),
        (3, "missing_field", "name"),
    ]
    messages = [error["message"] for error in importer.store.first_errors(job_id)]
    assert messages[0].startswith("email is required: no user has id u2, so this record would create it")
    assert users(clean_db) == [("u1", "k@x.io", "K", "author", True)]


def test_an_article_update_keeps_body_tags_and_publication(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)
    importer.records(Resource.ARTICLES, PUBLISHED)

    job_id, outcome = importer.records(Resource.ARTICLES, {"id": "ar-1", "slug": "first-post", "title": "Retitled"})

    assert outcome.failed == 0, importer.errors(job_id)
    assert article_row(clean_db, "ar-1") == (
        "first-post",
        "Retitled",
        "Long text",
        "au-1",
        ["news", "tech"],
        MAY_1,
        "published",
    )


def test_null_clears_the_nullable_article_fields(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)
    importer.records(Resource.ARTICLES, PUBLISHED)

    job_id, outcome = importer.records(
        Resource.ARTICLES, {"id": "ar-1", "body": None, "tags": None, "published_at": None}
    )

    assert outcome.failed == 0, importer.errors(job_id)
    assert article_row(clean_db, "ar-1") == ("first-post", "First", "", "au-1", [], None, "published")


def test_csv_a_column_left_out_keeps_its_value_an_empty_cell_clears_it(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)
    importer.records(Resource.ARTICLES, PUBLISHED)

    job_id, outcome = importer.file(Resource.ARTICLES, b"id,title,tags,status\nar-1,Retitled,,\n", Format.CSV)

    assert outcome.failed == 0, importer.errors(job_id)
    # body and published_at are not in the header: kept; tags is empty: cleared; status is empty: absent.
    assert article_row(clean_db, "ar-1") == ("first-post", "Retitled", "Long text", "au-1", [], MAY_1, "published")


def test_a_draft_has_no_published_at_on_the_merged_row(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)
    importer.records(
        Resource.ARTICLES, PUBLISHED, {"id": "ar-2", "slug": "draft", "title": "Draft", "author_id": "au-1"}
    )

    job_id, outcome = importer.records(
        Resource.ARTICLES,
        {"id": "ar-1", "status": "draft"},  # keeps its stored published_at: refused
        {"id": "ar-2", "published_at": "2024-06-01T08:00:00Z"},  # stays a draft (no default on update): refused
    )

    assert (outcome.succeeded, outcome.failed) == (0, 2)
    assert importer.errors(job_id) == [
        (1, "draft_has_published_at", "published_at"),
        (2, "draft_has_published_at", "published_at"),
    ]
    assert article_row(clean_db, "ar-1")[5:] == (MAY_1, "published")

    job_id, outcome = importer.records(
        Resource.ARTICLES,
        {"id": "ar-1", "status": "draft", "published_at": None},
        {"id": "ar-2", "status": "published", "published_at": "2024-06-01T08:00:00Z"},
    )

    assert outcome.failed == 0, importer.errors(job_id)
    assert article_row(clean_db, "ar-1")[5:] == (None, "draft")
    assert article_row(clean_db, "ar-2")[5:] == (JUNE_1, "published")


def test_an_insert_defaults_the_status_from_published_at(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)

    importer.records(
        Resource.ARTICLES, PUBLISHED, {"id": "ar-2", "slug": "draft", "title": "Draft", "author_id": "au-1"}
    )

    assert article_row(clean_db, "ar-1")[6] == "published"
    assert article_row(clean_db, "ar-2")[2:] == ("", "au-1", [], None, "draft")


def test_updated_at_moves_only_when_a_value_changes(importer: Importer, clean_db: str) -> None:
    importer.records(
        Resource.USERS, {"id": "u1", "email": "a@x.io", "name": "A"}, {"id": "u2", "email": "b@x.io", "name": "B"}
    )
    query(clean_db, "UPDATE users SET updated_at = '2024-01-01T00:00:00Z' RETURNING 1")
    before = dict(query(clean_db, "SELECT id, updated_at FROM users"))

    importer.records(
        Resource.USERS,
        {"id": "u1", "email": "a@x.io", "name": "A"},  # the same values: nothing moves
        {"id": "u2", "email": "b@x.io", "name": "B2"},  # a new name: updated_at becomes now()
    )

    after = dict(query(clean_db, "SELECT id, updated_at FROM users"))
    assert after["u1"] == before["u1"]
    assert after["u2"] > datetime(2025, 1, 1, tzinfo=UTC)

    importer.records(Resource.USERS, {"id": "u1", "updated_at": "2024-06-01T08:00:00Z"})  # a record's own value

    assert query(clean_db, "SELECT updated_at FROM users WHERE id = 'u1'") == [(JUNE_1,)]


def test_reimporting_unchanged_rows_writes_nothing(importer: Importer, clean_db: str) -> None:
    records = [{"id": f"u{n}", "email": f"u{n}@x.io", "name": f"U{n}"} for n in range(20)]
    importer.records(Resource.USERS, *records)
    [(xmin_before,)] = query(clean_db, "SELECT array_agg(xmin::text ORDER BY id) FROM users")

    _, outcome = importer.records(Resource.USERS, *records)

    assert outcome.succeeded == 20
    assert query(clean_db, "SELECT array_agg(xmin::text ORDER BY id) FROM users") == [(xmin_before,)]
    # Not even locked: an upsert that found them unchanged only after locking them writes each row's page.
    assert query(clean_db, "SELECT count(*) FROM users WHERE xmax <> '0'::xid") == [(0,)]


# =========================================================== 5. NUL characters in reported text fail nothing


def test_nul_characters_in_reported_text_fail_only_their_record(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)

    job_id, outcome = importer.file(
        Resource.USERS,
        b'{"id": "n1", "email": "n1@x.io", "name": "N", "active": "\\u0000"}\n'
        b'{"id": "n2", "email": "n2@x.io", "name": "Fine"}\n',
    )

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    [error] = importer.store.first_errors(job_id)
    assert (error["line"], error["code"], error["field"]) == (1, "invalid_boolean", "active")
    assert "\\u0000" in error["message"] and "\x00" not in error["message"]
    assert error["value"] == "\x00"  # JSON text: the escape survives
    assert error["record"]["active"] == "\x00"

    job_id, outcome = importer.records(
        Resource.ARTICLES,
        {"id": "t1", "slug": "t1", "title": "T", "author_id": "au-1", "tags": ["x" * 60 + "\x00"]},
        {"id": "t2", "slug": "t2", "title": "T", "author_id": "au-1"},
    )

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    assert importer.errors(job_id) == [(1, "invalid_tags", "tags")]


def test_staging_never_writes_a_nul_character(store: ImportStore, clean_db: str) -> None:
    nul = "a\x00b"
    failed = [
        FailedRecord(1, 2, RecordError(ErrorCode.INVALID_NAME, nul, f"bad {nul}", nul), '{"name": "a\x00b"}'),
        FailedRecord(2, 3, RecordError(ErrorCode.INVALID_JSON, None, "not JSON", None), orjson.dumps(nul).decode()),
    ]
    store.register_job("job", ImportTarget.USERS)

    assert store.stage_chunk("job", ImportTarget.USERS, 0, [], failed)

    first = store.first_errors("job")
    assert (first[0]["field"], first[0]["message"]) == ("a\\u0000b", "bad a\\u0000b")
    assert (first[0]["value"], first[0]["record"]) == (nul, {"name": nul})
    assert first[1]["record"] == nul


# ================================================================ 6. the first accepted record wins


def test_a_record_rejected_for_its_author_does_not_block_a_later_one(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, AUTHOR)

    job_id, outcome = importer.records(
        Resource.ARTICLES,
        {"slug": "record-import-3989", "title": "Orphan", "author_id": "nobody"},
        {"slug": "other", "title": "Other", "author_id": "au-1"},
        {"slug": "record-import-3989", "title": "Kept", "author_id": "au-1"},
    )

    assert (outcome.succeeded, outcome.failed) == (2, 1)
    assert importer.errors(job_id) == [(1, "unknown_author", "author_id")]
    article_id = generated_id("articles", "record-import-3989")
    assert query(clean_db, "SELECT title FROM articles WHERE id = %s", (article_id,)) == [("Kept",)]

    job_id, outcome = importer.records(
        Resource.COMMENTS, {"id": "cm-1", "article_id": article_id, "user_id": "au-1", "body": "Found it"}
    )
    assert (outcome.succeeded, outcome.failed) == (1, 0), importer.errors(job_id)


def test_a_record_whose_email_is_taken_claims_nothing(importer: Importer, clean_db: str) -> None:
    importer.records(Resource.USERS, {"id": "u1", "email": "a@x.io", "name": "A"})

    job_id, outcome = importer.records(
        Resource.USERS,
        {"id": "u2", "email": "a@x.io", "name": "Taken"},  # email_taken: claims neither u2 nor a@x.io
        {"id": "u2", "email": "b@x.io", "name": "B"},
    )

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    assert importer.errors(job_id) == [(1, "email_taken", "email")]
    assert users(clean_db) == [("u1", "a@x.io", "A", "reader", True), ("u2", "b@x.io", "B", "reader", True)]


def test_a_duplicate_that_lost_claims_nothing_either(importer: Importer, clean_db: str) -> None:
    job_id, outcome = importer.records(
        Resource.USERS,
        {"id": "u1", "email": "a@x.io", "name": "A"},
        {"id": "u1", "email": "b@x.io", "name": "B"},  # same id as line 1: rejected, so b@x.io stays free
        {"id": "u3", "email": "b@x.io", "name": "C"},  # b@x.io is its own
        {"id": "u3", "email": "c@x.io", "name": "D"},  # same id as line 3
        {"id": "u5", "email": "c@x.io", "name": "E"},  # c@x.io is free again
    )

    assert (outcome.succeeded, outcome.failed) == (3, 2)
    assert importer.errors(job_id) == [(2, "duplicate_in_file", "id"), (4, "duplicate_in_file", "id")]
    messages = [error["message"] for error in importer.store.first_errors(job_id)]
    assert messages[0].startswith("same id as line 1;") and messages[1].startswith("same id as line 3;")
    assert users(clean_db) == [
        ("u1", "a@x.io", "A", "reader", True),
        ("u3", "b@x.io", "C", "reader", True),
        ("u5", "c@x.io", "E", "reader", True),
    ]


def _greedy(table: dict[str, str], records: list[tuple[str | None, str]]) -> tuple[set[int], dict[str, str]]:
    """The rule, one record at a time (what the merge computes set-based): the accepted record numbers, and the
    users table after them (id -> lowercased email)."""
    owner = {email.lower(): user_id for user_id, email in table.items()}
    targets: set[str] = set()
    keys: set[str] = set()
    accepted: set[int] = set()
    after = {user_id: email.lower() for user_id, email in table.items()}
    for number, (user_id, email) in enumerate(records, 1):
        key = email.lower()
        target = user_id or owner.get(key) or generated_id("users", key)
        if key in owner and owner[key] != target:
            continue  # email_taken: claims nothing
        if target in targets or key in keys:
            continue  # duplicate_in_file: claims nothing
        targets.add(target)
        keys.add(key)
        accepted.add(number)
        after[target] = key
    return accepted, after


@pytest.mark.parametrize("seed", range(6))
def test_the_merge_settles_claims_like_the_rule_applied_record_by_record(
    importer: Importer, clean_db: str, seed: int
) -> None:
    rng = random.Random(seed)
    table = {f"u{n}": f"e{n}@x.io" for n in range(0, 12, 2)}
    importer.records(
        Resource.USERS, *({"id": user_id, "email": email, "name": "T"} for user_id, email in table.items())
    )
    records = [
        (
            None if rng.random() < 0.3 else f"u{rng.randrange(16)}",
            f"e{rng.randrange(20)}@x.io".upper() if rng.random() < 0.2 else f"e{rng.randrange(20)}@x.io",
        )
        for _ in range(150)
    ]
    expected_accepted, expected_table = _greedy(table, records)

    job_id, outcome = importer.records(
        Resource.USERS,
        *({"email": email, "name": "N", **({"id": user_id} if user_id else {})} for user_id, email in records),
    )

    rejected = {line for line, _, _ in importer.errors(job_id)}
    assert set(range(1, len(records) + 1)) - rejected == expected_accepted
    assert outcome.succeeded == len(expected_accepted)
    assert dict(query(clean_db, "SELECT id, lower(email) FROM users")) == expected_table
    codes = {code for _, code, _ in importer.errors(job_id)}
    assert codes <= {"duplicate_in_file", "email_taken"}
