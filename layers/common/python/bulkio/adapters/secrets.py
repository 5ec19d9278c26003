"""The PostgreSQL connection URL held in AWS Secrets Manager.

Two secret shapes are understood:

- the JSON of RDS rotation secrets: {"engine", "host", "port", "username", "password", "dbname", ...};
  `port` defaults to 5432 and `dbname` to the caller's default ("postgres" unless told otherwise);
- a plain `postgresql://` (or `postgres://`) URL, used as it is.

Errors (SecretError) name the secret and what is wrong with it, never the secret's value: they may end up in
logs and in the health report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson
import psycopg2
from psycopg2.extensions import parse_dsn

DEFAULT_DBNAME = "postgres"
DEFAULT_PORT = 5432
URL_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_ENGINES = frozenset({"postgres", "postgresql", "aurora-postgresql"})
REQUIRED_FIELDS = ("username", "password", "host")
_TEXT_FIELDS = ("engine", "host", "username", "password", "dbname")
REDACTED = "***"


class SecretError(Exception):
    """The database secret can't be read or doesn't describe a PostgreSQL database."""


def read_database_url(secrets_client: Any, secret_id: str, default_dbname: str = DEFAULT_DBNAME) -> str:
    """Reads `secret_id` (a name or an ARN) with a boto3 Secrets Manager client and returns its connection URL."""
    try:
        response = secrets_client.get_secret_value(SecretId=secret_id)
    except Exception as error:
        # botocore's messages carry the error code and the secret's id, never its value.
        raise SecretError(f"could not read the database secret {secret_id}: {type(error).__name__}: {error}") from error
    return database_url_from_secret(_secret_text(response, secret_id), secret_id, default_dbname)


def _secret_text(response: Mapping[str, Any], secret_id: str) -> str:
    if "SecretString" in response:
        return str(response["SecretString"])
    if "SecretBinary" in response:
        try:
            return bytes(response["SecretBinary"]).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"the database secret {secret_id} is binary and not UTF-8 text") from None
    raise SecretError(f"the database secret {secret_id} has no value")


def database_url_from_secret(secret: str, secret_id: str = "", default_dbname: str = DEFAULT_DBNAME) -> str:
    """The connection URL that a secret's text describes (see the module's docstring for the shapes)."""
    name = f"the database secret {secret_id}".rstrip()
    text = secret.strip()
    if text.startswith(URL_SCHEMES):
        try:
            parts = parse_dsn(text)
        except psycopg2.Error:
            # `from None`, and libpq's message left out: it quotes the faulty part, which may be the password.
            raise SecretError(f"{name} is not a valid connection URL (are its user and password URL-quoted?)") from None
        if not parts.get("host") and not parts.get("hostaddr"):
            raise SecretError(f"{name} is a URL without a host")
        return text
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError:
        # `from None`: the decoding error holds the whole document, password included.
        raise SecretError(f"{name} is neither JSON nor a postgresql:// URL") from None
    if not isinstance(fields, dict):
        raise SecretError(f"{name} is JSON but not an object (found {type(fields).__name__})")
    return database_url_from_fields(fields, name, default_dbname)


def database_url_from_fields(
    fields: Mapping[str, Any], name: str = "the database secret", default_dbname: str = DEFAULT_DBNAME
) -> str:
    """postgresql://user:password@host:port/dbname from a rotation secret's fields, every part URL-quoted."""
    wrong_type = [field for field in _TEXT_FIELDS if not isinstance(fields.get(field, ""), str | None)]
    if not isinstance(fields.get("port", 0), str | int | None) or isinstance(fields.get("port"), bool):
        wrong_type.append("port")
    if wrong_type:
        raise SecretError(f"{name} has fields of the wrong type: {', '.join(wrong_type)}")
    missing = [field for field in REQUIRED_FIELDS if not _text(fields.get(field))]
    if missing:
        raise SecretError(f"{name} lacks {', '.join(missing)} (its fields: {', '.join(sorted(map(str, fields)))})")
    engine = _text(fields.get("engine"))
    if engine and engine.lower() not in POSTGRES_ENGINES:
        raise SecretError(f"{name} is for the engine {engine!r}, not PostgreSQL")
    host = _text(fields["host"])
    # An IPv6 address goes between brackets in a URL.
    netloc_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    user = quote(_text(fields["username"]), safe="")
    # The password is taken as it is: leading or trailing spaces may be part of it.
    password = quote(fields["password"], safe="")
    port = _port(fields.get("port"), name)
    dbname = quote(_text(fields.get("dbname")) or default_dbname, safe="")
    return f"postgresql://{user}:{password}@{netloc_host}:{port}/{dbname}"


def _text(value: str | None) -> str:
    return (value or "").strip()


def _port(value: Any, name: str) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SecretError(f"{name} has a port that is not a number") from None
    if not 0 < port < 65536:
        raise SecretError(f"{name} has a port out of range ({port})")
    return port


def redact(text: str, url: str) -> str:
    """`text` without the password of `url`, as written in the URL (quoted) or as the server sees it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    if not password:
        return text
    for form in sorted({password, unquote(password)}, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
