"""What the writers stage and what the merge answers: the values the import services exchange with the import
store. Pure: no database here, only the shapes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bulkio.domain.chunks import ChunkEntry
from bulkio.domain.errors import RecordError
from bulkio.domain.records import ValidationRules, record_resource, unknown_resource, validate_record
from bulkio.domain.resources import ImportTarget, Resource


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


def validate_chunk(
    target: ImportTarget, entries: Iterable[ChunkEntry], rules: ValidationRules
) -> tuple[list[StagedRecord], list[FailedRecord]]:
    """A chunk's records, validated: the valid ones to stage, and an entry per error of the others. A mixed job's
    record is validated as the resource it names (an archive member's, as its file's name says)."""
    staged: list[StagedRecord] = []
    failed: list[FailedRecord] = []
    single = target.single
    for entry in entries:
        resource = single or entry.resource or record_resource(entry.record)
        if entry.error is not None:
            failed.append(FailedRecord(entry.index, entry.line, entry.error, entry.raw_json, resource))
            continue
        if resource is None:
            error = unknown_resource((entry.record or {}).get("resource"))
            failed.append(FailedRecord(entry.index, entry.line, error, entry.raw_json))
            continue
        result = validate_record(resource, entry.record or {}, rules)
        if result.row is not None:
            staged.append(StagedRecord(entry.index, entry.line, result.row, entry.raw_json, resource))
        failed.extend(FailedRecord(entry.index, entry.line, error, entry.raw_json, resource) for error in result.errors)
    return staged, failed
