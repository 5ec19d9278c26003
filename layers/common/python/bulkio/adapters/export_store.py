"""Exports streamed straight out of PostgreSQL: `COPY (query) TO STDOUT` in constant memory.

PostgreSQL builds every output line itself (row_to_json for NDJSON and JSON, the CSV format of COPY for CSV),
so Python only moves bytes: a background thread runs psycopg2's copy_expert, which hands each row to a writer
that gathers rows into chunks of about `chunk_bytes` on a small bounded queue; the generator returned by
`ExportStore.stream` takes chunks off that queue. When the consumer is slow the queue fills, the thread blocks,
psycopg2 stops reading, and the server blocks on its socket: memory stays at a few chunks whatever the number
of rows, and the first chunk leaves while the query is still running.

SQL text holds identifiers only from COLUMNS (checked again here) and the filter operators below; every value
is a literal quoted by psycopg2 (copy_expert takes no parameters, so values are bound with sql.Literal, which
escapes exactly as execute() would).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterator

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from bulkio.adapters.postgres import OneConnection
from bulkio.domain.exports import ExportFormat, ExportQuery, Filter, FilterOperator
from bulkio.domain.resources import COLUMNS

DEFAULT_CHUNK_BYTES = 512 * 1024
# Chunks waiting between the COPY thread and the consumer: enough to keep both busy, small enough that memory
# stays a few chunks whatever the export size.
QUEUED_CHUNKS = 4

_TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at", "published_at"})
_BOOLEAN_COLUMNS = frozenset({"active"})
_ARRAY_COLUMNS = frozenset({"tags"})

_OPERATORS: dict[FilterOperator, str] = {
    "=": "{column} = {value}",
    ">": "{column} > {value}",
    "<": "{column} < {value}",
    ">=": "{column} >= {value}",
    "in": "{column} = ANY({value})",
    "contains": "{value} = ANY({column})",
}

# The CSV format with control characters as delimiter and quote writes each JSON line verbatim: the text
# format would escape every backslash of the JSON, and PostgreSQL's JSON output escapes every control
# character, so neither can occur in a line.
_JSON_LINES_OPTIONS = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"
_CSV_OPTIONS = "FORMAT csv, HEADER true"


# ------------------------------------------------------------------------------------------------------ SQL


def _neutralized(cell: sql.Composable) -> sql.Composed:
    """A text cell that spreadsheets cannot run as a formula (OWASP CSV injection): a cell starting with
    = + - @ tab or CR gets a leading single quote, as in the import error report.

    Cost in round trips, in this data model: ids, slugs, timestamps and booleans never start with those
    characters (the importer's id and slug rules begin with a letter or digit), so only free text is ever
    changed: names or titles such as "@home", comment or article bodies starting "+1", "-" (a Markdown list)
    or "=", e-mail addresses like "+tag@x.org", roles if someone configures such a role. Re-importing such a
    CSV stores the quote too; NDJSON and JSON exports are never altered and round-trip exactly.

    One extension over the error report's rule keeps the mapping reversible: a value that already starts
    with quotes followed by one of those characters ("'=x") gets one more quote too. An importer that drops
    one leading quote from cells matching ^'+[=+\\-@\\t\\r] then restores every value exactly; ordinary text
    starting with a quote ("'Tis") is left alone both ways.
    """
    return sql.SQL(
        "CASE WHEN left({cell}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r', '''') AND {cell} ~ '^''*[-=+@\\t\\r]'"
        " THEN '''' || {cell} ELSE {cell} END"
    ).format(cell=cell)


def _tags_cell(column: sql.Identifier) -> sql.Composed:
    """Tags as the importer reads them: `a|b` where that is unambiguous; else the JSON array form, which the
    importer also reads: when a tag holds a '|', when the first tag starts with '[' (the importer would take
    the cell for a JSON array), or when the cell would start a formula (a '[' is safe in spreadsheets, so the
    tags round-trip exactly instead of taking a quote)."""
    return sql.SQL(
        "CASE WHEN strpos(array_to_string({tags}, ''), '|') > 0"
        " OR left({tags}[1], 1) IN ('[', '=', '+', '-', '@', E'\\t', E'\\r', '''')"
        " THEN to_json({tags})::text ELSE array_to_string({tags}, '|') END"
    ).format(tags=column)


def _csv_cell(column: str) -> sql.Composed:
    identifier = sql.Identifier(column)
    if column in _TIMESTAMP_COLUMNS:
        # The JSON rendering is ISO 8601 with a 'T' and the offset ("2024-05-01T12:00:00+00:00"), as in NDJSON.
        expression = sql.SQL("to_json({column}) #>> '{{}}'").format(column=identifier)
    elif column in _BOOLEAN_COLUMNS:
        expression = sql.SQL("{column}::text").format(column=identifier)  # true / false
    elif column in _ARRAY_COLUMNS:
        expression = _tags_cell(identifier)
    else:
        expression = _neutralized(identifier)
    return sql.SQL("{expression} AS {column}").format(expression=expression, column=identifier)


def _condition(condition: Filter) -> sql.Composed:
    return sql.SQL(_OPERATORS[condition.operator]).format(
        column=sql.Identifier("t", condition.column), value=sql.Literal(condition.value)
    )


def _check_identifiers(query: ExportQuery) -> None:
    """ExportQuery may be built by hand: refuse any identifier that is not in the allowlists."""
    columns = COLUMNS[query.resource]
    unknown = [name for name in query.fields if name not in columns]
    unknown += [condition.column for condition in query.filters if condition.column not in columns]
    if unknown or not query.fields:
        raise ValueError(f"not exportable columns of {query.resource}: {unknown or 'none selected'}")
    operators = [condition.operator for condition in query.filters if condition.operator not in _OPERATORS]
    if operators:
        raise ValueError(f"unknown filter operators: {operators}")


def export_sql(query: ExportQuery, fmt: ExportFormat) -> sql.Composed:
    """The COPY statement that writes the whole export (without the JSON array's brackets and commas)."""
    _check_identifiers(query)
    where: sql.Composable = sql.SQL("")
    if query.filters:
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(_condition(condition) for condition in query.filters)
    limit = sql.SQL("") if query.limit is None else sql.SQL(" LIMIT {}").format(sql.Literal(query.limit))
    # Qualified with the table's alias: in CSV the output columns carry the same names as computed cells.
    order = sql.SQL("{where} ORDER BY t.id{limit}").format(where=where, limit=limit)
    table = sql.Identifier(query.resource.value)
    if fmt is ExportFormat.CSV:
        cells = sql.SQL(", ").join(_csv_cell(column) for column in query.fields)
        return sql.SQL("COPY (SELECT {cells} FROM {table} AS t{order}) TO STDOUT WITH ({options})").format(
            cells=cells, table=table, order=order, options=sql.SQL(_CSV_OPTIONS)
        )
    # The lateral row carries exactly the projected columns, so row_to_json names them as they are; ordering
    # by the table's id outside it keeps the order guaranteed whether or not id is projected.
    projected = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(column)) for column in query.fields)
    return sql.SQL(
        "COPY (SELECT row_to_json(projected) FROM {table} AS t CROSS JOIN LATERAL (SELECT {projected}) AS projected"
        "{order}) TO STDOUT WITH ({options})"
    ).format(table=table, projected=projected, order=order, options=sql.SQL(_JSON_LINES_OPTIONS))


