"""The embedded stack's own ports, which URL imports must never reach (URL_DENIED_PORTS).

On the embedded stack, URL_ALLOWED_HOSTS admits 127.0.0.1 and localhost (infra/local/env.json) so that a local web
server can serve files to import. The stack's own services listen on that same loopback address and trust whoever
connects (the AWS endpoint takes any credentials, PostgreSQL trusts local connections): the functions host gives
every function the list of their ports, and the SSRF guard (bulkio/adapters/http_source.py) refuses them on any
non-public address, whatever the allowlist says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from psycopg2.extensions import parse_dsn

VARIABLE = "URL_DENIED_PORTS"
POSTGRES_DEFAULT_PORT = 5432


def stack_ports(aws_port: int, database_url: str | None, environ: Mapping[str, str] | None = None) -> list[int]:
    """The ports of the AWS endpoint, the API, the Invoke API, PostgreSQL, the Pushgateway and Prometheus, as the
    functions host was configured (the LOCAL_* variables of README's table, with their defaults)."""
    env = os.environ if environ is None else environ
    ports = {
        aws_port,
        int(env.get("LOCAL_API_PORT") or 3000),
        int(env.get("LOCAL_INVOKE_PORT") or 4567),
        int(env.get("LOCAL_PUSHGATEWAY_PORT") or 9091),
        int(env.get("LOCAL_PROMETHEUS_PORT") or 9090),
    }
    for url, default in (
        (database_url or env.get("DATABASE_URL"), POSTGRES_DEFAULT_PORT),
        (env.get("PUSHGATEWAY_URL"), None),
    ):
        port = _port_of(url, default)
        if port is not None:
            ports.add(port)
    return sorted(ports)


def _port_of(url: str | None, default: int | None) -> int | None:
    if not url:
        return None
    if url.startswith(("postgres://", "postgresql://")) or "=" in url:
        try:
            port = parse_dsn(url).get("port")
        except Exception:  # a DSN psycopg2 cannot parse: the functions will fail on it anyway
            return default
        return int(port) if port and port.isdigit() else default
    try:
        return urlsplit(url).port or default
    except ValueError:
        return default


def denied_ports_value(aws_port: int, database_url: str | None, environ: Mapping[str, str] | None = None) -> str:
    """URL_DENIED_PORTS for the functions' environment."""
    return ",".join(map(str, stack_ports(aws_port, database_url, environ)))
