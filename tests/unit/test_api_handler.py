"""functions/api/app.py driven with API Gateway REST proxy events, the service wired to in-memory fakes."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import orjson
import pytest
from bulkio import bootstrap
from bulkio.domain.jobs import Counters
from bulkio.domain.resources import Format, ImportTarget
from bulkio.services.imports.api import INLINE_REPORT_BYTES, NewImport
from bulkio.services.imports.common import report_key, source_key
from bulkio.web.api import ROUTE_SCOPES

from tests.fakes import CALLER as SERVICE_CALLER
from tests.fakes import OWNER, FakeWorld, build_world, make_settings
from tests.functions import LambdaContext, load_function_app

BOUNDARY = "api-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CSV = b"email,name\nann@example.com,Ann\n"
MAX_UPLOAD_BYTES = 4096
CALLER = {"principalId": "ann", "subject": "ann", "scopes": "imports:read imports:write exports:read"}


def load_api_app() -> ModuleType:
    return load_function_app("api")


@pytest.fixture(scope="module")
def api() -> ModuleType:
    return load_api_app()


@pytest.fixture
def world(api: ModuleType, monkeypatch: pytest.MonkeyPatch) -> FakeWorld:
    world = build_world(make_settings(max_upload_bytes=MAX_UPLOAD_BYTES))
    monkeypatch.setattr(bootstrap, "wiring", world.wiring())
    return world


def route_of(method: str, path: str) -> str:
    """The route template API Gateway would put in `resource` for this path (the path itself if none)."""
    for known_method, route in ROUTE_SCOPES:
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route))
        if known_method == method and re.fullmatch(pattern, path):
            return route
    return path


def event(
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    resource: str | None = None,
    caller: dict[str, str] | None = CALLER,
) -> dict[str, Any]:
    """`caller`: the requestContext.authorizer API Gateway's authorizer hands over; None when it did not run."""
    headers = headers or {}
    resource = resource or route_of(method, path)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "request-1",
            "identity": {"sourceIp": "203.0.113.7"},
            **({"authorizer": caller} if caller is not None else {}),
        },
        "body": base64.b64encode(body).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return orjson.loads(self.text)


def call(api: ModuleType, request: dict[str, Any]) -> HttpResponse:
    raw = api.handler(request, LambdaContext())
    headers = {name.lower(): values[-1] for name, values in raw["multiValueHeaders"].items()}
    body = base64.b64decode(raw["body"]).decode() if raw["isBase64Encoded"] else raw["body"]
    return HttpResponse(raw["statusCode"], headers, body)


def multipart_body(fields: dict[str, str], content: bytes | None = CSV, filename: str = "users.csv") -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if content is not None:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post_multipart(api: ModuleType, body: bytes, **headers: str) -> HttpResponse:
    return call(api, event("POST", "/v1/imports", body=body, headers={"Content-Type": MULTIPART, **headers}))


def post_json(api: ModuleType, payload: Any, **headers: str) -> HttpResponse:
    body = orjson.dumps(payload)
    return call(api, event("POST", "/v1/imports", body=body, headers={"Content-Type": "application/json", **headers}))


def get(api: ModuleType, path: str, query: dict[str, str] | None = None) -> HttpResponse:
    return call(api, event("GET", path, query=query))


