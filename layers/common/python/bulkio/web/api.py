"""The API behind API Gateway: every route is one decorated function with its models (bulkio.web.models) and
the scope it needs. Powertools validates each request against the route's signature and generates the OpenAPI
document from the same signatures; one exception handler turns every refusal into RFC 9457 problem+json.

To add a route: write one function here, decorated with `@route(...)`, with typed parameters (Query, Header,
a Body model) and a return annotation naming its response model; then give it its event in template.yaml.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from functools import cache
from typing import Annotated, Any, TypeVar, get_type_hints
from urllib.parse import urlsplit

import orjson
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import ResponseBuilder
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from bulkio.adapters.http_source import check_url
from bulkio.bootstrap import export_service, health_report, import_api
from bulkio.domain.auth import Principal, Scope
from bulkio.domain.errors import Refusal
from bulkio.domain.parsing import detect_format
from bulkio.domain.resources import Format, check_format_fits
from bulkio.domain.submissions import Submitted
from bulkio.problems import PROBLEM_CONTENT_TYPE, Problem, bad_request, payload_too_large, unsupported_media_type
from bulkio.services.imports.api import ErrorReport, NewImport
from bulkio.web import openapi
from bulkio.web.auth import caller_from_authorizer, require_scope
from bulkio.web.links import export_links, import_links, with_export_links, with_import_links
from bulkio.web.models import (
    MAX_WAIT_SECONDS,
    DeliveryList,
    ExportJobPage,
    ExportJobView,
    ExportRequest,
    ExportStatusFilter,
    ExportSubmitted,
    Health,
    IdempotencyKey,
    ImportFromJson,
    ImportJobPage,
    ImportJobView,
    ImportSubmitted,
    ImportTargetFilter,
    ImportUpload,
    JobStatusFilter,
    PageLimit,
    RedeliveryQueued,
    RejectedFormatName,
    ReportFormat,
    ResourceFilter,
    UploadStatus,
    WaitSeconds,
)
from bulkio.web.multipart import parse_form
from bulkio.web.problems import problem_from_refusal, problem_from_validation

app = APIGatewayRestResolver(enable_validation=True)

# (method, route template) -> the scope it needs; None: open to anyone. Filled by @route, nowhere else.
ROUTE_SCOPES: dict[tuple[str, str], Scope | None] = {**openapi.DECLARED_SCOPES}
# (method, route template) -> the query parameters it takes (its Query-annotated parameters). Filled by @route.
ROUTE_QUERIES: dict[tuple[str, str], frozenset[str]] = {}

Handler = TypeVar("Handler", bound=Callable[..., Any])


def route(method: str, path: str, scope: Scope | None, summary: str, **details: Any) -> Callable[[Handler], Handler]:
    """Registers a route with Powertools and records its scope and query parameters; the document lists the scope
    as its security."""
    key = (method, openapi.template_of(path))
    ROUTE_SCOPES[key] = scope
    security = [{openapi.BEARER: [scope.value]}] if scope is not None else None
    register = app.route(path, method, summary=summary, security=security, **details)

    def registered(handler: Handler) -> Handler:
        ROUTE_QUERIES[key] = _query_names(handler)
        return register(handler)

    return registered


def _query_names(handler: Callable[..., Any]) -> frozenset[str]:
    names = set()
    for name, hint in get_type_hints(handler, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Query):
                names.add(meta.alias or name)
    return frozenset(names)


# --------------------------------------------------------------------------------------------- answers
def _problem_response(problem: Problem, path: str | None = None) -> Response[Any]:
    body = orjson.dumps(problem.to_dict(path or app.current_event.path)).decode()
    return Response(problem.status, PROBLEM_CONTENT_TYPE, body, problem.headers)


@app.exception_handler(Problem)
def handle_problem(problem: Problem) -> Response[Any]:
    return _problem_response(problem)


@app.exception_handler(Refusal)
def handle_refusal(refusal: Refusal) -> Response[Any]:
    return _problem_response(problem_from_refusal(refusal))


@app.exception_handler(RequestValidationError)
def handle_invalid_request(error: RequestValidationError) -> Response[Any]:
    return _problem_response(problem_from_validation(error.errors()))


@app.exception_handler(UnicodeDecodeError)
def handle_undecodable_body(error: UnicodeDecodeError) -> Response[Any]:
    return _problem_response(
        Problem(400, "invalid_json_body", "Bad request", f"the request body is not UTF-8 JSON: {error.reason}")
    )


@app.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_content_type(_: RequestUnsupportedContentType) -> Response[Any]:
    content_type = app.current_event.headers.get("Content-Type") or ""
    return _problem_response(
        unsupported_media_type(f"Content-Type {content_type!r} is not accepted here: send application/json")
    )


@app.not_found
def handle_not_found(_: Exception) -> Response[Any]:
    return _problem_response(Problem(404, "route_not_found", "Not found", f"no route {app.current_event.path}"))


def _authorizer_context(event: Mapping[str, Any]) -> Any:
    return (event.get("requestContext") or {}).get("authorizer")


def _caller() -> Principal:
    return caller_from_authorizer(_authorizer_context(app.current_event.raw_event))


def required_scope(method: str, route: str) -> Scope | None:
    """A route nobody decided the scope of is for admins only: closed rather than left open."""
    return ROUTE_SCOPES.get((method.upper(), route), Scope.ADMIN)


def check_scope(event: Mapping[str, Any]) -> None:
    """The route's scope (API Gateway names the route in `resource`; the authorizer has checked the token)."""
    scope = required_scope(str(event.get("httpMethod") or ""), str(event.get("resource") or ""))
    if scope is not None:
        require_scope(caller_from_authorizer(_authorizer_context(event)), scope)


