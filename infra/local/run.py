"""`make run`: the embedded local stack (PostgreSQL, AWS endpoint, functions host) until Ctrl-C.

    python -m infra.local.run [--state-dir .state] [--reset]

Environment: LOCAL_STATE_DIR, DATABASE_URL (an external database; otherwise a project-local cluster is
started in the state folder on LOCAL_PG_PORT, default 54329, and stopped at the end), LOCAL_AWS_PORT,
LOCAL_API_PORT, LOCAL_INVOKE_PORT and the functions host's settings (see infra/local/functions_host.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infra.local.monitoring import Monitoring, start_monitoring
from infra.local.reset import reset_state
from infra.local.stack import REPOSITORY_ROOT, LocalStack, StackFailed, StackPorts
from infra.local.stop_signal import StopSignal

HEALTH_PATH = "/v1/health"
HEALTH_TIMEOUT_SECONDS = 60


def default_state_dir() -> Path:
    return Path(os.environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state"))


def without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def wait_for_health(url: str, stack: LocalStack) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    last_problem = "no answer"
    while time.monotonic() < deadline:
        if failure := stack.failed_part():
            raise StackFailed(failure)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last_problem = f"HTTP {error.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last_problem = str(error)
        time.sleep(0.5)
    raise StackFailed(f"{url} did not answer 200 within {HEALTH_TIMEOUT_SECONDS} s ({last_problem})")


def run(state_dir: Path) -> int:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    database_url = os.environ.get("DATABASE_URL")
    started_cluster = False
    stopping = StopSignal().install()
    stack: LocalStack | None = None
    monitoring = Monitoring()
    try:
        if not database_url:
            from infra.local.postgres import DEFAULT_PORT as DEFAULT_PG_PORT
            from infra.local.postgres import ensure_cluster

            database_url = ensure_cluster(state_dir, int(os.environ.get("LOCAL_PG_PORT", DEFAULT_PG_PORT)))
            started_cluster = True
        from infra.migrate import apply_migrations

        applied = apply_migrations(database_url)
        if applied:
            print(f"applied migrations: {', '.join(applied)}", flush=True)
        monitoring = start_monitoring(state_dir, (state_dir / "monitoring.log").open("ab"))
        stack = LocalStack(
            REPOSITORY_ROOT / "template.yaml",
            state_dir,
            StackPorts.from_environment(),
            database_url=database_url,
            extra_environment={"PUSHGATEWAY_URL": monitoring.pushgateway_url or ""},
        )
        stack.start()
        wait_for_health(stack.api_url + HEALTH_PATH, stack)
        # No Grafana without Docker: Prometheus' own page answers the README's queries.
        prometheus_hint = "   (its /graph page answers the README's queries)" if monitoring.prometheus_url else ""
        print(
            "\nbulkio local stack is up\n"
            f"  API           {stack.api_url}   (docs {stack.api_url}/v1/docs; a token: make -s token)\n"
            f"  AWS endpoint  {stack.aws_endpoint_url}   (AWS_ENDPOINT_URL for boto3 and the aws CLI)\n"
            f"  PostgreSQL    {without_password(database_url)}\n"
            f"  Pushgateway   {monitoring.pushgateway_url or 'not installed'}\n"
            f"  Prometheus    {monitoring.prometheus_url or 'not installed'}{prometheus_hint}\n"
            f"  state         {state_dir}\n"
            f"  logs          {stack.logs_dir}\n"
            "The command line, from another terminal (README, Try it):\n"
            f"  export BULKIO_API={stack.api_url}/v1 BULKIO_TOKEN=$(make -s token)\n"
            "  .venv/bin/bulkio import sample-data/users.csv --resource users --wait   (make data ROWS=10000 first)\n"
            "  .venv/bin/bulkio export --resource users --format csv -o users.csv;  .venv/bin/bulkio --help\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping.wait(1):
            if failure := stack.failed_part():
                raise StackFailed(failure)
        return 0
    except StackFailed as failure:
        print(f"local stack failed: {failure}", file=sys.stderr, flush=True)
        return 1
    finally:
        if stack is not None:
            stack.stop()
        monitoring.stop()
        if started_cluster:
            from infra.local.postgres import stop_cluster

            stop_cluster(state_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    parser.add_argument("--reset", action="store_true", help="wipe the state folder and exit")
    arguments = parser.parse_args(argv)
    if arguments.reset:
        reset_state(arguments.state_dir)
        return 0
    return run(arguments.state_dir)


if __name__ == "__main__":
    sys.exit(main())
