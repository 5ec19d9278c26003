"""Chunk objects: records with their line numbers survive encode/decode, parse errors included; chunk messages."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from bulkio.domain.chunks import ChunkEntry, ChunkMessage, chunk_key, decode_chunk, encode_chunks
from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing import SourceRecord
from bulkio.domain.resources import ImportTarget


def encode_chunk(records: Iterable[SourceRecord]) -> bytes:
    """The records as one chunk object, as the chunker writes it."""
    (chunk,) = encode_chunks(records, max_records=1000, max_bytes=1 << 20)
    return chunk.body


def test_chunk_key_numbers_chunks_with_six_digits() -> None:
    assert chunk_key("job-1", 7) == "chunks/job-1/000007.ndjson"
    assert chunk_key("job-1", 123456) == "chunks/job-1/123456.ndjson"


def test_records_round_trip_with_index_and_line() -> None:
    records = [
        SourceRecord(1, 2, {"email": "a@example.com", "name": "Ann", "active": True}, None, None),
        SourceRecord(2, 5, {"email": "b@example.com", "tags": ["x", "y"], "n": None}, None, None),
    ]

    entries = list(decode_chunk(encode_chunk(records)))

    assert [(entry.index, entry.line, entry.record, entry.error) for entry in entries] == [
        (1, 2, records[0].data, None),
        (2, 5, records[1].data, None),
    ]
    assert [orjson.loads(entry.raw_json) for entry in entries] == [records[0].data, records[1].data]


def test_parse_errors_round_trip_with_their_raw_text() -> None:
    error = RecordError(ErrorCode.INVALID_JSON, None, "the line is not valid JSON: check the quotes", "{oops")
    record = SourceRecord(3, 9, None, error, '{"email": "broken')

    (entry,) = decode_chunk(encode_chunk([record]))

    assert entry == ChunkEntry(3, 9, None, error, orjson.dumps('{"email": "broken').decode())
    assert orjson.loads(entry.raw_json) == '{"email": "broken'


def test_a_parse_error_without_raw_text_or_line_decodes_to_null() -> None:
    error = RecordError(ErrorCode.INVALID_CSV_ROW, "email", "the row cannot be read as CSV")
    record = SourceRecord(4, None, None, error, None)

    (entry,) = decode_chunk(encode_chunk([record]))

    assert entry.line is None
    assert entry.error == error
    assert entry.raw_json == "null"


def test_a_chunk_is_one_json_object_per_line_in_record_order() -> None:
    records = [SourceRecord(n, n + 1, {"id": str(n)}, None, None) for n in range(1, 4)]

    data = encode_chunk(records)

    lines = data.splitlines()
    assert data.endswith(b"\n")
    assert [orjson.loads(line) for line in lines] == [
        {"i": 1, "l": 2, "r": {"id": "1"}},
        {"i": 2, "l": 3, "r": {"id": "2"}},
        {"i": 3, "l": 4, "r": {"id": "3"}},
    ]


def test_mixed_chunk_keeps_order_and_skips_blank_lines() -> None:
    error = RecordError(ErrorCode.RECORD_TOO_LARGE, None, "the record is over 1 MiB: split it")
    records = [
        SourceRecord(1, 2, {"id": "a"}, None, None),
        SourceRecord(2, 3, None, error, "x" * 10),
        SourceRecord(3, 40, {"id": "c"}, None, None),
    ]

    entries = list(decode_chunk(b"\n" + encode_chunk(records) + b"\n"))

    assert [(entry.index, entry.line) for entry in entries] == [(1, 2), (2, 3), (3, 40)]
    assert [entry.error is None for entry in entries] == [True, False, True]


def test_an_empty_chunk_has_no_entries() -> None:
    assert list(encode_chunks([], max_records=1000, max_bytes=1 << 20)) == []
    assert list(decode_chunk(b"")) == []


def test_a_chunk_message_names_its_chunk_object_and_leaves_out_what_it_does_not_know() -> None:
    announced = ChunkMessage.announcing("job-1", ImportTarget.USERS, 3, first=5, records=2)
    resent = ChunkMessage.announcing("job-1", ImportTarget.USERS, 3)

    assert orjson.loads(announced.to_json()) == {
        "job_id": "job-1",
        "resource": "users",
        "chunk": 3,
        "key": "chunks/job-1/000003.ndjson",
        "first": 5,
        "records": 2,
    }
    assert orjson.loads(resent.to_json()) == {
        "job_id": "job-1",
        "resource": "users",
        "chunk": 3,
        "key": "chunks/job-1/000003.ndjson",
    }
    assert ChunkMessage.model_validate_json(announced.to_json()) == announced