def assert_problem(response: HttpResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"].endswith(f"/{code}")
    return problem


# ========================================================================================= POST /v1/imports


def test_a_multipart_upload_is_accepted(api: ModuleType, world: FakeWorld) -> None:
    response = post_multipart(api, multipart_body({"resource": "users"}))

    assert response.status == 202
    body = response.json()
    job_id = body["job_id"]
    assert (body["status"], body["resource"], body["format"]) == ("queued", "users", "csv")
    assert response.headers["location"] == f"/v1/imports/{job_id}"
    assert response.headers["content-type"] == "application/json"
    assert world.objects.read_bytes(source_key(job_id)) == CSV


def test_a_url_import_is_accepted_and_launched(api: ModuleType, world: FakeWorld) -> None:
    response = post_json(api, {"resource": "articles", "url": "https://example.com/export/articles.ndjson"})

    assert response.status == 202
    body = response.json()
    assert (body["status"], body["resource"], body["format"]) == ("queued", "articles", "ndjson")
    assert world.launches.job_ids == [body["job_id"]]


def test_a_json_request_without_url_gets_a_presigned_upload(api: ModuleType, world: FakeWorld) -> None:
    response = post_json(api, {"resource": "comments", "format": "NDJSON"})

    assert response.status == 202
    body = response.json()
    assert (body["status"], body["format"]) == ("awaiting_upload", "ndjson")
    assert body["upload"]["method"] == "PUT"
    assert source_key(body["job_id"]) in body["upload"]["url"]


def test_an_unknown_resource_is_a_bad_request_naming_the_allowed_ones(api: ModuleType, world: FakeWorld) -> None:
    response = post_json(api, {"resource": "orders"})

    problem = assert_problem(response, 400, "invalid_resource")
    assert problem["allowed"] == ["users", "articles", "comments", "mixed"]
    assert "users, articles, comments" in problem["detail"]
    assert problem["instance"] == "/v1/imports"
    assert world.jobs.all_jobs() == []


def test_a_multipart_upload_without_resource_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(post_multipart(api, multipart_body({})), 400, "invalid_resource")


def test_an_unknown_format_is_a_bad_request_naming_the_allowed_ones(api: ModuleType, world: FakeWorld) -> None:
    response = post_multipart(api, multipart_body({"resource": "users", "format": "xlsx"}))

    problem = assert_problem(response, 400, "invalid_format")
    assert problem["allowed"] == ["csv", "ndjson", "json", "zip", "tar"]
    assert "csv, ndjson, json (zip or tar for resource=mixed)" in problem["detail"]
    assert world.jobs.all_jobs() == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"resource": "users", "format": "zip"}, "send it with resource=mixed"),
        ({"resource": "mixed", "format": "csv"}, "a CSV file holds one resource"),
    ],
)
def test_a_format_that_cannot_hold_what_is_imported_is_refused(
    api: ModuleType, world: FakeWorld, fields: dict[str, str], fragment: str
) -> None:
    problem = assert_problem(post_multipart(api, multipart_body(fields)), 400, "invalid_format")
    assert fragment in problem["detail"]
    assert world.jobs.all_jobs() == []


def test_an_archive_named_by_its_file_is_refused_for_one_resource(api: ModuleType, world: FakeWorld) -> None:
    body = multipart_body({"resource": "articles"}, filename="export.tar.gz")
    problem = assert_problem(post_multipart(api, body), 400, "invalid_format")
    assert "a tar archive may hold several resources" in problem["detail"]


def test_a_multipart_upload_without_file_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(post_multipart(api, multipart_body({"resource": "users"}, content=None)), 400, "missing_file")


def test_a_malformed_multipart_body_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(post_multipart(api, b"not multipart"), 400, "invalid_multipart")


def test_unknown_json_fields_are_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    problem = assert_problem(post_json(api, {"resource": "users", "delimiter": ";"}), 400, "unknown_field")

    assert "delimiter" in problem["detail"]


def test_a_url_with_a_forbidden_scheme_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(post_json(api, {"resource": "users", "url": "file:///etc/passwd"}), 400, "invalid_url")


