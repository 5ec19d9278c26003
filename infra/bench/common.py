"""What the benchmarks share: a scratch database, the stack's HTTP API, and per-process resource usage."""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from infra.local.postgres import session_cluster
from infra.local.stack import REPOSITORY_ROOT, LocalStack, StackPorts
from infra.migrate import apply_migrations
from infra.tools.machine import cpu_model


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


AWS_ENDPOINT = "aws endpoint (moto)"
STEP_FUNCTIONS = "step functions (moto)"
FUNCTIONS_HOST = "functions host"
POSTGRESQL_BACKENDS = "postgresql backends"


@dataclass
class Usage:
    peak_kib: int = 0  # of the largest process
    cpu_seconds: float = 0.0  # of all processes together
    processes: int = 0


@dataclass
class _Process:
    pid: int
    parent: int
    cmdline: str
    environ: list[bytes]
    status: str
    cpu_seconds: float


def _processes() -> dict[int, _Process]:
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, _Process] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # After the command name: state, ppid, ..., utime (index 11), stime (index 12).
        cpu_seconds = (int(stat[11]) + int(stat[12])) / ticks
        found[int(proc.name)] = _Process(int(proc.name), int(stat[1]), cmdline, environ, status, cpu_seconds)
    return found


def _descendants(processes: dict[int, _Process], roots: Sequence[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for process in processes.values():
        children.setdefault(process.parent, []).append(process.pid)
    seen: set[int] = set()
    pending = [root for root in roots if root in processes]
    while pending:
        pid = pending.pop()
        if pid not in seen:
            seen.add(pid)
            pending.extend(children.get(pid, []))
    return seen


def _part(process: _Process) -> str:
    names = [e.split(b"=", 1)[1].decode() for e in process.environ if e.startswith(b"AWS_LAMBDA_FUNCTION_NAME=")]
    if names and "lambda_runtime" in process.cmdline:
        return names[0]
    if "infra.local.aws_endpoint" in process.cmdline:
        return AWS_ENDPOINT
    if "infra.local.step_functions_endpoint" in process.cmdline:
        return STEP_FUNCTIONS
    if "infra.local.functions_host" in process.cmdline:
        return FUNCTIONS_HOST
    return f"other: {process.cmdline[:40].strip()}"


def process_usage(stack: LocalStack, database: str) -> dict[str, Usage]:
    """Peak resident memory (VmHWM) and CPU time of this stack's processes, by function or part, and of the
    PostgreSQL backends connected to `database`.

    Only the stack's own process tree and that database's backends count: other stacks (a chaos drill, the
    tests) may run on the same machine at the same time. Processes that already exited are not seen."""
    processes = _processes()
    roots = [process.pid for process in (stack.endpoint, stack.host) if process is not None]
    usage: dict[str, Usage] = {}
    for pid in _descendants(processes, roots):
        _add(usage.setdefault(_part(processes[pid]), Usage()), processes[pid])
    for process in processes.values():
        # A backend's title is "postgres: user database host(port) state"; the bench database's name is unique.
        if process.cmdline.startswith("postgres:") and f" {database} " in process.cmdline:
            _add(usage.setdefault(POSTGRESQL_BACKENDS, Usage()), process)
    return usage


def _add(entry: Usage, process: _Process) -> None:
    entry.processes += 1
    entry.cpu_seconds += process.cpu_seconds
    for line in process.status.splitlines():
        if line.startswith("VmHWM:"):
            entry.peak_kib = max(entry.peak_kib, int(line.split()[1]))


def bench_stack(dsn: str, state: Path, extra_environment: dict[str, str] | None = None) -> LocalStack:
    """An embedded stack on free ports against `dsn`, its state and console in `state` (not started yet)."""
    return LocalStack(
        REPOSITORY_ROOT / "template.yaml",
        state,
        StackPorts.free(),
        database_url=dsn,
        extra_environment=extra_environment or {},
        output=(state / "console.log").open("ab"),
    )


def database_name(dsn: str) -> str:
    return str(parse_dsn(dsn)["dbname"])


def machine(dsn: str) -> dict[str, Any]:
    """What the figures were measured on, as infra/chaos prints it; the PostgreSQL version is the server's own."""
    cpu = cpu_model()
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
    finally:
        connection.close()
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
    }


def source_revision() -> dict[str, Any]:
    """The git revision and how many tracked files differ from it (others may be editing the tree)."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPOSITORY_ROOT), *arguments], capture_output=True, text=True, check=False
        ).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"revision": git("rev-parse", "--short", "HEAD") or "?", "files_changed": len(changed.splitlines())}


def measured_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def bench_server() -> Iterator[str]:
    """DATABASE_URL, or the benchmarks' own PostgreSQL cluster (.state/bench) for the length of the run: stopped
    afterwards, as the tests' is, so that a benchmark leaves nothing running."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with session_cluster(Path(__file__).resolve().parents[2] / ".state" / "bench") as server_dsn:
        yield server_dsn
