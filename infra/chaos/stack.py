"""One embedded stack for a drill, run exactly as `make run` runs it, and the faults it can be given.

The stack is `python -m infra.local.run --state-dir <state>` in a session of its own (so a Ctrl-C of the drill
does not reach it, and a drill's "Ctrl-C" reaches the whole stack as a terminal's would), on free ports
(LOCAL_AWS_PORT, LOCAL_API_PORT, LOCAL_INVOKE_PORT, LOCAL_PG_PORT, LOCAL_PUSHGATEWAY_PORT,
LOCAL_PROMETHEUS_PORT). Its console goes to <state>/console.log; the functions' logs are in <state>/logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
import psycopg2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.local.postgres import _as_service_user, dsn_for, find_bin_dir, stop_cluster
from infra.local.stack import REPOSITORY_ROOT, free_port
from infra.local.template_model import ACCOUNT_ID, REGION
from infra.tools.token import local_token

sys.path.insert(0, str(REPOSITORY_ROOT / "layers/common/python"))
from bulkio import faults  # the layer, put on sys.path as infra/tools/token.py does
from bulkio.domain.chunks import chunk_key

IMPORT_BUCKET = f"bulkio-local-imports-{ACCOUNT_ID}"  # template.yaml's ImportBucket on the stack "bulkio-local"

START_TIMEOUT_SECONDS = 240.0  # a fresh cluster, moto, the functions host; slow when the machine is busy
STOP_TIMEOUT_SECONDS = 120.0  # run.py gives the AWS endpoint 60 s to save its state
STRAGGLER_SECONDS = 15.0  # after a Ctrl-C, the processes still running then are recorded
PG_RESTART_TIMEOUT_SECONDS = 120.0
RUNTIME_SCRIPT = "infra/local/lambda_runtime.py"
TOKEN_TTL_SECONDS = 6 * 3600


class StackError(RuntimeError):
    """The stack did not start, stop or take a fault as it should."""


@dataclass(frozen=True)
class Ports:
    aws: int
    api: int
    invoke: int
    postgres: int
    pushgateway: int
    prometheus: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port())

    def environment(self) -> dict[str, str]:
        return {
            "LOCAL_AWS_PORT": str(self.aws),
            "LOCAL_API_PORT": str(self.api),
            "LOCAL_INVOKE_PORT": str(self.invoke),
            "LOCAL_PG_PORT": str(self.postgres),
            "LOCAL_PUSHGATEWAY_PORT": str(self.pushgateway),
            "LOCAL_PROMETHEUS_PORT": str(self.prometheus),
        }


class ChaosStack:
    """`make run` on a state folder of its own. Use as a context manager: leaving it stops everything."""

    def __init__(self, state_dir: Path, ports: Ports | None = None, source_root: Path = REPOSITORY_ROOT) -> None:
        """`source_root`: the clone whose code the stack runs (another one: a snapshot of a git revision)."""
        self.state_dir = state_dir.resolve()
        self.ports = ports or Ports.free()
        self.source_root = source_root.resolve()
        self._s3: Any = None
        self.stragglers: list[str] = []  # processes still running STRAGGLER_SECONDS after the last Ctrl-C
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # ------------------------------------------------------------------ where things are
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def dsn(self) -> str:
        return dsn_for(self.ports.postgres)

    @property
    def faults_dir(self) -> Path:
        return self.state_dir / "faults"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def token(self) -> str:
        """An admin token (every job, everyone's) signed with this stack's secret."""
        return local_token(self.state_dir, ["admin"], "chaos-drill", TOKEN_TTL_SECONDS)

    # ------------------------------------------------------------------ life cycle
    def start(self, timeout_seconds: float = START_TIMEOUT_SECONDS) -> None:
        """Starts `python -m infra.local.run` and waits until GET /v1/health answers 200."""
        if self.process is not None and self.process.poll() is None:
            raise StackError("the stack is already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **self.ports.environment(), "PYTHONUNBUFFERED": "1"}
        for name in ("DATABASE_URL", "LOCAL_STATE_DIR"):  # always the state folder's own cluster
            environment.pop(name, None)
        with (self.state_dir / "console.log").open("ab") as console:
            console.write(f"==== chaos drill: start {self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            console.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "infra.local.run", "--state-dir", str(self.state_dir)],
                cwd=self.source_root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        try:
            self._wait_healthy(timeout_seconds)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout_seconds: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StackError(
                    f"infra.local.run exited with {self.process.returncode} while starting; "
                    f"see {self.state_dir / 'console.log'}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/v1/health", timeout=10) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise StackError(f"the stack did not answer /v1/health within {timeout_seconds:.0f} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def interrupt(self, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Ctrl-C: SIGINT to the stack's process group, as a terminal sends it; waits for `make run` to exit.

        Returns its exit code, or None if it had to be killed."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        self.stragglers = []
        try:
            return process.wait(STRAGGLER_SECONDS)
        except subprocess.TimeoutExpired:
            # Slow to stop: which of its processes are still there says which part waits (a diagnostic).
            self.stragglers = [_command_line(pid) for pid in _group_members(process.pid) if pid != process.pid]
        try:
            return process.wait(max(0.0, timeout_seconds - STRAGGLER_SECONDS))
        except subprocess.TimeoutExpired:
            self._kill_group()
            return None

    def _kill_group(self) -> None:
        """kill -9 of every process still in the stack's process group (run.py's children included)."""
        process = self.process
        if process is None:
            return
        for pid in _group_members(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)

    def stop(self, graceful: bool = True) -> None:
        """Stops everything this stack started, whatever state it is in (also after a failure).

        graceful: as Ctrl-C (make run saves the AWS state); otherwise kill -9, for a state folder about to go."""
        if self.process is not None:
            if graceful:
                self.interrupt()
            self._kill_group()  # workers or servers that outlived run.py (it was killed, or it died)
        with contextlib.suppress(Exception):
            stop_cluster(self.state_dir)  # PostgreSQL runs in a session of its own (pg_ctl detaches it)

    def __enter__(self) -> ChaosStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def remove(self, keep_logs_in: Path | None = None) -> None:
        """Deletes the state folder (and the cluster's data where it lives); optionally keeps the logs first."""
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            if self.logs_dir.exists():
                shutil.copytree(self.logs_dir, keep_logs_in / "logs", dirs_exist_ok=True)
            for name in ("console.log", "postgres.log"):
                with contextlib.suppress(OSError):
                    shutil.copy2(self.state_dir / name, keep_logs_in / name)
        data = self.state_dir / "postgres"
        if data.is_symlink():  # as root, with a state folder the postgres user cannot enter (see postgres.py)
            shutil.rmtree(data.resolve(), ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------------ database
    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """An autocommit connection to the stack's database (short-lived: PostgreSQL may be restarted)."""
        connection = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            connection.autocommit = True
            yield connection
        finally:
            connection.close()

    def query(self, statement: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connection() as connection, connection.cursor() as cursor:
            cursor.execute(statement, parameters)
            return list(cursor.fetchall())

    def chunks_written(self, job_id: str) -> int | None:
        """Chunk objects the chunker has written for the job so far (chunks/<job_id>/ in the import bucket)."""
        if self._s3 is None:
            self._s3 = boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{self.ports.aws}",
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1}),
            )
        prefix = chunk_key(job_id, 1).rsplit("/", 1)[0] + "/"
        try:
            return int(self._s3.list_objects_v2(Bucket=IMPORT_BUCKET, Prefix=prefix)["KeyCount"])
        except (BotoCoreError, ClientError):
            return None

    def chunks_staged(self, *job_ids: str) -> int | None:
        """Rows in import_chunks for these jobs, or None when the database does not answer."""
        try:
            rows = self.query("SELECT count(*) FROM import_chunks WHERE job_id = ANY(%s)", (list(job_ids),))
        except psycopg2.Error:
            return None
        return int(rows[0][0])

    # ------------------------------------------------------------------ faults
    def arm(self, point: str, count: int = 1) -> None:
        faults.arm(self.faults_dir, point, count)

    def disarm(self, point: str) -> None:
        faults.disarm(self.faults_dir, point)

    def armed(self, point: str) -> bool:
        """A crash point's file is removed by the process that dies at it: gone means fired (or disarmed)."""
        return (self.faults_dir / point).exists()

    def restart_postgres(self) -> None:
        """`pg_ctl restart -m immediate` of the state folder's cluster, as its own OS user; waits until it is up."""
        data_dir = (self.state_dir / "postgres").resolve()
        command = [
            str(find_bin_dir() / "pg_ctl"),
            "restart",
            "--pgdata",
            str(data_dir),
            "--mode",
            "immediate",
            "--wait",
            "--timeout",
            str(int(PG_RESTART_TIMEOUT_SECONDS)),
        ]
        # The new postmaster inherits stdout/stderr: a file, never a pipe we would wait on forever.
        with (self.state_dir / "postgres.log").open("ab") as log:
            result = subprocess.run(
                _as_service_user(command),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=False,
                timeout=PG_RESTART_TIMEOUT_SECONDS + 30,
            )
        if result.returncode != 0:
            raise StackError(f"pg_ctl restart failed ({result.returncode}); see {self.state_dir / 'postgres.log'}")

    def worker_pids(self, function_folder: str) -> list[int]:
        """Worker processes of this stack (and no other) running the function in functions/<function_folder>.

        A worker is `python -S -P .../infra/local/lambda_runtime.py` with its function's code folder as cwd, a
        descendant of this stack's `make run`, with BULKIO_FAULTS_DIR pointing into this state folder."""
        if not self.running():
            return []
        assert self.process is not None
        code_dir = str(self.source_root / "functions" / function_folder)
        marker = f"{faults.FAULTS_DIR_VARIABLE}={self.faults_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if RUNTIME_SCRIPT not in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    continue
                if os.readlink(entry / "cwd") != code_dir:
                    continue
                if marker not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
            except OSError:
                continue  # gone meanwhile, or not ours to read
            pid = int(entry.name)
            if _descends_from(pid, self.process.pid):
                found.append(pid)
        return sorted(found)

    def kill_workers(self, function_folder: str) -> list[int]:
        """kill -9 of this stack's workers of one function; the pids killed."""
        killed = []
        for pid in self.worker_pids(function_folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


def _group_members(group: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == group:
                members.append(int(entry.name))
    return members


def _command_line(pid: int) -> str:
    """pid, command line, working folder, state and kernel wait channel of a process, for diagnostics."""
    proc = Path("/proc") / str(pid)
    try:
        text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        wchan = (proc / "wchan").read_text().strip() or "-"
    except OSError:
        return f"{pid} (gone)"
    if state == "Z":
        return f"{pid} (exited, not yet reaped)"
    try:
        cwd = os.readlink(proc / "cwd")
    except OSError:
        cwd = "?"
    return f"{pid} {text} (cwd {cwd}, state {state}, waiting in {wchan})"


def _parent(pid: int) -> int | None:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    current: int | None = pid
    for _ in range(64):  # process trees here are a few levels deep
        if current is None or current <= 1:
            return False
        if current == ancestor:
            return True
        current = _parent(current)
    return False
