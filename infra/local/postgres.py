"""A project-local PostgreSQL cluster built from the installed server binaries (no Docker, no system service).

    python -m infra.local.postgres start|stop|url [--state-dir .state] [--port 54329]

The cluster lives in <state_dir>/postgres, logs to <state_dir>/postgres.log, listens on 127.0.0.1 only and
trusts local connections: it is a throwaway development database, never a deployment target.

PostgreSQL refuses to run as root. When started by root, the server binaries run as the `postgres` OS user.
If that user cannot reach <state_dir> (a repository under /root, say), the data directory is created under
the postgres user's home instead and <state_dir>/postgres becomes a symlink to it. That changes no permission
on any of the caller's folders, which opening up the parents of the repository would.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

DEFAULT_PORT = 54329
SUPERUSER = "bulkio"
DATABASE = "bulkio"
SERVICE_USER = "postgres"
# Unix socket paths are limited to 107 bytes; beyond that the cluster serves TCP only.
MAX_SOCKET_PATH = 100
START_TIMEOUT_SECONDS = 60

# Appended to postgresql.conf at initdb. Bulk imports write a lot of WAL; a larger max_wal_size avoids
# checkpoints every few seconds during a million-row COPY. synchronous_commit=off only risks losing the last
# few hundred milliseconds of commits if the machine crashes, never corrupting data: acceptable for a
# disposable dev cluster, and it keeps the many small per-chunk transactions from waiting on fsync.
# The import pipeline's own connections turn it back on (bulkio.adapters.postgres.connect): it reports each
# commit to DynamoDB or SQS at once, and `pg_ctl restart -m immediate` (make chaos) must not undo one.
TUNING = """
# bulkio dev-cluster settings
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
shared_buffers = 256MB
work_mem = 64MB
maintenance_work_mem = 256MB
max_wal_size = 2GB
checkpoint_timeout = 15min
synchronous_commit = off
max_connections = 200
logging_collector = off
log_min_messages = warning
"""


def find_bin_dir() -> Path:
    """PG_BIN if set, else the newest /usr/lib/postgresql/<version>/bin, else wherever pg_ctl is on PATH."""
    from_env = os.environ.get("PG_BIN")
    if from_env:
        return Path(from_env)
    versioned = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()]
    if versioned:
        return max(versioned, key=lambda p: _version_key(p.parent.name))
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server binaries not found: set PG_BIN or install postgresql")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_service_user(command: Sequence[str]) -> list[str]:
    return ["runuser", "-u", SERVICE_USER, "--", *command] if _running_as_root() else list(command)


def _run(command: Sequence[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    # cwd "/" because the postgres user may not be allowed into the caller's working directory.
    return subprocess.run(_as_service_user(command), cwd="/", text=True, capture_output=True, check=False, input=input)


def _service_user_can_write(directory: Path) -> bool:
    return _run(["test", "-w", str(directory), "-a", "-x", str(directory)]).returncode == 0


def _prepare_data_dir(state_dir: Path) -> Path:
    """Return the real data directory, creating it (and the state-dir symlink, if needed) on first use."""
    link_or_dir = state_dir / "postgres"
    if link_or_dir.exists():
        return link_or_dir.resolve()
    if not _running_as_root():
        link_or_dir.mkdir(mode=0o700)
        return link_or_dir
    link_or_dir.mkdir(mode=0o700)
    shutil.chown(link_or_dir, SERVICE_USER, SERVICE_USER)
    if _service_user_can_write(link_or_dir):
        return link_or_dir
    link_or_dir.rmdir()
    digest = hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:12]
    home = Path(os.path.expanduser(f"~{SERVICE_USER}"))
    elsewhere = home / "bulkio" / digest
    _run(["mkdir", "-p", "-m", "700", str(elsewhere)]).check_returncode()
    link_or_dir.symlink_to(elsewhere, target_is_directory=True)
    return elsewhere


def _socket_dir(data_dir: Path, port: int) -> str:
    return "" if len(str(data_dir / f".s.PGSQL.{port}")) > MAX_SOCKET_PATH else str(data_dir)


def _initdb(bin_dir: Path, data_dir: Path, port: int) -> None:
    result = _run(
        [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        ]
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")
    tuning = TUNING.format(socket_dir=_socket_dir(data_dir, port))
    result = _run(["sh", "-c", 'cat >> "$1"', "append", str(data_dir / "postgresql.conf")], input=tuning)
    result.check_returncode()


def _running_port(data_dir: Path) -> int | None:
    """The port of the postmaster serving data_dir, or None when it is not running."""
    bin_dir = find_bin_dir()
    if _run([str(bin_dir / "pg_ctl"), "status", "--pgdata", str(data_dir)]).returncode != 0:
        return None
    # postmaster.pid: pid, data dir, start time, port, ...
    pid_file = _run(["cat", str(data_dir / "postmaster.pid")]).stdout.splitlines()
    return int(pid_file[3]) if len(pid_file) > 3 else None


def _start(bin_dir: Path, data_dir: Path, port: int, log_path: Path) -> None:
    # The log is opened here, by the caller, and inherited by the server: the postgres user may not be
    # able to open a file in the state folder itself.
    with log_path.open("ab") as log:
        result = subprocess.run(
            _as_service_user(
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "--pgdata",
                    str(data_dir),
                    "--wait",
                    "--timeout",
                    str(START_TIMEOUT_SECONDS),
                    "-o",
                    f"-p {port}",
                ]
            ),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=False,
        )
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"PostgreSQL did not start on port {port}; end of {log_path}:\n" + "\n".join(tail))


def dsn_for(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"


def _ensure_database(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            connection = psycopg2.connect(dsn_for(port, "postgres"), connect_timeout=5)
            break
        except psycopg2.OperationalError:
            # pg_ctl --wait returns once the postmaster is up, which can precede accepting TCP connections.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                with suppress(pg_errors.DuplicateDatabase):
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    finally:
        connection.close()


@contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    """Serialize concurrent start/stop calls on the same state folder (parallel test runs, make targets)."""
    with (state_dir / "postgres.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def ensure_cluster(state_dir: Path, port: int | None = DEFAULT_PORT) -> str:
    """Create the cluster if missing, start it if stopped, create database "bulkio"; return its DSN.

    port None: the port it already runs on, else a free one (so that clusters of several clones can coexist).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    bin_dir = find_bin_dir()
    with _state_lock(state_dir):
        data_dir = _prepare_data_dir(state_dir)
        running_port = _running_port(data_dir) if _has_cluster(data_dir) else None
        if port is None:
            port = running_port or _free_port()
        if not _has_cluster(data_dir):
            _initdb(bin_dir, data_dir, port)
        if running_port is None:
            _start(bin_dir, data_dir, port, state_dir / "postgres.log")
        elif running_port != port:
            raise RuntimeError(
                f"the cluster in {state_dir} is already running on port {running_port}, not {port}: "
                "stop it first or use its port"
            )
        _ensure_database(port)
    return dsn_for(port)


