"""The API's OpenAPI document: Powertools generates it from the routes (bulkio.web.api) and their models; this
module adds only what a route's signature cannot say: the two request bodies of POST /v1/imports (a JSON body
or a multipart upload, which the route reads itself), the streamed export (served by the export function's URL,
not by the API), the bearer scheme and the problem responses every operation may give.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, SecurityScheme
from pydantic import BaseModel

from bulkio.domain.auth import ALL_SCOPES, Scope
from bulkio.domain.exports import FILTERS
from bulkio.domain.resources import COLUMNS, Format, Resource
from bulkio.problems import PROBLEM_CONTENT_TYPE
from bulkio.web.models import ImportFromJson, ImportUpload, ProblemBody

TITLE = "bulkio: bulk import and export of users, articles and comments"
VERSION = "1.0.0"
BEARER = "bearer"
IDEMPOTENCY = "Repeating a request with the same key (within 24 h) returns the first answer; one job."
SCHEMAS = "#/components/schemas/{model}"

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    BEARER: HTTPBearer(bearerFormat="JWT", description=f"scopes in the token's `scope` claim: {', '.join(ALL_SCOPES)}")
}

STREAMED_EXPORT = ("GET", "/v1/exports")
# Operations no route of the API serves: the streamed export's function URL checks this scope itself.
DECLARED_SCOPES: dict[tuple[str, str], Scope | None] = {STREAMED_EXPORT: Scope.EXPORTS_READ}


def health_responses(model: type[BaseModel]) -> dict[int, Any]:
    return {
        200: {"description": "every dependency answers", "content": {"application/json": {"model": model}}},
        503: {"description": "a dependency is down", "content": {"application/json": {"model": model}}},
    }


ERROR_REPORT_RESPONSES: dict[int, Any] = {
    200: {
        "description": "the report",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    },
    303: {"description": "the report is large: download it from Location"},
}


def template_of(path: str) -> str:
    """Powertools' `<job_id>` is API Gateway's and OpenAPI's `{job_id}`."""
    return re.sub(r"<(\w+)>", r"{\1}", path)


def _schema(model: type[BaseModel], definitions: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=SCHEMAS)
    definitions.update(schema.pop("$defs", {}))
    return schema


def _import_request_body(definitions: dict[str, Any]) -> dict[str, Any]:
    upload = _schema(ImportUpload, definitions)
    upload["properties"]["file"] = {"type": "string", "format": "binary", "description": "the data file"}
    return {
        "required": False,
        "content": {
            "application/json": {"schema": _schema(ImportFromJson, definitions)},
            "multipart/form-data": {"schema": upload},
        },
    }


def _streamed_export() -> dict[str, Any]:
    resources = [resource.value for resource in Resource]
    filters = sorted({name for names in FILTERS.values() for name in names})
    fields = sorted({name for columns in COLUMNS.values() for name in columns})
    return {
        "operationId": "stream_export",
        "summary": "Stream rows (served by the export function's URL; the local stack serves it here)",
        "parameters": [
            {"name": "resource", "in": "query", "required": True, "schema": {"type": "string", "enum": resources}},
            {
                "name": "format",
                "in": "query",
                "schema": {"type": "string", "enum": [fmt.value for fmt in Format], "default": "ndjson"},
            },
            {
                "name": "fields",
                "in": "query",
                "description": f"comma-separated, among: {', '.join(fields)}",
                "schema": {"type": "string"},
            },
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            *(
                {"name": name, "in": "query", "description": "a filter (see the README)", "schema": {"type": "string"}}
                for name in filters
            ),
        ],
        "responses": {
            "200": {
                "description": "rows as they leave the database",
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "text/csv": {"schema": {"type": "string"}},
                },
            }
        },
    }


def complete(generated: Mapping[str, Any], scopes: Mapping[tuple[str, str], Scope | None]) -> dict[str, Any]:
    """The generated document with the additions above; every operation gets its security from `scopes`."""
    document = copy.deepcopy(dict(generated))
    components = document.setdefault("components", {})
    definitions = components.setdefault("schemas", {})
    paths: dict[str, Any] = document.setdefault("paths", {})
    paths.setdefault("/v1/imports", {}).setdefault("post", {})["requestBody"] = _import_request_body(definitions)
    paths.setdefault(STREAMED_EXPORT[1], {})[STREAMED_EXPORT[0].lower()] = _streamed_export()
    definitions["Problem"] = _schema(ProblemBody, definitions)
    for path, operations in paths.items():
        for method, operation in operations.items():
            scope = scopes.get((method.upper(), path), Scope.ADMIN)
            operation["security"] = [{BEARER: [scope.value]}] if scope is not None else []
            # Every operation may refuse: a problem+json with a stable code. Powertools' own 422 never happens
            # here (invalid requests are 400 problems), so it is replaced.
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {
                "description": "An RFC 9457 problem: `code` is stable, `detail` says what to fix",
                "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": SCHEMAS.format(model="Problem")}}},
            }
    for powertools_own in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        definitions.pop(powertools_own, None)
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
