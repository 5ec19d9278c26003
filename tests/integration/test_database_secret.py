"""The database credentials read from Secrets Manager (moto's server) and used against the real test database.

The functions get DATABASE_SECRET_ARN and no DATABASE_URL on AWS: bootstrap.database_url() reads the secret
once per process, and both services and the health check connect with what it returns.
"""

from __future__ import annotations

import secrets as tokens
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import orjson
import psycopg2
import pytest
from bulkio import bootstrap
from bulkio.adapters import aws
from bulkio.adapters.secrets import SecretError
from bulkio.domain.exports import ExportFormat, ExportQuery
from bulkio.domain.resources import Resource
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from tests.fixtures.postgres import run_autocommit

# Everything a URL must quote, and a space.
SPECIAL_PASSWORD = "p@ss:w/o%rd#?&= x"


def _clear_caches() -> None:
    """The process-wide caches a warm Lambda keeps: each test is a cold start."""
    bootstrap.database_url.cache_clear()
    bootstrap.reset()
    aws.client.cache_clear()
    aws.dynamodb_table.cache_clear()


@pytest.fixture
def secretsmanager(aws_environment: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Secrets Manager client on moto, with the environment of a function on AWS (no DATABASE_URL)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    _clear_caches()
    yield boto3.session.Session().client("secretsmanager")
    _clear_caches()


def _create_secret(client: Any, value: str) -> str:
    """A new secret (unique name) holding `value`; its ARN."""
    name = f"bulkio-db-{tokens.token_hex(4)}"
    return str(client.create_secret(Name=name, SecretString=value)["ARN"])


def _rotation_secret(dsn: str, **changes: Any) -> str:
    """The JSON of an RDS rotation secret for the database at `dsn`."""
    parts = parse_dsn(dsn)
    fields = {
        "engine": "postgres",
        "host": parts.get("host", "localhost"),
        "port": int(parts.get("port", 5432)),
        "username": parts.get("user", "postgres"),
        "password": parts.get("password", "unused"),
        "dbname": parts["dbname"],
    }
    return orjson.dumps({**fields, **changes}).decode()


def _whoami(dsn: str) -> tuple[str, str]:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_database()")
            user, database = cursor.fetchone()
            return str(user), str(database)
    finally:
        connection.close()


@pytest.fixture
def special_role(database_url: str) -> Iterator[tuple[str, str]]:
    """A login role whose name and password need URL quoting; (name, password)."""
    name = f"bulkio @test:{tokens.token_hex(3)}"
    run_autocommit(
        database_url,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(SPECIAL_PASSWORD)),
    )
    yield name, SPECIAL_PASSWORD
    run_autocommit(database_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_the_secret_resolves_to_a_url_that_connects(
    database_url: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(secretsmanager, _rotation_secret(database_url)))

    resolved = bootstrap.database_url()

    assert _whoami(resolved)[1] == parse_dsn(database_url)["dbname"]


def test_user_and_password_needing_quotes_reach_the_server_intact(
    database_url: str, special_role: tuple[str, str], secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = special_role
    secret = _rotation_secret(database_url, username=user, password=password)
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(secretsmanager, secret))

    resolved = bootstrap.database_url()

    assert parse_dsn(resolved)["password"] == password
    assert _whoami(resolved) == (user, parse_dsn(database_url)["dbname"])


def test_a_secret_holding_a_url_is_found_by_name(
    database_url: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = parse_dsn(database_url)
    credentials = quote(parts.get("user", "postgres"), safe="")
    if parts.get("password"):
        credentials += ":" + quote(parts["password"], safe="")
    url = f"postgresql://{credentials}@{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts['dbname']}"
    name = f"bulkio-url-{tokens.token_hex(4)}"
    secretsmanager.create_secret(Name=name, SecretString=url)
    monkeypatch.setenv("DATABASE_SECRET_ARN", name)

    assert bootstrap.database_url() == url
    assert _whoami(url)[1] == parts["dbname"]


def test_both_services_connect_through_the_secret(
    clean_db: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(secretsmanager, _rotation_secret(clean_db)))
    calls: list[str] = []
    real_read = bootstrap.read_database_url

    def counted_read(client: Any, secret_id: str) -> str:
        calls.append(secret_id)
        return real_read(client, secret_id)

    monkeypatch.setattr(bootstrap, "read_database_url", counted_read)

    assert bootstrap.chunk_writer().store.chunk_failure("no-such-job", 1) is None
    export = bootstrap.export_service().store.stream(
        ExportQuery(Resource.USERS, ("id",), (), None), ExportFormat.NDJSON
    )
    assert b"".join(export.body) == b""
    # One read per process, whoever connects first.
    assert len(calls) == 1


def test_a_changed_secret_is_picked_up_when_the_connection_fails(
    database_url: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotation: the cached credentials stop working, the secret is read again and the new ones are used."""
    arn = _create_secret(secretsmanager, _rotation_secret(database_url, dbname="no_such_database"))
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    with pytest.raises(psycopg2.OperationalError):
        bootstrap.connect_database()

    secretsmanager.put_secret_value(SecretId=arn, SecretString=_rotation_secret(database_url))
    connection = bootstrap.connect_database()
    try:
        assert connection.get_dsn_parameters()["dbname"] == parse_dsn(database_url)["dbname"]
    finally:
        connection.close()


def test_health_connects_through_the_secret(
    database_url: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(secretsmanager, _rotation_secret(database_url)))

    assert bootstrap.health_report()["checks"]["database"] == "ok"


def test_a_missing_secret_is_a_clear_error_and_is_not_cached(
    database_url: str, secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"bulkio-later-{tokens.token_hex(4)}"
    monkeypatch.setenv("DATABASE_SECRET_ARN", name)

    with pytest.raises(SecretError, match=f"could not read the database secret {name}: .*ResourceNotFound"):
        bootstrap.database_url()
    assert bootstrap.health_report()["checks"]["database"].startswith("unavailable: SecretError: could not read")

    secretsmanager.create_secret(Name=name, SecretString=_rotation_secret(database_url))
    assert _whoami(bootstrap.database_url())[1] == parse_dsn(database_url)["dbname"]


def test_an_unusable_secret_never_shows_its_password(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = orjson.dumps({"username": "app", "password": SPECIAL_PASSWORD, "dbname": "bulkio"}).decode()
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(secretsmanager, secret))

    with pytest.raises(SecretError) as raised:
        bootstrap.database_url()
    report = bootstrap.health_report()["checks"]["database"]

    for text in (str(raised.value), report):
        assert "lacks host" in text
        assert SPECIAL_PASSWORD not in text


def test_database_url_wins_and_the_secret_is_not_read(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://local@127.0.0.1/bulkio")
    monkeypatch.setenv("DATABASE_SECRET_ARN", "no-such-secret")

    assert bootstrap.database_url() == "postgresql://local@127.0.0.1/bulkio"
