"""URL imports never reach the embedded stack's own services, even on an allowlisted loopback (issue 8, item 13).

On the embedded stack URL_ALLOWED_HOSTS admits 127.0.0.1 and localhost so that a local web server works; the
stack's API, AWS endpoint, Invoke API, PostgreSQL, Pushgateway and Prometheus listen there too. Their ports come in
URL_DENIED_PORTS (set by the functions host) and are refused on any non-public address; an allowlist entry may
name a port, and then admits that port only.

No test here lets a packet leave the machine: `connects` fails the test on any connection to an address other than
loopback, and the refusals are also shown to open no connection to the refused port.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bulkio import bootstrap
from bulkio.adapters import http_source
from bulkio.adapters.http_source import Allowlist, SourceUnavailable, check_url, open_url, resolve_vetted
from bulkio.config import Settings
from bulkio.domain.jobs import JobStatus
from bulkio.domain.resources import ImportTarget
from bulkio.services.imports.api import NewImport

from infra.local import denied_ports
from infra.local.template_model import Function
from infra.local.workers import HostSettings, function_environment
from tests.fakes import OWNER, FakeWorld, build_world, make_settings
from tests.unit.test_api_handler import assert_problem, load_api_app, post_json

BODY = b"id,email,name\nlo-1,lo-1@example.com,Loopback\n"


@dataclass
class Connects:
    seen: list[tuple[str, int]] = field(default_factory=list)
    remote: list[tuple[str, int]] = field(default_factory=list)

    def ports(self) -> list[int]:
        return [port for _, port in self.seen]


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connects]:
    """Every connection any test here opens; one to an address other than loopback fails the test before a packet
    is sent (raised at the connect, and checked again at the end in case something caught the error)."""
    record = Connects()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            host, port = str(address[0]), int(address[1])
            record.seen.append((host, port))
            if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
                record.remote.append((host, port))
                raise AssertionError(f"a test tried to connect to {host}:{port}, off this machine")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield record
    assert record.remote == [], f"connections off this machine: {record.remote}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", "http://" + self.path.removeprefix("/redirect-to/"))
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Served:
    port: int
    paths: list[str]


def _serve() -> Iterator[Served]:
    paths: list[str] = []
    handler = type("Recording", (_Handler,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield Served(server.server_address[1], paths)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def own_service() -> Iterator[Served]:
    """Stands for one of the stack's own services (the AWS endpoint, say): its port is denied."""
    yield from _serve()


@pytest.fixture
def file_server() -> Iterator[Served]:
    """A local web server serving a file to import, as in the README (python3 -m http.server 8000)."""
    yield from _serve()


def refused(url: str, **kwargs: Any) -> SourceUnavailable:
    with pytest.raises(SourceUnavailable) as caught:
        open_url(url, True, 2, **kwargs)
    return caught.value


# ------------------------------------------------------------------ at request time (check_url, no DNS)
@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LocalHost.",
        "api.localhost",
        "127.1",
        "2130706433",
        "0x7f000001",
        "127.0.0.2",
        "0.0.0.0",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::]",
    ],
)
def test_a_url_naming_this_machine_on_a_denied_port_is_invalid(host: str) -> None:
    reason = check_url(f"http://{host}:4566/", True, frozenset({4566, 3000}))
    assert reason is not None
    assert reason.startswith(f"port 4566 of {host.lower()} is one of this stack's own services (URL_DENIED_PORTS")
    assert "serve the file from a web server on another port" in reason


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/users.csv",  # a port of no service of the stack
        "http://files.example:4566/users.csv",  # only known once resolved: the fetch decides
        "http://10.0.0.1:4566/users.csv",  # not this machine: refused at fetch time (private, or denied port)
        "https://localhost/users.csv",  # 443
    ],
)
def test_other_urls_are_left_to_the_fetch(url: str) -> None:
    assert check_url(url, True, frozenset({4566, 80})) is None


def test_the_default_port_of_the_scheme_counts() -> None:
    assert check_url("http://localhost/users.csv", True, frozenset({80})) is not None


