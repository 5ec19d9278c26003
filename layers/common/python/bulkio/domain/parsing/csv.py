"""CSV: rows of csv.reader(strict=True) keyed by the header, with the line where each record starts; empty cells
are null and some columns are coerced, so that CSV and JSON sources validate alike. A record over the limit, or
one that cannot be read, is an error of that record alone, and the text of its quoted cells is never read as
records of their own."""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator
from typing import Any

import orjson

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing.common import (
    RAW_TEXT_LIMIT,
    FileErrorCode,
    SourceRecord,
    UnreadableFile,
    _raw_text,
    _too_large,
)
from bulkio.domain.parsing.lines import (
    _QUOTED,
    _SKIP_QUOTED_RECORD,
    _continues_quoted_cell,
    _OversizedLine,
    _SkippedLines,
    _split_lines,
)
from bulkio.domain.resources import Resource

# CSV cells are all text; these columns are coerced so that CSV and JSON sources validate alike.
CSV_BOOLEAN_COLUMNS: dict[Resource, frozenset[str]] = {
    Resource.USERS: frozenset({"active"}),
    Resource.ARTICLES: frozenset(),
    Resource.COMMENTS: frozenset(),
}
CSV_LIST_COLUMNS: dict[Resource, frozenset[str]] = {
    Resource.USERS: frozenset(),
    Resource.ARTICLES: frozenset({"tags"}),
    Resource.COMMENTS: frozenset(),
}
CSV_LIST_SEPARATOR = "|"


class _CsvLineFeed:
    """Decoded lines for csv.reader, one per physical line, so that `line_number` is the source's line number.

    Lines that cannot be given to the reader as they are get a stand-in and an entry in `line_errors`, which
    the record spanning them reports. An oversized line's stand-in leaves the reader in the quoting state the
    real line would have left it in, and a record whose quoted cell outgrows the csv field limit is skipped to
    its real end (`skip_rest_of_record`): either way the text inside a quoted cell is never read as records.
    """

    def __init__(
        self, lines: Generator[bytes | _OversizedLine | _SkippedLines, object, None], max_record_bytes: int
    ) -> None:
        self._lines = lines
        self._max_record_bytes = max_record_bytes
        self.line_errors: dict[int, tuple[RecordError, bytes]] = {}
        self.line_number = 0
        """Physical lines consumed so far, whether given to the reader or skipped."""
        self._record_lines = 0  # lines the reader has taken for the record it is reading
        self._record_bytes = 0  # their size, with the line breaks between them
        self._record_start: bytes | _OversizedLine = b""
        self._last_line: bytes | _OversizedLine = b""

    def __iter__(self) -> _CsvLineFeed:
        return self

    def start_record(self) -> None:
        """Called before each row is read: the reader's next line starts a record."""
        self._record_lines = 0

    def __next__(self) -> str:
        line = next(self._lines)
        if isinstance(line, bytes):
            size = len(line)
        else:
            assert isinstance(line, _OversizedLine), "only a send to _split_lines answers _SkippedLines"
            size = self._max_record_bytes + 1
        self.line_number += 1
        self._record_lines += 1
        self._last_line = line
        if self._record_lines == 1:
            self._record_start = line
            self._record_bytes = size
        else:
            # The reader asks for another line of the record only from inside a quoted cell. The record limit holds
            # while the record is read: past it, the rest of the record is skipped and the reader, handed a quote
            # that closes its cell, ends the record there, so that it never holds more than about the limit.
            self._record_bytes += 1 + size
            if self._record_bytes > self._max_record_bytes:
                start = self._record_start
                source = start.start if isinstance(start, _OversizedLine) else start
                self.line_errors[self.line_number] = (_too_large(self._max_record_bytes), source)
                self._skip_to_record_end(line)
                return '"\n'
        if isinstance(line, _OversizedLine):
            self.line_errors[self.line_number] = (_too_large(self._max_record_bytes), line.start)
            # The reader is at a record start on a record's first line, and inside a quoted cell on any other.
            starts_quoted = self._record_lines > 1
            ends_quoted = (line.state_from_quoted if starts_quoted else line.state_from_record_start) == _QUOTED
            # '"' opens a quoted cell at a record start and closes the one the reader is in otherwise.
            return "\n" if ends_quoted == starts_quoted else '"\n'
        try:
            return line.decode("utf-8") + "\n"
        except UnicodeDecodeError:
            error = RecordError(
                ErrorCode.INVALID_CSV_ROW, None, "the row is not valid UTF-8 text: save the file as CSV UTF-8"
            )
            self.line_errors[self.line_number] = (error, line)
            return line.decode("utf-8", "replace") + "\n"

    def skip_rest_of_record(self) -> None:
        """After csv.reader refused a cell over the field size limit. No single line holds that much, so the cell
        is a quoted one that began on an earlier line, and the reader, which drops the rest of the line and starts
        afresh on the next, would take the rest of the cell for records. Skip the lines up to the record's end."""
        self._skip_to_record_end(self._last_line)

    def _skip_to_record_end(self, line: bytes | _OversizedLine) -> None:
        """Skip the lines after `line` (the last one read, which began inside a quoted cell) up to the one that ends
        its record."""
        if not _continues_quoted_cell(line):
            return
        skipped = self._lines.send(_SKIP_QUOTED_RECORD)
        assert isinstance(skipped, _SkippedLines)
        self.line_number += skipped.count


