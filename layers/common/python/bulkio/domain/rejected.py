"""The rejected-records file: a job's rejected records in the upload's own format, with their errors in columns
or members whose names start with `_`, which the importer ignores. A user fixes the cells and uploads the file
as it is. Pure: the import store streams the records in, the text comes out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from bulkio.domain.parsing.csv import CSV_LIST_SEPARATOR

RejectedFormat = Literal["csv", "ndjson"]
REJECTED_FORMATS: tuple[RejectedFormat, ...] = ("csv", "ndjson")
# After the upload's own columns. `_raw`: the text of a record that could not be split into cells or parsed.
EXTRA_CSV_COLUMNS = ("_line", "_error_codes", "_error_messages", "_raw")
MESSAGE_SEPARATOR = " | "


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """One rejected record: `record` is the object as read (its cells, for CSV), or the raw text (a str) of one
    that could not be read as a record; `errors` are (code, field, message) in code order."""

    line: int | None
    record: dict[str, Any] | str | None
    errors: Sequence[tuple[str, str | None, str]]


def rejected_format_of(upload_format: str | None) -> RejectedFormat:
    """The upload's own format: CSV stays CSV; NDJSON and a JSON array come back as NDJSON (one record a line,
    which re-imports as it is)."""
    return "csv" if upload_format == "csv" else "ndjson"


def _csv_line(cells: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(cells)
    return out.getvalue()


def _cell(value: Any) -> str:
    """The cell as the CSV reader would read it back to the same value (bulkio.domain.parsing.csv)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, list):
        if all(isinstance(item, str) and CSV_LIST_SEPARATOR not in item for item in value):
            return CSV_LIST_SEPARATOR.join(value)
        return orjson.dumps(value).decode()
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def rejected_csv_header(columns: Sequence[str]) -> str:
    return _csv_line([*columns, *EXTRA_CSV_COLUMNS])


def rejected_csv_row(columns: Sequence[str], rejected: RejectedRecord) -> str:
    """The record's own cells under `columns` (the upload's header), then its line, codes, messages and raw text.
    Cells are written as read: no spreadsheet-formula escaping, which would change them on the way back in."""
    record = rejected.record
    cells = [_cell(record.get(column)) for column in columns] if isinstance(record, dict) else ["" for _ in columns]
    raw = record if isinstance(record, str) else ""
    codes = ",".join(code for code, _, _ in rejected.errors)
    messages = MESSAGE_SEPARATOR.join(message for _, _, message in rejected.errors)
    line = "" if rejected.line is None else str(rejected.line)
    return _csv_line([*cells, line, codes, messages, raw])


def rejected_ndjson_line(rejected: RejectedRecord) -> bytes:
    """The original object with `_line` and `_errors` members; `_raw` instead of the object when it had none."""
    errors = [{"code": code, "field": field, "message": message} for code, field, message in rejected.errors]
    record = rejected.record
    head: dict[str, Any] = dict(record) if isinstance(record, dict) else {"_raw": record if record is not None else ""}
    return orjson.dumps({**head, "_line": rejected.line, "_errors": errors}) + b"\n"
