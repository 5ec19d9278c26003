"""What the writers stage and what the merge answers: the values the import services exchange with the import
store. Pure: no database here, only the shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bulkio.domain.errors import RecordError
from bulkio.domain.resources import Resource


@dataclass(frozen=True, slots=True)
class StagedRecord:
    """A valid record. `row` holds normalized values keyed by COLUMNS[resource]; `raw` its original JSON."""

    index: int
    line: int | None
    row: dict[str, Any]
    raw: str
    resource: Resource | None = None  # a mixed job's record names its own; None: the job's resource


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """An invalid record. `raw` is the original record as JSON text (or a JSON string of unparseable text)."""

    index: int
    line: int | None
    error: RecordError
    raw: str
    resource: Resource | None = None  # the record's resource, when known (a mixed job's may name none)


@dataclass(frozen=True, slots=True)
class StagingProgress:
    """How far a job's writers got: chunks staged, their records, and how many of those failed validation."""

    chunks: int
    records: int
    failed: int


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    records_total: int
    succeeded: int
    failed: int
    errors_by_code: dict[str, int]
    merged_now: bool
    # A mixed job's outcome per resource: {"users": {"total", "processed", "succeeded", "failed"}, ...}
    counters_by_resource: dict[str, dict[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class StagingLost:
    """The merge found claimed chunks whose staged rows are gone (staging is UNLOGGED: a crash recovery of
    PostgreSQL empties it, while the logged claims remain). Their claims were removed: the chunks must be sent
    to the writers again. `restages` counts how often this happened to the job, this time included."""

    chunks: tuple[int, ...]
    restages: int
