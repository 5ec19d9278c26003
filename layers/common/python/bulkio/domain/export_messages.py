"""What an export job leaves in other systems' hands, as one model per message shared by who writes it and who
reads it: the job's DynamoDB item, and the inputs the export state machine gives its two tasks. Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from bulkio.domain.export_jobs import ExportJob, ExportStatus
from bulkio.domain.jobs import JobFailure, iso, parse_iso


def _stored_time(value: Any) -> Any:
    # parse_iso rather than pydantic's parser: the same datetimes (tzinfo UTC) as the import jobs' items give.
    return parse_iso(value) if isinstance(value, str) else value


# Written by iso(): fixed width (always microseconds, 'Z'), so that timestamps sort as text in indexes.
StoredTime = Annotated[datetime, BeforeValidator(_stored_time), PlainSerializer(iso, return_type=str)]


class StoredFailure(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class ExportJobItem(BaseModel):
    """An export job's item in the jobs table (`pk = export#<id>`, next to the import jobs). The attribute names
    and types are the stored format: items written before this model must still load. Unknown attributes are
    ignored, as the hand-written reader did. The request is JSON text because DynamoDB refuses floats."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pk: str
    kind: Literal["export"] = "export"
    job_id: str
    resource: str
    format: str
    request_json: str
    status: ExportStatus
    created_at: StoredTime
    started_at: StoredTime | None = None
    finished_at: StoredTime | None = None
    rows: int = 0
    bytes: int = 0
    object_key: str | None = None
    failure: StoredFailure | None = None
    owner: str | None = None

    @staticmethod
    def key(job_id: str) -> str:
        return f"export#{job_id}"

    @classmethod
    def from_job(cls, job: ExportJob) -> ExportJobItem:
        failure = StoredFailure(code=job.failure.code, message=job.failure.message) if job.failure else None
        return cls(
            pk=cls.key(job.job_id),
            job_id=job.job_id,
            resource=job.resource,
            format=job.format,
            request_json=orjson.dumps(job.request).decode(),
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            rows=job.rows,
            bytes=job.bytes,
            object_key=job.object_key,
            failure=failure,
            owner=job.owner or None,
        )

    def to_job(self) -> ExportJob:
        request = orjson.loads(self.request_json)
        return ExportJob(
            job_id=self.job_id,
            resource=self.resource,
            format=self.format,
            filters=request.get("filters") or {},
            fields=request.get("fields"),
            compression=request.get("compression"),
            status=self.status,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            rows=self.rows,
            bytes=self.bytes,
            object_key=self.object_key,
            failure=JobFailure(self.failure.code, self.failure.message) if self.failure else None,
            request=request,
            owner=self.owner,
        )

    def to_item(self) -> dict[str, Any]:
        """The attributes to put: absent ones (a job not yet started has no started_at) are left out, not null.
        An owned job also gets the key of the owner's listing (the index by_owner_created)."""
        item = self.model_dump(mode="json", exclude_none=True)
        if self.owner:
            item["owner_kind"] = f"{self.owner}#export"
        return item


class ExportExecutionInput(BaseModel):
    """The export state machine's input (the execution is started by the API when it creates the job), which
    RunExport passes on to the worker as it is."""

    model_config = ConfigDict(frozen=True)

    job_id: str


class TaskError(BaseModel):
    """What a Step Functions Catch puts at its ResultPath: the error's name and its cause (for a Lambda
    function, the JSON of its errorMessage/errorType/stackTrace)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    error: str | None = Field(default=None, alias="Error")
    cause: str | None = Field(default=None, alias="Cause")


class ExportFailedInput(BaseModel):
    """MarkFailed's input: the job, and the error the Catch of RunExport caught (absent when invoked by hand)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    error: TaskError | None = None
