"""URL imports of loopback addresses with the production setting: no URL_ALLOWED_HOSTS.

The local stack allowlists 127.0.0.1 and localhost (infra/local/env.json) so that its tests can serve files, so
the end-to-end corpus (tests/e2e/test_hostile_input.py) can only refuse the other loopback addresses. Here the
service layer runs the chunker with the real URL opener and an empty allowlist against a server listening on
127.0.0.1: every spelling of loopback must fail the job with url_not_allowed before a connection is made.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from bulkio.domain.jobs import JobStatus
from bulkio.domain.resources import ImportTarget
from bulkio.services.imports.api import NewImport

from tests.fakes import OWNER, build_world, make_settings


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        _CountingHandler.requests.append(self.path)
        body = b"id,email,name\nlo-1,lo-1@example.com,Loopback\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_port() -> Iterator[int]:
    _CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LocalHost",  # a name in another case
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... and in hex
        "127.1",  # ... shortened
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    ],
)
def test_loopback_url_fails_the_job_without_a_connection(host: str, loopback_port: int) -> None:
    world = build_world(make_settings(allow_http_urls=True, url_timeout_seconds=2, url_allowed_hosts=""))
    request = NewImport(resource=ImportTarget.USERS, format=None, url=f"http://{host}:{loopback_port}/users.csv")
    job_id = world.api.submit(request, None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    job = world.jobs.get(job_id)
    assert job is not None and job.failure is not None
    assert (job.status, job.failure.code) == (JobStatus.FAILED, "url_not_allowed")
    assert "loopback" in job.failure.message
    assert _CountingHandler.requests == []
    assert world.queue.messages == []  # nothing was chunked


def test_the_same_server_is_read_when_allowlisted(loopback_port: int) -> None:
    """The control: the refusals above come from the address check, not from an unreachable server."""
    world = build_world(make_settings(allow_http_urls=True, url_timeout_seconds=2, url_allowed_hosts="127.0.0.1"))
    request = NewImport(resource=ImportTarget.USERS, format=None, url=f"http://127.0.0.1:{loopback_port}/users.csv")
    job_id = world.api.submit(request, None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    assert _CountingHandler.requests == ["/users.csv"]
    assert len(world.queue.messages) == 1
