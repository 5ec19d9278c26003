"""The `bulkio` command's peak memory: `bulkio import FILE --wait` (and a streamed `bulkio export` of what it
imported) at 100,000 and 1,000,000 users, each size on its own fresh stack and database.

    python -m infra.bench.cli_bench [--rows 100000 1000000] [--seed 42] [--resumable-above BYTES]

The command runs as a user runs it (the installed console script, a child process); its peak resident memory is
its VmHWM, polled from /proc while it runs. The figure must not grow with the file: the upload is streamed from
disk, the job followed by a long poll, the export streamed to disk. Prints one table and writes bench-results/cli.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from infra.bench.common import bench_server, bench_stack, machine, measured_at, scratch_database, source_revision
from infra.bench.import_bench import generated_file
from infra.bench.results import write_results
from infra.local.stack import REPOSITORY_ROOT
from infra.tools.token import local_token

RESULTS = REPOSITORY_ROOT / "bench-results" / "cli.json"
BULKIO = Path(sys.executable).parent / "bulkio"
PEAK_POLL_SECONDS = 0.05


def measured(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """The command's exit status, peak resident memory (MiB) and wall seconds; its stderr goes to `log`.

    The peak is the process's own VmHWM, read from /proc while it runs (it only grows): the rusage of a child
    would not do, as Linux carries the parent's peak over fork and exec into it (this benchmark is a large
    Python process)."""
    started = time.monotonic()
    peak_kib = 0
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        status_file = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            peak_kib = max(peak_kib, _high_water_kib(status_file))
            time.sleep(PEAK_POLL_SECONDS)
    if process.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {log.read_text()[-2000:]}")
    return process.returncode, peak_kib / 1024, time.monotonic() - started


def _high_water_kib(status_file: Path) -> int:
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):  # it has just exited
        pass
    return 0


def one_size(server_dsn: str, rows: int, seed: int, resumable_above: int | None) -> dict[str, Any]:
    users = generated_file("users", rows, seed, clean=False)
    state = Path(tempfile.mkdtemp(prefix="bulkio-cli-bench-"))
    with scratch_database(server_dsn) as dsn:
        stack = bench_stack(dsn, state)
        stack.start()
        try:
            env = {
                **os.environ,
                "BULKIO_API": f"{stack.api_url.rstrip('/')}/v1",
                "BULKIO_TOKEN": local_token(state),
                "BULKIO_STATE_DIR": str(state / "cli"),
            }
            upload = ["--resumable-above", str(resumable_above)] if resumable_above is not None else []
            status, import_peak, import_seconds = measured(
                [str(BULKIO), "import", str(users), "--resource", "users", "--wait", *upload], env, state / "import.err"
            )
            _, export_peak, export_seconds = measured(
                [str(BULKIO), "export", "--resource", "users", "--format", "csv", "-o", str(state / "export.csv")],
                env,
                state / "export.err",
            )
        finally:
            stack.stop()
    return {
        "rows": rows,
        "file_mib": round(users.stat().st_size / 1024**2, 1),
        "import_exit_status": status,
        "import_peak_mib": round(import_peak, 1),
        "import_seconds": round(import_seconds, 1),
        "export_peak_mib": round(export_peak, 1),
        "export_seconds": round(export_seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resumable-above", type=int, default=None, help="bulkio import's, to force parts")
    arguments = parser.parse_args(argv)
    with bench_server() as server_dsn:
        with scratch_database(server_dsn) as dsn:
            about = {"machine": machine(dsn), "git": source_revision(), "date": measured_at()}
        sizes = [one_size(server_dsn, rows, arguments.seed, arguments.resumable_above) for rows in arguments.rows]
    print(
        f"{'rows':>10} {'file MiB':>9} {'import peak MiB':>16} {'import s':>9} {'export peak MiB':>16} {'export s':>9}"
    )
    for size in sizes:
        print(
            f"{size['rows']:>10,} {size['file_mib']:>9} {size['import_peak_mib']:>16} {size['import_seconds']:>9}"
            f" {size['export_peak_mib']:>16} {size['export_seconds']:>9}"
        )
    result = {**about, "sizes": sizes}
    print(f"wrote {write_results(RESULTS, result)}")
    return result


if __name__ == "__main__":
    main()
