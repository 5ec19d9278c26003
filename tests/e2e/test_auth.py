"""Authentication and authorisation end to end: the template's authorizer run by the local host as API Gateway
runs it, the route scopes, the streaming export's own check, and who may see which job."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from bulkio.domain.auth import Scope
from bulkio.web.api import ROUTE_SCOPES

from tests.e2e.client import Api, Reply, generated
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e

ALL_WORKING_SCOPES = [Scope.IMPORTS_WRITE.value, Scope.IMPORTS_READ.value, Scope.EXPORTS_READ.value]
GUARDED_ROUTES = sorted((method, route) for (method, route), scope in ROUTE_SCOPES.items() if scope is not None)
OPEN_ROUTES = sorted((method, route) for (method, route), scope in ROUTE_SCOPES.items() if scope is None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def owner(local_stack: RunningStack) -> Api:
    return Api(local_stack, bearer(local_stack.token(ALL_WORKING_SCOPES, "alice")))


@pytest.fixture(scope="module")
def job_ids(owner: Api) -> dict[str, str]:
    """An import job (ended) and an export job of alice's, so that job routes have something real to refuse."""
    created = owner.upload("users", "users.csv", generated("users", 20, 4242, "csv"))
    assert created.status == 202, created.body
    import_id = created.json()["job_id"]
    owner.wait(import_id)
    export = owner.call("POST", "/exports", orjson.dumps({"resource": "users"}), {"Content-Type": "application/json"})
    assert export.status == 202, export.body
    return {"import": import_id, "export": export.json()["job_id"]}


def concrete(method: str, route: str, job_ids: dict[str, str]) -> tuple[str, bytes | None, dict[str, str]]:
    """A request on the route that would succeed with the right token: (path under /v1, body, headers)."""
    job_id = job_ids["export" if route.startswith("/v1/exports/") else "import"]
    path = route.removeprefix("/v1").replace("{job_id}", job_id)
    if route == "/v1/exports" and method == "GET":
        path += "?resource=users"
    if method == "POST" and route in ("/v1/imports", "/v1/exports"):
        return path, orjson.dumps({"resource": "users"}), {"Content-Type": "application/json"}
    return path, None, {}


def assert_unauthorized(reply: Reply, what: str) -> None:
    assert reply.status == 401, (what, reply.status, reply.body[:300])
    assert reply.headers["content-type"] == "application/problem+json", what
    assert reply.headers["www-authenticate"].startswith('Bearer realm="bulkio"'), what
    problem = orjson.loads(reply.body)
    assert (problem["status"], problem["code"]) == (401, "unauthorized"), what
    assert "Bearer" in problem["detail"] or "token" in problem["detail"], what


def forged_token(subject: str) -> str:
    return jwt.encode(
        {"sub": subject, "scope": "admin", "exp": 4_102_444_800, "iss": "bulkio-local", "aud": "bulkio"},
        "not-the-stack-secret-" * 3,
        algorithm="HS256",
    )


def unsigned_token(subject: str) -> str:
    return jwt.encode({"sub": subject, "scope": "admin", "exp": 4_102_444_800}, key=None, algorithm="none")