# ------------------------------------------------------------------------------------------------ streaming


class _Finished:
    """The COPY thread's last queue item: `error` is None when the COPY completed."""

    __slots__ = ("error",)

    def __init__(self, error: Exception | None) -> None:
        self.error = error


class _ChunkWriter:
    """The file copy_expert writes into (one call per row): gathers rows into chunks on the bounded queue."""

    def __init__(self, chunks: queue.Queue[bytes | _Finished], chunk_bytes: int) -> None:
        self._chunks = chunks
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()
        self.abandoned = False

    def write(self, data: bytes) -> int:
        # After the consumer left, rows still in flight before the cancel lands are dropped, not queued.
        if not self.abandoned:
            self._buffer += data
            if len(self._buffer) >= self._chunk_bytes:
                self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer and not self.abandoned:
            self._chunks.put(bytes(self._buffer))
            self._buffer.clear()


class _CopyRun:
    """One COPY TO STDOUT running in a thread; iterating yields its chunks, stop() ends it early."""

    def __init__(self, connection: Connection, copy_sql: str, chunk_bytes: int) -> None:
        self._connection = connection
        self._chunks: queue.Queue[bytes | _Finished] = queue.Queue(maxsize=QUEUED_CHUNKS)
        self._writer = _ChunkWriter(self._chunks, chunk_bytes)
        self._finished = False
        self.rows = 0
        self._thread = threading.Thread(target=self._copy, args=(copy_sql,), name="export-copy", daemon=True)
        self._thread.start()

    def _copy(self, copy_sql: str) -> None:
        outcome = _Finished(None)
        try:
            with self._connection.cursor() as cursor:
                # Timestamps render with the session's offset: make it +00:00 whatever the server default.
                cursor.execute("SET LOCAL TIME ZONE 'UTC'")
                # Rows in id order straight from the primary key: on a wide table (articles' bodies) the planner
                # would rather sort, and a sort sends nothing until it has read the whole table.
                cursor.execute("SET LOCAL enable_sort = off")
                cursor.copy_expert(copy_sql, self._writer)
                self.rows = cursor.rowcount
            self._writer.flush()
        except Exception as error:  # raised again in the consumer's thread
            outcome = _Finished(error)
        self._chunks.put(outcome)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._chunks.get()
            if isinstance(item, _Finished):
                self._finished = True
                self._thread.join()
                if item.error is not None:
                    raise item.error
                return
            yield item

    def stop(self) -> None:
        """End the COPY if it is still running: cancel it on the server and let the thread run to its end
        (the queue is drained, so it cannot block)."""
        if self._finished:
            return
        self._writer.abandoned = True
        with contextlib.suppress(psycopg2.Error):
            self._connection.cancel()
        while not isinstance(self._chunks.get(), _Finished):
            pass
        self._finished = True
        self._thread.join()


