"""Streaming decode and framing of import files into records with their source line numbers.

Everything here reads the source in bounded pieces: memory stays constant whatever the file size, and a
single oversized record costs at most about `max_record_bytes`.
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from typing import Any, BinaryIO

import orjson

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.resources import Format, Resource

READ_SIZE = 64 * 1024
RAW_TEXT_LIMIT = 64 * 1024
DEFAULT_MAX_RECORD_BYTES = 1_048_576
DEFAULT_MAX_DECOMPRESSED_BYTES = 10 * 1024**3
DEFAULT_MAX_COMPRESSION_RATIO = 100
# The ratio is only judged past this much output, so that small, very compressible files are fine.
RATIO_CHECK_AFTER_BYTES = 10 * 1024 * 1024

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# 32 + 15: let zlib read the gzip (or zlib) header itself.
GZIP_WBITS = 47

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

FORMAT_BY_EXTENSION: dict[str, Format] = {
    "csv": Format.CSV,
    "ndjson": Format.NDJSON,
    "jsonl": Format.NDJSON,
    "json": Format.JSON,
}


class FileErrorCode(StrEnum):
    """Why a whole file cannot be read; stable strings that clients may match on."""

    INVALID_GZIP = "invalid_gzip"
    INVALID_CSV_HEADER = "invalid_csv_header"
    NOT_A_JSON_ARRAY = "not_a_json_array"
    UNTERMINATED_JSON_ARRAY = "unterminated_json_array"
    TRAILING_DATA = "trailing_data"
    EMPTY_FILE = "empty_file"
    UNKNOWN_FORMAT = "unknown_format"
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
    COMPRESSION_RATIO_TOO_HIGH = "compression_ratio_too_high"
    TOO_MANY_RECORDS = "too_many_records"


class UnreadableFile(Exception):
    """The whole file cannot be read: the job fails with this reason."""

    def __init__(self, code: FileErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: str = code
        self.message = message


@dataclass(slots=True)
class SourceRecord:
    index: int
    """1-based record number in the file, unparseable records included."""
    line: int | None
    """1-based line of the source file where the record starts (the CSV header is line 1)."""
    data: dict[str, Any] | None
    """The parsed record, None when it could not be parsed."""
    error: RecordError | None
    """Why the record could not be parsed."""
    raw: str | None
    """The record's source text when it could not be parsed (truncated to 64 KiB), for the error report."""


def detect_format(filename: str | None, head: bytes) -> Format | None:
    """Format named by the file extension, else sniffed from the first bytes of the content.

    `head` may be gzip-compressed. Returns None when the head holds no text to sniff (empty, whitespace only,
    or binary such as a spreadsheet or UTF-16 text).
    """
    if filename:
        name = filename.lower().removesuffix(".gz")
        _, dot, extension = name.rpartition(".")
        if dot and extension in FORMAT_BY_EXTENSION:
            return FORMAT_BY_EXTENSION[extension]
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(GZIP_WBITS).decompress(head, READ_SIZE)
        except zlib.error:
            return None
    text = head.removeprefix(UTF8_BOM)
    # UTF-16 and binary formats are full of NUL bytes; UTF-8 text never has them.
    if b"\x00" in text[:1024]:
        return None
    text = text.lstrip()
    if not text:
        return None
    if text.startswith(b"["):
        return Format.JSON
    if text.startswith(b"{"):
        return Format.NDJSON
    return Format.CSV


def iter_source_records(
    stream: BinaryIO,
    fmt: Format | None,
    resource: Resource,
    *,
    filename: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    max_compression_ratio: float = DEFAULT_MAX_COMPRESSION_RATIO,
    max_records: int | None = None,
) -> Iterator[SourceRecord]:
    """Records of `stream` in file order. Nothing is read before the first record is asked for.

    Raises UnreadableFile (while iterating) when the file as a whole cannot be read, possibly after yielding
    the records before the problem: also when gzip content expands past `max_decompressed_bytes` or more than
    `max_compression_ratio` times, and when the file holds more than `max_records` records (None: no limit).
    """
    records = _source_records(
        stream, fmt, resource, filename, max_record_bytes, max_decompressed_bytes, max_compression_ratio
    )
    if max_records is None:
        yield from records
        return
    for record in records:
        if record.index > max_records:
            raise UnreadableFile(
                FileErrorCode.TOO_MANY_RECORDS,
                f"the file has more than {max_records} records, the limit per import: split it into files "
                f"of at most {max_records} records or raise MAX_RECORDS_PER_JOB",
            )
        yield record


def _source_records(
    stream: BinaryIO,
    fmt: Format | None,
    resource: Resource,
    filename: str | None,
    max_record_bytes: int,
    max_decompressed_bytes: int,
    max_compression_ratio: float,
) -> Iterator[SourceRecord]:
    head, chunks = _text_chunks(stream, max_decompressed_bytes, max_compression_ratio)
    if fmt is None:
        fmt = detect_format(filename, head)
        if fmt is None:
            raise UnreadableFile(
                FileErrorCode.UNKNOWN_FORMAT,
                "the file is not UTF-8 text (a spreadsheet, an archive or UTF-16 text?): "
                "export it as CSV (UTF-8), NDJSON or a JSON array",
            )
    if fmt is Format.NDJSON:
        yield from _ndjson_records(chunks, max_record_bytes)
    elif fmt is Format.JSON:
        yield from _json_array_records(chunks, max_record_bytes)
    else:
        yield from _csv_records(chunks, resource, max_record_bytes)


# ------------------------------------------------------------------------------------------- bytes and text


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(READ_SIZE):
        yield chunk


def _peek(chunks: Iterator[bytes], size: int) -> tuple[bytes, Iterator[bytes]]:
    """At least `size` leading bytes (fewer only at end of input), and the chunks after them."""
    taken: list[bytes] = []
    taken_size = 0
    for chunk in chunks:
        taken.append(chunk)
        taken_size += len(chunk)
        if taken_size >= size:
            break
    return b"".join(taken), chunks