def _csv_text(row: list[str]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(row)
    return text.getvalue()


def _read_csv_header(reader: Iterator[list[str]], feed: _CsvLineFeed) -> list[str]:
    try:
        row: list[str] = []
        while not any(cell.strip() for cell in row):
            feed.start_record()
            row = next(reader)
    except StopIteration:
        raise UnreadableFile(
            FileErrorCode.INVALID_CSV_HEADER, "the CSV file has no header row: put the column names on line 1"
        ) from None
    except csv.Error as exc:
        raise UnreadableFile(
            FileErrorCode.INVALID_CSV_HEADER, f"the CSV header cannot be read ({exc}): fix line 1"
        ) from exc
    if feed.line_errors:
        error, _ = next(iter(feed.line_errors.values()))
        raise UnreadableFile(FileErrorCode.INVALID_CSV_HEADER, f"the CSV header is unusable: {error.message}")
    header = [name.strip() for name in row]
    for position, name in enumerate(header, 1):
        if not name:
            raise UnreadableFile(
                FileErrorCode.INVALID_CSV_HEADER,
                f"column {position} of the CSV header has no name: name every column or remove the extra separators",
            )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise UnreadableFile(
            FileErrorCode.INVALID_CSV_HEADER,
            f"the CSV header repeats the column(s) {', '.join(duplicates)}: every column name must be unique",
        )
    return header


def _coerce_boolean(cell: str) -> Any:
    lowered = cell.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return cell


def _coerce_list(cell: str) -> Any:
    stripped = cell.strip()
    if stripped.startswith("["):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return cell
    return [item.strip() for item in stripped.split(CSV_LIST_SEPARATOR) if item.strip()]


_FIELD_LIMIT_ERROR = "field larger than field limit"  # csv.Error's message when a cell outgrows the limit


def _csv_records(chunks: Iterator[bytes], resource: Resource, max_record_bytes: int) -> Iterator[SourceRecord]:
    # The limit is process-wide; raising it to the record limit only lets csv accept fields our limit accepts.
    if csv.field_size_limit() < max_record_bytes:
        csv.field_size_limit(max_record_bytes)
    feed = _CsvLineFeed(_split_lines(chunks, max_record_bytes, track_csv_quotes=True), max_record_bytes)
    line_errors = feed.line_errors
    # strict: a quote left open at the end of the file is an error, not a field swallowing the rows after it.
    reader = csv.reader(feed, strict=True)
    header = _read_csv_header(reader, feed)
    width = len(header)
    coercions = [(name, _coerce_boolean) for name in header if name in CSV_BOOLEAN_COLUMNS[resource]] + [
        (name, _coerce_list) for name in header if name in CSV_LIST_COLUMNS[resource]
    ]
    index = 0
    last_line = feed.line_number
    while True:
        start_line = last_line + 1
        unreadable: csv.Error | None = None
        feed.start_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            unreadable = exc
            if _FIELD_LIMIT_ERROR in str(exc):
                feed.skip_rest_of_record()
        last_line = feed.line_number
        if line_errors:
            lines = range(start_line, last_line + 1)
            spanned = [line_errors.pop(number) for number in lines if number in line_errors]
            if spanned:
                index += 1
                error, source = spanned[0]
                yield SourceRecord(index, start_line, None, error, _raw_text(source))
                continue
        if unreadable is not None:
            index += 1
            if _FIELD_LIMIT_ERROR in str(unreadable):
                error = _too_large(max_record_bytes)
            else:
                error = RecordError(
                    ErrorCode.INVALID_CSV_ROW,
                    None,
                    f"the row cannot be read as CSV ({unreadable}): quote values holding commas, quotes or line "
                    'breaks, close every quote, and double the quotes inside quoted values ("")',
                )
            yield SourceRecord(index, start_line, None, error, None)
            continue
        if not any(row) or (len(row) == 1 and not row[0].strip()):
            continue
        index += 1
        if len(row) != width:
            error = RecordError(
                ErrorCode.INVALID_CSV_ROW,
                None,
                f"the row has {len(row)} cells but the header has {width}: check for an unquoted comma "
                'inside a value (quote it: "a, b") or a missing or extra separator',
            )
            yield SourceRecord(index, start_line, None, error, _csv_text(row)[:RAW_TEXT_LIMIT])
            continue
        if last_line > start_line and sum(map(len, row)) > max_record_bytes:
            raw = _csv_text(row)[:RAW_TEXT_LIMIT]
            yield SourceRecord(index, start_line, None, _too_large(max_record_bytes), raw)
            continue
        # An empty cell is null (JSON's null: it clears a nullable field); a column the header lacks is absent
        # from the record (an update keeps the stored value).
        data: dict[str, Any] = {name: cell or None for name, cell in zip(header, row, strict=True)}
        for name, coerce in coercions:
            if data[name] is not None:
                data[name] = coerce(data[name])
        yield SourceRecord(index, start_line, data, None, None)
