"""Import benchmark: a generated file of N users through the embedded stack, against a bare COPY.

    python -m infra.bench.import_bench [--rows 1000000] [--seed 42] [--workers N] [--clean]

Starts its own stack on free ports against a fresh database (on DATABASE_URL's server, else the project's
dev cluster), uploads the file with a presigned PUT, waits for the job and prints: rows/s of the pipeline
(upload to finished job, and the job's own processing time), rows/s of a plain `COPY` of the same file into
an identical users table, their ratio, and the peak memory (VmHWM) and CPU time of each part of the stack.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2

from infra.bench.common import bench_server, http_json, print_usage, process_usage, scratch_database
from infra.local.stack import REPOSITORY_ROOT, LocalStack, StackPorts
from infra.tools import datagen
from infra.tools.token import local_token

BENCH_DATA = REPOSITORY_ROOT / "bench-data"
FINAL = {"completed", "completed_with_errors", "failed", "cancelled"}


def generated_file(rows: int, seed: int, clean: bool) -> Path:
    BENCH_DATA.mkdir(exist_ok=True)
    path = BENCH_DATA / f"users-{rows}-{seed}{'-clean' if clean else ''}.csv"
    if not path.exists():
        started = time.monotonic()
        datagen.write("users", datagen.generate("users", rows, seed, clean=clean), "csv", path)
        print(f"generated {path} in {time.monotonic() - started:.1f} s")
    return path


def bare_copy_seconds(dsn: str, path: Path) -> float:
    """The floor: COPY of the file into a table shaped like users (primary key, unique lower(email))."""
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE copy_floor (id text, email text, name text, role text, active boolean,"
                " created_at timestamptz, updated_at timestamptz)"
            )
            cursor.execute("CREATE UNIQUE INDEX ON copy_floor (id)")
            cursor.execute("CREATE INDEX ON copy_floor (lower(email))")
            started = time.monotonic()
            with path.open("rb") as source:
                cursor.copy_expert("COPY copy_floor FROM STDIN WITH (FORMAT csv, HEADER true)", source)
            connection.commit()
            return time.monotonic() - started
    finally:
        connection.close()


def run(rows: int, seed: int, workers: int, clean: bool) -> None:
    with bench_server() as server_dsn:
        _run(server_dsn, rows, seed, workers, clean)


def _run(server_dsn: str, rows: int, seed: int, workers: int, clean: bool) -> None:
    path = generated_file(rows, seed, clean)
    state = tempfile.mkdtemp(prefix="bulkio-bench-")
    print(f"stack state and logs: {state}")
    with scratch_database(server_dsn) as dsn:
        copy_seconds = bare_copy_seconds(dsn, path)
        stack = LocalStack(
            REPOSITORY_ROOT / "template.yaml",
            Path(state),
            StackPorts.free(),
            database_url=dsn,
            extra_environment={"LOCAL_SQS_CONCURRENCY": str(workers)},
            output=(Path(state) / "console.log").open("ab"),
        )
        stack.start()
        try:
            api = f"http://127.0.0.1:{stack.ports.api}/v1"
            token = local_token(Path(state))
            created = http_json("POST", f"{api}/imports", token, {"resource": "users", "format": "csv"})
            started = time.monotonic()
            with path.open("rb") as source:
                put = urllib.request.Request(
                    created["upload"]["url"],
                    data=source,
                    method="PUT",
                    headers={"Content-Type": "text/csv", "Content-Length": str(path.stat().st_size)},
                )
                urllib.request.urlopen(put, timeout=600).close()
            uploaded = time.monotonic()
            while (job := http_json("GET", f"{api}/imports/{created['job_id']}", token))["status"] not in FINAL:
                time.sleep(0.5)
            finished = time.monotonic()
            usage = process_usage()
        finally:
            stack.stop()
    counters = job["counters"]
    processing = job["metrics"]["duration_seconds"]
    print()
    print(f"import benchmark: {rows:,} users ({path.stat().st_size / 1e6:.0f} MB CSV), {workers} writers")
    print(f"  job status                    {job['status']}")
    print(f"  records succeeded / failed    {counters['succeeded']:,} / {counters['failed']:,}")
    print(f"  upload (presigned PUT)        {uploaded - started:8.1f} s")
    print(f"  upload to finished job        {finished - started:8.1f} s  {rows / (finished - started):>10,.0f} rows/s")
    print(f"  job processing (API metrics)  {processing:8.1f} s  {job['metrics']['rows_per_second']:>10,.0f} rows/s")
    print(f"  bare COPY of the same file    {copy_seconds:8.1f} s  {rows / copy_seconds:>10,.0f} rows/s")
    print(f"  pipeline / COPY               {copy_seconds / processing:8.2f}")
    print_usage(usage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="parallel writer processes")
    parser.add_argument("--clean", action="store_true", help="only valid records")
    args = parser.parse_args()
    run(args.rows, args.seed, args.workers, args.clean)


if __name__ == "__main__":
    main()
