"""Export benchmark: the streamed NDJSON export through the embedded stack against PostgreSQL's own COPY.

    python -m infra.bench.export_bench [--rows 1000000] [--runs 3] [--seed 42]

Loads N users and N articles (clean files from the data generator, straight into the tables with COPY),
starts the stack on free ports against that database, then for each resource measures in one run:
GET /v1/exports?resource=...&format=ndjson read to the end through the local function URL, and
`COPY (SELECT row_to_json(t) FROM t ORDER BY id) TO STDOUT` on the same table, --runs times (on the same
stack and tables). Prints one table of medians: rows/s for both, their ratio, the first-byte time, and the peak
memory of the exporting process; writes the same to bench-results/export.json.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from infra.bench.common import (
    POSTGRESQL_BACKENDS,
    api_request,
    bench_server,
    bench_stack,
    database_name,
    machine,
    measured_at,
    process_usage,
    scratch_database,
    source_revision,
)
from infra.bench.results import median, median_of_ratios, mib, rounded, write_results
from infra.local.stack import REPOSITORY_ROOT
from infra.tools import datagen
from infra.tools.token import local_token

RESOURCES = ("users", "articles")
RESULTS = REPOSITORY_ROOT / "bench-results" / "export.json"
BATCH_ROWS = 50_000


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, list):  # tags: a PostgreSQL array literal
        return "{" + ",".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in value) + "}"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _batches(resource: str, rows: int, seed: int, columns: tuple[str, ...]) -> Iterator[io.StringIO]:
    batch = io.StringIO()
    count = 0
    for record in datagen.generate(resource, rows, seed, clean=True):
        if resource == "articles" and record.get("id") is None:
            continue  # clean files may leave article ids out (upserts by slug); the bench loads rows with ids
        batch.write("\t".join(_copy_text(record.get(column)) for column in columns) + "\n")
        count += 1
        if count % BATCH_ROWS == 0:
            batch.seek(0)
            yield batch
            batch = io.StringIO()
    batch.seek(0)
    yield batch


def load(dsn: str, rows: int, seed: int) -> dict[str, int]:
    """Fills users and articles straight from the generator: the benchmark is about exporting them."""
    loaded: dict[str, int] = {}
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            for resource in RESOURCES:
                columns = datagen.FIELDS[resource]
                started = time.monotonic()
                for batch in _batches(resource, rows, seed, columns):
                    cursor.copy_expert(f"COPY {resource} ({', '.join(columns)}) FROM STDIN", batch)
                connection.commit()
                cursor.execute(f"ANALYZE {resource}")
                cursor.execute(f"SELECT count(*) FROM {resource}")
                counted = cursor.fetchone()
                assert counted is not None  # count(*) always answers one row
                loaded[resource] = counted[0]
                print(f"loaded {loaded[resource]:,} {resource} in {time.monotonic() - started:.1f} s", flush=True)
        connection.commit()
    finally:
        connection.close()
    return loaded


class _CountingSink:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def bare_copy(dsn: str, resource: str) -> tuple[float, int]:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            sink = _CountingSink()
            started = time.monotonic()
            cursor.copy_expert(f"COPY (SELECT row_to_json(t) FROM {resource} t ORDER BY id) TO STDOUT", sink)
            return time.monotonic() - started, sink.bytes
    finally:
        connection.close()


def streamed(api: str, token: str, resource: str) -> tuple[float, float, int, int]:
    """Seconds to the first byte and to the end, rows (lines) and bytes of the streamed export."""
    started = time.monotonic()
    first_byte = 0.0
    lines = size = 0
    request = api_request(f"{api}/v1/exports?resource={resource}&format=ndjson", token)
    with urllib.request.urlopen(request, timeout=900) as response:
        while piece := response.read1(1 << 16):
            if not size:
                first_byte = time.monotonic() - started
            size += len(piece)
            lines += piece.count(b"\n")
    return first_byte, time.monotonic() - started, lines, size


@dataclass
class Measured:
    """One run of one resource: the streamed export and the bare COPY right after it."""

    first_byte: float
    seconds: float
    lines: int
    size: int
    copy_seconds: float
    copy_bytes: int


def run(rows: int, seed: int, runs: int) -> dict[str, Any]:
    with bench_server() as server_dsn:
        result = _run(server_dsn, rows, seed, runs)
    print_table(result)
    print(f"wrote {write_results(RESULTS, result)}")
    return result


def _run(server_dsn: str, rows: int, seed: int, runs: int) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bulkio-export-bench-"))
    print(f"stack state and logs: {state}")
    with scratch_database(server_dsn) as dsn:
        about = {"machine": machine(dsn), "git": source_revision(), "date": measured_at()}
        loaded = load(dsn, rows, seed)
        stack = bench_stack(dsn, state)
        stack.start()
        measured: dict[str, list[Measured]] = {resource: [] for resource in RESOURCES}
        try:
            api = f"http://127.0.0.1:{stack.ports.api}"
            token = local_token(state, ["exports:read"])
            # The first request pays the function's cold start (imports, connection): measure it apart.
            cold_started = time.monotonic()
            urllib.request.urlopen(api_request(f"{api}/v1/exports?resource=users&limit=1", token), timeout=60).read()
            cold_start = time.monotonic() - cold_started
            # Runs on the same loaded tables and stack: loading is the slow part, and what is measured only reads.
            for number in range(1, runs + 1):
                for resource in RESOURCES:
                    first_byte, seconds, lines, size = streamed(api, token, resource)
                    copy_seconds, copy_bytes = bare_copy(dsn, resource)
                    measured[resource].append(Measured(first_byte, seconds, lines, size, copy_seconds, copy_bytes))
                    print(f"[run {number}/{runs}] {resource}: {seconds:.1f} s streamed, {copy_seconds:.1f} s COPY")
            usage = process_usage(stack, database_name(dsn))
        finally:
            stack.stop()
    return {
        "benchmark": "export",
        "rows": rows,
        "runs": runs,
        "seed": seed,
        "cold_start_ms": round(cold_start * 1000),
        "resources": {resource: _resource_summary(loaded[resource], measured[resource]) for resource in RESOURCES},
        "ratio_basis": "streamed rows/s / bare COPY rows/s (above 1: the export is faster than the COPY)",
        "peak_rss_mib": {
            "python": {name: mib(entry.peak_kib) for name, entry in sorted(usage.items()) if "export" in name.lower()},
            "postgresql_backends": mib(usage[POSTGRESQL_BACKENDS].peak_kib) if POSTGRESQL_BACKENDS in usage else None,
        },
        "cpu_seconds": {name: round(entry.cpu_seconds, 1) for name, entry in sorted(usage.items())},
        **about,
    }


def _resource_summary(rows: int, runs: list[Measured]) -> dict[str, Any]:
    """Medians over the runs; the ratio is the median of each run's ratio."""
    return {
        "rows": rows,
        "rows_streamed": runs[-1].lines,
        "seconds": round(median([run.seconds for run in runs]), 2),
        "rows_per_second": round(median([run.lines / run.seconds for run in runs])),
        "first_byte_ms": round(median([run.first_byte for run in runs]) * 1000),
        "bytes": runs[-1].size,
        "copy_seconds": round(median([run.copy_seconds for run in runs]), 2),
        "copy_rows_per_second": round(median([rows / run.copy_seconds for run in runs])),
        "copy_bytes": runs[-1].copy_bytes,
        "ratio_to_copy": rounded(median_of_ratios((run.lines * run.copy_seconds, rows * run.seconds) for run in runs)),
        "per_run_seconds": [round(run.seconds, 2) for run in runs],
        "per_run_copy_seconds": [round(run.copy_seconds, 2) for run in runs],
    }


