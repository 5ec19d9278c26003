"""NDJSON: one JSON object per line; blank lines are skipped but counted, a bad line is an error of its record."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing.common import SourceRecord, _json_type_name, _raw_text, _too_large
from bulkio.domain.parsing.lines import _OversizedLine, _split_lines


def _ndjson_records(chunks: Iterator[bytes], max_record_bytes: int) -> Iterator[SourceRecord]:
    index = 0
    for line_number, line in enumerate(_split_lines(chunks, max_record_bytes), 1):
        if not isinstance(line, bytes):
            assert isinstance(line, _OversizedLine), "only a send to _split_lines answers _SkippedLines"
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
