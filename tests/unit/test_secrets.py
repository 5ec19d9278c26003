"""The database URL built from a Secrets Manager secret, and where it is resolved (bootstrap, health)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg2
import pytest
from bulkio import bootstrap
from bulkio.adapters.secrets import (
    SecretError,
    database_url_from_fields,
    database_url_from_secret,
    read_database_url,
    redact,
)
from bulkio.config import Settings
from psycopg2.extensions import parse_dsn

from tests.fakes import make_settings

SECRET_ID = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bulkio-db-AbCdEf"
PASSWORD = "p@ss:w/o%rd#?&= ü"
ROTATION_SECRET: dict[str, Any] = {
    "engine": "postgres",
    "host": "db.cluster-abc.eu-west-1.rds.amazonaws.com",
    "port": 5432,
    "username": "bulk io@app",
    "password": PASSWORD,
    "dbname": "bulkio",
    "dbInstanceIdentifier": "bulkio-db",
}


def _secret(**changes: Any) -> str:
    fields = {**ROTATION_SECRET, **changes}
    return orjson.dumps({k: v for k, v in fields.items() if v is not ...}).decode()


def _error(secret: str) -> str:
    with pytest.raises(SecretError) as raised:
        database_url_from_secret(secret, SECRET_ID)
    message = str(raised.value)
    assert PASSWORD not in message
    assert secret not in message
    # No decoding error (which holds the document) travels with it.
    assert raised.value.__cause__ is None
    return message


# ---------------------------------------------------------------------------------------------- URL building


def test_a_rotation_secret_becomes_a_url_that_libpq_reads_back_exactly() -> None:
    url = database_url_from_secret(_secret(), SECRET_ID)

    assert url.startswith("postgresql://bulk%20io%40app:")
    assert "@db.cluster-abc.eu-west-1.rds.amazonaws.com:5432/bulkio" in url
    # libpq's own parser: what psycopg2.connect will hand the server.
    assert parse_dsn(url) == {
        "user": "bulk io@app",
        "password": PASSWORD,
        "host": "db.cluster-abc.eu-west-1.rds.amazonaws.com",
        "port": "5432",
        "dbname": "bulkio",
    }


@pytest.mark.parametrize("password", ["@", ":", "/", "%", "#", "%40", "a b", " lead", "?x=1", "[]", "'\"\\"])
def test_every_special_character_of_a_password_survives(password: str) -> None:
    assert parse_dsn(database_url_from_secret(_secret(password=password)))["password"] == password


def test_without_dbname_the_default_database_is_used() -> None:
    assert database_url_from_secret(_secret(dbname=...)).endswith("/postgres")
    assert database_url_from_secret(_secret(dbname="")).endswith("/postgres")
    assert database_url_from_secret(_secret(dbname=None), default_dbname="app db").endswith("/app%20db")


def test_port_defaults_to_5432_and_may_be_a_string() -> None:
    assert parse_dsn(database_url_from_secret(_secret(port=...)))["port"] == "5432"
    assert parse_dsn(database_url_from_secret(_secret(port="6543")))["port"] == "6543"


def test_an_ipv6_host_is_bracketed() -> None:
    assert parse_dsn(database_url_from_secret(_secret(host="::1")))["host"] == "::1"


def test_the_engine_is_optional_and_aurora_is_postgresql() -> None:
    assert database_url_from_secret(_secret(engine=...)).startswith("postgresql://")
    assert database_url_from_secret(_secret(engine="aurora-postgresql")).startswith("postgresql://")


def test_a_secret_holding_a_url_is_used_as_it_is() -> None:
    url = "postgresql://app:s%40cret@db.example:5432/bulkio?sslmode=require"
    assert database_url_from_secret(f"  {url}\n") == url
    assert database_url_from_secret("postgres://app@db.example/bulkio") == "postgres://app@db.example/bulkio"


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("field", ["username", "password", "host"])
def test_a_missing_field_is_named(field: str) -> None:
    message = _error(_secret(**{field: ...}))
    assert SECRET_ID in message
    assert f"lacks {field}" in message


def test_several_missing_fields_are_all_named_with_the_fields_present() -> None:
    message = _error(orjson.dumps({"user": "app", "pass": PASSWORD}).decode())
    assert "lacks username, password, host" in message
    assert "its fields: pass, user" in message


def test_an_empty_field_counts_as_missing() -> None:
    assert "lacks host" in _error(_secret(host="  "))


def test_a_secret_that_is_not_json_is_refused_without_echoing_it() -> None:
    message = _error(f"user=app password={PASSWORD} host=db")
    assert "neither JSON nor a postgresql:// URL" in message


def test_json_that_is_not_an_object_is_refused() -> None:
    assert "not an object (found list)" in _error(orjson.dumps([PASSWORD]).decode())


def test_fields_of_the_wrong_type_are_named_not_shown() -> None:
    message = _error(_secret(password={"value": PASSWORD}, port=[5432]))
    assert "wrong type: password, port" in message


@pytest.mark.parametrize(("port", "problem"), [("x", "not a number"), (0, "out of range"), (70000, "out of range")])
def test_a_bad_port_is_refused(port: Any, problem: str) -> None:
    assert problem in _error(_secret(port=port))


def test_another_engine_is_refused() -> None:
    assert "engine 'mysql'" in _error(_secret(engine="mysql"))


def test_a_url_without_a_host_is_refused() -> None:
    assert "without a host" in _error("postgresql:///bulkio")


def test_a_url_that_libpq_cannot_read_is_refused_without_echoing_it() -> None:
    # An unquoted password: libpq's own error would quote it.
    message = _error(f"postgresql://app:{PASSWORD}@db/bulkio")
    assert "not a valid connection URL" in message
    assert "%rd" not in message


def test_fields_may_come_from_a_mapping_directly() -> None:
    with pytest.raises(SecretError, match="the database secret lacks host"):
        database_url_from_fields({"username": "a", "password": "b"})


# ---------------------------------------------------------------------------------------------- reading the secret


class FakeSecrets:
    def __init__(self, response: dict[str, Any] | Exception) -> None:
        self.response = response
        self.calls: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        self.calls.append(SecretId)
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def test_read_database_url_reads_the_secret_string() -> None:
    client = FakeSecrets({"ARN": SECRET_ID, "SecretString": _secret()})
    assert parse_dsn(read_database_url(client, SECRET_ID))["password"] == PASSWORD
    assert client.calls == [SECRET_ID]


def test_read_database_url_reads_a_binary_secret() -> None:
    client = FakeSecrets({"SecretBinary": _secret().encode()})
    assert parse_dsn(read_database_url(client, SECRET_ID, default_dbname="x"))["dbname"] == "bulkio"


def test_a_secret_without_value_is_an_error() -> None:
    with pytest.raises(SecretError, match="has no value"):
        read_database_url(FakeSecrets({"ARN": SECRET_ID}), SECRET_ID)


def test_a_failed_call_becomes_a_secret_error_naming_the_secret() -> None:
    with pytest.raises(SecretError, match=r"could not read the database secret .*bulkio-db.*: RuntimeError: denied"):
        read_database_url(FakeSecrets(RuntimeError("denied")), SECRET_ID)


# ---------------------------------------------------------------------------------------------- redaction


def test_redact_hides_the_password_as_quoted_and_as_decoded() -> None:
    url = "postgresql://app:p%40ss%zz@db/bulkio"
    assert redact('invalid percent-encoded token: "p%40ss%zz"', url) == 'invalid percent-encoded token: "***"'
    assert redact("the password p@ss%zz was refused", url) == "the password *** was refused"
    assert redact("nothing to hide", "postgresql://app@db/bulkio") == "nothing to hide"
    assert redact("nothing to hide", "host=db") == "nothing to hide"


# ---------------------------------------------------------------------------------------------- bootstrap, health


def test_config_reads_the_secret_arn() -> None:
    assert Settings.from_env({"DATABASE_SECRET_ARN": SECRET_ID}).database_secret_arn == SECRET_ID
    assert Settings.from_env({}).database_secret_arn == ""


def _no_client() -> Any:
    raise AssertionError("Secrets Manager must not be called")


def test_database_url_wins_over_the_secret() -> None:
    settings = make_settings(database_url="postgresql://local/db", database_secret_arn=SECRET_ID)
    assert bootstrap.resolve_database_url(settings, _no_client) == "postgresql://local/db"


def test_without_database_url_the_secret_is_read() -> None:
    client = FakeSecrets({"SecretString": _secret()})
    settings = make_settings(database_url="", database_secret_arn=SECRET_ID)
    assert parse_dsn(bootstrap.resolve_database_url(settings, lambda: client))["user"] == "bulk io@app"


def test_with_neither_libpq_defaults_apply() -> None:
    assert bootstrap.resolve_database_url(make_settings(database_url=""), _no_client) == ""


@pytest.fixture
def cold_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A function's environment on AWS (the secret, no DATABASE_URL) and an empty database_url() cache."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", SECRET_ID)
    bootstrap.database_url.cache_clear()
    yield monkeypatch
    bootstrap.database_url.cache_clear()


class FakeAws:
    """Every other AWS client of the health check: each call answers {}."""

    def __getattr__(self, name: str) -> Any:
        return lambda **kwargs: {}


def _clients(secrets: FakeSecrets) -> Callable[[str], Any]:
    return lambda service: secrets if service == "secretsmanager" else FakeAws()


def test_database_url_is_resolved_once_per_process(cold_start: pytest.MonkeyPatch) -> None:
    client = FakeSecrets({"SecretString": _secret()})
    cold_start.setattr(bootstrap.aws, "client", _clients(client))

    assert bootstrap.resolved_database_url() == ""
    assert bootstrap.database_url() == bootstrap.database_url() == bootstrap.resolved_database_url()
    assert client.calls == [SECRET_ID]


def test_a_failed_resolution_is_not_cached(cold_start: pytest.MonkeyPatch) -> None:
    client = FakeSecrets(RuntimeError("throttled"))
    cold_start.setattr(bootstrap.aws, "client", _clients(client))
    with pytest.raises(SecretError):
        bootstrap.database_url()

    client.response = {"SecretString": _secret()}
    assert parse_dsn(bootstrap.database_url())["password"] == PASSWORD
    assert len(client.calls) == 2


class FakeServer:
    """psycopg2.connect for a server that accepts one password."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.attempts: list[str] = []

    def connect(self, dsn: str) -> Any:
        self.attempts.append(parse_dsn(dsn)["password"])
        if self.attempts[-1] != self.password:
            raise psycopg2.OperationalError("password authentication failed for user")
        return "connection"


