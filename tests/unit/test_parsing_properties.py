"""Properties of the streaming parsers against reference readers of whole texts.

Each generated file is read by the parser in pieces of random sizes, and compared with what the reference reader
(orjson on the whole text, csv.reader(strict=True), orjson per line, gzip) makes of the whole input at once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from bulkio.domain.errors import ErrorCode
from bulkio.domain.parsing import SourceRecord, UnreadableFile
from bulkio.domain.parsing.gzip import _gunzip
from bulkio.domain.resources import Format, Resource
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.parsing import LIMITS, iter_source_records

Draw = Callable[[st.SearchStrategy[Any]], Any]

properties = settings(max_examples=100, deadline=None)


class PiecesStream:
    """Returns the content in pieces of the given sizes (cycled), whatever size is asked for."""

    def __init__(self, content: bytes, sizes: list[int]) -> None:
        self.content = content
        self.sizes = sizes
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        piece_size = self.sizes[self.reads % len(self.sizes)]
        self.reads += 1
        piece, self.content = self.content[:piece_size], self.content[piece_size:]
        return piece


piece_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=12)


def read(content: bytes, sizes: list[int], fmt: Format, **options: Any) -> list[SourceRecord]:
    stream = PiecesStream(content, sizes)
    return list(iter_source_records(stream, fmt, Resource.COMMENTS, **options))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- JSON values

any_character = st.characters(codec="utf-8", exclude_characters="\x00")  # UTF-8 files: no lone surrogates
# Text rich in what a framer must not take for structure: quotes, backslashes, brackets, braces, commas, line
# breaks, and any other character (astral ones included, which ASCII-only JSON writes as surrogate pairs).
tricky_text = st.text(st.sampled_from('"\\,[]{}:\n\r\t /') | any_character, max_size=8)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=6,
)
json_objects = st.dictionaries(tricky_text, json_values, max_size=4)


STRING_STYLES = ("minimal", "ascii", "ascii, escaped solidus")


class JsonWriter:
    """Writes values as JSON text, taking in turn the whitespace between tokens and the way strings are escaped
    from what was drawn for the file (drawing them once per file, not per token, keeps generation fast)."""

    def __init__(self, spaces: list[str], string_styles: list[str]) -> None:
        self.spaces = [space.encode() for space in spaces]
        self.string_styles = string_styles
        self.turn = 0

    def space(self) -> bytes:
        self.turn += 1
        return self.spaces[self.turn % len(self.spaces)]

    def string(self, text: str) -> bytes:
        self.turn += 1
        style = self.string_styles[self.turn % len(self.string_styles)]
        if style == "minimal":
            return orjson.dumps(text)
        escaped = json.dumps(text, ensure_ascii=True)
        return (escaped.replace("/", "\\/") if style == "ascii, escaped solidus" else escaped).encode()

    def value(self, value: Any) -> bytes:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            items = [self.space() + self.value(item) + self.space() for item in value]
            return b"[" + (b",".join(items) if items else self.space()) + b"]"
        if isinstance(value, dict):
            members = [
                self.space() + self.string(key) + self.space() + b":" + self.space() + self.value(item) + self.space()
                for key, item in value.items()
            ]
            return b"{" + (b",".join(members) if members else self.space()) + b"}"
        return orjson.dumps(value)


def json_writers(whitespace: st.SearchStrategy[str]) -> st.SearchStrategy[JsonWriter]:
    return st.builds(
        JsonWriter,
        st.lists(whitespace, min_size=1, max_size=7),
        st.lists(st.sampled_from(STRING_STYLES), min_size=1, max_size=3),
    )


# Between any tokens of a JSON array; between the tokens of an NDJSON line.
any_whitespace = st.sampled_from(["", "", " ", "\n", "\r\n", "\t", "  \n  ", "\n\n"])
line_whitespace = st.sampled_from(["", "", " ", "\t", "\r", "  "])


# -------------------------------------------------------------------------------------------------- JSON array


@st.composite
def json_arrays(draw: Draw) -> tuple[bytes, list[int]]:
    """A JSON array of (mostly) objects, and the line on which each element starts."""
    elements = draw(st.lists(json_objects | json_values, max_size=6))
    write = draw(json_writers(any_whitespace))
    text = bytearray(write.space() + b"[")
    starts: list[int] = []
    for position, element in enumerate(elements):
        text += write.space()
        starts.append(text.count(b"\n") + 1)
        text += write.value(element) + write.space()
        if position < len(elements) - 1:
            text += b","
    text += write.space() + b"]" + write.space()
    return bytes(text), starts


@properties
@given(json_arrays(), piece_sizes)
def test_json_array_records_are_the_elements_of_the_whole_array(
    array: tuple[bytes, list[int]], sizes: list[int]
) -> None:
    text, starts = array
    records = read(text, sizes, Format.JSON)
    elements = orjson.loads(text)
    assert len(records) == len(elements)
    for record, element, start in zip(records, elements, starts, strict=True):
        assert record.line == start
        if type(element) is dict:
            assert (record.data, record.error) == (element, None)
        else:
            assert record.data is None and record.error is not None
            assert record.error.code == ErrorCode.INVALID_JSON
    assert [record.index for record in records] == list(range(1, len(records) + 1))


@properties
@given(st.lists(json_objects, min_size=1, max_size=6), json_writers(any_whitespace), piece_sizes, st.integers(2, 200))
def test_json_array_elements_over_the_limit_are_too_large_and_the_others_read(
    elements: list[dict[str, Any]], write: JsonWriter, sizes: list[int], max_record_bytes: int
) -> None:
    rendered = [write.value(element) for element in elements]
    trailing = [write.space() for _ in elements]
    text = b"[" + b",".join(element + after for element, after in zip(rendered, trailing, strict=True)) + b"]"
    records = read(text, sizes, Format.JSON, max_record_bytes=max_record_bytes)
    assert len(records) == len(elements)
    for record, element, source, after in zip(records, elements, rendered, trailing, strict=True):
        too_large = record.data is None and record.error is not None and record.error.code == ErrorCode.RECORD_TOO_LARGE
        if len(source) > max_record_bytes:
            assert too_large
        elif len(source) + len(after) <= max_record_bytes:
            assert record.data == element
        else:  # the whitespace after the element counts or not, depending on where the reads cut the text
            assert too_large or record.data == element


# ---------------------------------------------------------------------------------------------------------- CSV

column_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
cell_text = st.text(st.sampled_from(',"\r\n ab') | any_character, max_size=10)


def render_cell(draw: Draw, cell: str) -> str:
    needs_quotes = any(special in cell for special in ',"\r\n')
    if needs_quotes or draw(st.booleans()):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_files(draw: Draw) -> str:
    header = draw(st.lists(column_names, min_size=1, max_size=4, unique=True))
    rows = draw(st.lists(st.lists(cell_text, min_size=len(header), max_size=len(header)), max_size=8))
    line_end = draw(st.sampled_from(["\n", "\r\n", "mixed"]))

    def end() -> str:
        return str(draw(st.sampled_from(["\n", "\r\n"]))) if line_end == "mixed" else line_end

    lines = [",".join(header)]
    for row in rows:
        lines.extend("" for _ in range(draw(st.integers(0, 1))))  # a blank line now and then
        lines.append(",".join(render_cell(draw, cell) for cell in row))
    text = "".join(line + end() for line in lines)
    return text if draw(st.booleans()) else text.removesuffix("\r\n").removesuffix("\n")


def reference_csv(text: str) -> list[tuple[int, dict[str, str | None]]]:
    """(start line, record) of each record csv.reader(strict=True) reads from the whole text, header and empty
    rows left out; lines are counted at '\\n' as in the file."""
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
    header = next(reader)
    records = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return records
        if any(row) and not (len(row) == 1 and not row[0].strip()):
            records.append((start, {name: cell or None for name, cell in zip(header, row, strict=True)}))


@properties
@given(csv_files(), piece_sizes)
def test_csv_records_are_those_of_csv_reader_on_the_whole_text(text: str, sizes: list[int]) -> None:
    records = read(text.encode(), sizes, Format.CSV)
    assert [(record.line, record.data) for record in records] == reference_csv(text)
    assert [record.index for record in records] == list(range(1, len(records) + 1))


# ------------------------------------------------------------------------------------------------------- NDJSON


BLANK_LINE = object()


@st.composite
def ndjson_files(draw: Draw) -> tuple[bytes, list[tuple[int, Any]]]:
    """NDJSON with blank lines, and the (line, value) of each line that holds one."""
    values = draw(st.lists(st.just(BLANK_LINE) | json_objects | json_values, min_size=1, max_size=10))
    write = draw(json_writers(line_whitespace))
    line_ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=1, max_size=3))
    text = bytearray()
    expected: list[tuple[int, Any]] = []
    for line_number, value in enumerate(values, 1):
        text += write.space()
        if value is not BLANK_LINE:
            expected.append((line_number, value))
            text += write.value(value) + write.space()
        text += line_ends[line_number % len(line_ends)]
    return bytes(text) if draw(st.booleans()) else bytes(text).rstrip(b"\r\n"), expected


@properties
@given(ndjson_files(), piece_sizes)
def test_ndjson_records_are_the_lines_parsed_one_by_one(
    file: tuple[bytes, list[tuple[int, Any]]], sizes: list[int]
) -> None:
    text, expected = file
    if not expected:
        with pytest.raises(UnreadableFile) as caught:
            read(text, sizes, Format.NDJSON)
        assert caught.value.code == "empty_file"
        return
    records = read(text, sizes, Format.NDJSON)
    assert [record.line for record in records] == [line for line, _ in expected]
    for record, (_, value) in zip(records, expected, strict=True):
        if type(value) is dict:
            assert (record.data, record.error) == (value, None)
        else:
            assert record.error is not None and record.error.code == ErrorCode.INVALID_JSON


# --------------------------------------------------------------------------------------------------------- gzip


@st.composite
def gzip_files(draw: Draw) -> tuple[bytes, bytes]:
    """(content, gzip file): the content repeated to cross the guard's output pieces, in one or more members."""
    content = draw(st.binary(max_size=300)) * draw(st.integers(1, 800))
    cuts = sorted(draw(st.lists(st.integers(0, len(content)), max_size=3)))
    members = [content[start:end] for start, end in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    return content, b"".join(gzip.compress(member, compresslevel=draw(st.integers(1, 9))) for member in members)


def pieces(content: bytes, sizes: list[int]) -> Iterator[bytes]:
    stream = PiecesStream(content, [size * 97 for size in sizes])  # bigger pieces: gzip files are bigger
    while piece := stream.read():
        yield piece


@properties
@given(gzip_files(), piece_sizes, st.floats(0, 2))
def test_the_gzip_guard_yields_the_content_or_refuses_it_past_the_size_limit(
    file: tuple[bytes, bytes], sizes: list[int], limit_ratio: float
) -> None:
    content, compressed = file
    max_decompressed_bytes = int(len(content) * limit_ratio)
    output = _gunzip(pieces(compressed, sizes), max_decompressed_bytes, LIMITS["max_compression_ratio"])
    if len(content) <= max_decompressed_bytes:
        assert b"".join(output) == content
    else:
        with pytest.raises(UnreadableFile) as caught:
            b"".join(output)
        assert caught.value.code == "decompressed_too_large"
