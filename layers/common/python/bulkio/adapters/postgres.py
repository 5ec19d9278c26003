"""PostgreSQL side of the import pipeline: staging with COPY, the set-based merge, the error report.

Writers stage each chunk in one transaction (claim the chunk, COPY the valid rows into the resource's UNLOGGED
staging table and the invalid ones into import_errors). Once every chunk is staged, one caller merges the job
under a row lock on import_runs. The merge is a single SQL statement whose result depends only on the staged
rows and on the tables as they were before it ran: never on chunk order or on how many writers there were.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from bulkio.adapters.merge_sql import MERGE_SQL, STAGE_TABLES
from bulkio.domain.errors import RecordError
from bulkio.domain.resources import COLUMNS, Resource

APPLICATION_NAME = "bulkio"
COPY_BUFFER_BYTES = 1 << 16
# Memory for the merge's sorts (three window passes over the job's rows); per transaction, not per server.
MERGE_WORK_MEM = "256MB"
# Merges of one resource run one at a time across jobs (pg_advisory_xact_lock(class, resource)), because
# each one checks uniqueness against the table as it was before it started.
MERGE_LOCK_CLASS = 0x6275_6C6B  # "bulk"
MERGE_LOCK_IDS: dict[Resource, int] = {Resource.USERS: 1, Resource.ARTICLES: 2, Resource.COMMENTS: 3}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StagedRecord:
    """A valid record. `row` holds normalized values keyed by COLUMNS[resource]; `raw` its original JSON."""

    index: int
    line: int | None
    row: dict[str, Any]
    raw: str


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """An invalid record. `raw` is the original record as JSON text (or a JSON string of unparseable text)."""

    index: int
    line: int | None
    error: RecordError
    raw: str


@dataclass(frozen=True, slots=True)
class StagingProgress:
    """How far a job's writers got: chunks staged, their records, and how many of those failed validation."""

    chunks: int
    records: int
    failed: int


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    records_total: int
    succeeded: int
    failed: int
    errors_by_code: dict[str, int]
    merged_now: bool


def connect(dsn: str) -> Connection:
    """A connection in UTC with autocommit off, named so it can be told apart in pg_stat_activity."""
    return psycopg2.connect(
        dsn,
        application_name=APPLICATION_NAME,
        options="-c timezone=UTC",
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=30,
    )


# ---------------------------------------------------------------------------------------------- COPY encoding

_COPY_NULL = "\\N"


def _copy_text(value: Any) -> str:
    if value is None:
        return _COPY_NULL
    # str.replace hands back its input when there is nothing to replace (the common case): cheaper than
    # str.translate or a regex probe on this hot path (a million calls per million-record import).
    text = value if value.__class__ is str else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _copy_boolean(value: bool | None) -> str:
    return _COPY_NULL if value is None else ("t" if value else "f")


def _copy_timestamp(value: datetime | None) -> str:
    return _COPY_NULL if value is None else value.isoformat()


def _copy_text_array(items: Iterable[str | None] | None) -> str:
    if items is None:
        return _COPY_NULL

    def element(item: str | None) -> str:
        return "NULL" if item is None else '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return _copy_text("{" + ",".join(element(item) for item in items) + "}")


_COLUMN_ENCODERS: dict[str, Callable[[Any], str]] = {
    "active": _copy_boolean,
    "created_at": _copy_timestamp,
    "updated_at": _copy_timestamp,
    "published_at": _copy_timestamp,
    "tags": _copy_text_array,
}


def _row_encoder(resource: Resource) -> Callable[[str, int, int | None, dict[str, Any], str], str]:
    """A function turning one staged record into one line of COPY text format, columns in COLUMNS order."""
    encoders = [(column, _COLUMN_ENCODERS.get(column, _copy_text)) for column in COLUMNS[resource]]

    def encode(job_id: str, index: int, line: int | None, row: dict[str, Any], raw: str) -> str:
        fields = [_copy_text(job_id), str(index), _COPY_NULL if line is None else str(line)]
        fields += [encode_value(row.get(column)) for column, encode_value in encoders]
        fields.append(_copy_text(raw))
        return "\t".join(fields) + "\n"

    return encode


