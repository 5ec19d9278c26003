"""`make chaos`: fault drills against fresh embedded stacks, each compared with a clean run of the same file.

    python -m infra.chaos [--rows 200000] [--scenarios a,b,c,d,e,f] [--resource users] [--keep-state]
                          [--give-up 300] [--finish-within 120] [--revision HEAD] [--work-dir DIR]

Scenarios (see infra/chaos/scenarios.py):
  a       the chunker dies after 40 % of its chunks (fault point chunker.after_chunk)
  a-kill  kill -9 of the chunker's worker process while it reads the file
  b       a writer dies four times, before or after staging a chunk (fault points writer.*)
  b-kill  kill -9 of every writer worker process at 15, 30, 45 and 60 % of the chunks
  c       pg_ctl restart -m immediate once 40 % of the chunks are staged
  d       Ctrl-C (SIGINT to the process group) of make run at 40 %, then make run again on the same state
  e       every chunk message sent twice (switch chunker.duplicate_messages)
  f       users loaded; then at once an articles import, a second users import, two streamed exports (users,
          articles; repeated until the imports end) and an async export; compared with the same imports one
          after another; every export must be whole, ordered, and between the rows before and after
  g       the writer that runs the merge dies right after its commit (fault point merge.before_finish)

Prints a table (scenario, expected = the clean run, observed, seconds from the fault to the job's end (e, f:
from the upload; b, b-kill: from the last kill), PASS/FAIL) and the details of each; exits 1 if any scenario
fails (outcome not equal, job not ended within --give-up, or ended later than --finish-within after the fault).
Logs of failed scenarios are kept. --revision runs the stacks on a snapshot of a git revision.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from infra.chaos.scenarios import ALL_KEYS, Drill, DrillSettings, ScenarioResult
from infra.local.postgres import find_bin_dir
from infra.local.stack import REPOSITORY_ROOT
from infra.tools import datagen
from infra.tools.machine import cpu_model


def table(results: Sequence[ScenarioResult]) -> str:
    lines = [
        "| scenario | expected (clean run) | observed | s after fault | result |",
        "|---|---|---|---|---|",
    ]
    for result in results:
        seconds = f"{result.seconds_after_fault:.1f}" if result.seconds_after_fault is not None else "-"
        verdict = "PASS" if result.passed else "FAIL"
        lines.append(
            f"| {result.key}: {result.title} | {result.expected} | {result.observed} | {seconds} | {verdict} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = cpu_model()
    try:
        postgres = subprocess.run(
            [str(find_bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except (RuntimeError, OSError):
        postgres = "PostgreSQL ?"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {postgres}"


def export_revision(revision: str, folder: Path) -> Path:
    """A snapshot of a git revision's files (git archive: the repository and its index are only read)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY_ROOT), "archive", "--format=tar", revision],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / ".revision").write_text(
        subprocess.run(
            ["git", "-C", str(REPOSITORY_ROOT), "rev-parse", "--short", revision], capture_output=True, text=True
        ).stdout.strip()
    )
    return folder


def describe_source(source_root: Path) -> str:
    if (source_root / ".revision").exists():
        return f"revision {(source_root / '.revision').read_text()} ({source_root})"
    head = subprocess.run(
        ["git", "-C", str(source_root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "-C", str(source_root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.count("\n")
    return f"working tree at {head or '?'} ({changed} files changed)"


def _parse_keys(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in ALL_KEYS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios {unknown}: choose from {', '.join(ALL_KEYS)}")
    return keys


def _interrupted(signal_number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM too: stop the stacks on the way out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the users file (default 200000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--resource",
        choices=datagen.RESOURCES,
        default="users",
        help="what the faulted import loads (default users); articles and comments come after a quarter as many "
        "rows they point at, loaded first (scenario f always imports users and articles)",
    )
    parser.add_argument("--scenarios", type=_parse_keys, default=list(ALL_KEYS), help="comma-separated keys")
    parser.add_argument("--keep-state", action="store_true", help="keep every stack's state folder")
    parser.add_argument("--give-up", type=float, default=300.0, help="seconds after a fault before a job is stuck")
    parser.add_argument(
        "--finish-within", type=float, default=120.0, help="seconds after the fault a job must end in (0: no limit)"
    )
    parser.add_argument("--work-dir", type=Path, help="where state folders, data and kept logs go (default: a temp)")
    parser.add_argument(
        "--revision",
        help="run the stacks on this git revision (exported with git archive) instead of the working tree, "
        "which others may be editing while the drill runs",
    )
    arguments = parser.parse_args(argv)
    if arguments.rows < 1000:
        parser.error("--rows must be at least 1000")

    work_dir = arguments.work_dir or Path(tempfile.mkdtemp(prefix="bulkio-chaos-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    work_dir.chmod(0o755)  # as root, PostgreSQL runs as `postgres`: its data then stays in the state folders
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (a `&` job)
    source_root = REPOSITORY_ROOT
    if arguments.revision:
        source_root = export_revision(arguments.revision, work_dir / "source")
    drill = Drill(
        DrillSettings(
            work_dir=work_dir,
            rows=arguments.rows,
            seed=arguments.seed,
            give_up_seconds=arguments.give_up,
            finish_within_seconds=arguments.finish_within or None,
            keep_state=arguments.keep_state,
            log=lambda text: print(text, flush=True),
            source_root=source_root,
            resource=arguments.resource,
        )
    )
    print(
        f"chaos drill: {arguments.rows:,} {arguments.resource} (seed {arguments.seed}), "
        f"scenarios {','.join(arguments.scenarios)}"
    )
    print(f"work folder {work_dir}; code {describe_source(source_root)}; {machine()}", flush=True)
    started = time.monotonic()
    results: list[ScenarioResult] = []
    interrupted = False
    try:
        for key in arguments.scenarios:
            results.append(drill.run(key))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: the stacks of the drill are stopped", flush=True)
    finally:
        if not arguments.keep_state:
            shutil.rmtree(work_dir / "data", ignore_errors=True)
            shutil.rmtree(work_dir / "source", ignore_errors=True)
            if not any(work_dir.iterdir()):
                work_dir.rmdir()
    print()
    for result in results:
        print(result.report())
        print()
    baseline = drill.clean_seconds()
    print(f"clean run: {baseline}; drill took {time.monotonic() - started:.0f} s; {machine()}")
    print(table(results))
    if work_dir.exists():
        print(f"\nkept: {work_dir}")
    if interrupted:
        return 130
    return 0 if results and all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
