"""What the import service's parts share: the object keys of a job and the announcement of its chunks."""

from __future__ import annotations

from bulkio import faults
from bulkio.domain.chunks import ChunkMessage
from bulkio.services.ports import ChunkQueue

IDEMPOTENCY_SCOPE = "imports"
# How often a job's staged rows may vanish (a PostgreSQL crash recovery each time) before it fails.
MAX_RESTAGES = 3


def source_key(job_id: str) -> str:
    # No caller-controlled text in keys: the original file name is kept in the job record only.
    return f"uploads/{job_id}/source"


def fetched_key(job_id: str) -> str:
    """Where a URL import keeps the bytes it downloaded: outside uploads/ and drop/, so no S3 event fires."""
    return f"fetched/{job_id}/source"


def report_key(job_id: str, fmt: str) -> str:
    return f"reports/{job_id}/errors.{fmt}"


def announce(queue: ChunkQueue, messages: list[ChunkMessage]) -> None:
    # A drill may ask for every message twice: SQS delivers at least once, and twice must change nothing.
    queue.send(messages * 2 if faults.switched_on(faults.DUPLICATE_CHUNK_MESSAGES) else messages)
