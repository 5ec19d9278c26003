"""The embedded stack's `sam local invoke`: run one function once with an event file.

    python -m infra.local.invoke <FunctionLogicalIdOrName> <event.json | ->

The worker gets the environment the functions host would give it (pointing at the running local endpoint on
LOCAL_AWS_PORT and at DATABASE_URL). The result JSON goes to stdout, the function's logs to stderr; the exit
status is 1 when the function fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.local.functions_host import HostConfig
from infra.local.stack import REPOSITORY_ROOT
from infra.local.workers import LogSink, WorkerPool, function_environment, load_stack

SAMPLES = REPOSITORY_ROOT / "tests" / "events"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("function", help="logical id (ApiFunction) or function name (bulkio-local-api)")
    parser.add_argument("event", help="event JSON file, or - for stdin")
    arguments = parser.parse_args(argv)
    if arguments.event != "-" and not Path(arguments.event).is_file():
        samples = ", ".join(sorted(str(path) for path in SAMPLES.glob("*.json")))
        print(f"no event file {arguments.event}: give a JSON event, or one of the samples: {samples}", file=sys.stderr)
        return 2
    settings = HostConfig.from_environment().settings
    if not settings.database_url:
        # Without DATABASE_URL, `make run` uses the project-local cluster: point at it the same way.
        from infra.local.postgres import DEFAULT_PORT, dsn_for

        settings = dataclasses.replace(settings, database_url=dsn_for(DEFAULT_PORT))
    stack = load_stack(settings)
    try:
        function = stack.function(arguments.function)
    except KeyError:
        names = ", ".join(sorted(stack.functions))
        print(f"unknown function {arguments.function}; the template has {names}", file=sys.stderr)
        return 2
    event = sys.stdin.buffer.read() if arguments.event == "-" else Path(arguments.event).read_bytes()
    pool = WorkerPool(
        function,
        function_environment(function, settings),
        LogSink(function.name, settings.logs_dir, console=sys.stderr),
    )
    try:
        outcome = pool.invoke(event)
    finally:
        pool.close()
        pool.log.close()
    sys.stdout.write(outcome.payload.decode("utf-8", "replace") + "\n")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
