"""PostgreSQL side of the import pipeline: staging with COPY, the set-based merge, the error report.

Writers stage each chunk in one transaction (claim the chunk, COPY the valid rows into the resource's UNLOGGED
staging table and the invalid ones into import_errors). Once every chunk is staged, one caller merges the job
under a row lock on import_runs. The merge is a single SQL statement whose result depends only on the staged
rows and on the tables as they were before it ran: never on chunk order or on how many writers there were.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from bulkio.adapters.copy_format import (
    COPY_BUFFER_BYTES,
    CSV_REPORT_SQL,
    ERRORS_COPY_SQL,
    NDJSON_REPORT_SQL,
    NUL,
    REPORT_ORDER,
    ROW_ENCODERS,
    STAGE_COPY_SQL,
    CopySource,
    CountingSink,
    copy_error_line,
)
from bulkio.adapters.merge_sql import MERGE_SQL, MIXED_MERGE_SQL, STAGE_TABLES
from bulkio.domain.objects import ByteSink
from bulkio.domain.rejected import (
    RejectedFormat,
    RejectedRecord,
    rejected_csv_header,
    rejected_csv_row,
    rejected_ndjson_line,
)
from bulkio.domain.resources import DEPENDENCY_ORDER, ImportTarget, Resource
from bulkio.domain.staging import FailedRecord, MergeOutcome, StagedRecord, StagingLost, StagingProgress
from bulkio.domain.sweep import RunState

APPLICATION_NAME = "bulkio"
# Memory for the merge's sorts (three window passes over the job's rows); per transaction, not per server.
MERGE_WORK_MEM = "256MB"
REJECTED_FETCH_ROWS = 2000  # rows of rejected records a server-side cursor hands over at a time
# Merges of one resource run one at a time across jobs (pg_advisory_xact_lock(class, resource)), because
# each one checks uniqueness against the table as it was before it started.
MERGE_LOCK_CLASS = 0x6275_6C6B  # "bulk"
MERGE_LOCK_IDS: dict[Resource, int] = {Resource.USERS: 1, Resource.ARTICLES: 2, Resource.COMMENTS: 3}

T = TypeVar("T")


def connect(dsn: str) -> Connection:
    """A connection in UTC with autocommit off, named so it can be told apart in pg_stat_activity.

    Commits are durable whatever the server's default (the embedded cluster runs with synchronous_commit = off):
    the pipeline reports a commit to DynamoDB and SQS as soon as it returns (a merged job is marked completed, a
    staged chunk's message is deleted), so a crash of PostgreSQL right after it must not take it back."""
    return psycopg2.connect(
        dsn,
        application_name=APPLICATION_NAME,
        options="-c timezone=UTC -c synchronous_commit=on",
        connect_timeout=10,
        keepalives=1,
        keepalives_idle=30,
    )


# ---------------------------------------------------------------------------------------------- the store


def _one_row(cursor: Cursor) -> tuple[Any, ...]:
    """The row of a statement that always answers one (an aggregate, a row this transaction holds or wrote)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the statement answered no row")
    return row


def _register_run(cursor: Cursor, job_id: str, target: ImportTarget, dry_run: bool) -> None:
    """Creates the job's run row. Whichever comes first creates it, a writer staging a chunk or the chunker's
    totals; both read the job's mode, and a dry run stays one whatever the order (no resource table is written
    for it). No ON CONFLICT DO UPDATE: that would lock the row for each chunk, and the writers would queue."""
    cursor.execute(
        "INSERT INTO import_runs (job_id, resource, dry_run) VALUES (%s, %s, %s) ON CONFLICT (job_id) DO NOTHING",
        (job_id, target.value, dry_run),
    )
    if dry_run and cursor.rowcount == 0:
        cursor.execute("UPDATE import_runs SET dry_run = true WHERE job_id = %s AND NOT dry_run", (job_id,))


def _by_resource(records: Iterable[StagedRecord]) -> dict[Resource, list[StagedRecord]]:
    """A mixed chunk's valid records, by the resource each names (in dependency order)."""
    grouped: dict[Resource, list[StagedRecord]] = {}
    for record in records:
        if record.resource is None:
            raise ValueError(f"record {record.index} of a mixed job names no resource")
        grouped.setdefault(record.resource, []).append(record)
    return {resource: grouped[resource] for resource in DEPENDENCY_ORDER if resource in grouped}


