"""The API function behind API Gateway: imports (/v1/imports...), asynchronous exports (/v1/exports...), health,
and the OpenAPI document with its Swagger UI. The authorizer has checked the caller's token; the `authorization`
middleware checks each route's scope before the route runs."""

from __future__ import annotations

import base64
import time
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.adapters.http_source import check_url
from bulkio.domain.auth import Principal, required_scope
from bulkio.domain.idempotency import valid_key
from bulkio.domain.parsing import detect_format
from bulkio.domain.resources import Format, Resource, parse_format, parse_resource
from bulkio.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    bad_request,
    payload_too_large,
    unsupported_media_type,
)
from bulkio.services.bootstrap import export_service, import_service, metrics, pushing_metrics
from bulkio.services.health import check_health
from bulkio.services.imports import NewImport
from bulkio.web.auth import caller_from_authorizer, require_scope
from bulkio.web.multipart import parse_form
from bulkio.web.openapi import TITLE, VERSION, complete_document, swagger_page

logger = Logger()
app = APIGatewayRestResolver()

JSON_FIELDS = {"resource", "format", "url"}
MAX_PAGE = 100


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(status, "application/json", orjson.dumps(body).decode(), headers or {})


def _problem(problem: Problem) -> Response[Any]:
    return Response(
        problem.status,
        PROBLEM_CONTENT_TYPE,
        orjson.dumps(problem.to_dict(app.current_event.path)).decode(),
        problem.headers,
    )


@app.exception_handler(Problem)
def handle_problem(problem: Problem) -> Response[Any]:
    return _problem(problem)


@app.not_found
def handle_not_found(_: Exception) -> Response[Any]:
    return _problem(Problem(404, "route_not_found", "Not found", f"no route {app.current_event.path}"))


