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
from bulkio.domain.parsing import _QUOTED, READ_SIZE, SourceRecord, _csv_quote_state, iter_source_records
from bulkio.domain.resources import Format, Resource

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
