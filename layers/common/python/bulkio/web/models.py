"""The API's request and response models: the one description of what each route takes and gives back.

Powertools validates requests against them and generates the OpenAPI document from them. A value that breaks a
rule raises a `PydanticCustomError` whose type is the API's stable problem code, so that the one exception
handler (bulkio.web.api) turns it into the same problem+json as any other refusal.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from bulkio.domain.errors import Refusal
from bulkio.domain.export_jobs import ExportStatus
from bulkio.domain.exports import parse_export_request
from bulkio.domain.idempotency import valid_key
from bulkio.domain.jobs import ImportMode, JobStatus
from bulkio.domain.rejected import REJECTED_FORMATS, RejectedFormat
from bulkio.domain.resources import (
    Format,
    ImportTarget,
    Resource,
    check_format_fits,
    parse_format,
    parse_import_target,
    parse_resource,
)

MAX_PAGE = 100
MAX_JOB_ID_CHARS = 64
MAX_URL_CHARS = 2048
MAX_WAIT_SECONDS = 20  # a long poll of GET /v1/imports/{job_id}: under API Gateway's 29-second limit
ERROR_REPORT_FORMATS = ("ndjson", "csv")


def rule_broken(code: str, message: str, **extra: Any) -> PydanticCustomError:
    """A validation error that carries the API's problem code (its type), its detail and extra members. The
    message travels in the context: pydantic would read the braces of a message like {"a": 1} as placeholders."""
    return PydanticCustomError(code, "{message}", {"message": message, **extra})


def refusal_as_rule(refusal: Refusal) -> PydanticCustomError:
    return rule_broken(refusal.code, refusal.message, **refusal.extra)


# ----------------------------------------------------------------------------------------------- value rules
def _resource(value: object) -> Resource:
    resource = parse_resource(value)
    if resource is None:
        allowed = [r.value for r in Resource]
        raise rule_broken(
            "invalid_resource", f"resource {value!r} is not supported: use one of {', '.join(allowed)}", allowed=allowed
        )
    return resource


def _import_target(value: object) -> ImportTarget:
    target = parse_import_target(value)
    if target is None:
        allowed = [t.value for t in ImportTarget]
        raise rule_broken(
            "invalid_resource",
            f"resource {value!r} is not supported: use one of {', '.join(allowed)} (mixed: records of all three in "
            "one file, imported in dependency order)",
            allowed=allowed,
        )
    return target


def _job_status(value: object) -> JobStatus | None:
    if value in (None, ""):
        return None
    allowed = [status.value for status in JobStatus]
    if value in allowed:
        return JobStatus(value)
    raise rule_broken(
        "invalid_status", f"status {value!r} is not a job status: use one of {', '.join(allowed)}", allowed=allowed
    )


def _import_target_filter(value: object) -> ImportTarget | None:
    return None if value in (None, "") else _import_target(value)


def _export_status(value: object) -> ExportStatus | None:
    if value in (None, ""):
        return None
    allowed = [status.value for status in ExportStatus]
    if value in allowed:
        return ExportStatus(value)
    raise rule_broken(
        "invalid_status",
        f"status {value!r} is not an export job status: use one of {', '.join(allowed)}",
        allowed=allowed,
    )


def _resource_filter(value: object) -> Resource | None:
    return None if value in (None, "") else _resource(value)


def _format(value: object) -> Format | None:
    if value in (None, ""):
        return None
    fmt = parse_format(value)
    if fmt is None:
        raise rule_broken(
            "invalid_format",
            f"format {value!r} is not supported: use one of csv, ndjson, json (zip or tar for resource=mixed), or "
            "leave it out to infer it",
            allowed=[f.value for f in Format],
        )
    return fmt


def _import_mode(value: object) -> ImportMode:
    if value in (None, ""):
        return ImportMode.IMPORT
    if value in {mode.value for mode in ImportMode}:
        return ImportMode(value)
    allowed = [mode.value for mode in ImportMode]
    raise rule_broken(
        "invalid_mode",
        f"mode {value!r} is not supported: use import (the default) or validate (a dry run that writes nothing)",
        allowed=allowed,
    )


def _wait_seconds(value: object) -> int:
    if isinstance(value, str) and value.isdigit() and int(value) <= MAX_WAIT_SECONDS:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_WAIT_SECONDS:
        return value
    raise rule_broken(
        "invalid_wait",
        f"wait must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS} (API Gateway ends a request "
        "at 29 s): ask again for a longer wait",
    )


def _parent_job_id(value: object) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and len(value) <= MAX_JOB_ID_CHARS and value.isprintable():
        return value
    raise rule_broken("invalid_parent_job_id", "parent_job_id must be the job_id of one of your import jobs")


def _callback_url(value: object) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and len(value) <= MAX_URL_CHARS:
        return value
    raise rule_broken(
        "invalid_callback_url", f"callback_url must be an https URL of at most {MAX_URL_CHARS} characters"
    )


def _upload_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise rule_broken("invalid_upload_size", "upload_size must be the file's size in bytes, a whole number above 0")


def _page_limit(value: object) -> int:
    if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_PAGE:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PAGE:
        return value
    raise rule_broken("invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}")


def _idempotency_key(value: object) -> object:
    if value is not None and not (isinstance(value, str) and valid_key(value)):
        raise rule_broken("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return value


def _report_format(value: object) -> object:
    if value not in ERROR_REPORT_FORMATS:
        raise rule_broken(
            "invalid_format",
            f"error reports come as ndjson or csv, not {value!r}",
            allowed=list(ERROR_REPORT_FORMATS),
        )
    return value


def _rejected_format(value: object) -> object:
    if value is not None and value not in REJECTED_FORMATS:
        raise rule_broken(
            "invalid_format",
            f"rejected records come as csv or ndjson (by default the upload's own), not {value!r}",
            allowed=list(REJECTED_FORMATS),
        )
    return value


ResourceName = Annotated[Resource, BeforeValidator(_resource)]
ImportTargetName = Annotated[ImportTarget, BeforeValidator(_import_target)]
ImportTargetFilter = Annotated[ImportTarget | None, BeforeValidator(_import_target_filter)]
JobStatusFilter = Annotated[JobStatus | None, BeforeValidator(_job_status)]
ExportStatusFilter = Annotated[ExportStatus | None, BeforeValidator(_export_status)]
ResourceFilter = Annotated[Resource | None, BeforeValidator(_resource_filter)]
FormatName = Annotated[Format | None, BeforeValidator(_format)]
ImportModeName = Annotated[ImportMode, BeforeValidator(_import_mode)]
ParentJobId = Annotated[str | None, BeforeValidator(_parent_job_id)]
CallbackUrl = Annotated[str | None, BeforeValidator(_callback_url)]
UploadSize = Annotated[int | None, BeforeValidator(_upload_size)]
PARENT_DESCRIPTION = (
    "the job whose rejected records (GET /v1/imports/{job_id}/rejected) this file holds, fixed: that job then "
    "shows how many of them were imported since"
)
MODE_DESCRIPTION = (
    "import (the default), or validate: a dry run through the whole pipeline, the merge's checks included, that "
    "writes no record; it ends validated, with the counters and error report the import would have, and "
    "POST /v1/imports/{job_id}/commit imports the same bytes"
)
CALLBACK_DESCRIPTION = (
    "POSTed the job's summary when it ends, signed (Bulkio-Signature) with the callback_secret of the 202; "
    "retried with backoff for 24 hours; https only, public addresses only"
)
PageLimit = Annotated[int, BeforeValidator(_page_limit)]
WaitSeconds = Annotated[int, BeforeValidator(_wait_seconds)]
IdempotencyKey = Annotated[str | None, BeforeValidator(_idempotency_key)]
ReportFormat = Annotated[Literal["ndjson", "csv"], BeforeValidator(_report_format)]
RejectedFormatName = Annotated[RejectedFormat | None, BeforeValidator(_rejected_format)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unknown_field_hint: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        """Names every unknown field at once, with the fields this request takes (pydantic names one per error).
        A missing required field goes to its own rule as None, which refuses it with the field's own code."""
        if not isinstance(data, dict):
            return data
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise rule_broken("unknown_field", f"unknown {cls.unknown_field_hint}{unknown}: send {cls._send()}")
        missing = {name: None for name, field in cls.model_fields.items() if field.is_required() and name not in data}
        return {**missing, **data}

    @classmethod
    def _send(cls) -> str:
        return ", ".join(cls.model_fields)