def check_query(event: Mapping[str, Any]) -> None:
    """A query parameter the route does not take is refused, rather than ignored: a misspelled filter would
    otherwise answer the unfiltered listing as if it were filtered."""
    key = (str(event.get("httpMethod") or "").upper(), str(event.get("resource") or ""))
    taken = ROUTE_QUERIES.get(key)
    unknown = sorted(set(event.get("queryStringParameters") or {}) - (taken or frozenset()))
    if taken is not None and unknown:
        allowed = sorted(taken)
        raise bad_request(
            "unknown_parameter",
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            + (f"this route takes {', '.join(allowed)}" if allowed else "this route takes none"),
            allowed=allowed,
        )


def resolve(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The scope first, before Powertools validates anything: a caller without it learns nothing else."""
    try:
        check_scope(event)
        check_query(event)
    except Problem as problem:
        proxy = APIGatewayProxyEvent(dict(event))
        return ResponseBuilder[APIGatewayProxyEvent](_problem_response(problem, proxy.path)).build(proxy)
    return app.resolve(event, context)


Answer = TypeVar("Answer")


def _submitted(result: Submitted, body: Answer, location: str) -> Response[Answer]:
    """202 with the job's Location; a replay of an Idempotency-Key says so."""
    headers = {"Location": location}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(202, "application/json", body, headers)


def _ok(body: Answer) -> Response[Answer]:
    return Response(200, "application/json", body)


# ---------------------------------------------------------------------------------------------- documents
@cache
def openapi_json() -> str:
    generated = app.get_openapi_schema(
        title=openapi.TITLE, version=openapi.VERSION, security_schemes=openapi.SECURITY_SCHEMES
    )
    document = openapi.complete(generated.model_dump(by_alias=True, exclude_none=True, mode="json"), ROUTE_SCOPES)
    return orjson.dumps(document).decode()


@route("GET", "/v1/openapi.json", None, "This document", include_in_schema=False)
def openapi_document() -> Response[Any]:
    return Response(200, "application/json", openapi_json())


@route("GET", "/v1/docs", None, "Swagger UI", include_in_schema=False)
def swagger_ui() -> Response[Any]:
    """Swagger UI, self-contained (its script and styles inline): it works where no CDN is reachable."""
    return Response(200, "text/html", openapi.swagger_page(openapi_json()))


@route("GET", "/v1/health", None, "Health of the service and its database", responses=openapi.health_responses(Health))
def health() -> Response[Health]:
    report = health_report()
    return Response(200 if report["status"] == "ok" else 503, "application/json", Health.model_validate(report))


# ------------------------------------------------------------------------------------------------ imports
def _body_bytes() -> bytes:
    event = app.current_event
    raw = event.body or ""
    return base64.b64decode(raw) if event.is_base64_encoded else raw.encode()


def _format_from_name(name: str | None) -> Format | None:
    """Infers the format from a file name or URL path when it has a known extension; else the chunker sniffs."""
    return detect_format(urlsplit(name).path, b"") if name else None


def _validated(check: Callable[[], Any]) -> Any:
    """Runs a model check outside Powertools' own (bodies it cannot read itself), with the same answers."""
    try:
        return check()
    except ValidationError as error:
        raise problem_from_validation(error.errors()) from None


def _upload(content_type: str) -> NewImport:
    # Powertools' File/Form would read the whole file into memory and cannot stream it to S3 under a size cap
    # while hashing it: the multipart reader (bulkio.web.multipart) does, and the model checks the text fields.
    limit = import_api().settings.max_upload_bytes
    body = _body_bytes()
    if len(body) > limit:
        raise payload_too_large(
            f"the upload is {len(body)} bytes, over the {limit}-byte limit for multipart uploads: "
            "POST /v1/imports with a JSON body without url to get a presigned S3 upload URL "
            "(or drop the file under drop/<resource>/ in the import bucket)",
            limit_bytes=limit,
        )
    form = parse_form(body, content_type)
    if form.file is None:
        raise bad_request("missing_file", "multipart uploads need a 'file' part holding the data file")
    fields: ImportUpload = _validated(lambda: ImportUpload.validate_fields(form.fields))
    fmt = fields.format or _format_from_name(form.file.filename)
    check_format_fits(fields.resource, fmt)
    return NewImport(
        resource=fields.resource,
        format=fmt,
        filename=form.file.filename,
        file=form.file.stream,
        file_sha256=form.file.sha256,
        mode=fields.mode,
        parent_job_id=fields.parent_job_id,
        callback_url=_vetted("callback_url", fields.callback_url),
    )


def _from_json() -> NewImport:
    try:
        payload = orjson.loads(_body_bytes() or b"{}")
    except orjson.JSONDecodeError as error:
        raise bad_request("invalid_json_body", f"the request body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise bad_request("invalid_json_body", "the request body must be a JSON object")
    request: ImportFromJson = _validated(lambda: ImportFromJson.model_validate(payload))
    fmt = request.format or _format_from_name(request.url)
    check_format_fits(request.resource, fmt)
    return NewImport(
        resource=request.resource,
        format=fmt,
        url=_vetted("url", request.url),
        mode=request.mode,
        parent_job_id=request.parent_job_id,
        callback_url=_vetted("callback_url", request.callback_url),
        upload_size=request.upload_size,
    )


def _vetted(field: str, url: str | None) -> str | None:
    """A URL the service will connect to, checked as far as it can be without DNS (the connection checks the
    addresses it resolves to)."""
    if url is None:
        return None
    settings = import_api().settings
    reason = check_url(url, settings.allow_http_urls, settings.url_denied_ports, field)
    if reason:
        raise bad_request(f"invalid_{field}", reason)
    return url


@route(
    "POST",
    "/v1/imports",
    Scope.IMPORTS_WRITE,
    "Start an import: a multipart upload, a URL, or a presigned upload URL",
    status_code=202,
)
def create_import(
    idempotency_key: Annotated[IdempotencyKey, Header(alias="Idempotency-Key", description=openapi.IDEMPOTENCY)] = None,
) -> Response[ImportSubmitted]:
    content_type = app.current_event.headers.get("Content-Type") or ""
    if content_type.startswith("multipart/form-data"):
        request = _upload(content_type)
    elif content_type.startswith("application/json") or not content_type:
        request = _from_json()
    else:
        raise unsupported_media_type(
            f"Content-Type {content_type!r} is not accepted: send multipart/form-data (a file) or application/json"
        )
    return _import_submitted(import_api().submit(request, idempotency_key, _caller().subject))


@route("GET", "/v1/imports", Scope.IMPORTS_READ, "The caller's import jobs, newest first (an admin sees all)")
def list_imports(
    limit: Annotated[PageLimit, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    status: Annotated[JobStatusFilter, Query(description="only the jobs in this status")] = None,
    resource: Annotated[ImportTargetFilter, Query(description="only the jobs loading this")] = None,
) -> Response[ImportJobPage]:
    page = import_api().list_jobs(limit, cursor, _caller(), status, resource)
    return _ok(ImportJobPage.model_validate({**page, "jobs": [with_import_links(job) for job in page["jobs"]]}))


@route("GET", "/v1/imports/<job_id>", Scope.IMPORTS_READ, "An import job: status, counters, progress, first errors")
def get_import(
    job_id: str,
    wait: Annotated[
        WaitSeconds,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="answer once the status or percent changes, at most this late"),
    ] = 0,
) -> Response[ImportJobView]:
    return _ok(ImportJobView.model_validate(with_import_links(import_api().view(job_id, _caller(), wait))))


@route("POST", "/v1/imports/<job_id>/cancel", Scope.IMPORTS_WRITE, "Cancel an import job that has not ended")
def cancel_import(job_id: str) -> Response[ImportJobView]:
    return _ok(ImportJobView.model_validate(with_import_links(import_api().cancel(job_id, _caller()))))


@route(
    "POST",
    "/v1/imports/<job_id>/commit",
    Scope.IMPORTS_WRITE,
    "Import what a validated dry run read, as a new job (once per dry run, within DRY_RUN_RETENTION_SECONDS)",
    status_code=202,
)
def commit_import(job_id: str) -> Response[ImportSubmitted]:
    return _import_submitted(import_api().commit(job_id, _caller()))


def _import_submitted(result: Submitted) -> Response[ImportSubmitted]:
    body = ImportSubmitted.model_validate(with_import_links(result.body))
    return _submitted(result, body, import_links(result.job_id)["self"])


@route(
    "GET",
    "/v1/imports/<job_id>/upload",
    Scope.IMPORTS_WRITE,
    "A resumable upload's parts, with fresh URLs, and the ones already uploaded",
)
def get_upload(job_id: str) -> Response[UploadStatus]:
    return _ok(UploadStatus.model_validate(import_api().upload_status(job_id, _caller())))


@route(
    "POST",
    "/v1/imports/<job_id>/upload/complete",
    Scope.IMPORTS_WRITE,
    "Complete a resumable upload once every part is uploaded: the job starts",
    status_code=202,
)
def complete_upload(job_id: str) -> Response[ImportJobView]:
    view = ImportJobView.model_validate(with_import_links(import_api().complete_upload(job_id, _caller())))
    return Response(202, "application/json", view, {"Location": import_links(job_id)["self"]})


@route(
    "GET",
    "/v1/imports/<job_id>/errors",
    Scope.IMPORTS_READ,
    "The job's full error report (inline, or a redirect to a download)",
    responses=openapi.ERROR_REPORT_RESPONSES,
)
def get_import_errors(job_id: str, format: Annotated[ReportFormat, Query()] = "ndjson") -> Response[Any]:
    return _report_response(import_api().error_report(job_id, format, _caller()))


@route(
    "GET",
    "/v1/imports/<job_id>/rejected",
    Scope.IMPORTS_READ,
    "The job's rejected records in the upload's format, with their errors, to fix and upload as they are",
    responses=openapi.ERROR_REPORT_RESPONSES,
)
def get_rejected_records(job_id: str, format: Annotated[RejectedFormatName, Query()] = None) -> Response[Any]:
    return _report_response(import_api().rejected_file(job_id, format, _caller()))


@route(
    "GET",
    "/v1/imports/<job_id>/deliveries",
    Scope.IMPORTS_READ,
    "The attempts to POST the job's end to its callback_url, oldest first",
)
def list_deliveries(job_id: str) -> Response[DeliveryList]:
    return _ok(DeliveryList.model_validate(import_api().deliveries(job_id, _caller())))


@route(
    "POST",
    "/v1/imports/<job_id>/deliveries/redeliver",
    Scope.IMPORTS_WRITE,
    "POST the ended job's summary to its callback_url once more",
    status_code=202,
)
def redeliver_callback(job_id: str) -> Response[RedeliveryQueued]:
    body = RedeliveryQueued.model_validate(import_api().redeliver(job_id, _caller()))
    return Response(202, "application/json", body, {"Location": body.deliveries_url})


def _report_response(report: ErrorReport) -> Response[Any]:
    """A report in the response when small, else a redirect to its download."""
    if report.redirect_url:
        return Response(303, report.content_type, "", {"Location": report.redirect_url})
    return Response(200, report.content_type, (report.body or b"").decode())


# ------------------------------------------------------------------------------------------------ exports
@route("POST", "/v1/exports", Scope.EXPORTS_READ, "Start an asynchronous export to a file", status_code=202)
def create_export(
    request: Annotated[ExportRequest | None, Body()] = None,
    idempotency_key: Annotated[IdempotencyKey, Header(alias="Idempotency-Key", description=openapi.IDEMPOTENCY)] = None,
) -> Response[ExportSubmitted]:
    # No body at all is checked as an empty object, so that it names what is missing.
    request = request or _validated(lambda: ExportRequest.model_validate({}))
    body = request.model_dump(mode="json", exclude_none=True)
    result = export_service().submit(body, idempotency_key, _caller().subject)
    body = ExportSubmitted.model_validate(with_export_links(result.body))
    return _submitted(result, body, export_links(result.job_id)["self"])


@route("GET", "/v1/exports/jobs", Scope.EXPORTS_READ, "The caller's export jobs, newest first (an admin sees all)")
def list_exports(
    limit: Annotated[PageLimit, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
    status: Annotated[ExportStatusFilter, Query(description="only the jobs in this status")] = None,
    resource: Annotated[ResourceFilter, Query(description="only the jobs exporting this")] = None,
) -> Response[ExportJobPage]:
    page = export_service().list_jobs(limit, cursor, _caller(), status, resource)
    return _ok(ExportJobPage.model_validate({**page, "jobs": [with_export_links(job) for job in page["jobs"]]}))


# Registered after /v1/exports/jobs, which its template would match too.
@route("GET", "/v1/exports/<job_id>", Scope.EXPORTS_READ, "An export job, with a download URL once completed")
def get_export(job_id: str) -> Response[ExportJobView]:
    return _ok(ExportJobView.model_validate(with_export_links(export_service().view(job_id, _caller()))))
