"""What the import service's parts share: the object keys of a job and the announcement of its chunks."""

from __future__ import annotations

from collections.abc import Iterable

from aws_lambda_powertools import Logger

from bulkio import faults
from bulkio.domain.chunks import ChunkMessage, chunk_prefix
from bulkio.services.ports import ChunkQueue, ObjectStore

logger = Logger(child=True)

IDEMPOTENCY_SCOPE = "imports"
# How often a job's staged rows may vanish (a PostgreSQL crash recovery each time) before it fails.
MAX_RESTAGES = 3


def source_key(job_id: str) -> str:
    # No caller-controlled text in keys: the original file name is kept in the job record only.
    return f"uploads/{job_id}/source"


def fetched_key(job_id: str) -> str:
    """Where a URL import keeps the bytes it downloaded: outside uploads/ and drop/, so no S3 event fires."""
    return f"{fetched_prefix(job_id)}source"


def fetched_prefix(job_id: str) -> str:
    return f"fetched/{job_id}/"


REPORT_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}


def report_key(job_id: str, fmt: str) -> str:
    return f"reports/{job_id}/errors.{fmt}"


def rejected_key(job_id: str, fmt: str) -> str:
    return f"reports/{job_id}/rejected.{fmt}"


def announce(queue: ChunkQueue, messages: list[ChunkMessage]) -> None:
    # A drill may ask for every message twice: SQS delivers at least once, and twice must change nothing.
    queue.send(messages * 2 if faults.switched_on(faults.DUPLICATE_CHUNK_MESSAGES) else messages)


def scratch_prefixes(job_id: str, keep_download: bool = False) -> tuple[str, ...]:
    """What an ended job no longer needs: its chunk objects (a restage after a database crash reads them only
    before the merge) and the copy of a URL import's download, unless it is kept (a validated dry run's, for its
    commit: the bucket's lifecycle rules remove it)."""
    if keep_download:
        return (chunk_prefix(job_id),)
    return chunk_prefix(job_id), fetched_prefix(job_id)


def discard(objects: ObjectStore, job_id: str, prefixes: Iterable[str]) -> None:
    """Deletes every version of the objects under `prefixes`, once their job has ended. A failure here ends
    nothing: the bucket's lifecycle rules remove what was left behind."""
    try:
        purged = sum(objects.purge(prefix) for prefix in prefixes)
    except Exception:
        logger.exception(
            "could not delete an ended job's chunk objects: the bucket's lifecycle rules will", extra={"job_id": job_id}
        )
        return
    logger.debug("ended job's chunk objects deleted", extra={"job_id": job_id, "objects": purged})
