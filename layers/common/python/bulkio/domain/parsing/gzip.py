"""The decompression guard: gzip files are expanded within limits on their decompressed size and their
compression ratio."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from bulkio.domain.parsing.common import READ_SIZE, FileErrorCode, UnreadableFile

GZIP_MAGIC = b"\x1f\x8b"
# 32 + 15: let zlib read the gzip (or zlib) header itself.
GZIP_WBITS = 47
# The ratio is only judged past this much output, so that small, very compressible files are fine.
RATIO_CHECK_AFTER_BYTES = 10 * 1024 * 1024


def _gunzip(chunks: Iterable[bytes], max_decompressed_bytes: int, max_compression_ratio: float) -> Iterator[bytes]:
    """Decompress a gzip stream of one or more concatenated members, yielding bounded pieces.

    Each decompress call returns at most READ_SIZE bytes, and the output is checked against the limits
    before it is yielded, so a decompression bomb fails after little work and little memory.
    """
    decompressor = zlib.decompressobj(GZIP_WBITS)
    member_started = False
    compressed = decompressed = 0  # input bytes read, output bytes produced
    for chunk in chunks:
        compressed += len(chunk)
        pending = chunk
        while True:
            member_started = member_started or bool(pending)
            try:
                output = decompressor.decompress(pending, READ_SIZE)
            except zlib.error as exc:
                raise _invalid_gzip(f"the data is corrupt ({exc})") from exc
            if output:
                decompressed += len(output)
                if decompressed > max_decompressed_bytes:
                    raise UnreadableFile(
                        FileErrorCode.DECOMPRESSED_TOO_LARGE,
                        f"the gzip file expands to more than {max_decompressed_bytes} bytes: split it into "
                        "smaller files or raise MAX_DECOMPRESSED_BYTES",
                    )
                consumed = compressed - len(decompressor.unconsumed_tail) - len(decompressor.unused_data)
                if decompressed > RATIO_CHECK_AFTER_BYTES and decompressed > max_compression_ratio * max(consumed, 1):
                    raise UnreadableFile(
                        FileErrorCode.COMPRESSION_RATIO_TOO_HIGH,
                        f"the gzip file expands more than {max_compression_ratio:g}\u00d7, like a decompression "
                        "bomb: upload it uncompressed or raise MAX_COMPRESSION_RATIO",
                    )
                yield output
            if decompressor.eof:
                pending = decompressor.unused_data
                decompressor = zlib.decompressobj(GZIP_WBITS)
                member_started = False
                if not pending:
                    break
            else:
                pending = decompressor.unconsumed_tail
                # A full output piece may leave decompressed bytes inside zlib even when all input is taken.
                if not pending and len(output) < READ_SIZE:
                    break
    if member_started:
        raise _invalid_gzip("it ends in the middle of the compressed data (truncated upload?)")


def _invalid_gzip(problem: str) -> UnreadableFile:
    return UnreadableFile(
        FileErrorCode.INVALID_GZIP, f"the file starts like gzip but {problem}: upload a complete .gz file"
    )


def _gunzip_head(head: bytes) -> bytes | None:
    """What the first bytes of a gzip file expand to (at most READ_SIZE bytes), None if they are not gzip."""
    try:
        return zlib.decompressobj(GZIP_WBITS).decompress(head, READ_SIZE)
    except zlib.error:
        return None
