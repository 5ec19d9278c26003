"""COPY text for the import store: staged rows and record errors as COPY lines, and the error reports' COPY
statements. Pure text work: the store runs the statements."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from bulkio.adapters.merge_sql import STAGE_TABLES
from bulkio.domain.objects import ByteSink
from bulkio.domain.resources import COLUMNS, Resource
from bulkio.domain.staging import FailedRecord

COPY_BUFFER_BYTES = 1 << 16

COPY_NULL = "\\N"
NUL = "\x00"
# PostgreSQL text cannot hold NUL. Stored values never have one (validation refuses them: invalid_character),
# but text that is only reported (an error's message, field, value and record) may: it is written as the six
# characters \u0000, NUL's JSON escape, so a JSON column stays JSON. Doubled: COPY's text format un-doubles it.
NUL_IN_COPY_TEXT = "\\\\u0000"


def without_nul(line: str) -> str:
    """A COPY line that PostgreSQL accepts whatever the text in it (the probe is one scan in C)."""
    return line.replace(NUL, NUL_IN_COPY_TEXT) if NUL in line else line


def copy_text(value: Any) -> str:
    if value is None:
        return COPY_NULL
    # str.replace hands back its input when there is nothing to replace (the common case): cheaper than
    # str.translate or a regex probe on this hot path (a million calls per million-record import).
    text = value if value.__class__ is str else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _copy_boolean(value: bool | None) -> str:
    return COPY_NULL if value is None else ("t" if value else "f")


def _copy_timestamp(value: datetime | None) -> str:
    return COPY_NULL if value is None else value.isoformat()


def copy_text_array(items: Iterable[str | None] | None) -> str:
    if items is None:
        return COPY_NULL

    def element(item: str | None) -> str:
        return "NULL" if item is None else '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return copy_text("{" + ",".join(element(item) for item in items) + "}")


_COLUMN_ENCODERS: dict[str, Callable[[Any], str]] = {
    "active": _copy_boolean,
    "created_at": _copy_timestamp,
    "updated_at": _copy_timestamp,
    "published_at": _copy_timestamp,
    "tags": copy_text_array,
}


def _row_encoder(resource: Resource) -> Callable[[str, int, int | None, dict[str, Any], str], str]:
    """A function turning one staged record into one line of COPY text format: job, index, line, the columns in
    COLUMNS order, the raw record, and `provided`, the bitmask of the columns the row holds (bit i for
    COLUMNS[resource][i]; a column the record leaves out keeps its stored value, see merge_sql)."""
    encoders = [
        (column, _COLUMN_ENCODERS.get(column, copy_text), 1 << bit) for bit, column in enumerate(COLUMNS[resource])
    ]

    def encode(job_id: str, index: int, line: int | None, row: dict[str, Any], raw: str) -> str:
        fields = [copy_text(job_id), str(index), COPY_NULL if line is None else str(line)]
        provided = 0
        for column, encode_value, bit in encoders:
            if column in row:
                provided |= bit
                fields.append(encode_value(row[column]))
            else:
                fields.append(COPY_NULL)
        fields.append(copy_text(raw))
        fields.append(str(provided))
        return without_nul("\t".join(fields) + "\n")

    return encode


ROW_ENCODERS = {resource: _row_encoder(resource) for resource in Resource}


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def copy_error_line(job_id: str, record: FailedRecord, job_resource: Resource | None) -> str:
    """The error's COPY line; its resource is the record's own, else the job's (None: a mixed record naming none)."""
    error = record.error
    resource = record.resource or job_resource
    fields = (
        job_id,
        str(record.index),
        None if record.line is None else str(record.line),
        str(error.code),
        error.field,
        error.message,
        _json_text(error.value),
        record.raw,
        None if resource is None else resource.value,
    )
    return without_nul("\t".join(map(copy_text, fields)) + "\n")


class CopySource:
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


class CountingSink:
    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self.bytes_written += len(data)
        return len(data)


STAGE_COPY_SQL: dict[Resource, str] = {
    resource: f"COPY {STAGE_TABLES[resource]} (job_id, idx, line, {', '.join(columns)}, raw, provided) FROM STDIN"
    for resource, columns in COLUMNS.items()
}
ERRORS_COPY_SQL = (
    "COPY import_errors (job_id, idx, line, code, field, message, value_json, record_json, resource) FROM STDIN"
)

REPORT_ORDER = "ORDER BY idx, code, field, message"


def _neutralized(column: str) -> str:
    # Spreadsheets run cells starting with these characters as formulas; a leading quote makes them text.
    return (
        f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') THEN '''' || {column} ELSE {column} END"
    )


def _one_line(column: str) -> str:
    # Valid JSON has line breaks only as insignificant whitespace, so this keeps each error on one line.
    return f"regexp_replace({column}, '[\\r\\n]+', ' ', 'g')"


NDJSON_REPORT_SQL = f"""
COPY (
    SELECT '{{"line":' || coalesce(line::text, 'null')
        || ',"index":' || idx::text
        || ',"code":' || to_json(code)::text
        || ',"field":' || coalesce(to_json(field)::text, 'null')
        || ',"message":' || to_json(message)::text
        || ',"value":' || coalesce({_one_line("value_json")}, 'null')
        || ',"record":' || {_one_line("record_json")}
        || '}}'
    FROM import_errors WHERE job_id = %s {REPORT_ORDER}
) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')
"""
# The CSV format with control characters as delimiter and quote writes each line verbatim: the text format
# would escape every backslash of the JSON, and valid JSON text never holds a raw control character.

CSV_REPORT_SQL = f"""
COPY (
    SELECT line, idx AS "index", code,
        {_neutralized("field")} AS field,
        {_neutralized("message")} AS message,
        {_neutralized("value_json")} AS value,
        {_neutralized("record_json")} AS record
    FROM import_errors WHERE job_id = %s {REPORT_ORDER}
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""
