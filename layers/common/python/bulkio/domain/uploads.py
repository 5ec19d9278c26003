"""Resumable uploads of big files: an S3 multipart upload whose parts the client PUTs to presigned URLs, in any
order and again after an interruption, and which the API completes once every part is there. The rules (part
sizes, what makes an upload complete) live here; S3 calls are the object store's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIB = 1024 * 1024
MIN_PART_BYTES = 64 * MIB  # S3 takes parts of 5 MiB and more; bigger parts mean fewer requests
MAX_PARTS = 10_000  # S3's limit on the parts of one upload


@dataclass(frozen=True, slots=True)
class UploadedPart:
    part_number: int
    etag: str
    size: int


def part_size_for(total_bytes: int) -> int:
    """The size of every part but the last: at least MIN_PART_BYTES, and few enough parts for S3, in whole MiB."""
    needed = -(-total_bytes // MAX_PARTS)
    return max(MIN_PART_BYTES, -(-needed // MIB) * MIB)


def part_ranges(total_bytes: int) -> list[tuple[int, int, int]]:
    """(part number, first byte, size) of each part of a file of `total_bytes`."""
    size = part_size_for(total_bytes)
    return [(n + 1, start, min(size, total_bytes - start)) for n, start in enumerate(range(0, total_bytes, size))]


def missing_parts(total_bytes: int, uploaded: Iterable[UploadedPart]) -> list[int]:
    """The parts still to upload (absent, or of the wrong size: a part PUT again replaces the one before)."""
    have = {part.part_number: part.size for part in uploaded}
    return [number for number, _, size in part_ranges(total_bytes) if have.get(number) != size]
