"""What a finished job reports to the metrics sink, whatever its kind. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobSummary:
    kind: str  # import | export
    job_id: str
    resource: str
    status: str
    rows: int
    failed: int
    duration_seconds: float