def authorization(resolver: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Every route's scope, checked in one place before it runs (the authorizer has checked the token)."""
    event = resolver.current_event
    scope = required_scope(event.http_method, event.resource)
    if scope is not None:
        caller = caller_from_authorizer(event.get("requestContext", {}).get("authorizer"))
        require_scope(caller, scope)
        resolver.append_context(caller=caller)
    return next_middleware(resolver)


app.use(middlewares=[authorization])


def _caller() -> Principal:
    caller: Principal = app.context["caller"]
    return caller


@cache
def _openapi_document() -> str:
    generated = app.get_openapi_schema(title=TITLE, version=VERSION)
    return orjson.dumps(complete_document(generated.model_dump(by_alias=True, exclude_none=True, mode="json"))).decode()


@app.get("/v1/openapi.json", include_in_schema=False)
def openapi_document() -> Response[Any]:
    return Response(200, "application/json", _openapi_document())


@app.get("/v1/docs", include_in_schema=False)
def swagger_ui() -> Response[Any]:
    """Swagger UI, self-contained (its script and styles inline): it works where no CDN is reachable."""
    return Response(200, "text/html", swagger_page(_openapi_document()))


@app.get("/v1/health", summary="Health of the service and its database")
def health() -> Response[Any]:
    report = check_health()
    return _json(200 if report["status"] == "ok" else 503, report)


def _resource(value: object) -> Resource:
    resource = parse_resource(value)
    if resource is None:
        allowed = ", ".join(r.value for r in Resource)
        raise bad_request(
            "invalid_resource",
            f"resource {value!r} is not supported: use one of {allowed}",
            allowed=[r.value for r in Resource],
        )
    return resource


def _format(value: object) -> Format | None:
    if value in (None, ""):
        return None
    fmt = parse_format(value)
    if fmt is None:
        raise bad_request(
            "invalid_format",
            f"format {value!r} is not supported: use one of csv, ndjson, json (or leave it out to infer it)",
            allowed=[f.value for f in Format],
        )
    return fmt


def _format_from_name(name: str | None) -> Format | None:
    """Infers the format from a file name or URL path when it has a known extension; else the chunker sniffs."""
    return detect_format(urlsplit(name).path, b"") if name else None


def _body_bytes() -> bytes:
    event = app.current_event
    raw = event.body or ""
    return base64.b64decode(raw) if event.is_base64_encoded else raw.encode()


def _json_body() -> dict[str, Any]:
    try:
        payload = orjson.loads(_body_bytes() or b"{}")
    except orjson.JSONDecodeError as error:
        raise bad_request("invalid_json_body", f"the request body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise bad_request("invalid_json_body", "the request body must be a JSON object")
    return payload


def _idempotency_key() -> str | None:
    key = app.current_event.headers.get("Idempotency-Key")
    if key is not None and not valid_key(key):
        raise bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def _new_import() -> NewImport:
    settings = import_service().settings
    content_type = app.current_event.headers.get("Content-Type") or ""
    body = _body_bytes()
    if content_type.startswith("multipart/form-data"):
        if len(body) > settings.max_upload_bytes:
            raise payload_too_large(
                f"the upload is {len(body)} bytes, over the {settings.max_upload_bytes}-byte limit for multipart "
                "uploads: POST /v1/imports with a JSON body without url to get a presigned S3 upload URL "
                "(or drop the file under drop/<resource>/ in the import bucket)",
                limit_bytes=settings.max_upload_bytes,
            )
        form = parse_form(body, content_type)
        if form.file is None:
            raise bad_request("missing_file", "multipart uploads need a 'file' part holding the data file")
        unknown = set(form.fields) - {"resource", "format"}
        if unknown:
            raise bad_request("unknown_field", f"unknown form fields {sorted(unknown)}: send file, resource, format")
        return NewImport(
            resource=_resource(form.fields.get("resource")),
            format=_format(form.fields.get("format")) or _format_from_name(form.file.filename),
            filename=form.file.filename,
            file=form.file.stream,
            file_sha256=form.file.sha256,
        )
    if content_type.startswith("application/json") or not content_type:
        payload = _json_body()
        unknown = set(payload) - JSON_FIELDS
        if unknown:
            raise bad_request("unknown_field", f"unknown fields {sorted(unknown)}: send resource, format, url")
        url = payload.get("url")
        if url is not None:
            reason = check_url(str(url), settings.allow_http_urls, settings.url_denied_ports)
            if reason:
                raise bad_request("invalid_url", reason)
        return NewImport(
            resource=_resource(payload.get("resource")),
            format=_format(payload.get("format")) or _format_from_name(url),
            url=url,
        )
    raise unsupported_media_type(
        f"Content-Type {content_type!r} is not accepted: send multipart/form-data (a file) or application/json"
    )


@app.post("/v1/imports")
def create_import() -> Response[Any]:
    result = import_service().submit(_new_import(), _idempotency_key(), _caller().subject)
    return _json(result.status, result.body, result.headers)


@app.get("/v1/imports")
def list_imports() -> Response[Any]:
    query = app.current_event.query_string_parameters or {}
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise bad_request("invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}")
    return _json(200, import_service().list_jobs(int(raw_limit), query.get("cursor"), _caller()))


@app.get("/v1/imports/<job_id>")
def get_import(job_id: str) -> Response[Any]:
    return _json(200, import_service().view(job_id, _caller()))


@app.post("/v1/imports/<job_id>/cancel")
def cancel_import(job_id: str) -> Response[Any]:
    return _json(200, import_service().cancel(job_id, _caller()))


@app.get("/v1/imports/<job_id>/errors")
def get_import_errors(job_id: str) -> Response[Any]:
    fmt = (app.current_event.query_string_parameters or {}).get("format", "ndjson")
    if fmt not in ("ndjson", "csv"):
        raise bad_request(
            "invalid_format", f"error reports come as ndjson or csv, not {fmt!r}", allowed=["ndjson", "csv"]
        )
    report = import_service().error_report(job_id, fmt, _caller())
    if report.redirect_url:
        return Response(303, report.content_type, "", {"Location": report.redirect_url})
    return Response(200, report.content_type, (report.body or b"").decode())


@app.post("/v1/exports")
def create_export() -> Response[Any]:
    result = export_service().submit(_json_body(), _idempotency_key(), _caller().subject)
    return _json(result.status, result.body, result.headers)


@app.get("/v1/exports/<job_id>")
def get_export(job_id: str) -> Response[Any]:
    return _json(200, export_service().view(job_id, _caller()))


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.monotonic()
    response = app.resolve(event, context)
    # The route template (/v1/imports/{job_id}), not the path: one series per route, not per job.
    route, method = event.get("resource") or "unknown", event.get("httpMethod") or "unknown"
    registry = metrics()
    registry.api_requests.labels(route, method, str(response.get("statusCode"))).inc()
    registry.api_seconds.labels(route, method).observe(time.monotonic() - started)
    return response