def test_the_api_answers_400_invalid_url(monkeypatch: pytest.MonkeyPatch) -> None:
    api: ModuleType = load_api_app()
    settings = make_settings(
        allow_http_urls=True, url_allowed_hosts="127.0.0.1,localhost", url_denied_ports=frozenset({4566})
    )
    world = build_world(settings)
    monkeypatch.setattr(bootstrap, "wiring", world.wiring())

    problem = assert_problem(post_json(api, {"resource": "users", "url": "http://127.0.0.1:4566/"}), 400, "invalid_url")

    assert "port 4566 of 127.0.0.1 is one of this stack's own services" in problem["detail"]
    assert world.launches.job_ids == []
    assert post_json(api, {"resource": "users", "url": "http://127.0.0.1:8000/users.csv"}).status == 202


# ------------------------------------------------------------------ at fetch time (the chunker)
@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1,localhost"),  # the embedded stack's setting
        ("localhost", "127.0.0.1,localhost"),
        ("127.0.0.1", "127.0.0.0/8"),
        ("127.0.0.1", "127.0.0.1:{port}"),  # even when an entry names the port
        ("localhost", "localhost:{port}"),
    ],
)
def test_a_denied_port_is_refused_whatever_the_allowlist_says(
    host: str, allowed: str, own_service: Served, connects: Connects
) -> None:
    problem = refused(
        f"http://{host}:{own_service.port}/",
        allowed_hosts=allowed.format(port=own_service.port),
        denied_ports=frozenset({own_service.port}),
    )
    assert problem.code == "url_not_allowed"
    assert f"port {own_service.port} of {host}" in problem.message
    assert "URL_DENIED_PORTS" in problem.message
    assert own_service.paths == []
    assert own_service.port not in connects.ports()


def test_a_name_that_resolves_to_loopback_is_refused_on_a_denied_port(
    own_service: Served, connects: Connects, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "files.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    problem = refused(
        f"http://files.test:{own_service.port}/", allowed_hosts="files.test", denied_ports={own_service.port}
    )
    assert problem.code == "url_not_allowed"
    assert f"port {own_service.port} of files.test (127.0.0.1) is one of this stack's own services" in problem.message
    assert own_service.paths == []
    assert own_service.port not in connects.ports()


def test_a_redirect_to_a_denied_port_is_refused(file_server: Served, own_service: Served, connects: Connects) -> None:
    url = f"http://127.0.0.1:{file_server.port}/redirect-to/127.0.0.1:{own_service.port}/"
    problem = refused(url, allowed_hosts="127.0.0.1,localhost", denied_ports={own_service.port})
    assert problem.code == "url_not_allowed"
    assert len(file_server.paths) == 1
    assert own_service.paths == []
    assert own_service.port not in connects.ports()


def test_other_loopback_ports_stay_open(file_server: Served, own_service: Served) -> None:
    with open_url(
        f"http://localhost:{file_server.port}/users.csv",
        True,
        2,
        allowed_hosts="127.0.0.1,localhost",
        denied_ports={own_service.port},
    ) as body:
        assert body.read() == BODY


def test_denied_ports_do_not_concern_public_addresses() -> None:
    # A literal address: getaddrinfo parses it, nothing is looked up or dialled.
    addresses = resolve_vetted("93.184.216.34", 4566, Allowlist(), {4566})
    assert [str(address) for address in addresses] == ["93.184.216.34"]


# ------------------------------------------------------------------ allowlist entries with a port
def test_an_entry_with_a_port_admits_that_port_only(
    file_server: Served, own_service: Served, connects: Connects
) -> None:
    allowed = f"127.0.0.1:{file_server.port}"
    with open_url(f"http://127.0.0.1:{file_server.port}/users.csv", True, 2, allowed_hosts=allowed) as body:
        assert body.read() == BODY

    problem = refused(f"http://127.0.0.1:{own_service.port}/", allowed_hosts=allowed)
    assert problem.code == "url_not_allowed"
    assert problem.message.startswith(
        f"127.0.0.1 is a loopback address, which URL_ALLOWED_HOSTS admits on port {file_server.port} only, "
        f"not on port {own_service.port}"
    )
    assert own_service.paths == []
    assert own_service.port not in connects.ports()