def _gunzip(chunks: Iterable[bytes], max_decompressed_bytes: int, max_compression_ratio: float) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more concatenated members, yielding bounded pieces.

    Each decompress call returns at most READ_SIZE bytes, and the output is checked against the limits
    before it is yielded, so a decompression bomb fails after little work and little memory.
    """
    decompressor = zlib.decompressobj(GZIP_WBITS)
    member_started = False
    compressed = decompressed = 0  # input bytes read, output bytes produced
    for chunk in chunks:
        compressed += len(chunk)
        pending = chunk
        while True:
            member_started = member_started or bool(pending)
            try:
                output = decompressor.decompress(pending, READ_SIZE)
            except zlib.error as exc:
                raise _invalid_gzip(f"the data is corrupt ({exc})") from exc
            if output:
                decompressed += len(output)
                if decompressed > max_decompressed_bytes:
                    raise UnreadableFile(
                        FileErrorCode.DECOMPRESSED_TOO_LARGE,
                        f"the gzip file expands to more than {max_decompressed_bytes} bytes: split it into "
                        "smaller files or raise MAX_DECOMPRESSED_BYTES",
                    )
                consumed = compressed - len(decompressor.unconsumed_tail) - len(decompressor.unused_data)
                if decompressed > RATIO_CHECK_AFTER_BYTES and decompressed > max_compression_ratio * max(consumed, 1):
                    raise UnreadableFile(
                        FileErrorCode.COMPRESSION_RATIO_TOO_HIGH,
                        f"the gzip file expands more than {max_compression_ratio:g}\u00d7, like a decompression "
                        "bomb: upload it uncompressed or raise MAX_COMPRESSION_RATIO",
                    )
                yield output
            if decompressor.eof:
                pending = decompressor.unused_data
                decompressor = zlib.decompressobj(GZIP_WBITS)
                member_started = False
                if not pending:
                    break
            else:
                pending = decompressor.unconsumed_tail
                # A full output piece may leave decompressed bytes inside zlib even when all input is taken.
                if not pending and len(output) < READ_SIZE:
                    break
    if member_started:
        raise _invalid_gzip("it ends in the middle of the compressed data (truncated upload?)")


def _invalid_gzip(problem: str) -> UnreadableFile:
    return UnreadableFile(
        FileErrorCode.INVALID_GZIP, f"the file starts like gzip but {problem}: upload a complete .gz file"
    )


def _text_chunks(
    stream: BinaryIO, max_decompressed_bytes: int, max_compression_ratio: float
) -> tuple[bytes, Iterator[bytes]]:
    """Decompressed, BOM-less chunks, and the first one holding something other than whitespace."""
    magic, rest = _peek(_read_chunks(stream), len(GZIP_MAGIC))
    chunks: Iterator[bytes] = chain((magic,), rest)
    if magic.startswith(GZIP_MAGIC):
        chunks = _gunzip(chunks, max_decompressed_bytes, max_compression_ratio)
    head, rest = _peek(chunks, len(UTF8_BOM))
    chunks = chain((head.removeprefix(UTF8_BOM),), rest)
    # Leading whitespace-only chunks only matter for line numbers, so only their newlines are kept.
    blank_lines = 0
    for chunk in chunks:
        if chunk.strip():
            return chunk, chain((b"\n" * blank_lines,), (chunk,), chunks)
        blank_lines += chunk.count(b"\n")
    raise UnreadableFile(FileErrorCode.EMPTY_FILE, "the file is empty: upload a file with at least one record")


# ------------------------------------------------------------------------------------- CSV quoting states
# Where a CSV record ends depends on its quotes: a quoted cell may span lines. When a record is too large to be
# handed to csv.reader, these states (those of csv.reader(strict=True) with the default dialect, as far as they
# decide where a record ends) let the parser find that end itself, so that the text of an oversized quoted cell
# is never read as records of its own.
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED, _BROKEN = range(5)
"""At a cell's start; inside an unquoted cell; inside a quoted cell; just after a quote inside a quoted cell
(closing it, or the first of a doubled quote); after an error, when the reader drops the rest of the line."""
# A cell known to be complete: an unquoted one, or a quoted one followed by a comma (a closing quote at the end of
# a piece may be the first half of a doubled quote split across pieces, so that case is left to the loop below).
_COMPLETE_CELL = rb'(?:"(?:[^"]++|"")*+"(?=,)|[^",\r][^,\r]*+)?+'
_COMPLETE_CELLS = re.compile(_COMPLETE_CELL + rb"(?:," + _COMPLETE_CELL + rb")*+")
_QUOTED_TEXT = re.compile(rb'(?:[^"]++|"")*+')
_UNQUOTED_TEXT = re.compile(rb"[^,\r]*+")
# A line that begins inside a quoted cell and ends inside one, so that its record goes on: the cell closes, a run of
# unquoted cells follows (without quotes, ending with a comma), a quote opens the next cell, and so on. While the
# rest of an oversized record is skipped, whole runs of such lines are passed over in one match. Only a shortcut
# (unquoted cells holding a quote are left out): a line it does not match is judged by _csv_quote_state.
_QUOTED_IN_LINE = rb'(?:[^"\n]++|"")*+'
_STAYS_QUOTED_LINE = _QUOTED_IN_LINE + rb'(?:",(?:[^"\r\n]*,)?+"' + _QUOTED_IN_LINE + rb")*+"
_STAYS_QUOTED = re.compile(_STAYS_QUOTED_LINE)
_LINES_STAYING_QUOTED = re.compile(rb"(?:" + _STAYS_QUOTED_LINE + rb"\n)*+")


def _csv_quote_state(piece: bytes, state: int) -> int:
    """The quoting state after `piece` (a physical line, or part of one: no '\\n'), starting from `state`.

    At the end of a line, the record goes on to the next line only in the _QUOTED state. Each step consumes a
    whole run in C (a regular expression), so hostile content costs no Python work per byte.
    """
    position, size = 0, len(piece)
    while position < size:
        if state == _FIELD_START:
            end = _COMPLETE_CELLS.match(piece, position).end()  # type: ignore[union-attr]
            if end == size:
                return _FIELD_START if end == position or piece[end - 1] == _COMMA else _UNQUOTED
            # The cells stop at a quote opening a cell, or at a carriage return (a line ending, or an error).
            if piece[end] == _QUOTE:
                state, position = _QUOTED, end + 1
            else:
                return _BROKEN
        elif state == _UNQUOTED:
            end = _UNQUOTED_TEXT.match(piece, position).end()  # type: ignore[union-attr]
            if end == size:
                return _UNQUOTED
            if piece[end] != _COMMA:
                return _BROKEN
            state, position = _FIELD_START, end + 1
        elif state == _QUOTED:
            end = _QUOTED_TEXT.match(piece, position).end()  # type: ignore[union-attr]
            if end == size:
                return _QUOTED
            state, position = _QUOTE_IN_QUOTED, end + 1
        elif state == _QUOTE_IN_QUOTED:
            byte = piece[position]
            position += 1
            if byte == _QUOTE:
                state = _QUOTED  # a doubled quote: still inside the cell
            elif byte == _COMMA:
                state = _FIELD_START
            else:
                return _BROKEN  # a carriage return ends the line; anything else is an error (strict)
        else:
            return _BROKEN
    return state


@dataclass(slots=True)
class _OversizedLine:
    start: bytes
    """The first bytes of the line, for the error report."""
    state_from_record_start: int = _FIELD_START
    state_from_quoted: int = _QUOTED
    """CSV: the quoting state at the end of the line when it began a record, and when it began inside a quoted
    cell (the reader is in one of these two states at the start of any line)."""

    def scan(self, piece: bytes) -> None:
        self.state_from_record_start = _csv_quote_state(piece, self.state_from_record_start)
        self.state_from_quoted = _csv_quote_state(piece, self.state_from_quoted)


def _oversized(line: bytes, track_csv_quotes: bool) -> _OversizedLine:
    oversized = _OversizedLine(line[:RAW_TEXT_LIMIT])
    if track_csv_quotes:
        oversized.scan(line)
    return oversized


@dataclass(slots=True)
class _SkippedLines:
    """_split_lines' answer to _SKIP_QUOTED_RECORD."""

    count: int
    """Lines skipped: those after the line the request followed, up to the one that ends its record (included)."""


