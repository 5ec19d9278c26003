"""The `bulkio` command, run as a user runs it (the installed console script, in a subprocess) against the
embedded stack: exit statuses, the files it writes, its --json output, and bars only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from bulkio_cli import uploads
from bulkio_cli.client import Api as CliApi

from tests.e2e.client import Api
from tests.fixtures.aws import RunningStack

BULKIO = Path(sys.executable).parent / "bulkio"
BAR_GLYPHS = ("━", "\x1b[")  # rich's bar, and any terminal control sequence


@pytest.fixture
def env(local_stack: RunningStack, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BULKIO_API": local_stack.api_url.rstrip("/") + "/v1",
        "BULKIO_TOKEN": local_stack.token(),
        "BULKIO_STATE_DIR": str(tmp_path / "state"),
    }


def bulkio(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BULKIO), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def users_csv(path: Path, good: int, bad: int) -> Path:
    tag = uuid.uuid4().hex[:8]
    rows = [f"{tag}-{n}@example.com,User {n}" for n in range(good)] + [f"not-an-email-{n},Bad {n}" for n in range(bad)]
    path.write_text("email,name\n" + "\n".join(rows) + "\n")
    return path


def no_bars(result: subprocess.CompletedProcess[str]) -> None:
    assert not any(glyph in result.stderr or glyph in result.stdout for glyph in BAR_GLYPHS), result.stderr


def test_an_import_with_errors_exits_3_prints_json_and_saves_the_rejected_records(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = users_csv(tmp_path / "users.csv", good=40, bad=3)
    rejected = tmp_path / "rejected.csv"

    result = bulkio(env, "--json", "import", str(source), "--resource", "users", "--wait", "--rejected", str(rejected))

    assert result.returncode == 3, result.stderr
    job = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert (job["status"], job["counters"]["succeeded"], job["counters"]["failed"]) == ("completed_with_errors", 40, 3)
    assert job["errors_by_code"] == {"invalid_email": 3}
    lines = rejected.read_text().splitlines()
    assert lines[0].startswith("email,name,_line,_error_codes") and len(lines) == 4
    no_bars(result)


def test_a_clean_import_exits_0_and_a_dry_run_exits_as_its_import_would(env: dict[str, str], tmp_path: Path) -> None:
    clean = users_csv(tmp_path / "clean.csv", good=5, bad=0)
    result = bulkio(env, "import", str(clean), "--resource", "users", "--wait")
    assert result.returncode == 0, result.stderr
    assert "completed: 5 imported, 0 rejected of 5 records" in result.stdout
    no_bars(result)

    dirty = users_csv(tmp_path / "dirty.csv", good=5, bad=1)
    dry = bulkio(env, "--json", "import", str(dirty), "--resource", "users", "--dry-run", "--wait")
    assert dry.returncode == 3, dry.stderr
    dry_job = json.loads(dry.stdout)
    assert (dry_job["status"], dry_job["mode"]) == ("validated", "validate")

    committed = bulkio(env, "--json", "commit", dry_job["job_id"], "--wait")
    assert committed.returncode == 3, committed.stderr
    assert json.loads(committed.stdout)["parent_job_id"] == dry_job["job_id"]


def test_without_wait_the_job_is_accepted_and_shown_cancelled_and_listed(env: dict[str, str], tmp_path: Path) -> None:
    source = users_csv(tmp_path / "later.csv", good=3, bad=0)
    accepted = bulkio(env, "--json", "import", str(source), "--resource", "users")
    assert accepted.returncode == 0, accepted.stderr
    job_id = json.loads(accepted.stdout)["job_id"]

    listed = bulkio(env, "--json", "jobs", "--limit", "5")
    assert job_id in [job["job_id"] for job in json.loads(listed.stdout)["jobs"]]
    shown = bulkio(env, "show", job_id)
    assert job_id in shown.stdout
    cancelled = bulkio(env, "cancel", job_id)  # cancelled, or already ended: either way an answer
    assert cancelled.returncode in {0, 1}
    assert ("cancelled" in cancelled.stdout) or ("job_already" in cancelled.stderr)


def test_a_failed_job_exits_1_and_usage_errors_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    failed = bulkio(env, "--json", "import", str(empty), "--resource", "users", "--wait")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["failure"]["code"] == "empty_file"

    assert bulkio(env, "import", str(tmp_path / "missing.csv"), "--resource", "users").returncode == 2
    assert bulkio(env, "import", str(empty), "--resource", "orders").returncode == 2
    no_token = bulkio({**env, "BULKIO_TOKEN": ""}, "jobs")
    assert no_token.returncode == 2 and "BULKIO_TOKEN" in no_token.stderr
    refused = bulkio(env, "show", "no-such-job")
    assert refused.returncode == 1 and "job_not_found" in refused.stderr


def test_exports_stream_or_run_as_a_job_into_a_file(env: dict[str, str], tmp_path: Path) -> None:
    users_csv(tmp_path / "seed.csv", good=3, bad=0)
    assert bulkio(env, "import", str(tmp_path / "seed.csv"), "--resource", "users", "--wait").returncode == 0

    streamed = tmp_path / "users.csv"
    result = bulkio(
        env,
        "--json",
        "export",
        "--resource",
        "users",
        "--format",
        "csv",
        "--fields",
        "id,email",
        "--filter",
        "active=true",
        "--limit",
        "3",
        "-o",
        str(streamed),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 3
    assert streamed.read_text().splitlines()[0] == "id,email"
    no_bars(result)

    job_file = tmp_path / "users.ndjson"
    result = bulkio(env, "export", "--resource", "users", "--limit", "2", "--async", "-o", str(job_file))
    assert result.returncode == 0, result.stderr
    assert [
        sorted(orjson.loads(line)) == sorted(orjson.loads(job_file.read_text().splitlines()[0]))
        for line in job_file.read_text().splitlines()
    ] == [True, True]


def test_a_big_file_goes_up_in_parts_and_an_interrupted_upload_resumes(
    env: dict[str, str], tmp_path: Path, local_stack: RunningStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = users_csv(tmp_path / "big.csv", good=20, bad=0)
    result = bulkio(env, "--json", "import", str(source), "--resource", "users", "--wait", "--resumable-above", "0")
    assert result.returncode == 0, result.stderr

    # An upload interrupted after its job was created: the state file names the job, and a new run resumes it.
    again = users_csv(tmp_path / "again.csv", good=7, bad=0)
    api = Api(local_stack)
    created = api.post_json({"resource": "users", "format": "csv", "upload_size": again.stat().st_size}).json()
    monkeypatch.setenv("BULKIO_STATE_DIR", env["BULKIO_STATE_DIR"])
    uploads.remember(
        uploads.upload_key(CliApi(env["BULKIO_API"], "", env["BULKIO_API"]), "users", again), created["job_id"]
    )

    resumed = bulkio(env, "--json", "import", str(again), "--resource", "users", "--wait", "--resumable-above", "0")

    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming the upload of job {created['job_id']}" in resumed.stderr
    job = json.loads(resumed.stdout)
    assert (job["job_id"], job["counters"]["succeeded"]) == (created["job_id"], 7)
    assert json.loads(Path(env["BULKIO_STATE_DIR"], "uploads.json").read_text()) == {}  # forgotten once done


def test_bars_are_drawn_on_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    source = users_csv(tmp_path / "tty.csv", good=5, bad=0)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(BULKIO), "import", str(source), "--resource", "users", "--wait"],
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            piece = os.read(controller, 65536)
        except OSError:
            break
        if not piece:
            break
        drawn += piece
    process.wait(timeout=120)
    os.close(controller)
    assert process.returncode == 0
    assert "━".encode() in drawn and b"upload tty.csv" in drawn
