"""Why an import source could not be read: raised by the URL fetch and by the chunker for S3 sources alike."""

from __future__ import annotations


class SourceUnavailable(Exception):
    """The source could not be opened; `message` says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