_SKIP_QUOTED_RECORD = "skip the rest of the quoted record"


def _split_lines(
    chunks: Iterable[bytes], max_line_bytes: int, track_csv_quotes: bool = False
) -> Generator[bytes | _OversizedLine | _SkippedLines, object, None]:
    """Physical lines without their '\\n'; a line longer than the limit is skipped without being buffered
    (with `track_csv_quotes`, its quoting states are followed as it streams past).

    CSV: sending _SKIP_QUOTED_RECORD after a line that began and ended inside a quoted cell skips the lines after
    it up to the one that ends the record, a chunk at a time rather than a line at a time; the send answers
    _SkippedLines. Only a send ever yields one.
    """
    pending = b""
    oversized: _OversizedLine | None = None
    skipped: int | None = None  # while a record's rest is skipped: lines skipped so far
    state, partial = _QUOTED, False  # meanwhile: the quoting state, and whether a line is partly read
    for chunk in chunks:
        if skipped is not None:
            skipped, state, partial, position = _skip_lines_staying_quoted(chunk, skipped, state, partial)
            if position < 0:
                continue
            yield _SkippedLines(skipped)
            skipped = None
            chunk = chunk[position:]
        if oversized is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                if track_csv_quotes:
                    oversized.scan(chunk)
                continue
            if track_csv_quotes:
                oversized.scan(chunk[:newline])
            if (yield oversized) is _SKIP_QUOTED_RECORD:
                skipped = 0
            oversized = None
            chunk = chunk[newline + 1 :]
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if skipped is not None:
                skipped += 1
                if not _continues_quoted_cell(line):
                    yield _SkippedLines(skipped)
                    skipped = None
            elif (
                yield line if len(line) <= max_line_bytes else _oversized(line, track_csv_quotes)
            ) is _SKIP_QUOTED_RECORD:
                skipped = 0
        if skipped is not None:
            state, partial = _csv_quote_state(pending, _QUOTED), bool(pending)
            pending = b""
        elif len(pending) > max_line_bytes:
            oversized = _oversized(pending, track_csv_quotes)
            pending = b""
    if skipped is not None:
        yield _SkippedLines(skipped + partial)
    elif oversized is not None or pending:
        last_line = pending if oversized is None else oversized
        if (yield last_line) is _SKIP_QUOTED_RECORD:
            yield _SkippedLines(0)  # nothing follows