def _json_array(lines: Generator[bytes, None, None]) -> Iterator[bytes]:
    """NDJSON chunks into one JSON array: "[\\n", the lines joined by ",\\n", "\\n]\\n" (also for no lines).

    JSON lines hold no raw newline, so every newline ends a row: each becomes ",\\n" except the last one of
    the stream, which is why the last byte seen is always held back until the next chunk or the end. (No
    chunk comes out empty: every incoming chunk holds at least one whole line.)"""
    with contextlib.closing(lines):
        yield b"[\n"
        held = b""
        for chunk in lines:
            data = held + chunk
            yield data[:-1].replace(b"\n", b",\n")
            held = data[-1:]
        yield held + b"]\n"


class ExportStream(Iterator[bytes]):
    """The body of an export, chunk by chunk; `rows` counts the exported rows once it has been read to the end."""

    def __init__(self) -> None:
        self.body: Iterator[bytes] = iter(())
        self.rows = 0

    def __next__(self) -> bytes:
        return next(self.body)

    def close(self) -> None:
        """Stops the export early: the query is cancelled (see ExportStore.stream)."""
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


class ExportStore(OneConnection):
    """Streams exports from PostgreSQL."""

    def stream(self, query: ExportQuery, fmt: ExportFormat, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ExportStream:
        """The whole response body, in chunks of about `chunk_bytes`, rows ordered by id.

        NDJSON: one object per line. JSON: an array, one object per line. CSV: a header row, RFC 4180
        quoting, booleans true/false, tags `a|b` (or a JSON array, see _tags_cell), NULL as an empty cell,
        text cells neutralized against formulas (see _neutralized). Timestamps are ISO 8601 in UTC with
        their offset in every format, so an export imports back as it was.

        Closing the iterator early (the client went away) cancels the query on the server and drops the
        connection; the next call reconnects. Invalid queries raise ValueError here, before any I/O.
        """
        statement = export_sql(query, fmt)
        export = ExportStream()
        chunks = self._chunks(statement, chunk_bytes, export)
        export.body = _json_array(chunks) if fmt is ExportFormat.JSON else chunks
        return export

    def _chunks(self, statement: sql.Composed, chunk_bytes: int, export: ExportStream) -> Generator[bytes, None, None]:
        for attempt in (1, 2):
            connection = self._connected()
            run = _CopyRun(connection, statement.as_string(connection), chunk_bytes)
            sent_anything = False
            try:
                for chunk in run:
                    sent_anything = True
                    yield chunk
            except psycopg2.Error:
                # A stale connection (a thawed Lambda's, or one the server closed in a restart: psycopg2 calls
                # that a plain DatabaseError) fails at once: retry once on a new one if the caller has received
                # nothing yet. Other errors (a statement timeout) are not retried.
                broken = bool(connection.closed)
                if not broken:
                    run.stop()
                    with contextlib.suppress(psycopg2.Error):
                        connection.rollback()
                self.close()
                if attempt == 2 or sent_anything or not broken:
                    raise
                continue
            except BaseException:
                # The consumer left (GeneratorExit) or the query failed. The rollback ends the transaction
                # before the connection goes; the connection is never used again because a cancel request
                # travels on a connection of its own and could land after this query ended, on the next one.
                run.stop()
                with contextlib.suppress(psycopg2.Error):
                    connection.rollback()
                self.close()
                raise
            # The export only read: rolling back ends its transaction without a commit's WAL flush.
            connection.rollback()
            export.rows = run.rows
            return
