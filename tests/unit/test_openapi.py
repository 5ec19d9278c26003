"""The OpenAPI document stays in step with the routes: the API function's, the template's, and the scopes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from bulkio.web.api import ROUTE_SCOPES

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


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def test_every_operation_documents_its_success_with_a_schema(document: dict[str, Any]) -> None:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            successes = {code: answer for code, answer in operation["responses"].items() if code.startswith("2")}
            assert successes, (method, path)
            for answer in successes.values():
                assert all("schema" in media for media in answer["content"].values()), (method, path)


def test_json_answers_are_the_response_models(document: dict[str, Any]) -> None:
    job = document["paths"]["/v1/imports/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    schema = resolve(document, job["schema"])
    assert {"job_id", "status", "counters", "progress", "errors", "links"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_request_bodies_come_from_the_request_models(document: dict[str, Any]) -> None:
    bodies = document["paths"]["/v1/imports"]["post"]["requestBody"]["content"]
    assert set(bodies) == {"application/json", "multipart/form-data"}
    from_json = resolve(document, bodies["application/json"]["schema"])
    assert (from_json["required"], from_json["additionalProperties"]) == (["resource"], False)
    assert bodies["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    export = document["paths"]["/v1/exports"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    export_schema = resolve(document, export.get("anyOf", [export])[0])
    assert set(export_schema["properties"]) == {"resource", "format", "filters", "fields", "limit", "compression"}


def test_idempotency_key_is_a_documented_header_of_job_creating_routes(document: dict[str, Any]) -> None:
    for path in ("/v1/imports", "/v1/exports"):
        headers = [p["name"] for p in document["paths"][path]["post"]["parameters"] if p["in"] == "header"]
        assert headers == ["idempotency-key"], path


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