def _counters_by_resource(cursor: Cursor, job_id: str, succeeded: dict[Resource, int]) -> dict[str, dict[str, int]]:
    """A mixed job's outcome per resource: each of its records was accepted or has errors, so the total is the
    sum of the two. A record that names no resource counts in the job's counters only."""
    cursor.execute(
        "SELECT resource, count(DISTINCT idx) FROM import_errors WHERE job_id = %s AND resource IS NOT NULL"
        " GROUP BY resource",
        (job_id,),
    )
    failed = {Resource(name): count for name, count in cursor.fetchall()}
    counters = {}
    for resource in DEPENDENCY_ORDER:
        total = succeeded.get(resource, 0) + failed.get(resource, 0)
        counters[resource.value] = {
            "total": total,
            "processed": total,
            "succeeded": succeeded.get(resource, 0),
            "failed": failed.get(resource, 0),
        }
    return counters


def _errors_by_code(cursor: Cursor, job_id: str) -> dict[str, int]:
    cursor.execute("SELECT code, count(*) FROM import_errors WHERE job_id = %s GROUP BY code ORDER BY code", (job_id,))
    return {code: count for code, count in cursor.fetchall()}


def is_broken(error: BaseException, connection: Connection) -> bool:
    """A failure of the connection rather than of the statement: the server went away (restart, failover, a
    thawed Lambda's stale socket). psycopg2 reports "server closed the connection unexpectedly" as a plain
    DatabaseError, so the connection's own state decides, not only the exception's class."""
    return isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError) or bool(connection.closed)


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
            except psycopg2.Error as error:
                if not is_broken(error, connection):
                    connection.rollback()
                    raise
                self.close()
                if attempt == 2 or not replayable():
                    raise
            except BaseException:
                if not connection.closed:
                    connection.rollback()
                raise
        raise AssertionError("unreachable")

    def register_job(self, job_id: str, target: ImportTarget, dry_run: bool = False) -> None:
        self._transaction(lambda cursor: _register_run(cursor, job_id, target, dry_run))

    def stage_chunk(
        self,
        job_id: str,
        target: ImportTarget,
        chunk_no: int,
        staged: Iterable[StagedRecord],
        failed: Iterable[FailedRecord],
        dry_run: bool = False,
    ) -> bool:
        """Stage one chunk exactly once: False (and nothing changed) when it had been staged before. A mixed
        job's records go to the staging table of the resource each names."""
        copying_started = False

        staged_count = 0
        failed_indexes: set[int] = set()
        first_index: int | None = None

        def counted_staged(resource: Resource, records: Iterable[StagedRecord]) -> Iterator[str]:
            nonlocal staged_count, first_index
            encode = ROW_ENCODERS[resource]
            for record in records:
                staged_count += 1
                first_index = record.index if first_index is None else min(first_index, record.index)
                yield encode(job_id, record.index, record.line, record.row, record.raw)

        def counted_failed() -> Iterator[str]:
            nonlocal first_index
            for record in failed:
                failed_indexes.add(record.index)
                first_index = record.index if first_index is None else min(first_index, record.index)
                yield copy_error_line(job_id, record, target.single)

        single = target.single
        staged_lines = (
            {single: counted_staged(single, staged)}
            if single is not None
            else {resource: counted_staged(resource, records) for resource, records in _by_resource(staged).items()}
        )
        failed_lines = counted_failed()

        def work(cursor: Cursor) -> bool:
            nonlocal copying_started
            # The run row may not exist if a writer beats the chunker's register_job; creating it here is
            # harmless because register_job does nothing on conflict.
            _register_run(cursor, job_id, target, dry_run)
            # A run that failed, was cancelled or merged takes no more rows: a writer still in flight then must
            # not leave rows behind that nothing would ever remove. The share lock makes fail_run and the merge
            # (which update this row) wait for chunks being staged, and a chunk wait for them.
            cursor.execute(
                "SELECT merged_at IS NULL AND failed_at IS NULL FROM import_runs WHERE job_id = %s FOR SHARE",
                (job_id,),
            )
            if not _one_row(cursor)[0]:
                return False
            cursor.execute(
                "INSERT INTO import_chunks (job_id, chunk_no) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (job_id, chunk_no),
            )
            if cursor.rowcount == 0:
                return False
            copying_started = True
            for resource, lines in staged_lines.items():
                cursor.copy_expert(STAGE_COPY_SQL[resource], CopySource(lines), COPY_BUFFER_BYTES)
            cursor.copy_expert(ERRORS_COPY_SQL, CopySource(failed_lines), COPY_BUFFER_BYTES)
            cursor.execute(
                "UPDATE import_chunks SET records = %s, failed = %s, first_idx = %s"
                " WHERE job_id = %s AND chunk_no = %s",
                (staged_count + len(failed_indexes), len(failed_indexes), first_index, job_id, chunk_no),
            )
            return True

        def rolled_back_chunk() -> bool:
            return not copying_started

        return self._transaction(work, replayable=rolled_back_chunk)

    def set_totals(self, job_id: str, chunks_total: int, records_total: int) -> None:
        def work(cursor: Cursor) -> None:
            cursor.execute(
                "UPDATE import_runs SET chunks_total = %s, records_total = %s, chunked_at = now()"
                " WHERE job_id = %s AND merged_at IS NULL",
                (chunks_total, records_total, job_id),
            )
            if cursor.rowcount == 0:
                cursor.execute("SELECT 1 FROM import_runs WHERE job_id = %s", (job_id,))
                if cursor.fetchone() is None:
                    raise LookupError(f"no import run {job_id!r}: register_job first")

        self._transaction(work)

    def try_merge(self, job_id: str, wait: bool = True) -> MergeOutcome | StagingLost | None:
        """Merge the job if all its chunks are staged; exactly one caller ever gets merged_now=True. With
        wait=False (the sweeper) a run whose row is locked, by a merge under way, is left alone: None.

        Before merging, the staged rows are checked against the claimed chunks' record counts: chunks whose rows
        are missing lose their claims and come back as StagingLost, to be staged again, instead of a merge that
        would import fewer rows and report success."""

        def work(cursor: Cursor) -> MergeOutcome | StagingLost | None:
            cursor.execute(
                "SELECT resource, chunks_total, records_total, merged_at IS NOT NULL, failed_at IS NOT NULL,"
                " succeeded, failed, errors_by_code, dry_run, counters_by_resource"
                " FROM import_runs WHERE job_id = %s FOR UPDATE" + ("" if wait else " SKIP LOCKED"),
                (job_id,),
            )
            run = cursor.fetchone()
            if run is None:
                return None
            (
                target_name,
                chunks_total,
                records_total,
                merged,
                run_failed,
                succeeded,
                failed,
                by_code,
                dry_run,
                by_resource,
            ) = run
            if merged:
                return MergeOutcome(records_total, succeeded, failed, dict(by_code), False, by_resource)
            if run_failed or chunks_total is None:
                return None
            cursor.execute("SELECT count(*) FROM import_chunks WHERE job_id = %s", (job_id,))
            if _one_row(cursor)[0] < chunks_total:
                return None
            target = ImportTarget(target_name)
            lost = self._unstage_lost_chunks(cursor, job_id, target)
            if lost is not None:
                return lost
            return self._merge(cursor, job_id, target, records_total, dry_run)

        return self._transaction(work)

    @staticmethod
    def _unstage_lost_chunks(cursor: Cursor, job_id: str, target: ImportTarget) -> StagingLost | None:
        """None when every claimed chunk's valid records are staged; else the claims of the chunks that lost
        rows are removed (with what is left of their rows and validation errors) and their numbers returned."""
        tables = [STAGE_TABLES[resource] for resource in target.resources]
        # A mixed job's chunk stages into several tables: its rows are counted across them.
        stage = " UNION ALL ".join(f"SELECT idx FROM {table} WHERE job_id = %(job)s" for table in tables)
        cursor.execute(
            f"SELECT (SELECT count(*) FROM ({stage}) s),"
            " (SELECT coalesce(sum(records - failed), 0) FROM import_chunks WHERE job_id = %(job)s)",
            {"job": job_id},
        )
        staged, expected = _one_row(cursor)
        if staged == expected:
            return None
        cursor.execute(
            f"""DELETE FROM import_chunks c
            WHERE c.job_id = %(job)s AND c.records - c.failed <> (
                SELECT count(*) FROM ({stage}) s WHERE s.idx >= c.first_idx AND s.idx < c.first_idx + c.records)
            RETURNING c.chunk_no, c.first_idx, c.records""",
            {"job": job_id},
        )
        lost = cursor.fetchall()
        for _, first_idx, records in lost:
            for table in (*tables, "import_errors"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE job_id = %s AND idx >= %s AND idx < %s",
                    (job_id, first_idx, first_idx + records),
                )
        cursor.execute("UPDATE import_runs SET restages = restages + 1 WHERE job_id = %s RETURNING restages", (job_id,))
        restages = _one_row(cursor)[0]
        return StagingLost(tuple(sorted(chunk_no for chunk_no, _, _ in lost)), restages)

    @staticmethod
    def _merge(cursor: Cursor, job_id: str, target: ImportTarget, records_total: int, dry_run: bool) -> MergeOutcome:
        """One merge statement per resource of the job, in dependency order, in this one transaction: a mixed
        job's articles find the users its own merge just wrote, as if the parts were imported one after the other."""
        cursor.execute(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'")
        # Compiling the merge plan costs over a second and saves nothing measurable on this statement.
        cursor.execute("SET LOCAL jit = off")
        statements = MERGE_SQL if target.single is not None else MIXED_MERGE_SQL
        succeeded_by_resource: dict[Resource, int] = {}
        for resource in target.resources:
            # Always in dependency order, so two merges never wait for each other's locks in a cycle.
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", (MERGE_LOCK_CLASS, MERGE_LOCK_IDS[resource]))
            # The job's rows arrived seconds ago, before autovacuum could sample them: without fresh statistics
            # the planner may take a million-row job for an empty one.
            cursor.execute(f"ANALYZE {STAGE_TABLES[resource]}")
            cursor.execute(statements[resource], {"job_id": job_id, "writes": not dry_run})
            succeeded_by_resource[resource] = _one_row(cursor)[0]
        succeeded = sum(succeeded_by_resource.values())
        counters_by_resource = (
            None if target.single is not None else _counters_by_resource(cursor, job_id, succeeded_by_resource)
        )
        errors_by_code = _errors_by_code(cursor, job_id)
        cursor.execute("SELECT count(DISTINCT idx) FROM import_errors WHERE job_id = %s", (job_id,))
        failed = _one_row(cursor)[0]
        cursor.execute(
            "UPDATE import_runs SET merged_at = now(), succeeded = %s, failed = %s, errors_by_code = %s,"
            " counters_by_resource = %s WHERE job_id = %s",
            (
                succeeded,
                failed,
                json.dumps(errors_by_code),
                None if counters_by_resource is None else json.dumps(counters_by_resource),
                job_id,
            ),
        )
        for resource in target.resources:
            cursor.execute(f"DELETE FROM {STAGE_TABLES[resource]} WHERE job_id = %s", (job_id,))
        return MergeOutcome(records_total, succeeded, failed, errors_by_code, True, counters_by_resource)

    def errors_by_code(self, job_id: str) -> dict[str, int]:
        return self._transaction(lambda cursor: _errors_by_code(cursor, job_id))

    def progress(self, job_id: str) -> StagingProgress:
        def work(cursor: Cursor) -> StagingProgress:
            cursor.execute(
                "SELECT count(*), coalesce(sum(records), 0), coalesce(sum(failed), 0)"
                " FROM import_chunks WHERE job_id = %s",
                (job_id,),
            )
            return StagingProgress(*_one_row(cursor))

        return self._transaction(work)

    def run_state(self, job_id: str) -> RunState | None:
        def work(cursor: Cursor) -> RunState | None:
            cursor.execute(
                """SELECT r.chunks_total, r.records_total,
                    (SELECT count(*) FROM import_chunks c WHERE c.job_id = r.job_id),
                    r.merged_at IS NOT NULL, r.failed_at IS NOT NULL,
                    extract(epoch FROM now() - greatest(
                        (SELECT max(staged_at) FROM import_chunks c WHERE c.job_id = r.job_id),
                        r.chunked_at, r.resent_at, r.merged_at)),
                    r.resends
                FROM import_runs r WHERE r.job_id = %s""",
                (job_id,),
            )
            found = cursor.fetchone()
            if found is None:
                return None
            total, records, staged, merged, failed, age, resends = found
            return RunState(total, records, staged, merged, failed, None if age is None else float(age), resends)

        return self._transaction(work)

    def unstaged_chunks(self, job_id: str) -> list[int]:
        """Numbers of the chunks the chunker announced that no writer has staged (yet)."""

        def work(cursor: Cursor) -> list[int]:
            cursor.execute(
                """SELECT n FROM import_runs r, generate_series(1, r.chunks_total) n
                WHERE r.job_id = %s AND NOT EXISTS (
                    SELECT 1 FROM import_chunks c WHERE c.job_id = r.job_id AND c.chunk_no = n)
                ORDER BY n""",
                (job_id,),
            )
            return [n for (n,) in cursor.fetchall()]

        return self._transaction(work)

    def mark_resent(self, job_id: str) -> None:
        """Counts a re-send; the count restarts at 1 when chunks were staged since the previous one, so it is the
        number of re-sends in a row that brought no progress."""
        self._transaction(
            lambda cursor: cursor.execute(
                """UPDATE import_runs r SET resent_at = now(),
                    resends = CASE WHEN s.staged > r.resent_staged THEN 1 ELSE r.resends + 1 END,
                    resent_staged = s.staged
                FROM (SELECT count(*) AS staged FROM import_chunks WHERE job_id = %(job)s) s
                WHERE r.job_id = %(job)s""",
                {"job": job_id},
            )
        )

    def is_staged(self, job_id: str, chunk_no: int) -> bool:
        def work(cursor: Cursor) -> bool:
            cursor.execute("SELECT 1 FROM import_chunks WHERE job_id = %s AND chunk_no = %s", (job_id, chunk_no))
            return cursor.fetchone() is not None

        return self._transaction(work)

    def first_errors(self, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
        def work(cursor: Cursor) -> list[dict[str, Any]]:
            cursor.execute(
                "SELECT line, idx, code, field, message, value_json, record_json"
                f" FROM import_errors WHERE job_id = %s {REPORT_ORDER} LIMIT %s",
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

    def write_error_report(self, job_id: str, fmt: Literal["ndjson", "csv"], sink: ByteSink) -> int:
        """Stream the job's errors into `sink` in constant memory; return the number of bytes written."""
        report_sql = {"ndjson": NDJSON_REPORT_SQL, "csv": CSV_REPORT_SQL}[fmt]
        counting_sink = CountingSink(sink)

        def work(cursor: Cursor) -> int:
            # copy_expert takes no parameters; mogrify binds job_id exactly as execute() would.
            cursor.copy_expert(cursor.mogrify(report_sql, (job_id,)), counting_sink, COPY_BUFFER_BYTES)
            return counting_sink.bytes_written

        def nothing_written() -> bool:
            return counting_sink.bytes_written == 0

        return self._transaction(work, replayable=nothing_written)

    def write_rejected(self, job_id: str, fmt: RejectedFormat, sink: ByteSink) -> int:
        """Stream the job's rejected records into `sink`, each once with all its errors, in record order and in
        constant memory (a server-side cursor); return the number of bytes written."""
        counting_sink = CountingSink(sink)

        def work(cursor: Cursor) -> int:
            columns: list[str] = []
            if fmt == "csv":
                # The upload's header for a CSV upload (every record has its columns); for JSON records asked for
                # as CSV, every member any of them has, in the order they first appear.
                cursor.execute(
                    "SELECT k.name FROM import_errors e,"
                    " LATERAL json_object_keys(e.record_json::json) WITH ORDINALITY AS k(name, position)"
                    " WHERE e.job_id = %s AND left(e.record_json, 1) = '{'"
                    " GROUP BY k.name ORDER BY min(e.idx), min(k.position)",
                    (job_id,),
                )
                columns = [name for (name,) in cursor.fetchall()]
                counting_sink.write(rejected_csv_header(columns).encode())
            with cursor.connection.cursor(name=f"rejected_{uuid.uuid4().hex}") as records:
                records.itersize = REJECTED_FETCH_ROWS
                records.execute(
                    "SELECT min(line), min(record_json), array_agg(code ORDER BY code, field),"
                    " array_agg(field ORDER BY code, field), array_agg(message ORDER BY code, field)"
                    " FROM import_errors WHERE job_id = %s GROUP BY idx ORDER BY idx",
                    (job_id,),
                )
                for line, record_json, codes, fields, messages in records:
                    errors = list(zip(codes, fields, messages, strict=True))
                    rejected = RejectedRecord(line, json.loads(record_json), errors)
                    if fmt == "csv":
                        counting_sink.write(rejected_csv_row(columns, rejected).encode())
                    else:
                        counting_sink.write(rejected_ndjson_line(rejected))
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
                # A reason may quote the data (a NUL included), which PostgreSQL text cannot hold.
                (job_id, chunk_no, error.replace(NUL, "\\u0000")),
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
                for resource in ImportTarget(found[0]).resources:
                    cursor.execute(f"DELETE FROM {STAGE_TABLES[resource]} WHERE job_id = %s", (job_id,))
                return True
            cursor.execute("SELECT merged_at IS NULL FROM import_runs WHERE job_id = %s", (job_id,))
            merged = cursor.fetchone()
            return merged is None or bool(merged[0])

        return self._transaction(work)
