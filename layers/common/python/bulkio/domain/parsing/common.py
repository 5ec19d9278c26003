"""What every codec shares: the records it yields, the file-level errors, and the sizes that bound its memory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, cast

from bulkio.domain.errors import ErrorCode, RecordError
from bulkio.domain.resources import Resource

READ_SIZE = 64 * 1024
RAW_TEXT_LIMIT = 64 * 1024


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
    INVALID_ARCHIVE = "invalid_archive"
    UNKNOWN_ARCHIVE_MEMBER = "unknown_archive_member"
    ARCHIVE_NEEDS_MIXED = "archive_needs_mixed"  # an archive posted for one resource
    MIXED_NEEDS_RESOURCE = "mixed_needs_resource"  # a CSV file posted as mixed: its rows name no resource


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
    resource: Resource | None = None
    """An archive member's resource (named by its file name); None elsewhere (a mixed record names its own)."""


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


class _PatternMatchingEmpty(Protocol):
    def match(self, string: bytes, pos: int = 0, /) -> re.Match[bytes]: ...


def _compile_matching_empty(pattern: bytes, flags: int = 0) -> _PatternMatchingEmpty:
    """A pattern that matches the empty string, and so matches at every position: the scanners call
    `match(data, position).end()` to run in C up to the next byte they must look at, with no None to check."""
    compiled = re.compile(pattern, flags)
    if compiled.match(b"") is None:
        raise ValueError(f"{pattern!r} does not match the empty string")
    return cast(_PatternMatchingEmpty, compiled)
