"""Import benchmark: generated files of N users and N articles through the embedded stack, against a bare COPY.

    python -m infra.bench.import_bench [--rows 1000000] [--runs 3] [--seed 42] [--workers N] [--clean]
                                       [--skip-100k-memory-run]

Each run starts its own stack on free ports against a fresh database (on DATABASE_URL's server, else the
benchmarks' cluster in .state/bench) and, one after another:
  1. a bare `COPY` of the users CSV into a table with the users' indexes, and of the articles CSV into one
     with the articles' indexes (the floor);
  2. imports the users file (presigned PUT, then polling the job): upload to finished job, and the job's own
     processing time;
  3. imports the same file again into the same database (nothing changes: no row should be rewritten), with
     pg_stat_user_tables.n_tup_upd of users before and after, and the rows whose version (xmin) changed;
  4. imports N articles pointing at those users (CSV, so that the bare COPY reads the same file).
Then the peak memory (VmHWM) and CPU time of each process of the stack. Ratios are medians over the runs;
peaks are the largest any run saw. A separate run at 100,000 rows shows whether the peaks grow with the rows.

Prints one table and writes bench-results/import.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from infra.bench.common import (
    POSTGRESQL_BACKENDS,
    Usage,
    bench_server,
    bench_stack,
    database_name,
    machine,
    measured_at,
    process_usage,
    scratch_database,
    source_revision,
)
from infra.bench.results import median, median_of_ratios, mib, peak_over_runs, rounded, write_results
from infra.chaos.api import CONTENT_TYPES, UPLOAD_TIMEOUT_SECONDS, Api, ApiError, http
from infra.local.functions_host import DEFAULT_SQS_CONCURRENCY
from infra.local.stack import REPOSITORY_ROOT
from infra.tools import datagen
from infra.tools.token import local_token

BENCH_DATA = REPOSITORY_ROOT / "bench-data"
RESULTS = REPOSITORY_ROOT / "bench-results" / "import.json"
MEMORY_RUN_ROWS = 100_000
JOB_GIVE_UP_SECONDS = 3600.0  # a million rows take a few minutes here; an hour means the job is stuck
STATS_SETTLE_READS = 3  # equal reads of n_tup_upd one second apart before it counts as settled
STATS_SETTLE_LIMIT_SECONDS = 15.0
RATIO_BASIS = "upload to finished job"
README_RATIO_BASIS = (
    "the README's 'pipeline / COPY' (0.20 at 1,000,000 users) is COPY / the job's processing time, as this "
    "benchmark printed it until now (26.1 s / 136.1 s upload to finished job would be 0.19): "
    "ratio_to_copy_processing continues it"
)


def generated_file(resource: str, rows: int, seed: int, clean: bool) -> Path:
    """A CSV in bench-data/, generated once per (resource, rows, seed, clean). Articles point at the users of
    the users file of the same rows and seed (datagen's user_rows), so they import after those users."""
    BENCH_DATA.mkdir(exist_ok=True)
    path = BENCH_DATA / f"{resource}-{rows}-{seed}{'-clean' if clean else ''}.csv"
    if not path.exists():
        started = time.monotonic()
        partial = path.with_suffix(".partial")
        records = datagen.generate(resource, rows, seed, clean=clean, user_rows=rows)
        datagen.write(resource, records, "csv", partial)
        partial.replace(path)
        print(f"generated {path} in {time.monotonic() - started:.1f} s", flush=True)
    return path


# The floors: temporary tables (not WAL-logged, as the users floor has always been) with the real tables'
# indexes. Uniqueness is left out where the dirty files repeat values (emails, slugs) that the pipeline rejects.
FLOOR_TABLES = {
    "users": (
        "CREATE TEMP TABLE copy_floor (id text, email text, name text, role text, active boolean,"
        " created_at timestamptz, updated_at timestamptz)",
        "CREATE UNIQUE INDEX ON copy_floor (id)",
        "CREATE INDEX ON copy_floor (lower(email))",
    ),
    "articles": (
        "CREATE TEMP TABLE copy_floor (id text, slug text, title text, body text, author_id text, tags text,"
        " published_at timestamptz, status text)",
        "CREATE UNIQUE INDEX ON copy_floor (id)",
        "CREATE INDEX ON copy_floor (slug)",
        "CREATE INDEX ON copy_floor (author_id)",
    ),
}


def bare_copy_seconds(dsn: str, resource: str, path: Path) -> float:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            for statement in FLOOR_TABLES[resource]:
                cursor.execute(statement)
            started = time.monotonic()
            with path.open("rb") as source:
                cursor.copy_expert("COPY copy_floor FROM STDIN WITH (FORMAT csv, HEADER true)", source)
            connection.commit()
            return time.monotonic() - started
    finally:
        connection.close()


def settled_users_updates(dsn: str) -> int:
    """users' n_tup_upd once the pipeline's backends have reported: they flush their counts when they go idle,
    about a second after a transaction (up to ten under contention), so read until it stops moving."""
    connection = psycopg2.connect(dsn)
    connection.autocommit = True  # each read its own transaction: no cached statistics snapshot
    try:
        with connection.cursor() as cursor:
            readings: list[int] = []
            deadline = time.monotonic() + STATS_SETTLE_LIMIT_SECONDS
            while time.monotonic() < deadline:
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'users'")
                row = cursor.fetchone()
                readings.append(int(row[0]) if row else 0)
                if len(readings) >= STATS_SETTLE_READS and len(set(readings[-STATS_SETTLE_READS:])) == 1:
                    break
                time.sleep(1.0)
            return readings[-1]
    finally:
        connection.close()


def remember_row_versions(dsn: str) -> None:
    """Each user's xmin before the re-import: a row rewritten in any way (HOT or not) gets a new one."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE UNLOGGED TABLE bench_users_versions AS SELECT id, xmin::text AS version FROM users")
    connection.close()


def rewritten_rows(dsn: str) -> int:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM users JOIN bench_users_versions b USING (id) WHERE users.xmin::text <> b.version"
        )
        row = cursor.fetchone()
        cursor.execute("DROP TABLE bench_users_versions")
    connection.close()
    return int(row[0]) if row else 0


@dataclass
class Imported:
    seconds: float  # upload to finished job
    processing_seconds: float  # the job's own metrics.duration_seconds
    job: dict[str, Any]


def imported_figures(last: Imported, timed: list[tuple[Imported, float]]) -> dict[str, Any]:
    """One resource's figures over the runs: each import with its bare COPY's seconds; medians, last status."""
    return {
        "job_status": last.job["status"],
        "records_succeeded": last.job["counters"]["succeeded"],
        "records_failed": last.job["counters"]["failed"],
        "pipeline_seconds": round(median([imported.seconds for imported, _ in timed]), 2),
        "processing_seconds": round(median([imported.processing_seconds for imported, _ in timed]), 2),
        "copy_seconds": round(median([copy for _, copy in timed]), 2),
        "ratio_to_copy": rounded(median_of_ratios((copy, imported.seconds) for imported, copy in timed)),
    }


def import_and_wait(api: Api, resource: str, path: Path) -> Imported:
    """POST /v1/imports, then the clock runs from the presigned PUT to the first poll that sees the job ended
    (polls every half second): the POST is left out as before, it may pay the API function's cold start."""
    created = api.call("POST", "/imports", {"resource": resource, "format": "csv"})
    if created.status != 202:
        raise ApiError(f"POST /v1/imports answered {created.status}: {created.body[:500]!r}")
    answer = created.json()
    started = time.monotonic()
    with path.open("rb") as source:
        headers = {"Content-Type": CONTENT_TYPES["csv"], "Content-Length": str(path.stat().st_size)}
        put = http("PUT", answer["upload"]["url"], source, headers, timeout=UPLOAD_TIMEOUT_SECONDS)
    if put.status != 200:
        raise ApiError(f"the presigned PUT answered {put.status}: {put.body[:500]!r}")
    wait = api.wait_job(answer["job_id"], started + JOB_GIVE_UP_SECONDS)
    if not wait.ended or wait.job is None or wait.ended_at is None:
        raise ApiError(f"the {resource} import did not end within {JOB_GIVE_UP_SECONDS:.0f} s: {wait.job}")
    return Imported(wait.ended_at - started, float(wait.job["metrics"]["duration_seconds"] or 0.0), wait.job)


@dataclass
class Run:
    users: Imported
    users_copy_seconds: float
    reimport: Imported
    reimport_rows_updated: int  # n_tup_upd of users during the re-import
    reimport_rows_rewritten: int  # users whose xmin changed during the re-import
    articles: Imported
    articles_copy_seconds: float
    usage: dict[str, Usage] = field(default_factory=dict)


def one_run(server_dsn: str, rows: int, seed: int, workers: int, clean: bool, label: str) -> Run:
    users_file = generated_file("users", rows, seed, clean)
    articles_file = generated_file("articles", rows, seed, clean)
    state = Path(tempfile.mkdtemp(prefix="bulkio-bench-"))
    print(f"[{label}] stack state and logs: {state}", flush=True)
    with scratch_database(server_dsn) as dsn:
        users_copy = bare_copy_seconds(dsn, "users", users_file)
        articles_copy = bare_copy_seconds(dsn, "articles", articles_file)
        stack = bench_stack(dsn, state, {"LOCAL_SQS_CONCURRENCY": str(workers)})
        stack.start()
        try:
            api = Api(stack.api_url, local_token(state))
            users = import_and_wait(api, "users", users_file)
            print(f"[{label}] users: {users.seconds:.1f} s, {users.job['status']}", flush=True)
            updates_before = settled_users_updates(dsn)
            remember_row_versions(dsn)
            reimport = import_and_wait(api, "users", users_file)
            updates = settled_users_updates(dsn) - updates_before
            rewritten = rewritten_rows(dsn)
            print(f"[{label}] re-import: {reimport.seconds:.1f} s, {updates:,} rows updated", flush=True)
            articles = import_and_wait(api, "articles", articles_file)
            print(f"[{label}] articles: {articles.seconds:.1f} s, {articles.job['status']}", flush=True)
            usage = process_usage(stack, database_name(dsn))
        finally:
            stack.stop()
    return Run(users, users_copy, reimport, updates, rewritten, articles, articles_copy, usage)


def peaks_mib(runs: list[Run]) -> dict[str, Any]:
    """The stack's Python processes by name, and PostgreSQL's backends apart: their VmHWM counts the shared
    buffers they touched, which is not memory the pipeline holds."""
    peaks = peak_over_runs({name: entry.peak_kib for name, entry in run.usage.items()} for run in runs)
    return {
        "python": {name: mib(kib) for name, kib in peaks.items() if name != POSTGRESQL_BACKENDS},
        "postgresql_backends": mib(peaks[POSTGRESQL_BACKENDS]) if POSTGRESQL_BACKENDS in peaks else None,
    }


def summary(
    rows: int,
    runs: list[Run],
    memory_runs: list[Run] | None,
    memory_note: str,
    arguments: argparse.Namespace,
    about: dict[str, Any],
) -> dict[str, Any]:
    last = runs[-1]
    return {
        "benchmark": "import",
        "rows": rows,
        "runs": len(runs),
        "seed": arguments.seed,
        "clean": arguments.clean,
        "writers": arguments.workers,
        "file_bytes": generated_file("users", rows, arguments.seed, arguments.clean).stat().st_size,
        **imported_figures(last.users, [(run.users, run.users_copy_seconds) for run in runs]),
        "ratio_basis": RATIO_BASIS,
        "ratio_to_copy_processing": rounded(
            median_of_ratios((run.users_copy_seconds, run.users.processing_seconds) for run in runs)
        ),
        "ratio_note": README_RATIO_BASIS,
        "copy_target": "temporary table (not WAL-logged) with the table's indexes, non-unique where the file repeats",
        "reimport_seconds": round(median([run.reimport.seconds for run in runs]), 2),
        "reimport_ratio": rounded(median_of_ratios((run.reimport.seconds, run.users.seconds) for run in runs)),
        "reimport_rows_updated": max(run.reimport_rows_updated for run in runs),
        "reimport_rows_rewritten": max(run.reimport_rows_rewritten for run in runs),
        "reimport_job_status": last.reimport.job["status"],
        "peak_rss_mib": peaks_mib(runs),
        "peak_rss_mib_100k": peaks_mib(memory_runs) if memory_runs else None,
        "peak_rss_100k_note": memory_note,
        "cpu_seconds_last_run": {name: round(entry.cpu_seconds, 1) for name, entry in sorted(last.usage.items())},
        "articles": {
            "rows": rows,
            "format": "csv",
            "file_bytes": generated_file("articles", rows, arguments.seed, arguments.clean).stat().st_size,
            **imported_figures(last.articles, [(run.articles, run.articles_copy_seconds) for run in runs]),
        },
        "per_run": [
            {
                "pipeline_seconds": round(run.users.seconds, 2),
                "processing_seconds": round(run.users.processing_seconds, 2),
                "copy_seconds": round(run.users_copy_seconds, 2),
                "reimport_seconds": round(run.reimport.seconds, 2),
                "reimport_rows_updated": run.reimport_rows_updated,
                "reimport_rows_rewritten": run.reimport_rows_rewritten,
                "articles_pipeline_seconds": round(run.articles.seconds, 2),
                "articles_copy_seconds": round(run.articles_copy_seconds, 2),
            }
            for run in runs
        ],
        **about,
    }


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    articles = result["articles"]

    def line(label: str, seconds: float, count: int | None = None) -> str:
        rate = f"  {count / seconds:>10,.0f} rows/s" if count and seconds else ""
        return f"  {label:<40} {seconds:8.1f} s{rate}"

    print()
    print(
        f"import benchmark: {rows:,} users ({result['file_bytes'] / 1e6:.0f} MB CSV), {result['writers']} writers,"
        f" median of {result['runs']} run(s)"
    )
    print(f"  {'job status':<40} {result['job_status']}")
    print(f"  {'records succeeded / failed':<40} {result['records_succeeded']:,} / {result['records_failed']:,}")
    print(line("upload to finished job", result["pipeline_seconds"], rows))
    print(line("job processing (API metrics)", result["processing_seconds"], rows))
    print(line("bare COPY of the same file", result["copy_seconds"], rows))
    print(f"  {'COPY / pipeline (upload to finished job)':<40} {result['ratio_to_copy']:8.2f}")
    print(f"  {'COPY / pipeline (job processing)':<40} {result['ratio_to_copy_processing']:8.2f}")
    print(line("re-import of the same file", result["reimport_seconds"], rows))
    print(f"  {'re-import / first import':<40} {result['reimport_ratio']:8.2f}")
    print(
        f"  {'users rows updated / rewritten':<40} {result['reimport_rows_updated']:,}"
        f" / {result['reimport_rows_rewritten']:,} (n_tup_upd / xmin changed)"
    )
    print(f"  {'articles (CSV, ' + str(articles['file_bytes'] // 1_000_000) + ' MB)':<40} {articles['job_status']}")
    print(line("  upload to finished job", articles["pipeline_seconds"], rows))
    print(line("  bare COPY of the same file", articles["copy_seconds"], rows))
    print(f"  {'  COPY / pipeline':<40} {articles['ratio_to_copy']:8.2f}")
    print(f"  {'peak memory (VmHWM), MiB':<40} {'at ' + format(rows, ','):>12} {'at 100,000':>12}")
    at_rows = _flat_peaks(result["peak_rss_mib"])
    at_100k = _flat_peaks(result["peak_rss_mib_100k"])
    for name, value in at_rows.items():
        print(f"    {name:<38} {_figure(value):>12} {_figure(at_100k.get(name)):>12}")
    if not at_100k:
        print(f"  (100,000 rows: {result['peak_rss_100k_note']})")
    print(f"  CPU time of the last run, s: {', '.join(f'{k} {v}' for k, v in result['cpu_seconds_last_run'].items())}")
    about = result["machine"]
    print(
        f"  {about['cores']} cores ({about['cpu_model']}), Python {about['python']}, PostgreSQL {about['postgresql']};"
        f" revision {result['git']['revision']} ({result['git']['files_changed']} tracked files changed)"
    )


def _flat_peaks(peaks: dict[str, Any] | None) -> dict[str, float | None]:
    if peaks is None:
        return {}
    return {**peaks["python"], POSTGRESQL_BACKENDS: peaks["postgresql_backends"]}


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    rows = arguments.rows
    with bench_server() as server_dsn:
        with scratch_database(server_dsn) as dsn:
            about = {"machine": machine(dsn), "git": source_revision(), "date": measured_at()}
        runs = [
            one_run(server_dsn, rows, arguments.seed, arguments.workers, arguments.clean, f"run {n}/{arguments.runs}")
            for n in range(1, arguments.runs + 1)
        ]
        memory_runs: list[Run] | None
        if rows == MEMORY_RUN_ROWS:
            memory_runs, note = runs, f"the runs above are at {MEMORY_RUN_ROWS:,} rows"
        elif arguments.skip_100k_memory_run:
            memory_runs, note = None, "skipped (--skip-100k-memory-run)"
        else:
            memory_run = one_run(
                server_dsn, MEMORY_RUN_ROWS, arguments.seed, arguments.workers, arguments.clean, "100k memory run"
            )
            memory_runs, note = (
                [memory_run],
                f"one separate run at {MEMORY_RUN_ROWS:,} rows (users, re-import, articles)",
            )
    result = summary(rows, runs, memory_runs, note, arguments, about)
    print_table(result)
    print(f"wrote {write_results(RESULTS, result)}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="users, and as many articles")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh stack; ratios are their median")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_SQS_CONCURRENCY, help="parallel writer processes (LOCAL_SQS_CONCURRENCY)"
    )
    parser.add_argument("--clean", action="store_true", help="only valid records")
    parser.add_argument(
        "--skip-100k-memory-run",
        action="store_true",
        help=f"no separate run at {MEMORY_RUN_ROWS:,} rows (for quick runs at small ROWS; the JSON says so)",
    )
    arguments = parser.parse_args()
    if arguments.runs < 1 or arguments.rows < 1:
        parser.error("--rows and --runs must be at least 1")
    run(arguments)


if __name__ == "__main__":
    main()