# ------------------------------------------------------------------------------------------------ requests
class _ImportRequest(Request):
    """What every way of starting an import takes first: what it loads, and the file's format."""

    resource: ImportTargetName
    format: FormatName = Field(default=None, description="inferred from the file name or content when left out")

    @model_validator(mode="after")
    def _format_fits_resource(self) -> Any:
        try:
            check_format_fits(self.resource, self.format)
        except Refusal as refusal:
            raise refusal_as_rule(refusal) from None
        return self


class ImportFromJson(_ImportRequest):
    """POST /v1/imports with a JSON body: an import from a URL, or (without url) a presigned upload URL."""

    unknown_field_hint = "fields "
    url: str | None = Field(
        default=None,
        json_schema_extra={"format": "uri"},
        description="import from this URL (https); without it the answer holds a presigned upload URL",
    )
    mode: ImportModeName = Field(default=ImportMode.IMPORT, description=MODE_DESCRIPTION)
    parent_job_id: ParentJobId = Field(default=None, description=PARENT_DESCRIPTION)
    callback_url: CallbackUrl = Field(
        default=None, json_schema_extra={"format": "uri"}, description=CALLBACK_DESCRIPTION
    )
    upload_size: UploadSize = Field(
        default=None,
        description="without url: a resumable upload of a file of this many bytes, in parts PUT to presigned "
        "URLs (GET …/upload gives them again; POST …/upload/complete starts the job)",
    )

    @model_validator(mode="after")
    def _upload_size_without_url(self) -> Any:
        if self.url is not None and self.upload_size is not None:
            raise rule_broken(
                "invalid_upload_size", "upload_size is for an upload of your file: leave it out of a URL import"
            )
        return self


