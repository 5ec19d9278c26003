"""ExportStore against a real PostgreSQL: formats, filters, projection, order, streaming and cancellation."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg2
import pytest
from bulkio.adapters.export_store import DEFAULT_CHUNK_BYTES, QUEUED_CHUNKS, ExportStore
from bulkio.domain.exports import ExportFormat, ExportQuery, Filter, parse_export_query
from bulkio.domain.records import ValidationRules, validate_record
from bulkio.domain.resources import COLUMNS, Format, Resource
from psycopg2.extensions import connection as Connection

from tests.fixtures.parsing import iter_source_records

pytestmark = pytest.mark.integration

MAY_1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BIG_TABLE_ROWS = 200_000


class SpyConnection(psycopg2.extensions.connection):
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        super().cancel()


class RecordingFactory:
    """Remembers each connection, to find its backend in pg_stat_activity and see whether it was cancelled.
    The session time zone is not UTC, so that the exports must render UTC themselves."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.connections: list[SpyConnection] = []

    def __call__(self) -> Connection:
        connection = psycopg2.connect(
            self.dsn, connection_factory=SpyConnection, options="-c timezone=America/New_York"
        )
        self.connections.append(connection)
        return connection

    @property
    def backend_pid(self) -> int:
        return self.connections[-1].get_backend_pid()


@pytest.fixture
def factory(clean_db: str) -> RecordingFactory:
    return RecordingFactory(clean_db)


@pytest.fixture
def store(factory: RecordingFactory) -> Iterator[ExportStore]:
    export_store = ExportStore(factory)
    yield export_store
    export_store.close()


def execute(dsn: str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(dsn)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def add_user(dsn: str, user_id: str, **values: Any) -> None:
    row = {
        "id": user_id,
        "email": f"{user_id}@example.com",
        "name": f"Name {user_id}",
        "role": "reader",
        "active": True,
        "created_at": MAY_1,
        "updated_at": MAY_1,
        **values,
    }
    columns = ", ".join(row)
    execute(dsn, f"INSERT INTO users ({columns}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


def add_article(dsn: str, article_id: str, author_id: str, **values: Any) -> None:
    row = {
        "id": article_id,
        "slug": f"slug-{article_id}",
        "title": f"Title {article_id}",
        "body": "text",
        "author_id": author_id,
        "tags": [],
        "published_at": None,
        "status": "draft",
        "created_at": MAY_1,
        "updated_at": MAY_1,
        **values,
    }
    columns = ", ".join(row)
    execute(dsn, f"INSERT INTO articles ({columns}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


def add_comment(dsn: str, comment_id: str, article_id: str, user_id: str) -> None:
    execute(
        dsn,
        "INSERT INTO comments (id, article_id, user_id, body, created_at, updated_at)"
        " VALUES (%s, %s, %s, 'hi', %s, %s)",
        (comment_id, article_id, user_id, MAY_1, MAY_1),
    )


def add_many_users(dsn: str, count: int) -> None:
    execute(
        dsn,
        "INSERT INTO users (id, email, name, role, active, created_at, updated_at)"
        " SELECT 'u' || lpad(n::text, 8, '0'), 'user' || n || '@example.com', 'User number ' || n, 'reader',"
        " n %% 2 = 0, timestamptz '2024-01-01 00:00:00+00' + n * interval '1 second', now()"
        " FROM generate_series(1, %s) AS n",
        (count,),
    )


def body(store: ExportStore, query: ExportQuery, fmt: ExportFormat, chunk_bytes: int = 65536) -> bytes:
    return b"".join(store.stream(query, fmt, chunk_bytes))


def ndjson(store: ExportStore, query: ExportQuery) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body(store, query, ExportFormat.NDJSON).splitlines()]


def csv_rows(store: ExportStore, query: ExportQuery) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body(store, query, ExportFormat.CSV).decode("utf-8"), newline="")))


def exported_ids(store: ExportStore, resource: str, **params: str) -> list[str]:
    return [row["id"] for row in ndjson(store, parse_export_query(resource, {**params, "fields": "id"}))]


