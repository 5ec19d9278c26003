"""ImportStore against a real PostgreSQL: staging, the merge rules, the error reports."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from bulkio.adapters.postgres import ImportStore, connect
from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.resources import COLUMNS, ImportTarget, Resource
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord

from tests.fixtures.postgres import query

pytestmark = pytest.mark.integration

CREATED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def staged(resource: Resource, index: int, line: int | None = None, **values: Any) -> StagedRecord:
    row = {column: values.get(column) for column in COLUMNS[resource]}
    raw = json.dumps({key: value for key, value in values.items() if not isinstance(value, datetime)})
    return StagedRecord(index=index, line=line if line is not None else index + 1, row=row, raw=raw)


def user(index: int, email: str, user_id: str | None = None, name: str = "Ann", **values: Any) -> StagedRecord:
    return staged(
        Resource.USERS,
        index,
        id=user_id,
        email=email,
        name=name,
        role=values.pop("role", "reader"),
        active=values.pop("active", True),
        **values,
    )


def article(index: int, slug: str, author_id: str, article_id: str | None = None, **values: Any) -> StagedRecord:
    return staged(
        Resource.ARTICLES,
        index,
        id=article_id,
        slug=slug,
        title=values.pop("title", "A title"),
        body=values.pop("body", "Text"),
        author_id=author_id,
        tags=values.pop("tags", ["a"]),
        status=values.pop("status", "draft"),
        **values,
    )


def comment(index: int, comment_id: str | None, article_id: str, user_id: str) -> StagedRecord:
    return staged(Resource.COMMENTS, index, id=comment_id, article_id=article_id, user_id=user_id, body="Nice")


def run_import(
    store: ImportStore,
    job_id: str,
    resource: Resource,
    records: Sequence[StagedRecord],
    chunk_size: int = 1000,
    failed: Sequence[FailedRecord] = (),
    chunk_order: Sequence[int] | None = None,
) -> MergeOutcome:
    chunks = [records[start : start + chunk_size] for start in range(0, max(len(records), 1), chunk_size)]
    target = ImportTarget(resource.value)
    store.register_job(job_id, target)
    for chunk_no in chunk_order if chunk_order is not None else range(len(chunks)):
        assert store.stage_chunk(job_id, target, chunk_no, chunks[chunk_no], failed if chunk_no == 0 else ())
    store.set_totals(job_id, len(chunks), len(records) + len(failed))
    outcome = store.try_merge(job_id)
    assert outcome is not None
    return outcome


def error_codes(store: ImportStore, job_id: str) -> list[tuple[int, str, str | None]]:
    return [(error["index"], error["code"], error["field"]) for error in store.first_errors(job_id, 1000)]


def users_table(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT id, email, name, role, active FROM users ORDER BY id")


# ---------------------------------------------------------------------------------------------- staging


def test_a_redelivered_chunk_is_staged_once(store: ImportStore, clean_db: str) -> None:
    store.register_job("job", ImportTarget.USERS)
    chunk = [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u2")]

    assert store.stage_chunk("job", ImportTarget.USERS, 0, chunk, ()) is True
    assert store.stage_chunk("job", ImportTarget.USERS, 0, chunk, ()) is False

    assert store.progress("job").chunks == 1
    assert query(clean_db, "SELECT count(*) FROM stage_users WHERE job_id = 'job'") == [(2,)]
    store.set_totals("job", 1, 2)
    assert store.try_merge("job") == MergeOutcome(2, 2, 0, {}, merged_now=True)


def test_staging_round_trips_awkward_text(store: ImportStore, clean_db: str) -> None:
    awkward = 'tab\there\nnew line \\ back "quote" ünï'
    tags = [awkward, "{braces}", ""]
    records = [article(1, "s-1", "u1", "a1", title=awkward, tags=tags, published_at=CREATED, status="published")]
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])

    outcome = run_import(store, "job", Resource.ARTICLES, records)

    assert outcome.succeeded == 1
    assert query(clean_db, "SELECT title, tags, published_at FROM articles") == [
        (awkward, [awkward, "{braces}", ""], CREATED)
    ]


# ---------------------------------------------------------------------------------------------- merge rules


def test_duplicate_id_in_file_keeps_the_earliest_and_names_its_line(store: ImportStore) -> None:
    records = [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u1")]

    outcome = run_import(store, "job", Resource.USERS, records)

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    [error] = store.first_errors("job")
    assert error["code"] == "duplicate_in_file"
    assert error["field"] == "id"
    assert error["index"] == 2
    assert "line 2" in error["message"]
    assert error["value"] == "u1"
    assert error["record"]["email"] == "b@example.com"


def test_duplicate_email_in_file_is_case_insensitive(store: ImportStore, clean_db: str) -> None:
    records = [user(1, "Ann@Example.com", "u1"), user(2, "ann@example.COM", "u2")]

    outcome = run_import(store, "job", Resource.USERS, records)

    assert outcome.errors_by_code == {"duplicate_in_file": 1}
    [error] = store.first_errors("job")
    assert (error["index"], error["field"]) == (2, "email")
    assert error["message"].startswith("same email as line 2;")
    assert users_table(clean_db) == [("u1", "Ann@Example.com", "Ann", "reader", True)]


def test_record_without_id_takes_the_id_of_the_user_with_its_email(store: ImportStore, clean_db: str) -> None:
    run_import(store, "first", Resource.USERS, [user(1, "ann@example.com", "u1")])

    outcome = run_import(store, "second", Resource.USERS, [user(1, "ANN@example.com", None, name="Renamed")])

    assert outcome.succeeded == 1
    assert users_table(clean_db) == [("u1", "ANN@example.com", "Renamed", "reader", True)]


def test_record_without_id_and_unknown_email_gets_an_id_derived_from_the_email(
    store: ImportStore, clean_db: str
) -> None:
    run_import(store, "job", Resource.USERS, [user(1, "New@Example.com", None)])

    assert query(clean_db, "SELECT id = md5('users:new@example.com')::uuid::text FROM users") == [(True,)]


def test_two_records_resolving_to_one_user_the_later_is_a_duplicate(store: ImportStore, clean_db: str) -> None:
    run_import(store, "first", Resource.USERS, [user(1, "ann@example.com", "u1")])
    records = [user(1, "other@example.com", "u1", name="By id"), user(2, "ann@example.com", None)]

    outcome = run_import(store, "second", Resource.USERS, records)

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    [error] = store.first_errors("second")
    assert (error["index"], error["code"], error["field"]) == (2, "duplicate_in_file", "email")
    assert "(id u1) as line 2" in error["message"]
    assert users_table(clean_db) == [("u1", "other@example.com", "By id", "reader", True)]


def test_email_of_another_user_is_taken_case_insensitively(store: ImportStore, clean_db: str) -> None:
    run_import(store, "first", Resource.USERS, [user(1, "ann@example.com", "u1")])

    outcome = run_import(store, "second", Resource.USERS, [user(1, "ANN@EXAMPLE.COM", "u2")])

    assert outcome.errors_by_code == {"email_taken": 1}
    [error] = store.first_errors("second")
    assert error["field"] == "email"
    assert error["message"] == ("email belongs to another user (id u1): use that id or another email")
    assert users_table(clean_db) == [("u1", "ann@example.com", "Ann", "reader", True)]


def test_swapping_emails_is_judged_against_the_table_before_the_import(store: ImportStore, clean_db: str) -> None:
    run_import(store, "first", Resource.USERS, [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u2")])

    swapped = [user(1, "b@example.com", "u1"), user(2, "a@example.com", "u2")]
    outcome = run_import(store, "second", Resource.USERS, swapped)

    assert outcome.errors_by_code == {"email_taken": 2}
    assert [row[1] for row in users_table(clean_db)] == ["a@example.com", "b@example.com"]


def test_slug_of_another_article_is_taken(store: ImportStore, clean_db: str) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])
    run_import(store, "first", Resource.ARTICLES, [article(1, "hello", "u1", "a1")])

    outcome = run_import(store, "second", Resource.ARTICLES, [article(1, "hello", "u1", "a2")])

    assert outcome.errors_by_code == {"slug_taken": 1}
    assert store.first_errors("second")[0]["message"].startswith("slug belongs to another article (id a1)")
    assert query(clean_db, "SELECT id FROM articles") == [("a1",)]


def test_duplicate_slug_in_file(store: ImportStore) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])

    run_import(store, "job", Resource.ARTICLES, [article(1, "s", "u1", "a1"), article(2, "s", "u1", "a2")])

    assert error_codes(store, "job") == [(2, "duplicate_in_file", "slug")]


def test_article_with_unknown_author_is_rejected(store: ImportStore, clean_db: str) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])

    outcome = run_import(
        store, "job", Resource.ARTICLES, [article(1, "ok", "u1", "a1"), article(2, "orphan", "nobody", "a2")]
    )

    assert (outcome.succeeded, outcome.failed) == (1, 1)
    [error] = store.first_errors("job")
    assert (error["index"], error["code"], error["field"], error["value"]) == (
        2,
        "unknown_author",
        "author_id",
        "nobody",
    )
    assert query(clean_db, "SELECT id FROM articles") == [("a1",)]


def test_comment_reports_unknown_article_and_unknown_user_each(store: ImportStore, clean_db: str) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])
    run_import(store, "articles", Resource.ARTICLES, [article(1, "s", "u1", "a1")])
    records = [
        comment(1, "c1", "a1", "u1"),
        comment(2, "c2", "nope", "u1"),
        comment(3, "c3", "a1", "ghost"),
        comment(4, "c4", "nope", "ghost"),
    ]

    outcome = run_import(store, "job", Resource.COMMENTS, records)

    assert (outcome.succeeded, outcome.failed) == (1, 3)
    assert outcome.errors_by_code == {"unknown_article": 2, "unknown_user": 2}
    assert error_codes(store, "job") == [
        (2, "unknown_article", "article_id"),
        (3, "unknown_user", "user_id"),
        (4, "unknown_article", "article_id"),
        (4, "unknown_user", "user_id"),
    ]
    assert query(clean_db, "SELECT id FROM comments") == [("c1",)]


def test_comment_without_id_is_rejected(store: ImportStore) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])
    run_import(store, "articles", Resource.ARTICLES, [article(1, "s", "u1", "a1")])

    run_import(store, "job", Resource.COMMENTS, [comment(1, None, "a1", "u1")])

    assert error_codes(store, "job") == [(1, "missing_key", "id")]


def test_importing_the_same_file_twice_updates_with_the_same_counts(store: ImportStore, clean_db: str) -> None:
    records = [
        user(1, "a@example.com", "u1"),
        user(2, "b@example.com", None),
        user(3, "A@example.com", "u3"),
    ]
    failed = [FailedRecord(4, 5, RecordError(ErrorCode.INVALID_ROLE, "role", "bad role", "boss"), "{}")]

    first = run_import(store, "first", Resource.USERS, records, failed=failed)
    table_after_first = users_table(clean_db)
    second = run_import(store, "second", Resource.USERS, records, failed=failed)

    assert first == second
    assert (first.records_total, first.succeeded, first.failed) == (4, 2, 2)
    assert first.errors_by_code == {"duplicate_in_file": 1, "invalid_role": 1}
    assert users_table(clean_db) == table_after_first


def test_update_keeps_created_at_unless_the_record_gives_one(store: ImportStore, clean_db: str) -> None:
    run_import(store, "first", Resource.USERS, [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u2")])
    created_before = dict(query(clean_db, "SELECT id, created_at FROM users"))
    updated_before = dict(query(clean_db, "SELECT id, updated_at FROM users"))

    run_import(
        store,
        "second",
        Resource.USERS,
        [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u2", created_at=CREATED)],
    )

    created_after = dict(query(clean_db, "SELECT id, created_at FROM users"))
    assert created_after == {"u1": created_before["u1"], "u2": CREATED}
    # updated_at moves only when a value changes: u1 is imported as it is, u2 gets another created_at.
    updated_after = dict(query(clean_db, "SELECT id, updated_at FROM users"))
    assert updated_after["u1"] == updated_before["u1"]
    assert updated_after["u2"] > updated_before["u2"]


def test_result_does_not_depend_on_chunking_or_chunk_order(store: ImportStore, clean_db: str) -> None:
    records = [
        user(index, f"user{index % 37}@example.com", f"u{index % 41}" if index % 3 else None) for index in range(1, 301)
    ]

    def snapshot(job_id: str) -> tuple[Any, ...]:
        errors = [
            {key: error[key] for key in ("line", "index", "code", "field", "message", "value")}
            for error in store.first_errors(job_id, 10_000)
        ]
        return users_table(clean_db), errors

    outcome_in_order = run_import(store, "one", Resource.USERS, records, chunk_size=300)
    expected = snapshot("one")
    for job_id, order in (
        ("forward", range(10)),
        ("backward", range(9, -1, -1)),
        ("mixed", [3, 7, 0, 9, 1, 5, 2, 8, 4, 6]),
    ):
        with psycopg2.connect(clean_db) as connection, connection.cursor() as cursor:
            cursor.execute("TRUNCATE users CASCADE")
        connection.close()
        outcome = run_import(store, job_id, Resource.USERS, records, chunk_size=30, chunk_order=list(order))
        assert outcome == outcome_in_order
        assert snapshot(job_id) == expected
    assert outcome_in_order.failed > 0


# ---------------------------------------------------------------------------------------------- merge control


def test_try_merge_waits_for_totals_and_every_chunk(store: ImportStore) -> None:
    store.register_job("job", ImportTarget.USERS)
    store.stage_chunk("job", ImportTarget.USERS, 1, [user(2, "b@example.com", "u2")], ())
    assert store.try_merge("job") is None

    store.set_totals("job", 2, 2)
    assert store.try_merge("job") is None

    store.stage_chunk("job", ImportTarget.USERS, 0, [user(1, "a@example.com", "u1")], ())
    first = store.try_merge("job")
    again = store.try_merge("job")

    assert first == MergeOutcome(2, 2, 0, {}, merged_now=True)
    assert again == MergeOutcome(2, 2, 0, {}, merged_now=False)


def test_a_failed_run_is_never_merged(store: ImportStore, clean_db: str) -> None:
    store.register_job("job", ImportTarget.USERS)
    store.stage_chunk("job", ImportTarget.USERS, 0, [user(1, "a@example.com", "u1")], ())
    store.set_totals("job", 1, 1)

    store.fail_run("job")

    assert store.try_merge("job") is None
    assert users_table(clean_db) == []
    assert query(clean_db, "SELECT count(*) FROM stage_users") == [(0,)]


def test_merge_deletes_the_jobs_staging_rows_only(store: ImportStore, clean_db: str) -> None:
    store.register_job("other", ImportTarget.USERS)
    store.stage_chunk("other", ImportTarget.USERS, 0, [user(1, "x@example.com", "x")], ())

    run_import(store, "job", Resource.USERS, [user(1, "a@example.com", "u1")])

    assert query(clean_db, "SELECT job_id FROM stage_users") == [("other",)]


def test_only_one_of_two_concurrent_merges_merges(clean_db: str) -> None:
    setup = ImportStore(lambda: connect(clean_db))
    setup.register_job("job", ImportTarget.USERS)
    records = [user(index, f"u{index}@example.com", f"u{index}") for index in range(1, 2001)]
    setup.stage_chunk("job", ImportTarget.USERS, 0, records, ())
    setup.set_totals("job", 1, len(records))
    setup.close()
    stores = [ImportStore(lambda: connect(clean_db)) for _ in range(2)]
    start = threading.Barrier(len(stores))
    outcomes: list[MergeOutcome | None] = []

    def merge(import_store: ImportStore) -> None:
        start.wait()
        outcomes.append(import_store.try_merge("job"))

    threads = [threading.Thread(target=merge, args=(import_store,)) for import_store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for import_store in stores:
        import_store.close()

    assert sorted(outcome.merged_now for outcome in outcomes if outcome is not None) == [False, True]
    assert {(outcome.succeeded, outcome.failed) for outcome in outcomes if outcome is not None} == {(2000, 0)}
    assert query(clean_db, "SELECT count(*) FROM users") == [(2000,)]


def test_chunk_failures_are_recorded_with_the_last_error(store: ImportStore, clean_db: str) -> None:
    assert store.chunk_failure("job", 3) is None

    store.record_chunk_failure("job", 3, "first")
    store.record_chunk_failure("job", 3, "second")

    assert store.chunk_failure("job", 3) == "second"
    assert query(clean_db, "SELECT attempts FROM import_chunk_failures") == [(2,)]


def test_set_totals_of_an_unknown_job_fails(store: ImportStore) -> None:
    with pytest.raises(LookupError):
        store.set_totals("missing", 1, 1)


# ---------------------------------------------------------------------------------------------- error reports


def failed_record(index: int, message: str, value: Any, raw: str) -> FailedRecord:
    return FailedRecord(index, index + 1, RecordError(ErrorCode.INVALID_NAME, "name", message, value), raw)


def stage_failures(store: ImportStore, job_id: str, failures: Sequence[FailedRecord]) -> None:
    store.register_job(job_id, ImportTarget.USERS)
    store.stage_chunk(job_id, ImportTarget.USERS, 0, (), failures)


def test_first_errors_are_ordered_by_index_then_code_and_limited(store: ImportStore) -> None:
    failures = [
        FailedRecord(3, 4, RecordError(ErrorCode.INVALID_ROLE, "role", "m", None), "{}"),
        FailedRecord(1, 2, RecordError(ErrorCode.INVALID_NAME, "name", "m", None), "{}"),
        FailedRecord(3, 4, RecordError(ErrorCode.INVALID_EMAIL, "email", "m", None), "{}"),
        FailedRecord(2, 3, RecordError(ErrorCode.MISSING_FIELD, "id", "m", None), "{}"),
    ]
    stage_failures(store, "job", failures)

    assert error_codes(store, "job") == [
        (1, "invalid_name", "name"),
        (2, "missing_field", "id"),
        (3, "invalid_email", "email"),
        (3, "invalid_role", "role"),
    ]
    assert [error["index"] for error in store.first_errors("job", limit=2)] == [1, 2]


def test_rejected_records_come_once_each_with_all_their_errors_in_record_order(
    store: ImportStore, clean_db: str
) -> None:
    run_import(store, "users", Resource.USERS, [user(1, "a@example.com", "u1")])
    run_import(store, "articles", Resource.ARTICLES, [article(1, "s", "u1", "a1")])
    run_import(
        store,
        "job",
        Resource.COMMENTS,
        [
            comment(n, f"c{n}", *refs)
            for n, refs in enumerate([("a1", "u1"), ("nope", "u1"), ("a1", "ghost"), ("nope", "ghost")], start=1)
        ],
    )

    ndjson, csv_text = io.BytesIO(), io.BytesIO()
    written = store.write_rejected("job", "ndjson", ndjson)
    store.write_rejected("job", "csv", csv_text)

    assert written == len(ndjson.getvalue())
    rejected = [json.loads(line) for line in ndjson.getvalue().splitlines()]
    assert [(record["id"], [error["code"] for error in record["_errors"]]) for record in rejected] == [
        ("c2", ["unknown_article"]),
        ("c3", ["unknown_user"]),
        ("c4", ["unknown_article", "unknown_user"]),
    ]
    header, *rows = csv_text.getvalue().decode().splitlines()
    assert header.endswith(",_line,_error_codes,_error_messages,_raw")
    assert [row.split(",")[0] for row in rows] == ["c2", "c3", "c4"]
    assert '"unknown_article,unknown_user"' in rows[2]


def test_json_records_asked_for_as_csv_get_every_member_as_a_column(store: ImportStore) -> None:
    stage_failures(
        store,
        "job",
        [
            failed_record(1, "bad email", {"email": "x", "name": "A"}, json.dumps({"email": "x", "name": "A"})),
            failed_record(2, "bad role", {"role": "emperor"}, json.dumps({"email": "b@x.io", "role": "emperor"})),
        ],
    )
    sink = io.BytesIO()

    store.write_rejected("job", "csv", sink)

    header, first, second = sink.getvalue().decode().splitlines()
    assert header == "email,name,role,_line,_error_codes,_error_messages,_raw"
    assert first.startswith("x,A,,") and second.startswith("b@x.io,,emperor,")


def test_ndjson_report_has_one_parsed_object_per_error(store: ImportStore) -> None:
    unparseable = json.dumps('{"name": broken\\ \n')
    stage_failures(
        store,
        "job",
        [
            failed_record(1, 'needs "quotes" and a \\ backslash', {"nested": ["x\ty"]}, '{"name":\n "a\\"b"}'),
            FailedRecord(2, None, RecordError(ErrorCode.INVALID_JSON, None, "not JSON", None), unparseable),
        ],
    )
    sink = io.BytesIO()

    written = store.write_error_report("job", "ndjson", sink)

    lines = sink.getvalue().decode().splitlines()
    assert written == len(sink.getvalue())
    assert [json.loads(line) for line in lines] == [
        {
            "line": 2,
            "index": 1,
            "code": "invalid_name",
            "field": "name",
            "message": 'needs "quotes" and a \\ backslash',
            "value": {"nested": ["x\ty"]},
            "record": {"name": 'a"b'},
        },
        {
            "line": None,
            "index": 2,
            "code": "invalid_json",
            "field": None,
            "message": "not JSON",
            "value": None,
            "record": '{"name": broken\\ \n',
        },
    ]


def test_csv_report_quotes_formulas_and_holds_json_text(store: ImportStore) -> None:
    stage_failures(
        store,
        "job",
        [
            failed_record(1, '=HYPERLINK("http://evil")', -5, '{"name": "=1+1"}'),
            failed_record(2, "@SUM(A1)", "+cmd", '{"name": "x, y"}'),
            failed_record(3, "plain", None, '{"name": "ok"}'),
        ],
    )
    sink = io.BytesIO()

    store.write_error_report("job", "csv", sink)

    rows = list(csv.reader(io.StringIO(sink.getvalue().decode())))
    assert rows == [
        ["line", "index", "code", "field", "message", "value", "record"],
        ["2", "1", "invalid_name", "name", '\'=HYPERLINK("http://evil")', "'-5", '{"name": "=1+1"}'],
        ["3", "2", "invalid_name", "name", "'@SUM(A1)", '"+cmd"', '{"name": "x, y"}'],
        ["4", "3", "invalid_name", "name", "plain", "", '{"name": "ok"}'],
    ]


def test_merge_errors_carry_the_original_record(store: ImportStore) -> None:
    records = [user(1, "a@example.com", "u1"), user(2, "a@example.com", "u2", name="Second")]
    run_import(store, "job", Resource.USERS, records)
    sink = io.BytesIO()

    store.write_error_report("job", "ndjson", sink)

    [report] = [json.loads(line) for line in sink.getvalue().decode().splitlines()]
    assert report["record"] == json.loads(records[1].raw)
    assert report["value"] == "a@example.com"


def test_a_dropped_connection_is_replaced_once(clean_db: str) -> None:
    opened: list[Any] = []

    def connect_and_remember() -> Any:
        opened.append(connect(clean_db))
        return opened[-1]

    store = ImportStore(connect_and_remember)
    store.register_job("job", ImportTarget.USERS)
    # Only this store's backend: other clients of the session database (the e2e stack) must live on.
    terminated = query(clean_db, "SELECT pg_terminate_backend(%s)", (opened[0].get_backend_pid(),))
    assert terminated == [(True,)]

    assert store.stage_chunk("job", ImportTarget.USERS, 0, [user(1, "a@example.com", "u1")], ()) is True
    assert store.progress("job").chunks == 1
    assert len(opened) == 2
    store.close()


def test_staging_counts_each_chunks_records_once(store: ImportStore) -> None:
    store.register_job("job", ImportTarget.USERS)
    failure = RecordError(ErrorCode.INVALID_EMAIL, "email", "bad", "x")
    first = [user(1, "a@example.com", "u1"), user(2, "b@example.com", "u2")]
    failed = [FailedRecord(3, 4, failure, "{}"), FailedRecord(3, 4, failure, "{}"), FailedRecord(4, 5, failure, "{}")]

    store.stage_chunk("job", ImportTarget.USERS, 1, first, failed)
    store.stage_chunk("job", ImportTarget.USERS, 1, first, failed)  # redelivered
    store.stage_chunk("job", ImportTarget.USERS, 2, [user(5, "e@example.com", "u5")], ())

    progress = store.progress("job")
    assert (progress.chunks, progress.records, progress.failed) == (2, 5, 2)


def test_a_failed_run_keeps_its_errors_for_the_report(store: ImportStore) -> None:
    """Failing (or cancelling) a run drops its staged rows; the errors of the chunks it staged stay, so that the
    job's counters and its report agree."""
    store.register_job("stopped", ImportTarget.USERS)
    bad = FailedRecord(2, 3, RecordError(ErrorCode.INVALID_EMAIL, "email", "not an email", "x"), '{"email": "x"}')
    assert store.stage_chunk("stopped", ImportTarget.USERS, 0, [staged(Resource.USERS, 1, email="a@x.io")], [bad])

    assert store.fail_run("stopped")

    assert store.errors_by_code("stopped") == {"invalid_email": 1}
    sink = io.BytesIO()
    store.write_error_report("stopped", "ndjson", sink)
    assert [json.loads(line)["line"] for line in sink.getvalue().splitlines()] == [3]
    assert store.progress("stopped").failed == 1
