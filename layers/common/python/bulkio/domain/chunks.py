"""Chunk objects: at most CHUNK_RECORDS normalized records with their source line numbers, one JSON per line.

An entry is `{"i": index, "l": line, "r": record}` or, for a record that could not be parsed,
`{"i": index, "l": line, "e": {"code", "field", "message", "value"}, "raw": source text}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing import SourceRecord


def chunk_key(job_id: str, chunk_no: int) -> str:
    return f"chunks/{job_id}/{chunk_no:06d}.ndjson"


def encode_entry(record: SourceRecord) -> bytes:
    entry: dict[str, Any] = {"i": record.index, "l": record.line}
    if record.error is not None:
        error = record.error
        entry["e"] = {"code": error.code.value, "field": error.field, "message": error.message, "value": error.value}
        entry["raw"] = record.raw
    else:
        entry["r"] = record.data
    return orjson.dumps(entry, default=str) + b"\n"


def encode_chunk(records: Iterable[SourceRecord]) -> bytes:
    return b"".join(encode_entry(record) for record in records)


@dataclass(frozen=True, slots=True)
class ChunkEntry:
    index: int
    line: int | None
    record: dict[str, Any] | None
    error: RecordError | None
    raw_json: str  # the original record as JSON text (an object, or a string of unparseable source)


def decode_chunk(data: bytes) -> Iterator[ChunkEntry]:
    for text in data.splitlines():
        if not text:
            continue
        entry = orjson.loads(text)
        if "e" in entry:
            error = entry["e"]
            yield ChunkEntry(
                entry["i"],
                entry["l"],
                None,
                RecordError(ErrorCode(error["code"]), error["field"], error["message"], error.get("value")),
                orjson.dumps(entry.get("raw")).decode(),
            )
        else:
            yield ChunkEntry(entry["i"], entry["l"], entry["r"], None, orjson.dumps(entry["r"]).decode())