def backend_state(dsn: str, pid: int) -> list[tuple[str, str]]:
    return execute(dsn, "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))


# ------------------------------------------------------------------------------------------------- formats


@pytest.fixture
def two_users(clean_db: str) -> str:
    add_user(clean_db, "u2", name='Bob "B" \\ Smith, Jr.\nSecond line', role="admin", active=False)
    add_user(clean_db, "u1", name="Ann", created_at=datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC))
    return clean_db


USERS_AS_JSON = [
    {
        "id": "u1",
        "email": "u1@example.com",
        "name": "Ann",
        "role": "reader",
        "active": True,
        "created_at": "2024-05-01T12:00:00.25+00:00",
        "updated_at": "2024-05-01T12:00:00+00:00",
    },
    {
        "id": "u2",
        "email": "u2@example.com",
        "name": 'Bob "B" \\ Smith, Jr.\nSecond line',
        "role": "admin",
        "active": False,
        "created_at": "2024-05-01T12:00:00+00:00",
        "updated_at": "2024-05-01T12:00:00+00:00",
    },
]


def test_ndjson_is_one_object_per_line_ordered_by_id(store: ExportStore, two_users: str) -> None:
    exported = body(store, parse_export_query("users", {}), ExportFormat.NDJSON)
    assert exported.endswith(b"\n")
    assert [orjson.loads(line) for line in exported.splitlines()] == USERS_AS_JSON


def test_json_is_one_array(store: ExportStore, two_users: str) -> None:
    exported = body(store, parse_export_query("users", {}), ExportFormat.JSON)
    assert json.loads(exported) == USERS_AS_JSON
    assert exported.startswith(b"[\n") and exported.endswith(b"\n]\n")


def test_json_array_is_framed_right_whatever_the_chunk_size(store: ExportStore, two_users: str) -> None:
    for chunk_bytes in (1, 7, 100):
        chunks = list(store.stream(parse_export_query("users", {}), ExportFormat.JSON, chunk_bytes))
        assert all(chunks), "an empty chunk would end a chunked HTTP body"
        assert json.loads(b"".join(chunks)) == USERS_AS_JSON


def test_csv_has_a_header_quoting_and_importable_values(store: ExportStore, two_users: str) -> None:
    exported = body(store, parse_export_query("users", {}), ExportFormat.CSV).decode("utf-8")
    assert exported.splitlines()[0] == "id,email,name,role,active,created_at,updated_at"
    rows = list(csv.DictReader(io.StringIO(exported, newline="")))
    assert rows == [
        {key: str(value).lower() if isinstance(value, bool) else value for key, value in user.items()}
        for user in USERS_AS_JSON
    ]


def test_csv_writes_null_as_an_empty_cell_and_tags_as_importable_lists(store: ExportStore, clean_db: str) -> None:
    add_user(clean_db, "u1")
    add_article(clean_db, "a1", "u1", tags=["news", "tech"], published_at=MAY_1, status="published")
    add_article(clean_db, "a2", "u1", tags=["a|b", "c"])
    add_article(clean_db, "a3", "u1", tags=["[x", "y"])
    add_article(clean_db, "a4", "u1", tags=["@home", "=1+1"])
    add_article(clean_db, "a5", "u1", tags=[])
    rows = csv_rows(store, parse_export_query("articles", {"fields": "id,tags,published_at"}))
    assert rows == [
        {"id": "a1", "tags": "news|tech", "published_at": "2024-05-01T12:00:00+00:00"},
        {"id": "a2", "tags": '["a|b","c"]', "published_at": ""},
        {"id": "a3", "tags": '["[x","y"]', "published_at": ""},
        {"id": "a4", "tags": '["@home","=1+1"]', "published_at": ""},
        {"id": "a5", "tags": "", "published_at": ""},
    ]


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_exported_articles_import_back_as_they_were(store: ExportStore, clean_db: str, fmt: ExportFormat) -> None:
    add_user(clean_db, "u1")
    add_article(clean_db, "a1", "u1", tags=["news", "a|b", "[x"], published_at=MAY_1, status="published")
    add_article(clean_db, "a2", "u1", title='Quoted, "multi"\nline', tags=["x"], body="")
    add_article(clean_db, "a3", "u1", tags=[])
    exported = body(store, parse_export_query("articles", {}), fmt)
    records = iter_source_records(io.BytesIO(exported), Format(fmt.value), Resource.ARTICLES)
    imported = [validate_record(Resource.ARTICLES, record.data or {}, ValidationRules()).row for record in records]
    in_table = execute(clean_db, f"SELECT {', '.join(COLUMNS[Resource.ARTICLES])} FROM articles ORDER BY id")
    assert len(imported) == 3
    assert [tuple(row.values()) for row in imported if row] == in_table