def print_table(result: dict[str, Any]) -> None:
    resources = result["resources"]
    print()
    counts = ", ".join(f"{entry['rows']:,} {name}" for name, entry in resources.items())
    print(f"export benchmark: {counts}, median of {result['runs']} run(s)")
    print(f"  cold start of the export function (first request, 1 row): {result['cold_start_ms']} ms")
    print(f"  {'resource':<10} {'streamed NDJSON':>22} {'first byte':>11} {'bare COPY':>20} {'ratio':>7}")
    for resource, entry in resources.items():
        print(
            f"  {resource:<10} {entry['seconds']:7.1f} s {entry['rows_per_second']:>10,} rows/s"
            f" {entry['first_byte_ms']:8} ms {entry['copy_seconds']:6.1f} s {entry['copy_rows_per_second']:>9,} rows/s"
            f" {entry['ratio_to_copy']:7.2f}"
        )
        print(
            f"  {'':<10} {entry['bytes'] / 1e6:7.0f} MB streamed, {entry['copy_bytes'] / 1e6:.0f} MB from the bare COPY"
        )
    print(f"  {'process':<40} {'peak memory':>12}")
    peaks = {**result["peak_rss_mib"]["python"], POSTGRESQL_BACKENDS: result["peak_rss_mib"]["postgresql_backends"]}
    for name, value in peaks.items():
        print(f"  {name:<40} {'-' if value is None else format(value, '.0f'):>8} MiB")
    about = result["machine"]
    print(
        f"  {about['cores']} cores ({about['cpu_model']}), Python {about['python']}, PostgreSQL {about['postgresql']};"
        f" revision {result['git']['revision']} ({result['git']['files_changed']} tracked files changed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="users, and as many articles")
    parser.add_argument("--runs", type=int, default=3, help="exports of each resource; figures are their median")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.rows < 1 or args.runs < 1:
        parser.error("--rows and --runs must be at least 1")
    run(args.rows, args.seed, args.runs)


if __name__ == "__main__":
    main()
