"""Start and stop the local AWS endpoint and the functions host as child processes.

Shared by the `make run` supervisor and the test fixtures, so both run the stack exactly the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from infra.local.provision import provision
from infra.local.template_model import StackTemplate
from infra.local.workers import HostSettings, load_stack

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 60  # the endpoint saves its state on the way out; large objects take a while


class StackFailed(RuntimeError):
    """A part of the local stack did not start or stopped on its own."""


@dataclass(frozen=True)
class StackPorts:
    aws: int = 4566
    invoke: int = 4567
    api: int = 3000

    @classmethod
    def from_environment(cls) -> StackPorts:
        return cls(
            aws=int(os.environ.get("LOCAL_AWS_PORT", "4566")),
            invoke=int(os.environ.get("LOCAL_INVOKE_PORT", "4567")),
            api=int(os.environ.get("LOCAL_API_PORT", "3000")),
        )

    @classmethod
    def free(cls) -> StackPorts:
        return cls(aws=free_port(), invoke=free_port(), api=free_port())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackFailed(f"{' '.join(map(str, process.args))} exited with {process.returncode}")  # type: ignore[arg-type]
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(0.1)
    raise StackFailed(f"{url} not ready after {timeout_seconds} s")


@dataclass
class LocalStack:
    template_path: Path
    state_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    env_file: Path | None = REPOSITORY_ROOT / "infra/local/env.json"
    database_url: str | None = None
    extra_environment: dict[str, str] = field(default_factory=dict)
    output: IO[bytes] | None = None  # where the children's console goes; None inherits ours
    endpoint: subprocess.Popen[bytes] | None = None
    host: subprocess.Popen[bytes] | None = None

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.aws}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def stack(self) -> StackTemplate:
        return load_stack(
            HostSettings(self.template_path, self.state_dir, self.ports.aws, self.env_file, self.database_url)
        )

    def _environment(self) -> dict[str, str]:
        environment = {
            # The sweeper's schedule (rate(1 minute) on AWS) runs this often here, so that a job interrupted by
            # a crash finishes within two minutes of it (with env.json's shorter lease and stall bounds). The
            # environment, then the stack's own settings (extra_environment) may choose another interval.
            "LOCAL_SCHEDULE_SECONDS": "10",
            **os.environ,
            **self.extra_environment,
            "LOCAL_TEMPLATE": str(self.template_path),
            "LOCAL_STATE_DIR": str(self.state_dir),
            "LOCAL_AWS_PORT": str(self.ports.aws),
            "LOCAL_INVOKE_PORT": str(self.ports.invoke),
            "LOCAL_API_PORT": str(self.ports.api),
            "LOCAL_ENV_FILE": str(self.env_file or ""),
            "PYTHONUNBUFFERED": "1",
        }
        if self.database_url:
            environment["DATABASE_URL"] = self.database_url
        return environment

    def _spawn(self, module: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=REPOSITORY_ROOT,
            env=self._environment(),
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output else None,
        )

    def start(self, timeout_seconds: float = 60) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.endpoint = self._spawn("infra.local.aws_endpoint")
            wait_until_ready(f"{self.aws_endpoint_url}/_local/ready", self.endpoint, timeout_seconds)
            provision(self.stack(), self.aws_endpoint_url)
            self.host = self._spawn("infra.local.functions_host")
            wait_until_ready(f"http://127.0.0.1:{self.ports.invoke}/_local/ready", self.host, timeout_seconds)
        except BaseException:
            self.stop()
            raise

    def failed_part(self) -> str | None:
        """The name of a part that stopped on its own, if any."""
        for name, process in (("AWS endpoint", self.endpoint), ("functions host", self.host)):
            if process is not None and process.poll() is not None:
                return f"{name} exited with {process.returncode}"
        return None

    def stop(self) -> None:
        # The host first: its pollers would otherwise log errors while the endpoint goes away.
        for process in (self.host, self.endpoint):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
