"""A CSV record too large to read must not let the text of its quoted cell be read as records.

csv.reader refuses a cell over its field size limit by dropping the rest of the line and starting afresh on the
next one, and an oversized physical line never reaches the reader at all: in both cases the parser has to find
where the record really ends, or the lines of a quoted cell become records of their own (a hostile file could
smuggle rows in that way, or hide real rows inside an error).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import tracemalloc
from collections.abc import Iterator

import pytest
from bulkio.domain.errors import ErrorCode
from bulkio.domain.parsing import SourceRecord
from bulkio.domain.parsing.common import READ_SIZE
from bulkio.domain.parsing.lines import (
    _QUOTED,
    _SKIP_QUOTED_RECORD,
    _STAYS_QUOTED,
    _continues_quoted_cell,
    _csv_quote_state,
    _OversizedLine,
    _SkippedLines,
    _split_lines,
)
from bulkio.domain.resources import Format, Resource

from tests.fixtures.parsing import iter_source_records

CSV_DEFAULT_FIELD_LIMIT = 131_072
HEADER = b"id,email,name\n"
SMUGGLED = b"evil,evil@example.com,Smuggled\n"
# Above csv's default field size limit, so that the reader itself refuses the cell.
RECORD_LIMIT = 150_000


@pytest.fixture(autouse=True)
def csv_field_limit_at_its_default() -> Iterator[None]:
    """csv's field size limit is process-wide and the parser only ever raises it (to max_record_bytes): every
    test starts from csv's default, so that the limit the reader enforces here is RECORD_LIMIT, whatever ran
    before in the process."""
    previous = csv.field_size_limit(CSV_DEFAULT_FIELD_LIMIT)
    yield
    csv.field_size_limit(previous)


def parse(content: bytes, max_record_bytes: int) -> list[SourceRecord]:
    stream = io.BytesIO(content)
    return list(iter_source_records(stream, Format.CSV, Resource.USERS, max_record_bytes=max_record_bytes))


def outcome(records: list[SourceRecord]) -> list[tuple[int | None, object]]:
    return [(r.line, r.data["id"] if r.data else r.error.code if r.error else None) for r in records]


def test_a_quoted_cell_over_the_field_limit_is_one_error_and_its_lines_are_not_records() -> None:
    padding = b"padding\n" * 40_000  # 320 kB of short lines inside one quoted cell
    content = HEADER + b'u-1,a@example.com,"start\n' + padding + SMUGGLED + b'end"\nu-2,b@example.com,Two\n'
    records = parse(content, RECORD_LIMIT)
    assert outcome(records) == [(2, ErrorCode.RECORD_TOO_LARGE), (40_005, "u-2")]


def test_an_oversized_line_that_opens_a_quoted_cell_keeps_the_cell_open() -> None:
    content = HEADER + b'u-1,a@example.com,"' + b"x" * 500 + b"\n" + SMUGGLED + b'"\nu-2,b@example.com,Two\n'
    assert outcome(parse(content, 100)) == [(2, ErrorCode.RECORD_TOO_LARGE), (5, "u-2")]


def test_an_oversized_line_that_closes_a_quoted_cell_lets_the_next_rows_through() -> None:
    content = HEADER + b'u-1,a@example.com,"start\n' + b"x" * 500 + b'"\nu-2,b@example.com,Two\nu-3,c@example.com,C\n'
    assert outcome(parse(content, 100)) == [(2, ErrorCode.RECORD_TOO_LARGE), (4, "u-2"), (5, "u-3")]


def test_doubled_quotes_inside_an_oversized_line_do_not_close_the_cell() -> None:
    inside = b'say ""hi"", ' * 50  # 600 bytes, quotes and commas all inside the cell
    content = HEADER + b'u-1,a@example.com,"' + inside + b"\n" + SMUGGLED + b'"\nu-2,b@example.com,Two\n'
    assert outcome(parse(content, 100)) == [(2, ErrorCode.RECORD_TOO_LARGE), (5, "u-2")]


def test_an_oversized_line_read_in_many_pieces_keeps_its_quoting() -> None:
    # Doubled quotes straddle the read boundaries: only a state carried from one piece to the next sees them.
    prefix = HEADER + b'u-1,a@example.com,"'
    cell = bytearray(b"x" * (3 * READ_SIZE))
    for boundary in (READ_SIZE, 2 * READ_SIZE):
        first_quote = boundary - 1 - len(prefix)
        cell[first_quote : first_quote + 2] = b'""'
    content = prefix + bytes(cell) + b"\n" + SMUGGLED + b'"\nu-2,b@example.com,Two\n'
    assert outcome(parse(content, 1000)) == [(2, ErrorCode.RECORD_TOO_LARGE), (5, "u-2")]


def test_a_huge_multiline_cell_is_skipped_in_bounded_memory() -> None:
    content = HEADER + b'u-1,a@example.com,"' + (b"y" * 1000 + b"\n") * 20_000 + b'"\nu-2,b@example.com,Two\n'
    tracemalloc.start()
    try:
        records = parse(content, RECORD_LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome(records) == [(2, ErrorCode.RECORD_TOO_LARGE), (20_003, "u-2")]
    # The 20 MB cell is never held: the reader's field (4 bytes a character, its buffer grown by doubling) stops
    # at the limit, and the lines after it are skipped one at a time.
    assert peak < 20 * RECORD_LIMIT


# ------------------------------------------------------------- the quoting states against csv.reader itself

ALPHABET = ("a", ",", '"', "\r")
LINES = ["".join(chars) for size in range(7) for chars in itertools.product(ALPHABET, repeat=size)]


def reader_goes_on(line: str, starts_quoted: bool) -> bool:
    """Whether csv.reader(strict=True) reads past `line` for the same record."""
    opening = ['"\n'] if starts_quoted else []
    reader = csv.reader(iter([*opening, line + "\n", "next\n"]), strict=True)
    with contextlib.suppress(csv.Error):  # an error ends the record where the reader stopped
        next(reader)
    return reader.line_num > len(opening) + 1


@pytest.mark.parametrize("starts_quoted", [False, True])
def test_quote_states_agree_with_csv_reader_on_every_short_line(starts_quoted: bool) -> None:
    start = _QUOTED if starts_quoted else 0  # 0: at a cell's start, as at a record's start
    disagreements = [
        line
        for line in LINES
        if (_csv_quote_state(line.encode(), start) == _QUOTED) != reader_goes_on(line, starts_quoted)
    ]
    assert disagreements == []


@pytest.mark.parametrize("starts_quoted", [False, True])
def test_quote_states_carry_across_pieces_of_a_line(starts_quoted: bool) -> None:
    start = _QUOTED if starts_quoted else 0
    for line in (text.encode() for text in LINES):
        whole = _csv_quote_state(line, start)
        for cut in range(len(line) + 1):
            in_pieces = _csv_quote_state(line[cut:], _csv_quote_state(line[:cut], start))
            assert (in_pieces == _QUOTED) == (whole == _QUOTED), (line, cut)


# ----------------------------------------------- a record of many short lines, each cell small (issue 8, item 8)
# Lines that start with '",' and end with ',"' close the quoted cell the previous line left open, add empty cells
# and open another one: every line is short and every cell is small, so neither the line limit nor csv's field
# limit ever stops the record, yet it never ends. The record limit has to hold while such a record is read.

DEFAULT_LIMIT = 1_048_576
OPEN_RECORD = b'u-1,a@example.com,"start\n'
CROSS_LINE = b'",,,,,,"\n'  # two lines of it hold five empty cells and one quoted line break
AFTER = b'end"\nu-2,b@example.com,Two\nu-3,c@example.com,Three\n'


class PiecesStream(io.RawIOBase):
    """A stream that produces its content as it is read, so that only the parser's own memory is measured."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        while len(self._pending) < max(size, 1):
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._pending += piece
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def cross_line_file(cross_lines: int) -> Iterator[bytes]:
    yield HEADER + OPEN_RECORD
    block = CROSS_LINE * 4096
    for _ in range(cross_lines // 4096):
        yield block
    yield CROSS_LINE * (cross_lines % 4096)
    yield AFTER


def test_a_record_kept_open_by_cross_line_quotes_stops_at_the_limit_in_constant_memory() -> None:
    cross_lines = 16 * 1024 * 1024 // len(CROSS_LINE)  # 16 MiB: twice the memory bound below
    end_line = 2 + cross_lines + 1
    tracemalloc.start()
    try:
        records = list(
            iter_source_records(
                PiecesStream(cross_line_file(cross_lines)),  # type: ignore[arg-type]
                Format.CSV,
                Resource.USERS,
                max_record_bytes=DEFAULT_LIMIT,
            )
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome(records) == [(2, ErrorCode.RECORD_TOO_LARGE), (end_line + 1, "u-2"), (end_line + 2, "u-3")]
    assert [record.index for record in records] == [1, 2, 3]
    assert records[0].raw is not None and records[0].raw.startswith("u-1,a@example.com")
    # The record is dropped once it passes 1 MiB: what csv.reader holds of it by then is its list of cells (8 bytes
    # a cell, 6 cells in 9 bytes here: 5.6 MB), and the 15 MiB after it are skipped without being kept.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("cross_lines", [10, 1_000])
def test_a_record_under_the_limit_spanning_many_lines_is_read(cross_lines: int) -> None:
    content = HEADER + b'u-1,a@example.com,"' + b"a line\n" * cross_lines + b'end"\nu-2,b@example.com,Two\n'
    records = parse(content, 100_000)
    assert outcome(records) == [(2, "u-1"), (cross_lines + 3, "u-2")]
    assert records[0].data is not None and records[0].data["name"].count("\n") == cross_lines


def test_the_limit_counts_the_whole_record_not_one_line_or_one_cell() -> None:
    lines = 200  # 200 lines of 9 bytes: about 1,800 bytes in cells of at most 2 bytes
    content = HEADER + OPEN_RECORD + CROSS_LINE * lines + AFTER
    assert outcome(parse(content, 1_000)) == [(2, ErrorCode.RECORD_TOO_LARGE), (lines + 4, "u-2"), (lines + 5, "u-3")]
    assert outcome(parse(content, 100_000)) == [(2, ErrorCode.INVALID_CSV_ROW), (lines + 4, "u-2"), (lines + 5, "u-3")]


def test_a_record_left_open_to_the_end_of_the_file_is_one_error() -> None:
    content = HEADER + b"u-0,z@example.com,Zero\n" + OPEN_RECORD + CROSS_LINE * 1_000
    assert outcome(parse(content, 1_000)) == [(2, "u-0"), (3, ErrorCode.RECORD_TOO_LARGE)]


def test_records_after_several_oversized_ones_keep_their_line_numbers() -> None:
    record = OPEN_RECORD + CROSS_LINE * 300 + b'end"\n'
    content = HEADER + record + b"u-2,b@example.com,Two\n" + record + b"u-3,c@example.com,Three\n"
    assert outcome(parse(content, 1_000)) == [
        (2, ErrorCode.RECORD_TOO_LARGE),
        (304, "u-2"),
        (305, ErrorCode.RECORD_TOO_LARGE),
        (607, "u-3"),
    ]


def test_the_skipping_shortcut_only_passes_lines_that_stay_in_a_quoted_cell() -> None:
    # Sound on every short line (what it matches, the reader would read past), and it covers the hostile shapes.
    for line in (text.encode() for text in LINES):
        if _STAYS_QUOTED.fullmatch(line):
            assert _csv_quote_state(line, _QUOTED) == _QUOTED, line
    for line in (b'",,,,,,"', b'","', b'",a,b,"', b'x""",,"q","', b'""'):
        assert _STAYS_QUOTED.fullmatch(line), line


SKIP_CONTENT = (
    b'u-1,a@example.com,"start\n'  # line 1: the record that will be skipped opens a quoted cell
    + b'",,,,"\n' * 7
    + b'x""y",a,"b\rc","\n'  # a doubled quote, a quoted cell with a carriage return inside
    + b'",ab"c,"\n'  # a quote inside an unquoted cell: only the exact states know it stays quoted
    + b"y" * 40  # a long line inside the cell
    + b"\n"
    + b'end",,x\n'  # line 12 ends the record
    + b"u-2,b@example.com,Two\n"
    + b'",,"\n'
)


def reference_after_skip(content: bytes) -> tuple[int, list[bytes]]:
    lines = content.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    skipped = 0
    for line in lines[1:]:
        skipped += 1
        if not _continues_quoted_cell(line):
            break
    return skipped, lines[1 + skipped :]


def split_and_skip(content: bytes, piece: int, max_line_bytes: int) -> tuple[int, list[bytes | _OversizedLine]]:
    lines = _split_lines(
        (content[i : i + piece] for i in range(0, len(content), piece)), max_line_bytes, track_csv_quotes=True
    )
    next(lines)  # line 1, which ends inside its quoted cell
    skipped = lines.send(_SKIP_QUOTED_RECORD)
    assert isinstance(skipped, _SkippedLines)
    rest = list(lines)
    assert not any(isinstance(line, _SkippedLines) for line in rest)
    return skipped.count, rest  # type: ignore[return-value]


@pytest.mark.parametrize("max_line_bytes", [1_000, 30])
def test_skipping_the_rest_of_a_record_finds_its_end_however_the_input_is_cut(max_line_bytes: int) -> None:
    expected_count, expected_rest = reference_after_skip(SKIP_CONTENT)
    assert expected_count == 11
    for piece in range(1, len(SKIP_CONTENT) + 1):
        count, rest = split_and_skip(SKIP_CONTENT, piece, max_line_bytes)
        assert count == expected_count, piece
        assert [line if isinstance(line, bytes) else "oversized" for line in rest] == expected_rest, piece


@pytest.mark.parametrize("piece", [1, 5, 64, 10_000])
def test_skipping_to_the_end_of_the_file_counts_a_last_line_without_a_break(piece: int) -> None:
    content = b'u-1,a@example.com,"start\n' + b'",,"\n' * 20 + b'",,'
    assert split_and_skip(content, piece, 1_000) == (21, [])
    assert split_and_skip(content + b"\n", piece, 1_000) == (21, [])
