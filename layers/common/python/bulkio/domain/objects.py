"""What the object store answers about its objects (S3 on AWS): pure values the services read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    url: str
    method: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str
    version_id: str | None = None  # None in a bucket without versioning


class ObjectChanged(Exception):
    """The object's pinned version is gone: it was replaced in a bucket that keeps no versions."""


class ByteSink(Protocol):
    """Where streamed bytes go (an object being written, a file): only `write` is needed."""

    def write(self, data: bytes, /) -> int: ...