def test_an_upload_over_the_limit_points_to_the_presigned_upload(api: ModuleType, world: FakeWorld) -> None:
    body = multipart_body({"resource": "users"}, content=CSV * (MAX_UPLOAD_BYTES // len(CSV) + 1))

    response = post_multipart(api, body)

    problem = assert_problem(response, 413, "payload_too_large")
    assert problem["limit_bytes"] == MAX_UPLOAD_BYTES
    assert "presigned" in problem["detail"]
    assert world.jobs.all_jobs() == []


def test_an_unsupported_content_type_is_refused(api: ModuleType, world: FakeWorld) -> None:
    request = event("POST", "/v1/imports", body=CSV, headers={"Content-Type": "text/csv"})

    problem = assert_problem(call(api, request), 415, "unsupported_media_type")

    assert "multipart/form-data" in problem["detail"]


def test_a_repeated_request_with_an_idempotency_key_is_replayed(api: ModuleType, world: FakeWorld) -> None:
    first = post_json(api, {"resource": "users"}, **{"Idempotency-Key": "key-1"})

    replay = post_json(api, {"resource": "users"}, **{"Idempotency-Key": "key-1"})

    assert replay.status == first.status == 202
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(world.jobs.all_jobs()) == 1


def test_a_reused_idempotency_key_is_unprocessable(api: ModuleType, world: FakeWorld) -> None:
    post_json(api, {"resource": "users"}, **{"Idempotency-Key": "key-1"})

    response = post_json(api, {"resource": "articles"}, **{"Idempotency-Key": "key-1"})

    assert_problem(response, 422, "idempotency_key_reused")


def test_an_invalid_idempotency_key_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    response = post_json(api, {"resource": "users"}, **{"Idempotency-Key": "x" * 256})

    assert_problem(response, 400, "invalid_idempotency_key")


# ====================================================================================== GET /v1/imports/{id}


def test_a_job_is_shown(api: ModuleType, world: FakeWorld) -> None:
    job_id = post_json(api, {"resource": "users"}).json()["job_id"]

    response = get(api, f"/v1/imports/{job_id}")

    assert response.status == 200
    view = response.json()
    assert (view["job_id"], view["status"], view["resource"]) == (job_id, "awaiting_upload", "users")
    assert view["links"]["errors"] == f"/v1/imports/{job_id}/errors"
    # Members in the order they have always come (a job that has not failed has no `failure`).
    assert list(view) == [
        *("job_id", "status", "resource", "format", "source", "counters", "progress", "metrics", "errors_by_code"),
        *("created_at", "started_at", "finished_at", "errors", "errors_url", "links", "mode"),
    ]
    listed = get(api, "/v1/imports").json()["jobs"][0]
    assert list(listed) == [key for key in view if key != "errors"]


def test_an_unknown_job_is_not_found(api: ModuleType, world: FakeWorld) -> None:
    problem = assert_problem(get(api, "/v1/imports/no-such-job"), 404, "job_not_found")

    assert "no-such-job" in problem["detail"]


def test_an_unknown_route_is_a_not_found_problem(api: ModuleType, world: FakeWorld) -> None:
    # API Gateway never routes an unknown path to the function; if something did, only an admin gets this far.
    admin = {**CALLER, "scopes": "admin"}
    assert_problem(call(api, event("GET", "/v2/everything", caller=admin)), 404, "route_not_found")
    assert_problem(get(api, "/v2/everything"), 403, "insufficient_scope")


# ================================================================================ GET /v1/imports/{id}/errors


def finished_job(api: ModuleType, world: FakeWorld) -> str:
    job_id: str = post_json(api, {"resource": "users"}).json()["job_id"]
    world.jobs.finish(job_id, Counters(total=2, processed=2, succeeded=1, failed=1), {"invalid_email": 1})
    return job_id


def test_a_small_error_report_comes_inline(api: ModuleType, world: FakeWorld) -> None:
    job_id = finished_job(api, world)
    report = b'{"line": 2, "code": "invalid_email"}\n'
    world.objects.put_bytes(report_key(job_id, "ndjson"), report)

    response = get(api, f"/v1/imports/{job_id}/errors")

    assert response.status == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text == report.decode()


def test_the_csv_error_report_is_served_as_csv(api: ModuleType, world: FakeWorld) -> None:
    job_id = finished_job(api, world)
    world.objects.put_bytes(report_key(job_id, "csv"), b"line,code\n2,invalid_email\n")

    response = get(api, f"/v1/imports/{job_id}/errors", {"format": "csv"})

    assert response.status == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text == "line,code\n2,invalid_email\n"


def test_a_large_error_report_is_a_redirect_to_a_download(api: ModuleType, world: FakeWorld) -> None:
    job_id = finished_job(api, world)
    world.objects.put_bytes(report_key(job_id, "ndjson"), b"x" * (INLINE_REPORT_BYTES + 1))

    response = get(api, f"/v1/imports/{job_id}/errors")

    assert response.status == 303
    assert report_key(job_id, "ndjson") in response.headers["location"]
    assert f"import-{job_id}-errors.ndjson" in response.headers["location"]
    assert response.text == ""


def test_the_error_report_of_a_running_job_is_not_ready(api: ModuleType, world: FakeWorld) -> None:
    job_id = post_json(api, {"resource": "users"}).json()["job_id"]

    problem = assert_problem(get(api, f"/v1/imports/{job_id}/errors"), 409, "report_not_ready")

    assert "awaiting_upload" in problem["detail"]


def test_the_error_report_of_an_unknown_job_is_not_found(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(get(api, "/v1/imports/no-such-job/errors"), 404, "job_not_found")


def test_an_unknown_report_format_is_a_bad_request(api: ModuleType, world: FakeWorld) -> None:
    job_id = finished_job(api, world)

    problem = assert_problem(get(api, f"/v1/imports/{job_id}/errors", {"format": "xlsx"}), 400, "invalid_format")

    assert problem["allowed"] == ["ndjson", "csv"]


# ========================================================================================= GET /v1/imports


def test_jobs_are_listed_newest_first_in_pages(api: ModuleType, world: FakeWorld) -> None:
    created = [post_json(api, {"resource": "users"}).json()["job_id"] for _ in range(3)]

    first = call(api, event("GET", "/v1/imports", query={"limit": "2"}))
    assert first.status == 200
    page = first.json()
    assert [job["job_id"] for job in page["jobs"]] == created[::-1][:2]
    assert "errors" not in page["jobs"][0]
    assert page["next"]

    second = call(api, event("GET", "/v1/imports", query={"limit": "2", "cursor": page["next"]})).json()
    assert [job["job_id"] for job in second["jobs"]] == [created[0]]
    assert second["next"] is None


def test_a_bad_limit_or_cursor_is_a_problem(api: ModuleType, world: FakeWorld) -> None:
    assert_problem(call(api, event("GET", "/v1/imports", query={"limit": "0"})), 400, "invalid_limit")
    assert_problem(call(api, event("GET", "/v1/imports", query={"cursor": "%%%"})), 400, "invalid_cursor")


def test_the_listing_filters_by_status_and_resource(api: ModuleType, world: FakeWorld) -> None:
    queued = world.api.submit(NewImport(ImportTarget.USERS, Format.CSV), None, OWNER).body["job_id"]
    mixed = world.api.submit(NewImport(ImportTarget.MIXED, Format.NDJSON), None, OWNER).body["job_id"]
    world.api.cancel(mixed, SERVICE_CALLER)

    def listed(query: dict[str, str]) -> list[str]:
        response = call(api, event("GET", "/v1/imports", query=query))
        assert response.status == 200, response.text
        return [job["job_id"] for job in response.json()["jobs"]]

    assert listed({"status": "cancelled"}) == [mixed]
    assert listed({"status": "awaiting_upload", "resource": "users"}) == [queued]
    assert listed({"resource": "articles"}) == []
    assert set(listed({})) == {queued, mixed}


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ({"state": "failed"}, "unknown_parameter", "unknown query parameter state: this route takes cursor, limit"),
        ({"status": "done"}, "invalid_status", "status 'done' is not a job status"),
        ({"resource": "orders"}, "invalid_resource", "resource 'orders' is not supported"),
    ],
)
def test_a_listing_refuses_unknown_parameters_and_values(
    api: ModuleType, world: FakeWorld, query: dict[str, str], code: str, fragment: str
) -> None:
    problem = assert_problem(call(api, event("GET", "/v1/imports", query=query)), 400, code)
    assert fragment in problem["detail"]


def test_a_route_without_query_parameters_refuses_any(api: ModuleType, world: FakeWorld) -> None:
    job_id = world.api.submit(NewImport(ImportTarget.USERS, Format.CSV), None, OWNER).body["job_id"]
    problem = assert_problem(
        call(api, event("POST", f"/v1/imports/{job_id}/cancel", query={"force": "1"})), 400, "unknown_parameter"
    )
    assert problem["detail"] == "unknown query parameter force: this route takes none"


def test_a_callback_url_is_checked_and_named_as_such(api: ModuleType, world: FakeWorld) -> None:
    problem = assert_problem(
        post_json(api, {"resource": "users", "callback_url": "ftp://hooks.example/x"}), 400, "invalid_callback_url"
    )
    assert problem["detail"].startswith("callback_url scheme 'ftp' is not allowed")
    assert world.jobs.all_jobs() == []
