"""The API's OpenAPI document: paths, methods and path parameters come from the routes (Powertools generates
them from the resolver); this module adds what the routes cannot say: query parameters, request bodies,
responses, security, and the streamed export, which a function URL serves.

`tests/unit/test_openapi.py` keeps the two in step: every route is documented, every detail names a route.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from bulkio.domain.auth import ALL_SCOPES, ROUTE_SCOPES
from bulkio.domain.exports import FILTERS
from bulkio.domain.resources import COLUMNS, Format, Resource
from bulkio.problems import PROBLEM_CONTENT_TYPE

TITLE = "bulkio: bulk import and export of users, articles and comments"
VERSION = "1.0.0"

RESOURCES = [resource.value for resource in Resource]
FORMATS = [fmt.value for fmt in Format]
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeating a request with the same key (within 24 h) returns the first answer; one job.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


OBJECT = {"type": "object"}
PROBLEM_RESPONSE = {
    "description": "An RFC 9457 problem: `code` is stable, `detail` says what to fix",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

IMPORT_JSON_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resource"],
    "properties": {
        "resource": {"type": "string", "enum": RESOURCES},
        "format": {"type": "string", "enum": FORMATS, "description": "inferred from the file name or content"},
        "url": {
            "type": "string",
            "format": "uri",
            "pattern": "^https://",
            "description": "import from this URL; without it the answer holds a presigned upload URL",
        },
    },
}
IMPORT_FORM_REQUEST = {
    "type": "object",
    "required": ["resource", "file"],
    "properties": {
        "resource": {"type": "string", "enum": RESOURCES},
        "format": {"type": "string", "enum": FORMATS},
        "file": {"type": "string", "format": "binary"},
    },
}
EXPORT_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resource"],
    "properties": {
        "resource": {"type": "string", "enum": RESOURCES},
        "format": {"type": "string", "enum": FORMATS, "default": "ndjson"},
        "filters": {"type": "object", "description": "the filters of GET /v1/exports, by name"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "limit": {"type": "integer", "minimum": 1},
        "compression": {"type": "string", "enum": ["gzip"]},
    },
}


def _export_query_parameters() -> list[dict[str, Any]]:
    names = sorted({name for filters in FILTERS.values() for name in filters})
    fields = sorted({name for columns in COLUMNS.values() for name in columns})
    return [
        {"name": "resource", "in": "query", "required": True, "schema": {"type": "string", "enum": RESOURCES}},
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": FORMATS, "default": "ndjson"}},
        {
            "name": "fields",
            "in": "query",
            "description": f"comma-separated, among: {', '.join(fields)}",
            "schema": {"type": "string"},
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        *(
            {
                "name": name,
                "in": "query",
                "description": "a filter (see the README per resource)",
                "schema": {"type": "string"},
            }
            for name in names
        ),
    ]


# (method, path) -> what the operation's route cannot say about itself.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/health"): {
        "summary": "Health of the service and its database",
        "responses": {"200": _json(OBJECT, "healthy"), "503": _json(OBJECT, "a dependency is down")},
    },
    ("POST", "/v1/imports"): {
        "summary": "Start an import: a multipart upload, a URL, or a presigned upload URL",
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": IMPORT_JSON_REQUEST},
                "multipart/form-data": {"schema": IMPORT_FORM_REQUEST},
            },
        },
        "responses": {"202": _json(OBJECT, "the job, queued or awaiting its upload")},
    },
    ("GET", "/v1/imports"): {
        "summary": "The caller's import jobs, newest first (an admin sees all)",
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "`next` of a page"},
        ],
        "responses": {"200": _json(OBJECT, "a page of jobs")},
    },
    ("GET", "/v1/imports/{job_id}"): {
        "summary": "An import job: status, counters, progress, metrics, first errors",
        "parameters": [JOB_ID],
        "responses": {"200": _json(OBJECT, "the job")},
    },
    ("GET", "/v1/imports/{job_id}/errors"): {
        "summary": "The job's full error report (inline, or a redirect to a download)",
        "parameters": [
            JOB_ID,
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["ndjson", "csv"]}},
        ],
        "responses": {
            "200": {
                "description": "the report",
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "303": {"description": "the report is large: download it from Location"},
        },
    },
    ("POST", "/v1/imports/{job_id}/cancel"): {
        "summary": "Cancel an import job that has not ended",
        "parameters": [JOB_ID],
        "responses": {"200": _json(OBJECT, "the cancelled job")},
    },
    ("POST", "/v1/exports"): {
        "summary": "Start an asynchronous export to a file",
        "parameters": [IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": EXPORT_REQUEST}}},
        "responses": {"202": _json(OBJECT, "the export job")},
    },
    ("GET", "/v1/exports/{job_id}"): {
        "summary": "An export job, with a download URL once completed",
        "parameters": [JOB_ID],
        "responses": {"200": _json(OBJECT, "the export job")},
    },
    ("GET", "/v1/exports"): {
        "summary": "Stream rows (served by the export function's URL; the local stack serves it here)",
        "parameters": _export_query_parameters(),
        "responses": {
            "200": {
                "description": "rows as they leave the database",
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "array", "items": OBJECT}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    },
}

COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "code": {"type": "string"},
                "instance": {"type": "string"},
            },
        }
    },
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": f"scopes in the token's `scope` claim: {', '.join(ALL_SCOPES)}",
        }
    },
}


def complete_document(generated: Mapping[str, Any]) -> dict[str, Any]:
    """The document Powertools generated from the routes, with each operation's details, security and error
    responses, and the streamed export added."""
    document = copy.deepcopy(dict(generated))
    paths: dict[str, Any] = document.setdefault("paths", {})
    paths.setdefault("/v1/exports", {}).setdefault("get", {"operationId": "stream_export"})
    for path, operations in paths.items():
        for method, operation in operations.items():
            key = (method.upper(), path)
            details = copy.deepcopy(OPERATIONS.get(key, {}))
            operation.update({name: value for name, value in details.items() if name != "responses"})
            operation["responses"] = {**details.get("responses", {}), "default": PROBLEM_RESPONSE}
            scope = ROUTE_SCOPES.get(key, "admin")
            operation["security"] = [{"bearer": [str(scope)]}] if scope is not None else []
    document["components"] = {**document.get("components", {}), **COMPONENTS}
    document["info"] = {**document.get("info", {}), "title": TITLE, "version": VERSION}
    return document


@cache
def _swagger_assets() -> tuple[str, str]:
    from aws_lambda_powertools.event_handler.openapi import swagger_ui

    folder = Path(swagger_ui.__file__).parent
    return (
        (folder / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
        (folder / "swagger-ui.min.css").read_text(encoding="utf-8"),
    )


def swagger_page(document_json: str) -> str:
    """Powertools' Swagger UI page around our document; the `</` escape keeps the JSON from closing its
    <script> element."""
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    script, styles = _swagger_assets()
    return generate_swagger_html(document_json.replace("</", "<\\/"), script, styles, "", None, True)