@pytest.mark.parametrize(
    ("entries", "host", "port", "admitted"),
    [
        ("127.0.0.1:8000", "127.0.0.1", 8000, True),
        ("127.0.0.1:8000", "127.0.0.1", 8001, False),
        ("127.0.0.1", "127.0.0.1", 8001, True),
        ("LocalHost:8000", "localhost", 8000, True),
        ("localhost:8000", "localhost", 80, False),
        ("[::1]:8000", "::1", 8000, True),
        ("[::1]:8000", "::1", 8001, False),
        ("::1", "::1", 8001, True),
        ("[::1]", "::1", 8001, True),
        ("10.0.0.0/8:443", "10.1.2.3", 443, True),
        ("10.0.0.0/8:443", "10.1.2.3", 80, False),
        ("127.0.0.1:http", "127.0.0.1", 80, False),  # not a port number: the entry admits nothing
        ("127.0.0.1:0", "127.0.0.1", 0, False),
        ("127.0.0.1:70000", "127.0.0.1", 70000, False),
    ],
)
def test_allowlist_entries(entries: str, host: str, port: int, admitted: bool) -> None:
    allowlist = Allowlist.parse(entries)
    address = ipaddress.ip_address(host) if host[0].isdigit() or ":" in host else None
    result = allowlist.allows_name(host, port) or (address is not None and allowlist.allows_address(address, port))
    assert result is admitted


# ------------------------------------------------------------------ the message of a refused private address
def test_a_refused_address_is_named_once(connects: Connects) -> None:
    problem = refused("http://10.0.0.1/users.csv")
    assert problem.message == (
        "10.0.0.1 is a private address: only public hosts may be imported from; "
        "ask an operator to add it to URL_ALLOWED_HOSTS"
    )
    assert connects.seen == []


# ------------------------------------------------------------------ the job fails with a clear reason
def test_the_job_fails_with_url_not_allowed(own_service: Served, connects: Connects) -> None:
    settings = make_settings(
        allow_http_urls=True,
        url_timeout_seconds=2,
        url_allowed_hosts="127.0.0.1,localhost",
        url_denied_ports=frozenset({own_service.port}),
    )
    world: FakeWorld = build_world(settings)
    # The API lets it through (the port is only denied in the chunker's settings here), as it would a name.
    request = NewImport(resource=ImportTarget.USERS, format=None, url=f"http://localhost:{own_service.port}/users.csv")
    job_id = world.api.submit(request, None, OWNER).body["job_id"]

    world.chunker.run_chunker(job_id)

    job = world.jobs.get(job_id)
    assert job is not None and job.failure is not None
    assert (job.status, job.failure.code) == (JobStatus.FAILED, "url_not_allowed")
    assert "is one of this stack's own services" in job.failure.message
    assert own_service.paths == []
    assert own_service.port not in connects.ports()
    assert world.queue.messages == []


# ------------------------------------------------------------------ settings and the functions host
def test_settings_read_url_denied_ports() -> None:
    assert Settings.from_env({"URL_DENIED_PORTS": "4566, 3000,,54329"}).url_denied_ports == {4566, 3000, 54329}
    assert Settings.from_env({}).url_denied_ports == frozenset()
    with pytest.raises(ValueError):
        Settings.from_env({"URL_DENIED_PORTS": "4566,aws"})


def test_the_stack_lists_its_own_ports() -> None:
    environ = {
        "LOCAL_API_PORT": "3100",
        "LOCAL_INVOKE_PORT": "4667",
        "PUSHGATEWAY_URL": "http://127.0.0.1:19091",
        "LOCAL_PROMETHEUS_PORT": "19090",
    }
    ports = denied_ports.stack_ports(4666, "postgresql://bulkio@127.0.0.1:54329/bulkio", environ)
    assert ports == sorted({4666, 3100, 4667, 54329, 19091, 9091, 19090})
    defaults = denied_ports.stack_ports(4566, "dbname=bulkio host=127.0.0.1 port=41553", {})
    assert defaults == [3000, 4566, 4567, 9090, 9091, 41553]
    assert 5432 in denied_ports.stack_ports(4566, "postgresql://db.example/bulkio", {})


def test_the_functions_host_gives_every_function_the_stack_s_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOCAL_API_PORT", "LOCAL_INVOKE_PORT", "PUSHGATEWAY_URL", "LOCAL_PUSHGATEWAY_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_PROMETHEUS_PORT", "19090")
    function = Function("ChunkerFunction", "bulkio-local-chunker", tmp_path, "app.handler", 900, 1024, {}, [])
    settings = HostSettings(tmp_path / "template.yaml", tmp_path, 4566, None, "postgresql://bulkio@127.0.0.1:54329/x")

    environment = function_environment(function, settings)

    denied = http_source.parse_ports(environment["URL_DENIED_PORTS"])
    assert denied == {4566, 3000, 4567, 54329, 9091, 19090}
    assert Settings.from_env(environment).url_denied_ports == denied