def test_a_rotated_password_is_read_again_and_used_at_once(cold_start: pytest.MonkeyPatch) -> None:
    client = FakeSecrets({"SecretString": _secret(password="old")})
    server = FakeServer("old")
    cold_start.setattr(bootstrap.aws, "client", _clients(client))
    cold_start.setattr(bootstrap, "connect", server.connect)
    assert bootstrap.connect_database() == "connection"

    client.response = {"SecretString": _secret(password="new")}
    server.password = "new"

    assert bootstrap.connect_database() == "connection"
    assert server.attempts == ["old", "old", "new"]
    assert len(client.calls) == 2
    assert parse_dsn(bootstrap.database_url())["password"] == "new"


def test_a_failure_with_an_unchanged_secret_is_raised_after_one_more_read(cold_start: pytest.MonkeyPatch) -> None:
    client = FakeSecrets({"SecretString": _secret(password="wrong")})
    server = FakeServer("right")
    cold_start.setattr(bootstrap.aws, "client", _clients(client))
    cold_start.setattr(bootstrap, "connect", server.connect)

    with pytest.raises(psycopg2.OperationalError):
        bootstrap.connect_database()
    assert server.attempts == ["wrong"]
    assert len(client.calls) == 2


def test_with_database_url_a_failed_connection_reads_nothing(cold_start: pytest.MonkeyPatch) -> None:
    cold_start.setenv("DATABASE_URL", "postgresql://app:wrong@db/bulkio")
    cold_start.setattr(bootstrap.aws, "client", lambda service: _no_client())
    server = FakeServer("right")
    cold_start.setattr(bootstrap, "connect", server.connect)

    with pytest.raises(psycopg2.OperationalError):
        bootstrap.connect_database()
    assert server.attempts == ["wrong"]


def test_health_reports_a_bad_database_url_without_its_password(cold_start: pytest.MonkeyPatch) -> None:
    # libpq quotes a badly encoded token in its error: here, the password.
    cold_start.setenv("DATABASE_URL", "postgresql://app:s3cr%zz@127.0.0.1:1/db")
    cold_start.setattr(bootstrap.aws, "client", lambda service: FakeAws())

    report = bootstrap.health_report(make_settings())

    assert report["status"] == "degraded"
    assert report["checks"]["database"].startswith("unavailable: ProgrammingError: invalid dsn")
    assert "s3cr" not in report["checks"]["database"]
    assert report["checks"]["bucket"] == "ok"


def test_health_reports_an_unusable_secret_without_its_password(cold_start: pytest.MonkeyPatch) -> None:
    client = FakeSecrets({"SecretString": _secret(host=...)})
    cold_start.setattr(bootstrap.aws, "client", _clients(client))

    checks = bootstrap.health_report(make_settings())["checks"]

    assert checks["database"].startswith(f"unavailable: SecretError: the database secret {SECRET_ID} lacks host")
    assert PASSWORD not in checks["database"]
