"""Export benchmark: the streamed NDJSON export through the embedded stack against PostgreSQL's own COPY.

    python -m infra.bench.export_bench [--rows 1000000] [--seed 42]

Loads N users and N articles (clean files from the data generator, straight into the tables with COPY),
starts the stack on free ports against that database, then for each resource measures in one run:
GET /v1/exports?resource=...&format=ndjson read to the end through the local function URL, and
`COPY (SELECT row_to_json(t) FROM t ORDER BY id) TO STDOUT` on the same table. Prints rows/s for both, their
ratio, and the peak memory and CPU time of the exporting process.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2

from infra.bench.common import api_request, bench_server, print_usage, process_usage, scratch_database
from infra.local.stack import REPOSITORY_ROOT, LocalStack, StackPorts
from infra.tools import datagen
from infra.tools.token import local_token

RESOURCES = ("users", "articles")
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


def run(rows: int, seed: int) -> None:
    with bench_server() as server_dsn:
        _run(server_dsn, rows, seed)


def _run(server_dsn: str, rows: int, seed: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="bulkio-export-bench-"))
    print(f"stack state and logs: {state}")
    with scratch_database(server_dsn) as dsn:
        loaded = load(dsn, rows, seed)
        stack = LocalStack(
            REPOSITORY_ROOT / "template.yaml",
            state,
            StackPorts.free(),
            database_url=dsn,
            output=(state / "console.log").open("ab"),
        )
        stack.start()
        results = []
        try:
            api = f"http://127.0.0.1:{stack.ports.api}"
            token = local_token(state, ["exports:read"])
            # The first request pays the function's cold start (imports, connection): measure it apart.
            cold_started = time.monotonic()
            urllib.request.urlopen(api_request(f"{api}/v1/exports?resource=users&limit=1", token), timeout=60).read()
            cold_start = time.monotonic() - cold_started
            for resource in RESOURCES:
                first_byte, seconds, lines, size = streamed(api, token, resource)
                copy_seconds, copy_bytes = bare_copy(dsn, resource)
                results.append((resource, first_byte, seconds, lines, size, copy_seconds, copy_bytes))
            usage = process_usage()
        finally:
            stack.stop()
    print()
    print(f"export benchmark: {', '.join(f'{count:,} {name}' for name, count in loaded.items())}")
    print(f"  cold start of the export function (first request, 1 row): {cold_start * 1000:.0f} ms")
    print(f"  {'resource':<10} {'streamed NDJSON':>22} {'first byte':>11} {'bare COPY':>20} {'ratio':>7}")
    for resource, first_byte, seconds, lines, size, copy_seconds, copy_bytes in results:
        streamed_rate = lines / seconds
        copy_rate = loaded[resource] / copy_seconds
        print(
            f"  {resource:<10} {seconds:7.1f} s {streamed_rate:>10,.0f} rows/s {first_byte * 1000:8.0f} ms"
            f" {copy_seconds:6.1f} s {copy_rate:>9,.0f} rows/s {streamed_rate / copy_rate:7.2f}"
        )
        print(f"  {'':<10} {size / 1e6:7.0f} MB streamed, {copy_bytes / 1e6:.0f} MB from the bare COPY")
    print_usage({name: entry for name, entry in usage.items() if "export" in name or "postgres" in name})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="users, and as many articles")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    run(args.rows, args.seed)


if __name__ == "__main__":
    main()
