"""The embedded stack admits loopback URLs (URL_ALLOWED_HOSTS=127.0.0.1,localhost in infra/local/env.json) but never
its own services on it (issue 8, item 13): the functions host gives every function URL_DENIED_PORTS, the API
refuses such a URL with 400 invalid_url, and the chunker refuses one reached through a redirect.

Every address involved is loopback: nothing here sends a packet off the machine.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from psycopg2.extensions import parse_dsn

from tests.e2e.client import Api
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """GET /<host:port>/ answers 302 to http://<host:port>/."""

    hits: list[str] = []

    def do_GET(self) -> None:
        _Redirecting.hits.append(self.path)
        self.send_response(302)
        self.send_header("Location", "http:/" + self.path)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    """A local web server on an allowlisted loopback port: the URL imports' way to the stack's own ports."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def api(local_stack: RunningStack) -> Api:
    return Api(local_stack)


def own_ports(stack: RunningStack, database_url: str) -> dict[str, int]:
    return {
        "AWS endpoint": urlsplit(stack.aws_endpoint_url).port or 0,
        "API": urlsplit(stack.api_url).port or 0,
        "Invoke API": stack.invoke_port,
        "PostgreSQL": int(parse_dsn(database_url)["port"]),
    }


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_api_refuses_urls_to_the_stack_s_own_services(
    host: str, api: Api, local_stack: RunningStack, database_url: str
) -> None:
    for service, port in own_ports(local_stack, database_url).items():
        reply = api.post_json({"resource": "users", "url": f"http://{host}:{port}/"})
        assert reply.status == 400, (service, reply.body)
        problem = reply.json()
        assert problem["code"] == "invalid_url", service
        assert f"port {port} of {host} is one of this stack's own services" in problem["detail"], service


def test_a_redirect_to_the_aws_endpoint_fails_the_job(api: Api, local_stack: RunningStack, redirector: str) -> None:
    aws = urlsplit(local_stack.aws_endpoint_url).netloc
    _Redirecting.hits = []
    reply = api.post_json({"resource": "users", "url": f"http://{redirector}/{aws}/"})
    assert reply.status == 202, reply.body
    job = api.wait(reply.json()["job_id"], timeout=60)
    assert job["status"] == "failed"
    assert job["failure"]["code"] == "url_not_allowed"
    assert "is one of this stack's own services" in job["failure"]["message"]
    assert _Redirecting.hits == [f"/{aws}/"]