@pytest.mark.parametrize(
    ("fmt", "expected"), [(ExportFormat.NDJSON, b""), (ExportFormat.JSON, b"[\n]\n"), (ExportFormat.CSV, b"id,name\n")]
)
def test_empty_result_is_a_valid_document(
    store: ExportStore, clean_db: str, fmt: ExportFormat, expected: bytes
) -> None:
    assert body(store, parse_export_query("users", {"fields": "id,name"}), fmt) == expected


def test_empty_json_result_parses_to_an_empty_array(store: ExportStore, clean_db: str) -> None:
    assert json.loads(body(store, parse_export_query("comments", {}), ExportFormat.JSON)) == []


# --------------------------------------------------------------------------------------- CSV neutralization


NEUTRALIZED_NAMES = {
    "n1": ("=1+1", "'=1+1"),
    "n2": ("+1 agreed", "'+1 agreed"),
    "n3": ("-list", "'-list"),
    "n4": ("@home", "'@home"),
    "n5": ("\tindented", "'\tindented"),
    "n6": ("\rreturn", "'\rreturn"),
    "n7": ("'=already quoted", "''=already quoted"),
    "n8": ("'Tis plain", "'Tis plain"),
    "n9": ("Plain = text", "Plain = text"),
}


def test_csv_cells_that_would_start_a_formula_get_a_quote(store: ExportStore, clean_db: str) -> None:
    for user_id, (name, _) in NEUTRALIZED_NAMES.items():
        add_user(clean_db, user_id, name=name, email=f"+{user_id}@example.com")
    rows = csv_rows(store, parse_export_query("users", {"fields": "id,name,email"}))
    assert {row["id"]: row["name"] for row in rows} == {
        user_id: cell for user_id, (_, cell) in NEUTRALIZED_NAMES.items()
    }
    assert {row["email"] for row in rows} == {f"'+{user_id}@example.com" for user_id in NEUTRALIZED_NAMES}


def test_json_formats_are_never_neutralized(store: ExportStore, clean_db: str) -> None:
    add_user(clean_db, "u1", name="=1+1")
    assert ndjson(store, parse_export_query("users", {"fields": "name"})) == [{"name": "=1+1"}]


# ------------------------------------------------------------------------------------ filters and projection


@pytest.fixture
def dated_users(clean_db: str) -> str:
    for day in (1, 2, 3):
        stamp = datetime(2024, 5, day, tzinfo=UTC)
        add_user(
            clean_db,
            f"u{day}",
            created_at=stamp,
            updated_at=stamp,
            role="admin" if day == 2 else "reader",
            active=day != 3,
        )
    return clean_db


def test_user_filters(store: ExportStore, dated_users: str) -> None:
    assert exported_ids(store, "users", role="admin") == ["u2"]
    assert exported_ids(store, "users", active="false") == ["u3"]
    assert exported_ids(store, "users", active="true") == ["u1", "u2"]
    assert exported_ids(store, "users", ids="u3,u1,nobody") == ["u1", "u3"]


def test_time_filters_bounds(store: ExportStore, dated_users: str) -> None:
    assert exported_ids(store, "users", created_after="2024-05-02T00:00:00Z") == ["u3"]
    assert exported_ids(store, "users", created_before="2024-05-02T00:00:00Z") == ["u1"]
    assert exported_ids(store, "users", updated_since="2024-05-02T00:00:00Z") == ["u2", "u3"]
    assert exported_ids(store, "users", created_after="2024-05-02T01:00:00+02:00") == ["u2", "u3"]
    both = {"created_after": "2024-05-01T00:00:00Z", "created_before": "2024-05-03T00:00:00Z"}
    assert exported_ids(store, "users", **both) == ["u2"]


