"""Archives of a mixed import: a .zip or a .tar (plain or gzip) whose members are named after the resource they
hold (`users.csv`, `articles.ndjson.gz`, `exports/comments.json`...), each read like a file of its own.

Each member's records get their resource, and the member's name as `_file` (the importer ignores members
starting with `_`): both show in the error report, and a rejected record re-imports as a mixed NDJSON record.
Lines are the member's own; record numbers run on across members. A zip keeps its directory at its end, so it is
spooled to a temporary file first (disk, not memory); a tar streams.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import BinaryIO, cast

from bulkio.domain.parsing.common import READ_SIZE, FileErrorCode, SourceRecord, UnreadableFile
from bulkio.domain.parsing.gzip import GZIP_MAGIC, RATIO_CHECK_AFTER_BYTES, _gunzip
from bulkio.domain.resources import Format, Resource, parse_resource

MemberReader = Callable[[BinaryIO, Resource, str], Iterator[SourceRecord]]
"""Reads one member's records (its stream, its resource, its name): the text path of parsing.source."""


def archive_records(
    stream: BinaryIO,
    fmt: Format,
    read_member: MemberReader,
    max_decompressed_bytes: int,
    max_compression_ratio: float,
) -> Iterator[SourceRecord]:
    offset = 0
    members = (
        _zip_members(stream, max_decompressed_bytes, max_compression_ratio)
        if fmt is Format.ZIP
        else _tar_members(stream, max_decompressed_bytes, max_compression_ratio)
    )
    found = False
    for name, member in members:
        found = True
        resource = member_resource(name)
        last = 0
        with closing(member):
            for record in read_member(member, resource, name):
                last = record.index
                record.index += offset
                record.resource = resource
                if record.data is not None:
                    record.data = {**record.data, "resource": resource.value, "_file": name}
                yield record
        offset += last
    if not found:
        raise UnreadableFile(
            FileErrorCode.EMPTY_FILE,
            "the archive holds no file: put users.*, articles.* and comments.* (CSV, NDJSON or JSON) in it",
        )


def member_resource(name: str) -> Resource:
    """The resource a member holds, from its file name: `users.csv`, `dir/articles.ndjson.gz`."""
    stem = posixpath.basename(name).split(".", 1)[0].lower()
    resource = parse_resource(stem)
    if resource is None:
        raise UnreadableFile(
            FileErrorCode.UNKNOWN_ARCHIVE_MEMBER,
            f"the archive holds {name!r}: name each file after the resource it holds (users.csv, "
            "articles.ndjson, comments.json, optionally .gz) and leave other files out",
        )
    return resource


def _skipped(name: str) -> bool:
    """Folders and the clutter archivers add (macOS resource forks, .DS_Store)."""
    base = posixpath.basename(name.rstrip("/"))
    return name.endswith("/") or name.startswith("__MACOSX/") or base.startswith(".")


def _zip_members(
    stream: BinaryIO, max_decompressed_bytes: int, max_compression_ratio: float
) -> Iterator[tuple[str, BinaryIO]]:
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, READ_SIZE)
        expansion = _Expansion(spool.tell(), max_decompressed_bytes, max_compression_ratio)
        spool.seek(0)
        try:
            archive = zipfile.ZipFile(spool)
        except zipfile.BadZipFile as error:
            raise UnreadableFile(
                FileErrorCode.INVALID_ARCHIVE, f"the file is not a readable zip archive ({error}): upload it again"
            ) from error
        with archive:
            for info in archive.infolist():
                if info.is_dir() or _skipped(info.filename):
                    continue
                if info.flag_bits & 0x1:
                    raise UnreadableFile(
                        FileErrorCode.INVALID_ARCHIVE,
                        f"{info.filename!r} is encrypted: upload an archive without a password",
                    )
                try:
                    yield info.filename, cast(BinaryIO, _Expanding(cast(BinaryIO, archive.open(info)), expansion))
                except (zipfile.BadZipFile, NotImplementedError) as error:
                    raise UnreadableFile(
                        FileErrorCode.INVALID_ARCHIVE, f"{info.filename!r} cannot be read ({error})"
                    ) from error


def _tar_members(
    stream: BinaryIO, max_decompressed_bytes: int, max_compression_ratio: float
) -> Iterator[tuple[str, BinaryIO]]:
    """A streamed tar; a gzip-compressed one is expanded by the same guard as any gzip file."""
    head = stream.read(len(GZIP_MAGIC))
    chunks = _chained(head, stream)
    if head.startswith(GZIP_MAGIC):
        chunks = _gunzip(chunks, max_decompressed_bytes, max_compression_ratio)
    try:
        with tarfile.open(fileobj=cast(BinaryIO, _ChunkStream(chunks)), mode="r|") as archive:
            for entry in archive:
                if not entry.isfile() or _skipped(entry.name):
                    continue
                member = archive.extractfile(entry)
                if member is not None:
                    yield entry.name, cast(BinaryIO, member)
    except tarfile.TarError as error:
        raise UnreadableFile(
            FileErrorCode.INVALID_ARCHIVE, f"the file is not a readable tar archive ({error}): upload it again"
        ) from error


class _Expansion:
    """How far a zip's members have expanded, against the limits of gzip files: all members together may not
    expand past max_decompressed_bytes, nor more than max_compression_ratio times the archive's size."""

    def __init__(self, archive_bytes: int, max_decompressed_bytes: int, max_compression_ratio: float) -> None:
        self.archive_bytes = archive_bytes
        self.max_bytes = max_decompressed_bytes
        self.max_ratio = max_compression_ratio
        self.expanded = 0

    def add(self, size: int) -> None:
        self.expanded += size
        if self.expanded > self.max_bytes:
            raise UnreadableFile(
                FileErrorCode.DECOMPRESSED_TOO_LARGE,
                f"the archive's files expand to more than {self.max_bytes} bytes: split it into smaller archives "
                "or raise MAX_DECOMPRESSED_BYTES",
            )
        if self.expanded > RATIO_CHECK_AFTER_BYTES and self.expanded > self.max_ratio * max(self.archive_bytes, 1):
            raise UnreadableFile(
                FileErrorCode.COMPRESSION_RATIO_TOO_HIGH,
                f"the archive expands more than {self.max_ratio:g}\u00d7, like a decompression bomb: "
                "raise MAX_COMPRESSION_RATIO if it is genuine",
            )


class _Expanding:
    """A zip member as read, counted against its archive's expansion limits."""

    def __init__(self, member: BinaryIO, expansion: _Expansion) -> None:
        self._member = member
        self._expansion = expansion

    def read(self, size: int = -1) -> bytes:
        piece = self._member.read(size)
        self._expansion.add(len(piece))
        return piece

    def close(self) -> None:
        self._member.close()


def _chained(head: bytes, stream: BinaryIO) -> Iterator[bytes]:
    if head:
        yield head
    while piece := stream.read(READ_SIZE):
        yield piece


class _ChunkStream:
    """A readable file over byte chunks, for tarfile's stream mode (it only calls read)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            piece = next(self._chunks, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            taken, self._buffer = self._buffer, b""
        else:
            taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken
