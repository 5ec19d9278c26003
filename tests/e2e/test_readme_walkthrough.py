"""The README's "Try it", run as a newcomer runs it: its bash blocks in order, in a shell at the repository's
root, against a stack on the documented ports (make run's), then the API section's examples that build on it
(those starting `# with AUTH and API as in "Try it"`). Skipped, saying why, when those ports are busy (`make
run` is up, say)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from infra.local.stack import REPOSITORY_ROOT, StackPorts
from tests.fixtures.aws import running_stack

README = REPOSITORY_ROOT / "README.md"
DOCUMENTED_PORTS = {
    "API": 3000,
    "AWS endpoint": 4566,
    "Invoke API": 4567,
    "the examples' web server": 8000,
    "the callback example's receiver": 8001,
}
FOLLOW_UP = '# with AUTH and API as in "Try it"'
# What a reader types in place of the README's placeholders.
PLACEHOLDERS = {
    '"<upload.url from the response>"': (
        '"$(curl -s -H "$AUTH" -H \'Content-Type: application/json\' -d \'{"resource":"users","format":"csv"}\''
        ' $API/imports | python3 -c \'import json,sys; print(json.load(sys.stdin)["upload"]["url"])\')"'
    ),
}
# Files the walkthrough writes at the repository's root (sample-data/ is git-ignored): removed after the test.
WRITTEN = ("rejected-users.csv", "published.csv", "users.ndjson", "mixed.ndjson")
FAILURE_SIGNS = ("Traceback", "command not found", "curl: (", "No such file", "bulkio.dev/problems/", "syntax error")


def bash_blocks(section: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", section, re.S | re.M)


def try_it_blocks() -> list[str]:
    readme = README.read_text()
    try_it = readme.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    api = readme.split("\n## API\n", 1)[1].split("\n## Formats", 1)[0]
    return bash_blocks(try_it) + [block for block in bash_blocks(api) if block.startswith(FOLLOW_UP)]


def busy(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_every_placeholder_of_try_it_has_what_a_reader_types() -> None:
    text = "\n".join(try_it_blocks())
    placeholders = set(re.findall(r'"<[^>]+>"', text))
    assert placeholders <= set(PLACEHOLDERS), f"placeholders without a substitute: {placeholders - set(PLACEHOLDERS)}"


def test_the_try_it_walkthrough_runs_as_written(database_url: str, tmp_path: Path) -> None:
    taken = [f"{name} {port}" for name, port in DOCUMENTED_PORTS.items() if busy(port)]
    if taken:
        pytest.skip(f"the documented ports are busy ({', '.join(taken)}): stop `make run` to run the walkthrough")
    script = "\n".join(try_it_blocks())
    for placeholder, typed in PLACEHOLDERS.items():
        script = script.replace(placeholder, typed)
    state = tmp_path / "state"
    already_there = {name for name in WRITTEN if (REPOSITORY_ROOT / name).exists()}
    with running_stack(
        REPOSITORY_ROOT / "template.yaml",
        state,
        REPOSITORY_ROOT / "infra/local/env.json",
        database_url,
        {},
        StackPorts(),
    ):
        # `make token` reads the stack's signing secret from its state folder.
        env = {**os.environ, "LOCAL_STATE_DIR": str(state), "BULKIO_STATE_DIR": str(tmp_path / "cli")}
        try:
            ran = subprocess.run(
                ["bash", "-c", script], cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=900
            )
        finally:
            for name in set(WRITTEN) - already_there:
                (REPOSITORY_ROOT / name).unlink(missing_ok=True)
    output = ran.stdout + ran.stderr
    failures = [
        output[max(found.start() - 300, 0) : found.end() + 300]
        for found in re.finditer("|".join(map(re.escape, FAILURE_SIGNS)), output)
    ]
    assert not failures, "\n---\n".join(failures)
    assert "completed_with_errors: 9,427 imported, 573 rejected of 10,000 records" in output
    assert "== comments csv" in output and "rows, " in output
    # The API section's examples: a dry run validated, a mixed file's counters, a callback attempt recorded.
    assert '"status":"validated"' in output
    assert '"counters_by_resource":{"users":{"total":1' in output
    assert "the endpoint answered HTTP 501" in output
