"""Chunk objects: at most CHUNK_RECORDS normalized records with their source line numbers, one JSON per line.

An entry is `{"i": index, "l": line, "r": record}` or, for a record that could not be parsed,
`{"i": index, "l": line, "e": {"code", "field", "message", "value"}, "raw": source text}`. A record of an archive
member also has `"s": resource`, the resource its file name gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.parsing import SourceRecord
from bulkio.domain.resources import ImportTarget, Resource


def chunk_prefix(job_id: str) -> str:
    return f"chunks/{job_id}/"


def chunk_key(job_id: str, chunk_no: int) -> str:
    return f"{chunk_prefix(job_id)}{chunk_no:06d}.ndjson"


class ChunkMessage(BaseModel):
    """The SQS message announcing one chunk: a reference to the chunk object, never records. `first` and
    `records` only name its records in dead-letter reports (a re-sent chunk's message leaves them out)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    resource: ImportTarget  # the job's: `mixed` when each record names its own
    chunk: int
    key: str
    first: int | None = None
    records: int | None = None

    @classmethod
    def announcing(
        cls, job_id: str, resource: ImportTarget, chunk_no: int, first: int | None = None, records: int | None = None
    ) -> ChunkMessage:
        return cls(
            job_id=job_id,
            resource=resource,
            chunk=chunk_no,
            key=chunk_key(job_id, chunk_no),
            first=first,
            records=records,
        )

    def to_json(self) -> str:
        """The message body: the absent `first` and `records` are left out, not sent as null."""
        return self.model_dump_json(exclude_none=True)


class FailedChunkerRun(BaseModel):
    """What the dead-letter queue receives when the chunker failed on an event after all its retries (a Lambda
    OnFailure destination record): the event it was given, its error, and how many times it was invoked."""

    request_payload: dict[str, Any] = Field(alias="requestPayload")
    response_payload: Any = Field(None, alias="responsePayload")
    request_context: dict[str, Any] = Field(default_factory=dict, alias="requestContext")

    @property
    def reason(self) -> str | None:
        error = self.response_payload or {}
        return error.get("errorMessage") if isinstance(error, dict) else str(error)

    @property
    def attempts(self) -> Any:
        return self.request_context.get("approximateInvokeCount", "several")


RECORD_KEY = b',"r":'


def encode_entry(record: SourceRecord) -> bytes:
    head = b'{"i":%d,"l":%s' % (record.index, b"null" if record.line is None else b"%d" % record.line)
    if record.resource is not None:  # an archive member's
        head += b',"s":"%s"' % record.resource.value.encode()
    if record.error is not None:
        error = record.error
        entry = {"code": error.code.value, "field": error.field, "message": error.message, "value": error.value}
        return head + b',"e":' + orjson.dumps(entry, default=str) + b',"raw":' + orjson.dumps(record.raw) + b"}\n"
    # The record comes last, so that a reader can take its JSON text as it is instead of encoding it again.
    return head + RECORD_KEY + orjson.dumps(record.data, default=str) + b"}\n"


class EncodedChunk(NamedTuple):
    body: bytes
    first_index: int  # the 1-based record number of its first entry
    records: int


def encode_chunks(records: Iterable[SourceRecord], max_records: int, max_bytes: int) -> Iterator[EncodedChunk]:
    """The chunk objects of a file, in order: at most `max_records` entries each, and no more than `max_bytes`
    unless a single record is bigger. Big records make smaller chunks, so that the chunker and each writer hold
    one bounded chunk whatever the records' size."""
    lines: list[bytes] = []
    size = 0
    first_index = 0
    for record in records:
        line = encode_entry(record)
        if lines and (len(lines) == max_records or size + len(line) > max_bytes):
            yield EncodedChunk(b"".join(lines), first_index, len(lines))
            lines, size = [], 0
        if not lines:
            first_index = record.index
        lines.append(line)
        size += len(line)
    if lines:
        yield EncodedChunk(b"".join(lines), first_index, len(lines))


class ChunkEntry(NamedTuple):  # a tuple: built a million times per job, far cheaper than a frozen dataclass
    index: int  # type: ignore[assignment]  # the record's number; hides tuple.index(), which nothing calls
    line: int | None
    record: dict[str, Any] | None
    error: RecordError | None
    raw_json: str  # the original record as JSON text (an object, or a string of unparseable source)
    resource: Resource | None = None  # an archive member's resource (named by its file)


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
                Resource(entry["s"]) if "s" in entry else None,
            )
        else:
            raw = text[text.index(RECORD_KEY) + len(RECORD_KEY) : -1]
            yield ChunkEntry(
                entry["i"], entry["l"], entry["r"], None, raw.decode(), Resource(entry["s"]) if "s" in entry else None
            )