def test_article_filters(store: ExportStore, clean_db: str) -> None:
    add_user(clean_db, "u1")
    add_user(clean_db, "u2")
    add_article(clean_db, "a1", "u1", tags=["news", "tech"], status="published", published_at=MAY_1)
    add_article(clean_db, "a2", "u2", tags=["tech"], status="published", published_at=datetime(2024, 6, 1, tzinfo=UTC))
    add_article(clean_db, "a3", "u1", tags=["newsletter"])
    assert exported_ids(store, "articles", tag="news") == ["a1"]
    assert exported_ids(store, "articles", tag="tech") == ["a1", "a2"]
    assert exported_ids(store, "articles", status="draft") == ["a3"]
    assert exported_ids(store, "articles", author_id="u1") == ["a1", "a3"]
    assert exported_ids(store, "articles", published_after="2024-05-01T12:00:00Z") == ["a2"]
    assert exported_ids(store, "articles", published_before="2024-06-01T00:00:00Z") == ["a1"]
    assert exported_ids(store, "articles", author_id="u1", tag="tech") == ["a1"]


def test_comment_filters(store: ExportStore, clean_db: str) -> None:
    add_user(clean_db, "u1")
    add_user(clean_db, "u2")
    add_article(clean_db, "a1", "u1")
    add_article(clean_db, "a2", "u1")
    add_comment(clean_db, "c1", "a1", "u1")
    add_comment(clean_db, "c2", "a2", "u2")
    add_comment(clean_db, "c3", "a1", "u2")
    assert exported_ids(store, "comments", article_id="a1") == ["c1", "c3"]
    assert exported_ids(store, "comments", user_id="u2") == ["c2", "c3"]
    assert exported_ids(store, "comments", article_id="a1", user_id="u2") == ["c3"]


@pytest.mark.parametrize("value", ["x' OR '1'='1", "reader'; DROP TABLE users; --", "reader\\", '" OR 1=1'])
def test_sql_looking_values_match_nothing_and_change_nothing(store: ExportStore, dated_users: str, value: str) -> None:
    assert exported_ids(store, "users", role=value) == []
    assert exported_ids(store, "users", ids=value) == []
    assert execute(dated_users, "SELECT count(*) FROM users") == [(3,)]


def test_fields_keep_the_requested_order_and_rows_stay_ordered_by_id(
    store: ExportStore, factory: RecordingFactory, clean_db: str
) -> None:
    for user_id in ("u3", "u1", "u2"):
        add_user(clean_db, user_id)
    query = parse_export_query("users", {"fields": "email,role"})
    exported = body(store, query, ExportFormat.NDJSON).splitlines()
    assert exported[0] == b'{"email":"u1@example.com","role":"reader"}'
    assert not factory.connections[-1].cancelled
    assert [row["email"] for row in ndjson(store, query)] == [f"u{n}@example.com" for n in (1, 2, 3)]
    assert csv_rows(store, query)[0] == {"email": "u1@example.com", "role": "reader"}


def test_limit_takes_the_first_rows_by_id(store: ExportStore, dated_users: str) -> None:
    assert exported_ids(store, "users", limit="2") == ["u1", "u2"]
    assert exported_ids(store, "users", limit="2", role="reader") == ["u1", "u3"]


def test_columns_outside_the_allowlist_are_refused_before_any_query(
    store: ExportStore, factory: RecordingFactory
) -> None:
    query = ExportQuery(Resource.USERS, ("id", "password"), (), None)
    with pytest.raises(ValueError, match="password"):
        store.stream(query, ExportFormat.NDJSON)
    with pytest.raises(ValueError, match="secret"):
        store.stream(ExportQuery(Resource.USERS, ("id",), (Filter("secret", "=", 1),), None), ExportFormat.CSV)
    assert factory.connections == []