def _skip_lines_staying_quoted(chunk: bytes, skipped: int, state: int, partial: bool) -> tuple[int, int, bool, int]:
    """Skip the lines of `chunk` that go on inside a quoted cell: (lines skipped so far, quoting state, whether the
    chunk ends inside a line, position after the line that ends the record or -1 if the record goes on)."""
    position, size = 0, len(chunk)
    while True:
        if not partial:  # at a line's start, inside the quoted cell
            end = _LINES_STAYING_QUOTED.match(chunk, position).end()  # type: ignore[union-attr]
            skipped += chunk.count(b"\n", position, end)
            position = end
        newline = chunk.find(b"\n", position)
        if newline < 0:
            if position < size:
                state, partial = _csv_quote_state(chunk[position:], state), True
            return skipped, state, partial, -1
        state = _csv_quote_state(chunk[position:newline], state)
        skipped += 1
        position = newline + 1
        if state != _QUOTED:
            return skipped, _QUOTED, False, position
        partial = False


def _raw_text(data: bytes) -> str:
    return data[:RAW_TEXT_LIMIT].decode("utf-8", "replace").strip()


def _too_large(max_record_bytes: int) -> RecordError:
    return RecordError(
        ErrorCode.RECORD_TOO_LARGE,
        None,
        f"the record is larger than {max_record_bytes} bytes: shorten its fields or split it",
    )


