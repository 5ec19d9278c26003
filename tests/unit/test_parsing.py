"""Streaming decode and framing of import files."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zlib
from collections.abc import Iterator

import orjson
import pytest
from bulkio.domain.errors import ErrorCode
from bulkio.domain.parsing import SourceRecord, UnreadableFile, detect_format
from bulkio.domain.resources import Format, Resource

from tests.fixtures.parsing import iter_source_records


def parse(
    content: bytes,
    fmt: Format | None = None,
    resource: Resource = Resource.USERS,
    **options: object,
) -> list[SourceRecord]:
    return list(iter_source_records(io.BytesIO(content), fmt, resource, **options))  # type: ignore[arg-type]


def parse_until_unreadable(content: bytes, fmt: Format | None = None) -> tuple[list[SourceRecord], str]:
    records: list[SourceRecord] = []
    with pytest.raises(UnreadableFile) as caught:
        records.extend(iter_source_records(io.BytesIO(content), fmt, Resource.USERS))
    return records, caught.value.code


def summary(records: list[SourceRecord]) -> list[tuple[int, int | None, object]]:
    return [(r.index, r.line, r.data if r.error is None else r.error.code) for r in records]


class TrickleStream:
    """Returns at most a few bytes per read, like a slow network body."""

    def __init__(self, content: bytes, piece: int = 7) -> None:
        self.content = content
        self.piece = piece

    def read(self, size: int = -1) -> bytes:
        piece, self.content = self.content[: self.piece], self.content[self.piece :]
        return piece


# ------------------------------------------------------------------------------------------ detect_format


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("users.csv", Format.CSV),
        ("users.CSV.gz", Format.CSV),
        ("a.ndjson", Format.NDJSON),
        ("a.jsonl.gz", Format.NDJSON),
        ("dir/a.json", Format.JSON),
    ],
)
def test_detect_format_by_extension_wins_over_content(filename: str, expected: Format) -> None:
    assert detect_format(filename, b"whatever") is expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'  \n[{"a": 1}]', Format.JSON),
        (b'{"a": 1}\n', Format.NDJSON),
        (b"\xef\xbb\xbf{}", Format.NDJSON),
        (b"id,email\n", Format.CSV),
        (gzip.compress(b"[{}]"), Format.JSON),
    ],
)
def test_detect_format_sniffs_content_when_the_name_does_not_tell(head: bytes, expected: Format) -> None:
    assert detect_format("upload.txt", head) is expected
    assert detect_format(None, head) is expected


@pytest.mark.parametrize("head", [b"", b"  \n ", b"\xff\xfei\x00d\x00", b"PK\x03\x04\x00\x00"])
def test_detect_format_gives_up_on_empty_or_binary_heads(head: bytes) -> None:
    assert detect_format(None, head) is None


def test_binary_content_is_an_unknown_format() -> None:
    _, code = parse_until_unreadable(b"\xff\xfei\x00d\x00,\x00e\x00")
    assert code == "unknown_format"


# ----------------------------------------------------------------------------------- encoding and empty


def test_gzip_is_detected_by_content_not_name() -> None:
    records = parse(gzip.compress(b'{"id": "u1"}\n'), filename="users.ndjson")
    assert summary(records) == [(1, 1, {"id": "u1"})]


def test_concatenated_gzip_members_are_read_in_full() -> None:
    content = gzip.compress(b'{"id": "u1"}\n') + gzip.compress(b'{"id": "u2"}\n')
    assert summary(parse(content)) == [(1, 1, {"id": "u1"}), (2, 2, {"id": "u2"})]


def test_gzip_larger_than_a_read_is_streamed_through_small_reads() -> None:
    lines = [orjson.dumps({"id": f"u{i}", "pad": "x" * 50}) for i in range(5000)]
    stream = TrickleStream(gzip.compress(b"\n".join(lines)), piece=1000)
    records = list(iter_source_records(stream, Format.NDJSON, Resource.USERS))  # type: ignore[arg-type]
    assert len(records) == 5000
    assert records[-1].data == {"id": "u4999", "pad": "x" * 50}


@pytest.mark.parametrize(
    "content",
    [gzip.compress(b'{"id": "u1"}\n')[:-6], b"\x1f\x8bnot gzip at all", gzip.compress(b"{}") + b"junk"],
)
def test_corrupt_or_truncated_gzip_is_unreadable(content: bytes) -> None:
    _, code = parse_until_unreadable(content, Format.NDJSON)
    assert code == "invalid_gzip"


def test_utf8_bom_is_stripped() -> None:
    assert summary(parse(b"\xef\xbb\xbfid,email\nu1,a@b.co\n")) == [(1, 2, {"id": "u1", "email": "a@b.co"})]


@pytest.mark.parametrize("content", [b"", b"   \n\r\n  ", gzip.compress(b""), b"\xef\xbb\xbf\n"])
@pytest.mark.parametrize("fmt", [None, Format.CSV, Format.NDJSON, Format.JSON])
def test_empty_file_is_unreadable(content: bytes, fmt: Format | None) -> None:
    _, code = parse_until_unreadable(content, fmt)
    assert code == "empty_file"


def test_nothing_is_read_before_the_first_record_is_asked_for() -> None:
    stream = TrickleStream(b"")
    records = iter_source_records(stream, None, Resource.USERS)  # type: ignore[arg-type]
    with pytest.raises(UnreadableFile):
        next(records)


def test_reads_of_a_few_bytes_give_the_same_records() -> None:
    content = b'[\n {"id": "a\\"b"},\n {"id": "c", "tags": ["x", "]"]}\n]'
    trickled = list(iter_source_records(TrickleStream(content, 3), None, Resource.USERS))  # type: ignore[arg-type]
    assert summary(trickled) == summary(parse(content))
    assert summary(trickled) == [(1, 2, {"id": 'a"b'}), (2, 3, {"id": "c", "tags": ["x", "]"]})]


# ------------------------------------------------------------------------------------------------ NDJSON


def test_ndjson_skips_blank_lines_but_counts_them_and_accepts_crlf() -> None:
    content = b'{"id": "u1"}\r\n\r\n   \n{"id": "u2"}\r\n'
    assert summary(parse(content)) == [(1, 1, {"id": "u1"}), (2, 4, {"id": "u2"})]


def test_ndjson_bad_lines_are_record_errors_and_the_file_goes_on() -> None:
    content = b'{"id": "u1"}\n{"id": \n[1, 2]\n"text"\n{"id": "\xff"}\n{"id": "u2"}'
    records = parse(content)
    assert summary(records) == [
        (1, 1, {"id": "u1"}),
        (2, 2, ErrorCode.INVALID_JSON),
        (3, 3, ErrorCode.INVALID_JSON),
        (4, 4, ErrorCode.INVALID_JSON),
        (5, 5, ErrorCode.INVALID_JSON),
        (6, 6, {"id": "u2"}),
    ]
    syntax, array, string, utf8 = (r.error for r in records[1:5])
    assert "each line must be one complete JSON object" in syntax.message  # type: ignore[union-attr]
    assert "must be a JSON object, got array" in array.message  # type: ignore[union-attr]
    assert "got string" in string.message  # type: ignore[union-attr]
    assert "not valid UTF-8" in utf8.message  # type: ignore[union-attr]
    assert records[1].raw == '{"id":'
    assert records[2].raw == "[1, 2]"


def test_ndjson_line_too_large_is_skipped_without_stopping() -> None:
    content = b'{"id": "u1"}\n{"pad": "' + b"x" * 5000 + b'"}\n{"id": "u2"}\n'
    records = list(
        iter_source_records(TrickleStream(content, 100), Format.NDJSON, Resource.USERS, max_record_bytes=1000)  # type: ignore[arg-type]
    )
    assert summary(records) == [(1, 1, {"id": "u1"}), (2, 2, ErrorCode.RECORD_TOO_LARGE), (3, 3, {"id": "u2"})]
    assert records[1].raw is not None and records[1].raw.startswith('{"pad": "xxx')


def test_ndjson_streams_in_constant_memory() -> None:
    record_count = 60_000  # 5 MB of input against a 1 MB bound: memory would show it
    line = b'{"id": "u%07d", "email": "user@example.com", "name": "Some Body", "active": true}\n'

    class GeneratedStream:
        def __init__(self) -> None:
            self.pieces: Iterator[bytes] = (line % i for i in range(record_count))
            self.size = 0

        def read(self, size: int) -> bytes:
            piece = b"".join(next(self.pieces, b"") for _ in range(size // len(line) or 1))
            self.size += len(piece)
            return piece

    stream = GeneratedStream()
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_source_records(stream, Format.NDJSON, Resource.USERS))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == record_count
    assert stream.size > 4_500_000
    assert peak < 1_000_000, f"peak {peak / 1e6:.2f} MB"


# --------------------------------------------------------------------------------------------------- CSV


def test_csv_header_is_line_one_and_rows_follow() -> None:
    content = b" id , email ,name\r\nu1,a@b.co,Ann\r\nu2,c@d.co,Bob\r\n"
    assert summary(parse(content)) == [
        (1, 2, {"id": "u1", "email": "a@b.co", "name": "Ann"}),
        (2, 3, {"id": "u2", "email": "c@d.co", "name": "Bob"}),
    ]


def test_csv_quoted_fields_may_span_lines_and_records_keep_their_start_line() -> None:
    content = b'id,name\nu1,"Ann\nof ""Green"" Gables, PEI"\n\nu2,Bob\n'
    assert summary(parse(content)) == [
        (1, 2, {"id": "u1", "name": 'Ann\nof "Green" Gables, PEI'}),
        (2, 5, {"id": "u2", "name": "Bob"}),
    ]


def test_csv_header_only_has_no_records() -> None:
    assert parse(b"id,email,name\n") == []


def test_csv_empty_cells_are_null_columns_left_out_absent_and_unknown_columns_kept() -> None:
    # README, update semantics: an empty cell is null, a column the header lacks is left out of the record.
    assert summary(parse(b"id,email,nickname\n,a@b.co,annie\n")) == [
        (1, 2, {"id": None, "email": "a@b.co", "nickname": "annie"})
    ]
    assert parse(b"id,active\nu1,\n")[0].data == {"id": "u1", "active": None}


def test_csv_empty_rows_are_skipped() -> None:
    assert summary(parse(b"id,name\n\n,\n  \nu1,Ann\n")) == [(1, 5, {"id": "u1", "name": "Ann"})]


@pytest.mark.parametrize("row", [b"u1", b"u1,Ann,extra,more"])
def test_csv_row_with_wrong_cell_count_is_a_record_error(row: bytes) -> None:
    records = parse(b"id,name,email\n" + row + b"\nu2,Bob,b@c.de\n")
    assert summary(records) == [
        (1, 2, ErrorCode.INVALID_CSV_ROW),
        (2, 3, {"id": "u2", "name": "Bob", "email": "b@c.de"}),
    ]
    cells = row.count(b",") + 1
    assert f"row has {cells} cells but the header has 3: check for an unquoted comma" in records[0].error.message  # type: ignore[union-attr]
    assert records[0].raw == row.decode()


@pytest.mark.parametrize("header", [b"id,email,id\n", b"id,,email\n", b"id,email,\n"])
def test_csv_duplicate_or_empty_header_names_are_unreadable(header: bytes) -> None:
    _, code = parse_until_unreadable(header + b"1,2,3\n", Format.CSV)
    assert code == "invalid_csv_header"


def test_csv_invalid_utf8_is_an_error_of_that_record_only() -> None:
    records = parse(b'id,name\nu1,"An\xffn\nsecond line"\nu2,Bob\n')
    assert summary(records) == [(1, 2, ErrorCode.INVALID_CSV_ROW), (2, 4, {"id": "u2", "name": "Bob"})]
    assert "UTF-8" in records[0].error.message  # type: ignore[union-attr]


@pytest.mark.parametrize("bad_row", [b"u1,a\rb", b'u1,"Ann"ie'])
def test_csv_malformed_quoting_is_an_error_of_that_record_only(bad_row: bytes) -> None:
    records = parse(b"id,name\n" + bad_row + b"\nu2,Bob\n")
    assert summary(records) == [(1, 2, ErrorCode.INVALID_CSV_ROW), (2, 3, {"id": "u2", "name": "Bob"})]
    assert "close every quote" in records[0].error.message  # type: ignore[union-attr]


def test_csv_quote_left_open_does_not_swallow_the_rows_after_it_silently() -> None:
    assert summary(parse(b'id,name\nu1,"Ann\nu2,Bob\n')) == [(1, 2, ErrorCode.INVALID_CSV_ROW)]


def test_csv_booleans_are_coerced_for_boolean_columns_only() -> None:
    content = b"id,active,name\nu1,TRUE,true\nu2,false,x\nu3,yes,x\n"
    assert [r.data for r in parse(content)] == [
        {"id": "u1", "active": True, "name": "true"},
        {"id": "u2", "active": False, "name": "x"},
        {"id": "u3", "active": "yes", "name": "x"},
    ]


def test_csv_tags_are_split_on_pipes_or_read_as_json_arrays() -> None:
    content = b'slug,tags\na, news | tech ||\nb,"[""x"", ""y, z""]"\nc,[broken\n'
    assert [r.data for r in parse(content, resource=Resource.ARTICLES)] == [
        {"slug": "a", "tags": ["news", "tech"]},
        {"slug": "b", "tags": ["x", "y, z"]},
        {"slug": "c", "tags": "[broken"},
    ]


def test_csv_tags_are_not_coerced_for_other_resources() -> None:
    assert parse(b"id,tags\nu1,a|b\n")[0].data == {"id": "u1", "tags": "a|b"}


def test_csv_line_too_large_is_skipped_without_stopping() -> None:
    content = b"id,name\nu1,Ann\nu2," + b"x" * 5000 + b"\nu3,Cid\n"
    records = parse(content, max_record_bytes=1000)
    assert summary(records) == [
        (1, 2, {"id": "u1", "name": "Ann"}),
        (2, 3, ErrorCode.RECORD_TOO_LARGE),
        (3, 4, {"id": "u3", "name": "Cid"}),
    ]


def test_csv_multiline_record_too_large() -> None:
    content = b'id,name\nu1,"' + b"x" * 600 + b"\n" + b"y" * 600 + b'"\nu2,Bob\n'
    records = parse(content, max_record_bytes=1000)
    assert summary(records) == [(1, 2, ErrorCode.RECORD_TOO_LARGE), (2, 4, {"id": "u2", "name": "Bob"})]


# -------------------------------------------------------------------------------------------- JSON array


def test_pretty_printed_array_records_start_where_their_object_starts() -> None:
    content = orjson.dumps([{"id": "u1", "tags": ["a", "b"]}, {"id": "u2", "n": {"x": 1}}], option=orjson.OPT_INDENT_2)
    assert summary(parse(content)) == [
        (1, 2, {"id": "u1", "tags": ["a", "b"]}),
        (2, 9, {"id": "u2", "n": {"x": 1}}),
    ]


def test_minified_array_records_are_all_on_line_one() -> None:
    content = b'[{"id":"u1"},{"id":"u2","text":"},{\\"x\\":[1,2]"}]'
    assert summary(parse(content)) == [(1, 1, {"id": "u1"}), (2, 1, {"id": "u2", "text": '},{"x":[1,2]'})]


def test_malformed_elements_mid_array_are_record_errors_and_the_scan_goes_on() -> None:
    content = b'[\n{"id": "u1"},\n{"id": },\n42,\n{"a": 1} {"b": 2},\n,\n{"id": "u2"}\n]\n'
    records = parse(content)
    assert summary(records) == [
        (1, 2, {"id": "u1"}),
        (2, 3, ErrorCode.INVALID_JSON),
        (3, 4, ErrorCode.INVALID_JSON),
        (4, 5, ErrorCode.INVALID_JSON),
        (5, 6, ErrorCode.INVALID_JSON),
        (6, 7, {"id": "u2"}),
    ]
    assert "got number" in records[2].error.message  # type: ignore[union-attr]
    assert "remove the extra comma" in records[4].error.message  # type: ignore[union-attr]
    assert records[1].raw == '{"id": }'


def test_empty_array_has_no_records() -> None:
    assert parse(b" [ ] \n") == []


def test_unterminated_array_fails_after_its_complete_elements() -> None:
    records, code = parse_until_unreadable(b'[{"id": "u1"},\n{"id": "u2"},\n{"id": "u3"')
    assert code == "unterminated_json_array"
    assert summary(records) == [(1, 1, {"id": "u1"}), (2, 2, {"id": "u2"})]


def test_top_level_value_other_than_an_array_is_unreadable() -> None:
    _, code = parse_until_unreadable(b'{"id": "u1"}', Format.JSON)
    assert code == "not_a_json_array"


def test_trailing_data_after_the_array_is_unreadable_but_whitespace_is_fine() -> None:
    assert summary(parse(b'[{"id": "u1"}]\n\n  ')) == [(1, 1, {"id": "u1"})]
    _, code = parse_until_unreadable(b'[{"id": "u1"}] [{"id": "u2"}]')
    assert code == "trailing_data"


def test_json_element_too_large_is_skipped_without_stopping() -> None:
    big = b'{"id": "big", "pad": "' + b"x" * 5000 + b'", "nested": {"a": [1]}}'
    content = b'[\n{"id": "u1"},\n' + big + b',\n{"id": "u2"}\n]'
    records = list(
        iter_source_records(TrickleStream(content, 100), Format.JSON, Resource.USERS, max_record_bytes=1000)  # type: ignore[arg-type]
    )
    assert summary(records) == [(1, 2, {"id": "u1"}), (2, 3, ErrorCode.RECORD_TOO_LARGE), (3, 4, {"id": "u2"})]


def test_json_elements_split_across_reads_keep_escapes_and_lines() -> None:
    elements = [{"id": f"u{i}", "text": 'quote " backslash \\ brace } bracket ] comma ,'} for i in range(300)]
    content = orjson.dumps(elements, option=orjson.OPT_INDENT_2)
    for piece in (1, 2, 5, 64):
        records = list(iter_source_records(TrickleStream(content, piece), None, Resource.USERS))  # type: ignore[arg-type]
        assert [r.data for r in records] == elements
        assert [r.line for r in records] == [2 + 4 * i for i in range(300)]


# ------------------------------------------------------------------------------------ limits against bombs


class GzipBombStream:
    """`size` bytes of `fill` gzip-compressed on the fly (ratio about 1000), never holding them in memory."""

    def __init__(self, size: int, fill: bytes = b"\x00") -> None:
        self.pieces = self._compress(size, fill)
        self.buffer = b""
        self.read_bytes = 0

    @staticmethod
    def _compress(size: int, fill: bytes) -> Iterator[bytes]:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip wrapper
        block = fill * (1024 * 1024)
        for _ in range(size // len(block)):
            yield compressor.compress(block)
        yield compressor.flush()

    def read(self, size: int = -1) -> bytes:
        while len(self.buffer) < size and (piece := next(self.pieces, None)) is not None:
            self.buffer += piece
        piece, self.buffer = self.buffer[:size], self.buffer[size:]
        self.read_bytes += len(piece)
        return piece


def test_gzip_bomb_fails_fast_on_its_compression_ratio_with_little_memory() -> None:
    stream = GzipBombStream(200 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableFile) as caught:
            for _ in iter_source_records(stream, Format.NDJSON, Resource.USERS):  # type: ignore[arg-type]
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == "compression_ratio_too_high"
    assert "MAX_COMPRESSION_RATIO" in caught.value.message
    assert "100\u00d7" in caught.value.message
    assert stream.read_bytes < 1024 * 1024  # stopped after about 10 MiB of output, long before the 200 MiB
    assert peak < 50 * 1024 * 1024


def test_compression_ratio_is_not_judged_on_small_files() -> None:
    lines = b"".join(orjson.dumps({"id": f"u{i}", "pad": "x" * 900_000}) + b"\n" for i in range(8))
    content = gzip.compress(lines)
    assert len(content) * 100 < len(lines) < 10 * 1024 * 1024  # expands over 100x, but stays under 10 MiB
    assert [r.data["id"] for r in parse(content) if r.data] == [f"u{i}" for i in range(8)]


@pytest.mark.parametrize(("ratio", "code"), [(100, "compression_ratio_too_high"), (10_000, "empty_file")])
def test_compression_ratio_limit_is_configurable(ratio: int, code: str) -> None:
    stream = GzipBombStream(20 * 1024 * 1024, fill=b"\n")  # 20 MiB of blank lines: read in full if allowed
    with pytest.raises(UnreadableFile) as caught:
        list(iter_source_records(stream, Format.NDJSON, Resource.USERS, max_compression_ratio=ratio))  # type: ignore[arg-type]
    assert caught.value.code == code


def test_gzip_expanding_past_the_decompressed_size_cap_is_unreadable() -> None:
    lines = b"".join(orjson.dumps({"id": f"u{i}", "pad": "x" * 50}) + b"\n" for i in range(5000))
    with pytest.raises(UnreadableFile) as caught:
        parse(gzip.compress(lines), Format.NDJSON, max_decompressed_bytes=100_000)
    assert caught.value.code == "decompressed_too_large"
    assert "100000 bytes" in caught.value.message
    assert "MAX_DECOMPRESSED_BYTES" in caught.value.message


def test_normal_gzip_within_the_limits_parses() -> None:
    lines = b"".join(orjson.dumps({"id": f"u{i}", "pad": "x" * 50}) + b"\n" for i in range(5000))
    records = parse(gzip.compress(lines), Format.NDJSON, max_decompressed_bytes=len(lines))
    assert len(records) == 5000
    assert records[-1].data == {"id": "u4999", "pad": "x" * 50}


def test_more_records_than_the_limit_is_unreadable_after_the_limit() -> None:
    content = b"".join(orjson.dumps({"id": f"u{i}"}) + b"\n" for i in range(4))
    assert len(parse(content, Format.NDJSON, max_records=4)) == 4
    records: list[SourceRecord] = []
    with pytest.raises(UnreadableFile) as caught:
        records.extend(iter_source_records(io.BytesIO(content), Format.NDJSON, Resource.USERS, max_records=3))
    assert [r.index for r in records] == [1, 2, 3]
    assert caught.value.code == "too_many_records"
    assert "MAX_RECORDS_PER_JOB" in caught.value.message
