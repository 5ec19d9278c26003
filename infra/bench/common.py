"""What the benchmarks share: a scratch database, the stack's HTTP API, and per-process resource usage."""

from __future__ import annotations

import os
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from infra.local.postgres import session_cluster
from infra.migrate import apply_migrations


@contextmanager
def scratch_database(server_dsn: str) -> Iterator[str]:
    name = f"bulkio_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_dsn(server_dsn, dbname=name)
    try:
        apply_migrations(dsn)
        yield dsn
    finally:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def api_request(
    url: str, token: str, method: str = "GET", payload: dict[str, Any] | None = None
) -> urllib.request.Request:
    """A request to the stack's API with the caller's bearer token (infra.tools.token.local_token)."""
    body = orjson.dumps(payload) if payload is not None else None
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return urllib.request.Request(url, data=body, method=method, headers=headers)


def http_json(method: str, url: str, token: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(api_request(url, token, method, payload), timeout=60) as response:
        return dict(orjson.loads(response.read()))


@dataclass
class Usage:
    peak_kib: int = 0  # of the largest process
    cpu_seconds: float = 0.0  # of all processes together


def process_usage() -> dict[str, Usage]:
    """Peak resident memory and CPU time of the stack's processes, by function or part."""
    usage: dict[str, Usage] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        names = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"AWS_LAMBDA_FUNCTION_NAME=")]
        if names and "lambda_runtime" in cmdline:
            part = names[0]
        elif "infra.local.aws_endpoint" in cmdline:
            part = "aws endpoint (moto)"
        elif "infra.local.functions_host" in cmdline:
            part = "functions host"
        elif cmdline.startswith("postgres:"):
            part = "postgresql backends"
        else:
            continue
        entry = usage.setdefault(part, Usage())
        entry.cpu_seconds += (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                entry.peak_kib = max(entry.peak_kib, int(line.split()[1]))
    return usage


def print_usage(usage: dict[str, Usage]) -> None:
    print(f"  {'process':<30} {'peak memory':>12} {'CPU time':>10}")
    for name, entry in sorted(usage.items()):
        print(f"  {name:<30} {entry.peak_kib / 1024:8.0f} MiB {entry.cpu_seconds:8.1f} s")


@contextmanager
def bench_server() -> Iterator[str]:
    """DATABASE_URL, or the benchmarks' own PostgreSQL cluster (.state/bench) for the length of the run: stopped
    afterwards, as the tests' is, so that a benchmark leaves nothing running."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with session_cluster(Path(__file__).resolve().parents[2] / ".state" / "bench") as server_dsn:
        yield server_dsn