class ImportUpload(_ImportRequest):
    """POST /v1/imports as multipart/form-data: the file itself, streamed to S3 while it is read."""

    unknown_field_hint = "form fields "
    mode: ImportModeName = Field(default=ImportMode.IMPORT, description=MODE_DESCRIPTION)
    parent_job_id: ParentJobId = Field(default=None, description=PARENT_DESCRIPTION)
    callback_url: CallbackUrl = Field(
        default=None, json_schema_extra={"format": "uri"}, description=CALLBACK_DESCRIPTION
    )
    file: bytes = Field(description="the data file (CSV, NDJSON or a JSON array; gzip allowed)")

    @classmethod
    def _send(cls) -> str:
        return "file, resource, format, mode, parent_job_id, callback_url"

    @classmethod
    def validate_fields(cls, fields: dict[str, str]) -> ImportUpload:
        """The form's text fields; the file part is checked by the multipart reader."""
        return cls.model_validate({**fields, "file": b""})


class ExportRequest(Request):
    """POST /v1/exports. The export rules (filters per resource, fields, limits) live in bulkio.domain.exports:
    this model documents the shape and runs them."""

    resource: Resource
    format: Literal["ndjson", "json", "csv"] = "ndjson"
    filters: dict[str, Any] = Field(default_factory=dict, description="the filters of GET /v1/exports, by name")
    fields: list[str] | None = Field(default=None, description="the fields to export; all when left out")
    limit: int | None = Field(default=None, ge=1)
    compression: Literal["gzip"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _export_rules(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        try:
            query, fmt, compression = parse_export_request(data)
        except Refusal as refusal:
            raise refusal_as_rule(refusal) from None
        return {
            "resource": query.resource,
            "format": fmt.value,
            "filters": dict(data.get("filters") or {}),
            "fields": list(query.fields),
            "limit": query.limit,
            "compression": compression,
        }


# ----------------------------------------------------------------------------------------------- responses
class View(BaseModel):
    """A response body: every member it may have, none it may not."""

    model_config = ConfigDict(extra="forbid")


def _is_none(value: object) -> bool:
    return value is None


def left_out_when_none(description: str | None = None) -> Any:
    """A member that is absent from the body, rather than null, when it has no value."""
    return Field(default=None, exclude_if=_is_none, description=description)


class ImportLinks(View):
    self_: str = Field(alias="self")
    errors: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class ExportLinks(View):
    self_: str = Field(alias="self")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Upload(View):
    url: str
    method: str
    expires_at: str


class UploadPart(View):
    part_number: int
    offset: int = Field(description="the part's first byte in the file")
    size: int
    url: str = Field(description="PUT the part's bytes here (curl -T, or any HTTP client); keep nothing else")


class UploadedPartView(View):
    part_number: int
    size: int


class MultipartUpload(View):
    method: Literal["multipart"]
    size: int
    part_size: int
    parts: list[UploadPart]
    uploaded: list[UploadedPartView] = Field(description="the parts S3 holds already: skip them when resuming")
    complete_url: str
    expires_at: str = Field(description="when the part URLs expire: GET …/upload gives fresh ones")


class UploadStatus(View):
    job_id: str
    upload: MultipartUpload


class ImportSubmitted(View):
    job_id: str
    status: str
    resource: str
    format: str | None
    links: ImportLinks
    mode: str  # new members come after the ones clients have always seen
    parent_job_id: str | None = left_out_when_none("the dry run it commits, or the job whose rejected records it holds")
    upload: Upload | MultipartUpload | None = left_out_when_none(
        "where to PUT the file (or its parts, with upload_size), when neither a file nor a URL was sent"
    )
    callback_url: str | None = left_out_when_none("where the job's end is POSTed")
    callback_secret: str | None = left_out_when_none(
        "the HMAC-SHA256 key of the callback's Bulkio-Signature: shown in this answer only (a commit's job uses "
        "its dry run's)"
    )


class Failure(View):
    code: str
    message: str


class Source(View):
    kind: str
    filename: str | None


class ImportCounters(View):
    total: int | None
    processed: int
    succeeded: int
    failed: int


class Progress(View):
    chunks_total: int | None
    chunks_done: int
    percent: float = Field(description="records validated and staged, of the total or its estimate (see basis)")
    basis: Literal["records", "bytes"] = Field(
        description="records: the total is counted; bytes: estimated from the share of the source read so far"
    )
    eta_seconds: float | None = Field(description="while processing: the rest of the records at the pace so far")


class ImportMetrics(View):
    rows_per_second: float | None
    error_rate: float | None
    duration_seconds: float | None


class CallbackView(View):
    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending: not taken yet, retried; delivered: an attempt got a 2xx; failed: the retries ended"
    )
    deliveries: int = Field(description="attempts made, automatic ones and redeliveries")
    next_attempt_at: str | None = Field(description="while pending: when the next automatic attempt is due")


class _ImportJob(View):
    """What a job view and a job summary share, in the order they are served."""

    job_id: str
    status: str
    resource: str | None = Field(description="users, articles, comments or mixed; null: a file dropped elsewhere")
    format: str | None
    source: Source
    counters: ImportCounters
    progress: Progress
    metrics: ImportMetrics
    errors_by_code: dict[str, int]
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class ImportJobSummary(_ImportJob):
    errors_url: str
    links: ImportLinks
    mode: str  # new members come after the ones clients have always seen
    failure: Failure | None = left_out_when_none("why the job failed")
    parent_job_id: str | None = left_out_when_none("the dry run it commits, or the job whose rejected records it holds")
    committed_job_id: str | None = left_out_when_none("a dry run's commit: the job importing its source")
    rejected_reimported: int | None = left_out_when_none(
        "how many of its rejected records jobs naming it as parent_job_id have imported since"
    )
    callback: CallbackView | None = left_out_when_none("its callback_url, and how its delivery went")
    counters_by_resource: dict[str, ImportCounters] | None = left_out_when_none(
        "a mixed import's counters per resource (users, articles, comments), once it has ended"
    )


class ImportJobView(_ImportJob):
    errors: list[dict[str, Any]] = Field(description="the first errors (line, field, code, message, value)")
    errors_url: str
    links: ImportLinks
    mode: str  # new members come after the ones clients have always seen
    failure: Failure | None = left_out_when_none("why the job failed")
    parent_job_id: str | None = left_out_when_none("the dry run it commits, or the job whose rejected records it holds")
    committed_job_id: str | None = left_out_when_none("a dry run's commit: the job importing its source")
    rejected_reimported: int | None = left_out_when_none(
        "how many of its rejected records jobs naming it as parent_job_id have imported since"
    )
    callback: CallbackView | None = left_out_when_none("its callback_url, and how its delivery went")
    counters_by_resource: dict[str, ImportCounters] | None = left_out_when_none(
        "a mixed import's counters per resource (users, articles, comments), once it has ended"
    )


class Delivery(View):
    delivery_id: str = Field(description="sent as Bulkio-Delivery")
    trigger: Literal["automatic", "redelivery"]
    at: str
    outcome: Literal["delivered", "failed"]
    status_code: int | None = Field(description="the endpoint's HTTP status; null when none came")
    duration_ms: int
    error: str | None
    response_excerpt: str | None = Field(description="the first characters of the endpoint's answer")


class DeliveryList(View):
    job_id: str
    callback: CallbackView
    deliveries: list[Delivery] = Field(description="oldest first")


class RedeliveryQueued(View):
    job_id: str
    status: Literal["queued"]
    deliveries_url: str


class ImportJobPage(View):
    jobs: list[ImportJobSummary]
    next: str | None = Field(description="pass it as `cursor` for the next page; null on the last page")


class ExportSubmitted(View):
    job_id: str
    status: str
    links: ExportLinks


class ExportCounters(View):
    rows: int


class ExportMetrics(View):
    rows_per_second: float | None
    duration_seconds: float | None


class ExportJobView(View):
    job_id: str
    status: str
    resource: str
    format: str
    filters: dict[str, Any]
    fields: list[str]
    compression: str | None
    counters: ExportCounters
    bytes: int
    metrics: ExportMetrics
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    links: ExportLinks
    download_url: str | None = left_out_when_none("a presigned GET of the file, once the job completed")
    expires_at: str | None = left_out_when_none()
    failure: Failure | None = left_out_when_none("why the job failed")


class Health(View):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]


class ProblemBody(BaseModel):
    """RFC 9457 problem details: `code` is stable; `detail` says what is wrong and how to fix it. Some problems
    carry more members (allowed, limit_bytes, required_scope, reason)."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None


class ExportJobPage(View):
    jobs: list[ExportJobView]
    next: str | None = Field(description="pass it as `cursor` for the next page; null on the last page")