_ROW_ENCODERS = {resource: _row_encoder(resource) for resource in Resource}


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _copy_error_line(job_id: str, record: FailedRecord) -> str:
    error = record.error
    fields = (
        job_id,
        str(record.index),
        None if record.line is None else str(record.line),
        str(error.code),
        error.field,
        error.message,
        _json_text(error.value),
        record.raw,
    )
    return "\t".join(map(_copy_text, fields)) + "\n"


class _CopySource:
    """A file-like reader over lazily produced COPY lines, so a chunk is never held in memory twice."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            line = next(self._lines, None)
            if line is None:
                break
            self._buffer += line.encode("utf-8")
        taken = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:taken])
        del self._buffer[:taken]
        return data

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


class _CountingSink:
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.bytes_written += len(data)
        return len(data)


_STAGE_COPY_SQL: dict[Resource, str] = {
    resource: f"COPY {STAGE_TABLES[resource]} (job_id, idx, line, {', '.join(columns)}, raw) FROM STDIN"
    for resource, columns in COLUMNS.items()
}
_ERRORS_COPY_SQL = "COPY import_errors (job_id, idx, line, code, field, message, value_json, record_json) FROM STDIN"

_REPORT_ORDER = "ORDER BY idx, code, field, message"


def _neutralized(column: str) -> str:
    # Spreadsheets run cells starting with these characters as formulas; a leading quote makes them text.
    return (
        f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') THEN '''' || {column} ELSE {column} END"
    )


def _one_line(column: str) -> str:
    # Valid JSON has line breaks only as insignificant whitespace, so this keeps each error on one line.
    return f"regexp_replace({column}, '[\\r\\n]+', ' ', 'g')"


_NDJSON_REPORT_SQL = f"""
COPY (
    SELECT '{{"line":' || coalesce(line::text, 'null')
        || ',"index":' || idx::text
        || ',"code":' || to_json(code)::text
        || ',"field":' || coalesce(to_json(field)::text, 'null')
        || ',"message":' || to_json(message)::text
        || ',"value":' || coalesce({_one_line("value_json")}, 'null')
        || ',"record":' || {_one_line("record_json")}
        || '}}'
    FROM import_errors WHERE job_id = %s {_REPORT_ORDER}
) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')
"""
# The CSV format with control characters as delimiter and quote writes each line verbatim: the text format
# would escape every backslash of the JSON, and valid JSON text never holds a raw control character.

_CSV_REPORT_SQL = f"""
COPY (
    SELECT line, idx AS "index", code,
        {_neutralized("field")} AS field,
        {_neutralized("message")} AS message,
        {_neutralized("value_json")} AS value,
        {_neutralized("record_json")} AS record
    FROM import_errors WHERE job_id = %s {_REPORT_ORDER}
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""


# ---------------------------------------------------------------------------------------------- the store


class OneConnection:
    """One connection, opened on first use and again after it broke (a warm Lambda keeps it between calls)."""

    def __init__(self, connection_factory: Callable[[], Connection]) -> None:
        self._connection_factory = connection_factory
        self._connection: Connection | None = None

    def _connected(self) -> Connection:
        if self._connection is None or self._connection.closed:
            self._connection = self._connection_factory()
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ImportStore(OneConnection):
    """All PostgreSQL work of the import pipeline."""

    def _transaction(self, work: Callable[[Cursor], T], replayable: Callable[[], bool] = lambda: True) -> T:
        """Run `work` in one transaction; on a broken connection reconnect and run it once more if it can be
        replayed (a stale pooled connection in a thawed Lambda is the usual cause)."""
        for attempt in (1, 2):
            connection = self._connected()
            try:
                with connection.cursor() as cursor:
                    result = work(cursor)
                connection.commit()
                return result
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                self.close()
                if attempt == 2 or not replayable():
                    raise
            except BaseException:
                if not connection.closed:
                    connection.rollback()
                raise
        raise AssertionError("unreachable")

    def register_job(self, job_id: str, resource: Resource) -> None:
        self._transaction(
            lambda cursor: cursor.execute(
                "INSERT INTO import_runs (job_id, resource) VALUES (%s, %s) ON CONFLICT (job_id) DO NOTHING",
                (job_id, resource.value),
            )
        )

    def stage_chunk(
        self,
        job_id: str,
        resource: Resource,
        chunk_no: int,
        staged: Iterable[StagedRecord],
        failed: Iterable[FailedRecord],
    ) -> bool:
        """Stage one chunk exactly once: False (and nothing changed) when it had been staged before."""
        copying_started = False

        encode = _ROW_ENCODERS[resource]
        staged_count = 0
        failed_indexes: set[int] = set()

        def counted_staged() -> Iterator[str]:
            nonlocal staged_count
            for record in staged:
                staged_count += 1
                yield encode(job_id, record.index, record.line, record.row, record.raw)

        def counted_failed() -> Iterator[str]:
            for record in failed:
                failed_indexes.add(record.index)
                yield _copy_error_line(job_id, record)

        staged_lines = counted_staged()
        failed_lines = counted_failed()

        def work(cursor: Cursor) -> bool:
            nonlocal copying_started
            # The run row may not exist if a writer beats the chunker's register_job; creating it here is
            # harmless because register_job does nothing on conflict.
            cursor.execute(
                "INSERT INTO import_runs (job_id, resource) VALUES (%s, %s) ON CONFLICT (job_id) DO NOTHING",
                (job_id, resource.value),
            )
            cursor.execute(
                "INSERT INTO import_chunks (job_id, chunk_no) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (job_id, chunk_no),
            )
            if cursor.rowcount == 0:
                return False
            copying_started = True
            cursor.copy_expert(_STAGE_COPY_SQL[resource], _CopySource(staged_lines), COPY_BUFFER_BYTES)
            cursor.copy_expert(_ERRORS_COPY_SQL, _CopySource(failed_lines), COPY_BUFFER_BYTES)
            cursor.execute(
                "UPDATE import_chunks SET records = %s, failed = %s WHERE job_id = %s AND chunk_no = %s",
                (staged_count + len(failed_indexes), len(failed_indexes), job_id, chunk_no),
            )
            return True

        def rolled_back_chunk() -> bool:
            return not copying_started

        return self._transaction(work, replayable=rolled_back_chunk)

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None:
        def work(cursor: Cursor) -> None:
            cursor.execute(
                "UPDATE import_runs SET chunks_total = %s, records_total = %s WHERE job_id = %s AND merged_at IS NULL",
                (chunks_total, records_total, job_id),
            )
            if cursor.rowcount == 0:
                cursor.execute("SELECT 1 FROM import_runs WHERE job_id = %s", (job_id,))
                if cursor.fetchone() is None:
                    raise LookupError(f"no import run {job_id!r}: register_job first")

        self._transaction(work)

    def try_merge(self, job_id: str) -> MergeOutcome | None:
        """Merge the job if all its chunks are staged; exactly one caller ever gets merged_now=True."""

        def work(cursor: Cursor) -> MergeOutcome | None:
            cursor.execute(
                "SELECT resource, chunks_total, records_total, merged_at IS NOT NULL, failed_at IS NOT NULL,"
                " succeeded, failed, errors_by_code"
                " FROM import_runs WHERE job_id = %s FOR UPDATE",
                (job_id,),
            )
            run = cursor.fetchone()
            if run is None:
                return None
            resource_name, chunks_total, records_total, merged, run_failed, succeeded, failed, by_code = run
            if merged:
                return MergeOutcome(records_total, succeeded, failed, dict(by_code), merged_now=False)
            if run_failed or chunks_total is None:
                return None
            cursor.execute("SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))
            if cursor.fetchone()[0] < chunks_total:
                return None
            return self._merge(cursor, job_id, Resource(resource_name), records_total)

        return self._transaction(work)

    @staticmethod
    def _merge(cursor: Cursor, job_id: str, resource: Resource, records_total: int) -> MergeOutcome:
        cursor.execute(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'")
        # Compiling the merge plan costs over a second and saves nothing measurable on this statement.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (MERGE_LOCK_CLASS, MERGE_LOCK_IDS[resource]))
        # The job's rows arrived seconds ago, before autovacuum could sample them: without fresh statistics
        # the planner may take a million-row job for an empty one.
        cursor.execute(f"ANALYZE {STAGE_TABLES[resource]}")
        cursor.execute(MERGE_SQL[resource], {"job_id": job_id})
        succeeded = cursor.fetchone()[0]
        cursor.execute(
            "SELECT code, count(*) FROM import_errors WHERE job_id = %s GROUP BY code ORDER BY code",
            (job_id,),
        )
        errors_by_code = {code: count for code, count in cursor.fetchall()}
        cursor.execute("SELECT count(DISTINCT idx) FROM import_errors WHERE job_id = %s", (job_id,))
        failed = cursor.fetchone()[0]
        cursor.execute(
            "UPDATE import_runs SET merged_at = now(), succeeded = %s, failed = %s, errors_by_code = %s"
            " WHERE job_id = %s",
            (succeeded, failed, json.dumps(errors_by_code), job_id),
        )
        cursor.execute(f"DELETE FROM {STAGE_TABLES[resource]} WHERE job_id = %s", (job_id,))
        return MergeOutcome(records_total, succeeded, failed, errors_by_code, merged_now=True)

    def progress(self, job_id: str) -> StagingProgress:
        def work(cursor: Cursor) -> StagingProgress:
            cursor.execute(
                "SELECT count(*), coalesce(sum(records), 0), coalesce(sum(failed), 0)"
                " FROM import_chunks WHERE job_id = %s",
                (job_id,),
            )
            return StagingProgress(*cursor.fetchone())

        return self._transaction(work)

    def chunks_staged(self, job_id: str) -> int:
        return self.progress(job_id).chunks

    def first_errors(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        def work(cursor: Cursor) -> list[dict[str, Any]]:
            cursor.execute(
                "SELECT line, idx, code, field, message, value_json, record_json"
                f" FROM import_errors WHERE job_id = %s {_REPORT_ORDER} LIMIT %s",
                (job_id, limit),
            )
            return [
                {
                    "line": line,
                    "index": index,
                    "code": code,
                    "field": field,
                    "message": message,
                    "value": None if value_json is None else json.loads(value_json),
                    "record": json.loads(record_json),
                }
                for line, index, code, field, message, value_json, record_json in cursor.fetchall()
            ]

        return self._transaction(work)

    def write_error_report(self, job_id: str, fmt: Literal["ndjson", "csv"], sink: BinaryIO) -> int:
        """Stream the job's errors into `sink` in constant memory; return the number of bytes written."""
        report_sql = {"ndjson": _NDJSON_REPORT_SQL, "csv": _CSV_REPORT_SQL}[fmt]
        counting_sink = _CountingSink(sink)

        def work(cursor: Cursor) -> int:
            # copy_expert takes no parameters; mogrify binds job_id exactly as execute() would.
            cursor.copy_expert(cursor.mogrify(report_sql, (job_id,)), counting_sink, COPY_BUFFER_BYTES)
            return counting_sink.bytes_written

        def nothing_written() -> bool:
            return counting_sink.bytes_written == 0

        return self._transaction(work, replayable=nothing_written)

    def record_chunk_failure(self, job_id: str, chunk_no: int, error: str) -> None:
        self._transaction(
            lambda cursor: cursor.execute(
                "INSERT INTO import_chunk_failures (job_id, chunk_no, last_error) VALUES (%s, %s, %s)"
                " ON CONFLICT (job_id, chunk_no) DO UPDATE SET attempts = import_chunk_failures.attempts + 1,"
                " last_error = excluded.last_error, updated_at = now()",
                (job_id, chunk_no, error),
            )
        )

    def chunk_failure(self, job_id: str, chunk_no: int) -> str | None:
        def work(cursor: Cursor) -> str | None:
            cursor.execute(
                "SELECT last_error FROM import_chunk_failures WHERE job_id = %s AND chunk_no = %s",
                (job_id, chunk_no),
            )
            found = cursor.fetchone()
            return None if found is None else found[0]

        return self._transaction(work)

    def fail_run(self, job_id: str) -> bool:
        """Mark the run as never to be merged and drop what it had staged. A merged run stays merged:
        returns False then (the job's rows are in, so the job must not be reported as failed)."""

        def work(cursor: Cursor) -> bool:
            cursor.execute(
                "UPDATE import_runs SET failed_at = now() WHERE job_id = %s AND merged_at IS NULL RETURNING resource",
                (job_id,),
            )
            found = cursor.fetchone()
            if found is not None:
                cursor.execute(f"DELETE FROM {STAGE_TABLES[Resource(found[0])]} WHERE job_id = %s", (job_id,))
                return True
            cursor.execute("SELECT merged_at IS NULL FROM import_runs WHERE job_id = %s", (job_id,))
            merged = cursor.fetchone()
            return merged is None or bool(merged[0])

        return self._transaction(work)
