"""infra.migrate against a real PostgreSQL: each file once, even with concurrent callers."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from infra.migrate import MIGRATIONS_DIR, apply_migrations
from tests.fixtures.postgres import run_autocommit

pytestmark = pytest.mark.integration

ALL_MIGRATIONS = sorted(path.name for path in MIGRATIONS_DIR.glob("*.sql"))


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    name = f"bulkio_test_migrate_{secrets.token_hex(4)}"
    run_autocommit(database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_dsn(database_url, dbname=name)
    run_autocommit(database_url, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrations_apply_once(empty_database: str) -> None:
    assert apply_migrations(empty_database) == ALL_MIGRATIONS
    assert apply_migrations(empty_database) == []


def test_concurrent_callers_apply_each_file_exactly_once(empty_database: str) -> None:
    start = threading.Barrier(3)
    results: list[list[str]] = []

    def migrate() -> None:
        start.wait()
        results.append(apply_migrations(empty_database))

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [[], [], ALL_MIGRATIONS]
    connection = psycopg2.connect(empty_database)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM schema_migrations ORDER BY name")
        assert [name for (name,) in cursor.fetchall()] == ALL_MIGRATIONS
    connection.close()