def _json_type_name(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


# -------------------------------------------------------------------------------------------------- NDJSON


def _ndjson_records(chunks: Iterator[bytes], max_record_bytes: int) -> Iterator[SourceRecord]:
    index = 0
    for line_number, line in enumerate(_split_lines(chunks, max_record_bytes), 1):
        if isinstance(line, _OversizedLine):
            index += 1
            yield SourceRecord(index, line_number, None, _too_large(max_record_bytes), _raw_text(line.start))
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if not line.strip():
                continue
            index += 1
            yield SourceRecord(index, line_number, None, _ndjson_syntax_error(line, exc), _raw_text(line))
            continue
        index += 1
        if type(value) is dict:
            yield SourceRecord(index, line_number, value, None, None)
        else:
            error = RecordError(
                ErrorCode.INVALID_JSON,
                None,
                f"the line must be a JSON object, got {_json_type_name(value)}: "
                'write each record as {"field": value, ...} on its own line',
            )
            yield SourceRecord(index, line_number, None, error, _raw_text(line))


def _ndjson_syntax_error(line: bytes, exc: orjson.JSONDecodeError) -> RecordError:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return RecordError(ErrorCode.INVALID_JSON, None, "the line is not valid UTF-8 text: save the file as UTF-8")
    return RecordError(
        ErrorCode.INVALID_JSON,
        None,
        f"the line is not valid JSON ({exc}): each line must be one complete JSON object",
    )


# ---------------------------------------------------------------------------------------------- JSON array

_SKIP_WHITESPACE = re.compile(rb"[ \t\r\n]*+")
# Each pattern runs, in C, up to the next byte the framer must look at; strings are skipped whole when they
# end inside the chunk, otherwise the match stops at their opening quote.
_TO_STRUCTURE_IN_CONTAINER = re.compile(rb'(?:[^"{}\[\]]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_TO_STRUCTURE_AT_TOP = re.compile(rb'(?:[^"{}\[\],]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_TO_STRING_END = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_OBJECT_END_CANDIDATE = re.compile(rb"\}[ \t\r\n]*+[,\]]")
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_OPEN_BRACKET, _CLOSE_BRACKET, _OPEN_BRACE, _CLOSE_BRACE = ord("["), ord("]"), ord("{"), ord("}")


def _frame_json_array(
    chunks: Iterator[bytes], max_record_bytes: int
) -> Iterator[tuple[int, bytes, bool, dict[str, Any] | None]]:
    """(start line, bytes, oversized, parsed object or None) of each element of a top-level JSON array.

    Elements are split at top-level commas only, so a malformed element costs that element alone; the bytes
    of an oversized element are its first RAW_TEXT_LIMIT bytes.
    Fast path: an object is usually followed by its own '}' and a separator, and if orjson accepts the text
    up to such a '}' as a whole value then that '}' is the element's end (JSON is read left to right), so
    most elements are found and parsed without the byte-level scan below.
    """
    line = 1  # line number at offset `counted` of the current chunk
    array_opened = array_closed = False
    in_element = in_string = escaped = oversized = False
    element_expected = False  # after a comma, ']' would close an empty element
    depth = 0  # nesting inside the current element
    element_line = 0
    carried = bytearray()  # the current element's bytes from earlier chunks
    for chunk in chunks:
        size = len(chunk)
        position = counted = element_start = 0
        while position < size:
            if in_string:
                if escaped:
                    escaped = False
                    position += 1
                    continue
                end = _TO_STRING_END.match(chunk, position).end()  # type: ignore[union-attr]
                if end == size:
                    break
                if chunk[end] == _BACKSLASH:
                    escaped = True
                    break
                in_string = False
                position = end + 1
                continue
            if not in_element:
                position = _SKIP_WHITESPACE.match(chunk, position).end()  # type: ignore[union-attr]
                if position == size:
                    break
                byte = chunk[position]
                if array_closed:
                    raise UnreadableFile(
                        FileErrorCode.TRAILING_DATA,
                        "there is data after the closing ']' of the array: put all records inside one array",
                    )
                if not array_opened:
                    if byte != _OPEN_BRACKET:
                        raise _not_an_array()
                    array_opened = True
                    position += 1
                    continue
                line += chunk.count(b"\n", counted, position)
                counted = position
                if byte == _CLOSE_BRACKET and not element_expected:
                    array_closed = True
                    position += 1
                    continue
                if byte == _OPEN_BRACE:
                    candidate_end = _OBJECT_END_CANDIDATE.search(chunk, position)
                    if candidate_end is not None and candidate_end.start() - position < max_record_bytes:
                        candidate = chunk[position : candidate_end.start() + 1]
                        try:
                            value = orjson.loads(candidate)
                        except orjson.JSONDecodeError:
                            pass
                        else:
                            yield line, candidate, False, value
                            position = candidate_end.end()
                            element_expected = chunk[position - 1] == _COMMA
                            array_closed = not element_expected
                            continue
                in_element = True
                element_line = line
                element_start = position
            pattern = _TO_STRUCTURE_IN_CONTAINER if depth else _TO_STRUCTURE_AT_TOP
            end = pattern.match(chunk, position).end()  # type: ignore[union-attr]
            if end == size:
                break
            byte = chunk[end]
            position = end + 1
            if byte == _QUOTE:
                in_string = True
            elif byte in (_OPEN_BRACE, _OPEN_BRACKET):
                depth += 1
            elif depth:
                depth -= 1
            elif byte != _CLOSE_BRACE:  # a top-level ',' or ']' ends the element; a stray '}' stays in it
                if oversized or len(carried) + end - element_start > max_record_bytes:
                    element = bytes((carried + chunk[element_start:end])[:RAW_TEXT_LIMIT])
                    yield element_line, element, True, None
                elif carried:
                    yield element_line, bytes(carried + chunk[element_start:end]), False, None
                else:
                    yield element_line, chunk[element_start:end], False, None
                in_element = oversized = False
                carried = bytearray()
                element_expected = byte == _COMMA
                array_closed = byte == _CLOSE_BRACKET
        if in_element and not oversized:
            carried += memoryview(chunk)[element_start:]
            if len(carried) > max_record_bytes:
                oversized = True
                del carried[RAW_TEXT_LIMIT:]
        line += chunk.count(b"\n", counted)
    if not array_opened:
        raise _not_an_array()
    if not array_closed:
        raise UnreadableFile(
            FileErrorCode.UNTERMINATED_JSON_ARRAY,
            "the file ends before the closing ']' of the array (truncated upload?): upload the complete file",
        )


def _not_an_array() -> UnreadableFile:
    return UnreadableFile(
        FileErrorCode.NOT_A_JSON_ARRAY,
        "a .json file must hold one array of objects, like [{...}, {...}]: "
        "wrap the records in [ ] or upload one object per line as .ndjson",
    )


def _json_array_records(chunks: Iterator[bytes], max_record_bytes: int) -> Iterator[SourceRecord]:
    frames = _frame_json_array(chunks, max_record_bytes)
    for index, (line, element, oversized, parsed) in enumerate(frames, 1):
        if parsed is not None:
            yield SourceRecord(index, line, parsed, None, None)
            continue
        if oversized:
            yield SourceRecord(index, line, None, _too_large(max_record_bytes), _raw_text(element))
            continue
        try:
            value = orjson.loads(element)
        except orjson.JSONDecodeError as exc:
            yield SourceRecord(index, line, None, _json_element_error(element, exc), _raw_text(element))
            continue
        if type(value) is dict:
            yield SourceRecord(index, line, value, None, None)
        else:
            error = RecordError(
                ErrorCode.INVALID_JSON,
                None,
                f"each array element must be a JSON object, got {_json_type_name(value)}: "
                'write each record as {"field": value, ...}',
            )
            yield SourceRecord(index, line, None, error, _raw_text(element))


def _json_element_error(element: bytes, exc: orjson.JSONDecodeError) -> RecordError:
    if not element.strip():
        message = "the array has an empty element: remove the extra comma"
    else:
        try:
            element.decode("utf-8")
        except UnicodeDecodeError:
            message = "the element is not valid UTF-8 text: save the file as UTF-8"
        else:
            message = (
                f"the element is not valid JSON ({exc}): check for a missing comma, quote or bracket; "
                "elements must be separated by commas"
            )
    return RecordError(ErrorCode.INVALID_JSON, None, message)


# ----------------------------------------------------------------------------------------------------- CSV


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
        self._last_line: bytes | _OversizedLine | _SkippedLines = b""

    def __iter__(self) -> _CsvLineFeed:
        return self

    def start_record(self) -> None:
        """Called before each row is read: the reader's next line starts a record."""
        self._record_lines = 0

    def __next__(self) -> str:
        line = next(self._lines)
        self.line_number += 1
        self._record_lines += 1
        self._last_line = line
        size = self._max_record_bytes + 1 if isinstance(line, _OversizedLine) else len(line)
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

    def _skip_to_record_end(self, line: bytes | _OversizedLine | _SkippedLines) -> None:
        """Skip the lines after `line` (the last one read, which began inside a quoted cell) up to the one that ends
        its record."""
        if isinstance(line, _SkippedLines) or not _continues_quoted_cell(line):
            return
        skipped = self._lines.send(_SKIP_QUOTED_RECORD)
        assert isinstance(skipped, _SkippedLines)
        self.line_number += skipped.count


def _continues_quoted_cell(line: bytes | _OversizedLine) -> bool:
    """Whether a line that begins inside a quoted cell also ends inside one, so that the record goes on."""
    if isinstance(line, _OversizedLine):
        return line.state_from_quoted == _QUOTED
    return _STAYS_QUOTED.fullmatch(line) is not None or _csv_quote_state(line, _QUOTED) == _QUOTED


def _csv_text(row: list[str]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(row)
    return text.getvalue()


def _read_csv_header(reader: Any, feed: _CsvLineFeed) -> list[str]:
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