# ------------------------------------------------------------------------------- streaming and cancellation


def test_first_chunk_arrives_while_the_copy_is_still_running(
    store: ExportStore, factory: RecordingFactory, clean_db: str
) -> None:
    add_many_users(clean_db, BIG_TABLE_ROWS)
    chunks = store.stream(parse_export_query("users", {}), ExportFormat.NDJSON)
    first = next(chunks)
    assert DEFAULT_CHUNK_BYTES <= len(first) < 2 * DEFAULT_CHUNK_BYTES
    [(state, query)] = backend_state(clean_db, factory.backend_pid)
    assert state == "active"
    assert query.startswith("COPY (SELECT row_to_json")
    rest = sum(chunk.count(b"\n") for chunk in chunks)
    assert first.count(b"\n") + rest == BIG_TABLE_ROWS
    assert backend_state(clean_db, factory.backend_pid)[0][0] == "idle"


def test_closing_early_cancels_the_query_and_the_store_reconnects(
    store: ExportStore, factory: RecordingFactory, clean_db: str
) -> None:
    add_many_users(clean_db, BIG_TABLE_ROWS)
    chunks = store.stream(parse_export_query("users", {}), ExportFormat.JSON)
    next(chunks)
    next(chunks)
    abandoned_pid = factory.backend_pid
    assert backend_state(clean_db, abandoned_pid)[0][0] == "active"
    chunks.close()
    assert factory.connections[-1].cancelled
    assert factory.connections[-1].closed
    # Gone, or on its way out with nothing running and no transaction open.
    assert backend_state(clean_db, abandoned_pid) in ([], [("idle", "ROLLBACK")])
    exported = json.loads(body(store, parse_export_query("users", {"limit": "3", "fields": "id"}), ExportFormat.JSON))
    assert exported == [{"id": "u00000001"}, {"id": "u00000002"}, {"id": "u00000003"}]
    assert len(factory.connections) == 2


def test_memory_stays_constant_whatever_the_export_size(store: ExportStore, clean_db: str) -> None:
    add_many_users(clean_db, BIG_TABLE_ROWS)
    for fmt in ExportFormat:
        exported_bytes = 0
        tracemalloc.start()
        try:
            for chunk in store.stream(parse_export_query("users", {}), fmt):
                exported_bytes += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert exported_bytes > 20_000_000
        # The queued chunks, the one being filled, the one being sent and a copy: a few chunks, whatever the size.
        bound = (QUEUED_CHUNKS + 4) * DEFAULT_CHUNK_BYTES
        assert peak < bound < exported_bytes / 4, f"{fmt}: peak {peak:,} bytes for {exported_bytes:,} exported"


def test_a_dropped_connection_is_replaced_before_the_export_starts(
    store: ExportStore, factory: RecordingFactory, dated_users: str
) -> None:
    assert exported_ids(store, "users") == ["u1", "u2", "u3"]
    execute(dated_users, "SELECT pg_terminate_backend(%s)", (factory.backend_pid,))
    assert exported_ids(store, "users") == ["u1", "u2", "u3"]
    assert len(factory.connections) == 2


def test_query_errors_reach_the_consumer_and_leave_the_store_usable(
    store: ExportStore, factory: RecordingFactory, dated_users: str
) -> None:
    execute(dated_users, "ALTER TABLE users RENAME COLUMN role TO role_renamed")
    try:
        with pytest.raises(psycopg2.errors.UndefinedColumn):
            body(store, parse_export_query("users", {}), ExportFormat.CSV)
    finally:
        execute(dated_users, "ALTER TABLE users RENAME COLUMN role_renamed TO role")
    assert exported_ids(store, "users") == ["u1", "u2", "u3"]


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_the_stream_counts_its_rows_once_read_to_the_end(store: ExportStore, clean_db: str, fmt: ExportFormat) -> None:
    add_many_users(clean_db, 3)
    export = store.stream(ExportQuery(Resource.USERS, COLUMNS[Resource.USERS], (), None), fmt)
    assert export.rows == 0
    b"".join(export)
    assert export.rows == 3
