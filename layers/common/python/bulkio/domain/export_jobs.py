"""Asynchronous export jobs: statuses and the view the API shows (the web layer adds its links). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bulkio.domain.jobs import JobFailure, iso


class ExportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(slots=True)
class ExportJob:
    job_id: str
    resource: str
    format: str
    filters: dict[str, Any]
    fields: list[str] | None
    compression: str | None
    status: ExportStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows: int = 0
    bytes: int = 0
    object_key: str | None = None
    failure: JobFailure | None = None
    request: dict[str, Any] = field(default_factory=dict)  # the accepted request, as the worker re-reads it
    owner: str | None = None  # the subject of the token that asked for it


EXPORT_COMPLETED = "Export Job Completed"  # the completion event's detail-type; its detail is the job's view


def export_object_key(job: ExportJob) -> str:
    suffix = ".gz" if job.compression == "gzip" else ""
    return f"exports/{job.job_id}/{job.resource}.{job.format}{suffix}"


def export_view(job: ExportJob, now: datetime, download: tuple[str, datetime] | None) -> dict[str, Any]:
    duration = None
    if job.started_at is not None:
        duration = max(((job.finished_at or now) - job.started_at).total_seconds(), 0.0)
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "resource": job.resource,
        "format": job.format,
        "filters": job.filters,
        "fields": job.fields,
        "compression": job.compression,
        "counters": {"rows": job.rows},
        "bytes": job.bytes,
        "metrics": {
            "rows_per_second": round(job.rows / duration, 1) if duration else None,
            "duration_seconds": round(duration, 3) if duration is not None else None,
        },
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
    if download is not None:
        view["download_url"], expires_at = download[0], download[1]
        view["expires_at"] = iso(expires_at)
    if job.failure is not None:
        view["failure"] = {"code": job.failure.code, "message": job.failure.message}
    return view
