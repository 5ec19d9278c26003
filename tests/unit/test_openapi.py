"""The OpenAPI document stays in step with the routes: the API function's, the template's, and the scopes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from bulkio.domain.auth import ROUTE_SCOPES
from bulkio.web.openapi import OPERATIONS

from infra.local.template import load_template
from tests.unit.test_api_handler import call, event, load_api_app

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
UNDOCUMENTED = {("GET", "/v1/openapi.json"), ("GET", "/v1/docs")}  # the document and its viewer
STREAMED_EXPORT = ("GET", "/v1/exports")  # a function URL, not an API Gateway route


@pytest.fixture(scope="module")
def api() -> ModuleType:
    return load_api_app()


@pytest.fixture(scope="module")
def document(api: ModuleType) -> dict[str, Any]:
    response = call(api, event("GET", "/v1/openapi.json", caller=None))
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}


def template_routes() -> set[tuple[str, str]]:
    stack = load_template(REPOSITORY_ROOT / "template.yaml", parameter_overrides={"DatabaseUrl": ""})
    return {(event.method, event.path) for function in stack.functions.values() for event in function.api_events}


def test_every_route_of_the_template_is_documented_and_nothing_else(document: dict[str, Any]) -> None:
    assert operations(document) == (template_routes() - UNDOCUMENTED) | {STREAMED_EXPORT}


def test_every_detail_describes_a_documented_operation(document: dict[str, Any]) -> None:
    assert set(OPERATIONS) == operations(document)


def test_security_follows_the_route_scopes(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            scope = ROUTE_SCOPES[(method.upper(), path)]
            assert operation["security"] == ([] if scope is None else [{"bearer": [scope.value]}]), (method, path)


def test_every_operation_documents_problems_and_path_parameters(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        for operation in methods.values():
            assert operation["responses"]["default"]["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
            in_path = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "path"}
            assert in_path == {segment.strip("{}") for segment in path.split("/") if segment.startswith("{")}


def test_the_document_and_swagger_ui_need_no_token(api: ModuleType, document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    page = call(api, event("GET", "/v1/docs", caller=None))
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text
    # The page carries the document itself (no second request, no CDN).
    assert orjson.dumps(document["info"]["title"]).decode() in page.text
    assert '"/v1/imports/{job_id}/errors"' in page.text
