"""From an uploaded file's bytes to its records: the file is decompressed if it is gzip, its BOM and leading blank
lines set aside, its format detected unless given, and its text handed to the codec of that format.

Everything here reads the source in bounded pieces: memory stays constant whatever the file size, and a
single oversized record costs at most about `max_record_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO

from bulkio.domain.parsing.archives import archive_records
from bulkio.domain.parsing.common import READ_SIZE, FileErrorCode, SourceRecord, UnreadableFile
from bulkio.domain.parsing.csv import _csv_records
from bulkio.domain.parsing.gzip import GZIP_MAGIC, _gunzip, _gunzip_head
from bulkio.domain.parsing.json_array import _json_array_records
from bulkio.domain.parsing.ndjson import _ndjson_records
from bulkio.domain.resources import Format, ImportTarget, Resource

UTF8_BOM = b"\xef\xbb\xbf"

FORMAT_BY_EXTENSION: dict[str, Format] = {
    "csv": Format.CSV,
    "ndjson": Format.NDJSON,
    "jsonl": Format.NDJSON,
    "json": Format.JSON,
    "zip": Format.ZIP,
    "tar": Format.TAR,
    "tgz": Format.TAR,
}


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
        expanded = _gunzip_head(head)
        if expanded is None:
            return None
        head = expanded
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
    target: ImportTarget | Resource,
    *,
    filename: str | None = None,
    max_record_bytes: int,
    max_decompressed_bytes: int,
    max_compression_ratio: float,
    max_records: int | None = None,
) -> Iterator[SourceRecord]:
    """Records of `stream` in file order. Nothing is read before the first record is asked for.

    The limits have no defaults here: the caller passes the configured ones (bulkio.config holds their defaults).

    Raises UnreadableFile (while iterating) when the file as a whole cannot be read, possibly after yielding
    the records before the problem: also when gzip content expands past `max_decompressed_bytes` or more than
    `max_compression_ratio` times, and when the file holds more than `max_records` records (None: no limit).
    """
    target = ImportTarget(target.value)  # a Resource names the same target
    records = _target_records(
        stream, fmt, target, filename, max_record_bytes, max_decompressed_bytes, max_compression_ratio
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


def _target_records(
    stream: BinaryIO,
    fmt: Format | None,
    target: ImportTarget,
    filename: str | None,
    max_record_bytes: int,
    max_decompressed_bytes: int,
    max_compression_ratio: float,
) -> Iterator[SourceRecord]:
    """One resource's file, or a mixed import's: NDJSON or JSON records naming their resource, or an archive."""
    if fmt is not None and fmt.is_archive:
        if target is not ImportTarget.MIXED:
            raise UnreadableFile(
                FileErrorCode.ARCHIVE_NEEDS_MIXED,
                f"the file is a {fmt.value} archive, which may hold several resources: import it with "
                f"resource=mixed (members named users.*, articles.*, comments.*), or upload the {target.value} file "
                "itself",
            )

        def read_member(member: BinaryIO, resource: Resource, name: str) -> Iterator[SourceRecord]:
            return _source_records(
                member, None, resource, name, max_record_bytes, max_decompressed_bytes, max_compression_ratio
            )

        yield from archive_records(stream, fmt, read_member, max_decompressed_bytes, max_compression_ratio)
        return
    yield from _source_records(
        stream, fmt, target.single, filename, max_record_bytes, max_decompressed_bytes, max_compression_ratio
    )


def _source_records(
    stream: BinaryIO,
    fmt: Format | None,
    resource: Resource | None,
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
                "export it as CSV (UTF-8), NDJSON or a JSON array (a mixed import's zip or tar archive: name it "
                ".zip, .tar or .tar.gz, or give its format)",
            )
    if fmt is Format.NDJSON:
        yield from _ndjson_records(chunks, max_record_bytes)
    elif fmt is Format.JSON:
        yield from _json_array_records(chunks, max_record_bytes)
    elif fmt.is_archive:
        raise UnreadableFile(
            FileErrorCode.INVALID_ARCHIVE, f"{filename or 'the file'} is an archive inside an archive: unpack it"
        )
    elif resource is None:
        raise UnreadableFile(
            FileErrorCode.MIXED_NEEDS_RESOURCE,
            "a mixed import's CSV rows cannot say which resource they are: send NDJSON or JSON records with a "
            '"resource" member, or a zip or tar.gz of users.csv, articles.csv and comments.csv',
        )
    else:
        yield from _csv_records(chunks, resource, max_record_bytes)


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
