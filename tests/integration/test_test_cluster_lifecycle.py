"""The test suite's own PostgreSQL cluster is stopped when the test session ends (issue 8, item 12).

Each test runs a real pytest session in a subprocess, with the suite's `database_url` fixture pointed at a state
folder of its own, and looks at what is left once that session is over: no server, and no data outside the
state folder. The shared cluster of the outer session (.state/test) is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from infra.local.postgres import session_cluster, stop_cluster

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

INNER_CONFTEST = """
import os
from pathlib import Path

import tests.fixtures.postgres as postgres_fixtures

postgres_fixtures.TEST_CLUSTER_STATE = Path(os.environ["INNER_STATE_DIR"])
pytest_plugins = ["tests.fixtures.postgres"]
"""

INNER_TEST = """
import json
import os
from pathlib import Path

import psycopg2


def test_uses_the_database(database_url: str) -> None:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('data_directory'), current_setting('port')::int, "
            "(SELECT system_identifier FROM pg_control_system())::text"
        )
        data_dir, port, system_id = cursor.fetchone()
    connection.close()
    postmaster_pid = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    report = {"data_dir": data_dir, "port": port, "system_id": system_id, "pid": postmaster_pid}
    Path(os.environ["INNER_REPORT"]).write_text(json.dumps(report))
"""


def run_test_session(state_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Run a pytest session that uses the suite's database fixtures on `state_dir`; what its server was."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "pytest.ini").write_text("[pytest]\n")
    (work_dir / "conftest.py").write_text(textwrap.dedent(INNER_CONFTEST))
    (work_dir / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    report = work_dir / "report.json"
    report.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "INNER_STATE_DIR": str(state_dir),
        "INNER_REPORT": str(report),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "layers" / "common" / "python")]),
    }
    environment.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(work_dir / "test_inner.py")],
        cwd=work_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(report.read_text()))


def is_alive(pid: int) -> bool:
    """Whether the process runs (an exited one that its parent, here often PID 1, has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return "\nState:\tZ" not in status


def accepts_connections(port: int) -> bool:
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user="bulkio", dbname="postgres", connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def assert_stopped(server: dict[str, Any]) -> None:
    assert not is_alive(server["pid"]), f"the postmaster {server['pid']} of {server['data_dir']} still runs"
    assert not accepts_connections(server["port"])


@pytest.fixture
def enterable_dir() -> Iterator[Path]:
    """A folder the postgres user may enter (when the tests run as root), so that the data stays inside it."""
    folder = Path(tempfile.mkdtemp(prefix="bulkio-cluster-lifecycle-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        _clean_up(folder / "state")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def closed_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder the postgres user cannot enter: as root, the cluster's data then lives under ~postgres."""
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as the postgres user, with the data outside the state folder")
    tmp_path.chmod(0o700)
    try:
        yield tmp_path
    finally:
        _clean_up(tmp_path / "state")


def _clean_up(state_dir: Path) -> None:
    """Leave nothing behind even when a test failed."""
    if (state_dir / "postgres").exists():
        stop_cluster(state_dir)
    link = state_dir / "postgres"
    if link.is_symlink():
        shutil.rmtree(link.resolve(), ignore_errors=True)


def test_a_session_stops_its_cluster_and_removes_its_data_outside_the_clone(closed_dir: Path) -> None:
    state_dir = closed_dir / "state"
    server = run_test_session(state_dir, closed_dir / "session")
    data_dir = Path(server["data_dir"])
    assert state_dir.resolve() not in data_dir.parents, "the data was expected outside the state folder"
    assert_stopped(server)
    assert not data_dir.exists(), f"{data_dir} outlived the session"
    assert not (state_dir / "postgres").is_symlink()


def test_the_cluster_is_reused_across_sessions_and_stopped_by_the_last_one_out(enterable_dir: Path) -> None:
    state_dir = enterable_dir / "state"
    first = run_test_session(state_dir, enterable_dir / "first")
    assert Path(first["data_dir"]) == (state_dir / "postgres").resolve()
    assert_stopped(first)
    assert (state_dir / "postgres" / "PG_VERSION").exists(), "the data inside the clone is kept for the next run"
    # A second run while another session (this process) uses the same cluster: it must leave it running.
    with session_cluster(state_dir) as outer_dsn:
        second = run_test_session(state_dir, enterable_dir / "second")
        assert second["system_id"] == first["system_id"], "the cluster should be reused, not created again"
        assert is_alive(second["pid"]), "a session stopped the cluster another one was using"
        psycopg2.connect(outer_dsn).close()
    assert_stopped(second)