@pytest.mark.parametrize(("method", "route"), GUARDED_ROUTES)
def test_every_guarded_route_refuses_missing_expired_forged_and_unsigned_tokens(
    local_stack: RunningStack, job_ids: dict[str, str], method: str, route: str
) -> None:
    path, body, headers = concrete(method, route, job_ids)
    credentials: dict[str, dict[str, str]] = {
        "no token": {},
        "not a bearer token": {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        "garbage": bearer("not.a.jwt"),
        "expired": bearer(local_stack.token([*ALL_WORKING_SCOPES, "admin"], "alice", ttl_seconds=-300)),
        "forged": bearer(forged_token("alice")),
        "unsigned (alg none)": bearer(unsigned_token("alice")),
    }
    for what, authorization in credentials.items():
        reply = Api(local_stack, authorization).call(method, path, body, headers)
        assert_unauthorized(reply, f"{method} {route} with {what}")


@pytest.mark.parametrize(("method", "route"), GUARDED_ROUTES)
def test_a_valid_token_without_the_routes_scope_is_forbidden(
    local_stack: RunningStack, job_ids: dict[str, str], method: str, route: str
) -> None:
    needed = ROUTE_SCOPES[(method, route)]
    assert needed is not None
    others = [scope for scope in ALL_WORKING_SCOPES if scope != needed.value]
    path, body, headers = concrete(method, route, job_ids)
    reply = Api(local_stack, bearer(local_stack.token(others, "alice"))).call(method, path, body, headers)
    assert reply.status == 403, (method, route, reply.body[:300])
    problem = reply.json()
    assert (problem["code"], problem["required_scope"]) == ("insufficient_scope", needed.value)
    assert f'scope="{needed.value}"' in reply.headers["www-authenticate"]

    allowed = Api(local_stack, bearer(local_stack.token([needed.value], "alice"))).call(method, path, body, headers)
    # Past the door (cancelling an ended job is a 409 of the route itself, not of the authorisation).
    assert allowed.status not in (401, 403) and allowed.status < 500, (method, route, allowed.body[:300])


@pytest.mark.parametrize(("method", "route"), OPEN_ROUTES)
def test_open_routes_need_no_token(local_stack: RunningStack, method: str, route: str) -> None:
    reply = Api(local_stack, {}).call(method, route.removeprefix("/v1"))
    assert reply.status == 200, reply.body[:300]


def test_only_the_owner_or_an_admin_sees_a_job(local_stack: RunningStack, job_ids: dict[str, str]) -> None:
    mallory = Api(local_stack, bearer(local_stack.token(ALL_WORKING_SCOPES, "mallory")))
    admin = Api(local_stack, bearer(local_stack.token(["admin"], "ops")))
    import_id, export_id = job_ids["import"], job_ids["export"]
    for path in (f"/imports/{import_id}", f"/imports/{import_id}/errors", f"/exports/{export_id}"):
        refused = mallory.call("GET", path)
        assert (refused.status, refused.json()["code"]) == (404, "job_not_found"), path
        assert admin.call("GET", path).status in (200, 303), path
    assert mallory.call("POST", f"/imports/{import_id}/cancel").status == 404
    listed = {job["job_id"] for job in mallory.call("GET", "/imports?limit=100").json()["jobs"]}
    assert import_id not in listed
    assert import_id in {job["job_id"] for job in admin.call("GET", "/imports?limit=100").json()["jobs"]}


def test_idempotency_keys_belong_to_their_caller(local_stack: RunningStack) -> None:
    key = f"shared-{uuid.uuid4()}"
    body: dict[str, Any] = {"resource": "users"}
    first = Api(local_stack, bearer(local_stack.token(ALL_WORKING_SCOPES, "alice"))).post_json(
        body, **{"Idempotency-Key": key}
    )
    second = Api(local_stack, bearer(local_stack.token(ALL_WORKING_SCOPES, "bob"))).post_json(
        body, **{"Idempotency-Key": key}
    )
    assert first.status == second.status == 202
    assert first.json()["job_id"] != second.json()["job_id"]
    assert "idempotent-replayed" not in second.headers


def test_a_refused_token_and_a_client_that_hangs_up_are_one_line_each_in_the_console(
    local_stack: RunningStack,
) -> None:
    console = local_stack.state_dir / "console.log"
    before = console.stat().st_size
    base = local_stack.api_url.rstrip("/")
    refused = Api(local_stack, {"Authorization": "Bearer not-a-token"}).call("GET", "/imports")
    assert refused.status == 401

    # A client that reads the start of an answer and hangs up (`curl … | head -3`), resetting the connection the
    # server keeps open for its next request.
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(f"GET /v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        client.recv(16)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline and "hung up" not in text:
        time.sleep(0.3)
        text = console.read_bytes()[before:].decode("utf-8", "replace")

    assert "token refused: the authorizer answered Unauthorized (401)" in text
    assert "hung up before the answer was sent" in text
    assert "Traceback" not in text