def _has_cluster(data_dir: Path) -> bool:
    return _run(["test", "-f", str(data_dir / "PG_VERSION")]).returncode == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_cluster(state_dir: Path) -> None:
    """Stop the cluster (fast shutdown) if it is running; a missing cluster is not an error."""
    link_or_dir = state_dir / "postgres"
    if not link_or_dir.exists():
        return
    with _state_lock(state_dir):
        data_dir = link_or_dir.resolve()
        if _running_port(data_dir) is None:
            return
        result = _run([str(find_bin_dir() / "pg_ctl"), "stop", "--pgdata", str(data_dir), "--mode", "fast"])
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")


@contextmanager
def session_cluster(state_dir: Path) -> Iterator[str]:
    """The DSN of state_dir's cluster, started (on a free port) if it is not running, for the duration of the block.

    For test sessions: several may share the cluster (parallel runs in one clone), each holding a shared lock on
    <state_dir>/postgres.users while it runs. The last one to leave stops the cluster. Its data stays in the state
    folder for the next session, except when it lives outside (root, a state folder the postgres user cannot enter:
    see _prepare_data_dir): that data is removed with the link, so that nothing of the clone outlives it there.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "postgres.users").open("w") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        try:
            yield ensure_cluster(state_dir, port=None)
        finally:
            _leave_session_cluster(state_dir, users.fileno())


def _leave_session_cluster(state_dir: Path, users: int) -> None:
    fcntl.flock(users, fcntl.LOCK_UN)
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another session still uses the cluster: the last one out stops it
    stop_cluster(state_dir)
    remove_data_outside(state_dir)


def remove_data_outside(state_dir: Path) -> None:
    """Remove the data of a stopped cluster that lives outside state_dir (see _prepare_data_dir), and the link."""
    link = state_dir / "postgres"
    if not link.is_symlink():
        return
    with _state_lock(state_dir):
        data_dir = link.resolve()
        if _has_cluster(data_dir) and _running_port(data_dir) is not None:
            raise RuntimeError(f"the cluster in {data_dir} is running: stop it before removing its data")
        shutil.rmtree(data_dir, ignore_errors=True)
        link.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.postgres", description="Project-local PostgreSQL cluster."
    )
    parser.add_argument("command", choices=["start", "stop", "url"])
    parser.add_argument("--state-dir", type=Path, default=Path(".state"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop_cluster(args.state_dir)
        return 0
    if args.command == "url":
        print(dsn_for(args.port))
        return 0
    print(ensure_cluster(args.state_dir, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
