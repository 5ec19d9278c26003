"""SSRF guards of remote URL imports. No network: literal IPs, a local server and a patched resolver only."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bulkio.adapters import http_source
from bulkio.adapters.http_source import SourceUnavailable, check_url, open_url, post_url
from bulkio.config import Settings

BODY = b"id,email\n1,a@example.com\n2,b@example.com\n"
LOCAL = "127.0.0.1"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    hosts: list[str] = []
    posted: list[tuple[bytes, dict[str, str]]] = []

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        routes = {
            "/loop": "/loop",
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-file": "file:///etc/passwd",
            "/to-data": "/data",
        }
        if self.path in routes:
            self.send_response(302)
            self.send_header("Location", routes[self.path])
            self.end_headers()
        elif self.path == "/data":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/nolength":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/trickle":  # a byte every 50 ms: never idle long enough for a read timeout
            self.send_response(200)
            self.end_headers()
            for byte in BODY * 10:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        Handler.posted.append((self.rfile.read(int(self.headers["Content-Length"])), dict(self.headers.items())))
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/hooks")
            self.end_headers()
            return
        self.send_response(202)
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"thank you")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.hosts, Handler.posted = [], []
    httpd = http.server.ThreadingHTTPServer((LOCAL, 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://{LOCAL}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def stay_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails the test on any connection to an address other than loopback, before a packet leaves: a broken guard
    must not reach 10.0.0.5 or 169.254.169.254 for real (checked again at the end, in case the error was caught)."""
    remote: list[str] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback:
            remote.append(str(address[0]))
            raise AssertionError(f"a test tried to connect to {address[0]}, off this machine")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert remote == [], f"connections off this machine: {remote}"


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every address a connection is opened to."""
    seen: list[str] = []
    real = socket.create_connection

    def recording(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address[0])
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", recording)
    return seen


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host in {LOCAL, "93.184.216.34"}:  # literal addresses, as socket.create_connection looks them up
            return real(host, port, *args, **kwargs)
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def refused(url: str, **kwargs: Any) -> SourceUnavailable:
    kwargs.setdefault("allow_http", True)
    with pytest.raises(SourceUnavailable) as caught:
        open_url(url, timeout_seconds=2, **kwargs)
    return caught.value


# ------------------------------------------------------------------ check_url (syntax, used by the API)
@pytest.mark.parametrize(
    ("url", "allow_http", "fragment"),
    [
        ("file:///etc/passwd", True, "scheme 'file'"),
        ("ftp://example.com/users.csv", True, "scheme 'ftp'"),
        ("gopher://example.com/", True, "scheme 'gopher'"),
        ("http://example.com/users.csv", False, "scheme 'http'"),
        ("users.csv", True, "scheme '(none)'"),
        ("https:///users.csv", True, "no host"),
        ("https://user:secret@example.com/users.csv", True, "credentials"),
        ("https://user@example.com/users.csv", True, "credentials"),
        ("https://example.com:notaport/x", True, "malformed"),
    ],
)
def test_check_url_refuses(url: str, allow_http: bool, fragment: str) -> None:
    reason = check_url(url, allow_http)
    assert reason is not None and fragment in reason


def test_check_url_accepts_https_and_configured_http() -> None:
    assert check_url("https://example.com/users.csv", False) is None
    assert check_url("http://example.com/users.csv", True) is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.csv", "https://u:p@example.com/x"])
def test_open_url_refuses_bad_urls_as_invalid(url: str, dials: list[str]) -> None:
    assert refused(url).code == "invalid_url"
    assert dials == []


# ------------------------------------------------------------------ address checks
@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("10.0.0.5", "private"),
        ("192.168.1.10", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[fe80::1]", "link-local"),
        ("[fd00::1]", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_refuses_non_public_addresses_without_connecting(host: str, label: str, dials: list[str]) -> None:
    problem = refused(f"http://{host}/users.csv")
    assert problem.code == "url_not_allowed"
    assert f"{label} address" in problem.message
    assert "URL_ALLOWED_HOSTS" in problem.message
    assert dials == []


def test_message_names_the_host_and_address(monkeypatch: pytest.MonkeyPatch, dials: list[str]) -> None:
    fake_dns(monkeypatch, {"intranet.example": ["10.0.0.5"]})
    problem = refused("https://intranet.example/users.csv")
    assert problem.code == "url_not_allowed"
    assert problem.message.startswith("intranet.example resolves to a private address 10.0.0.5: only public hosts")
    assert dials == []


def test_refuses_when_any_resolved_address_is_private(monkeypatch: pytest.MonkeyPatch, dials: list[str]) -> None:
    fake_dns(monkeypatch, {"mixed.example": ["93.184.216.34", "127.0.0.1"]})
    assert refused("https://mixed.example/users.csv").code == "url_not_allowed"
    assert dials == []


def test_unresolvable_host_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})
    assert refused("https://nowhere.example/users.csv").code == "source_unreachable"


@pytest.mark.parametrize(
    "allowed",
    ["127.0.0.1", "127.0.0.0/8", "localhost, 127.0.0.1", ["127.0.0.1"], http_source.Allowlist.parse("127.0.0.1")],
)
def test_allowlisted_local_server_is_read(server: str, allowed: Any) -> None:
    with open_url(f"{server}/data", True, 2, allowed_hosts=allowed) as body:
        assert body.read() == BODY


def test_allowlisted_host_name_connects_to_the_vetted_address(
    server: str, monkeypatch: pytest.MonkeyPatch, dials: list[str]
) -> None:
    port = server.rsplit(":", 1)[1]
    asked = fake_dns(monkeypatch, {"files.test": [LOCAL]})
    with open_url(f"http://files.test:{port}/data", True, 2, allowed_hosts="files.test") as body:
        assert body.read() == BODY
    assert asked == ["files.test"]  # resolved once, then dialled by address: no second lookup to rebind
    assert dials == [LOCAL]
    assert Handler.hosts == [f"files.test:{port}"]


def test_allowlist_does_not_cover_other_private_addresses(dials: list[str]) -> None:
    assert refused("http://10.0.0.5/x.csv", allowed_hosts="127.0.0.1,localhost").code == "url_not_allowed"
    assert dials == []


def test_http_is_refused_unless_configured(server: str) -> None:
    problem = refused(f"{server}/data", allow_http=False, allowed_hosts=LOCAL)
    assert problem.code == "invalid_url"


# ------------------------------------------------------------------ redirects
def test_follows_a_redirect_on_an_allowed_server(server: str) -> None:
    with open_url(f"{server}/to-data", True, 2, allowed_hosts=LOCAL) as body:
        assert body.read() == BODY


def test_redirect_to_metadata_address_is_refused_without_connecting(server: str, dials: list[str]) -> None:
    problem = refused(f"{server}/to-metadata", allowed_hosts=LOCAL)
    assert problem.code == "url_not_allowed"
    assert "169.254.169.254" in problem.message
    assert "169.254.169.254" not in dials


def test_redirect_to_file_scheme_is_refused(server: str) -> None:
    problem = refused(f"{server}/to-file", allowed_hosts=LOCAL)
    assert problem.code == "url_not_allowed"
    assert "file" in problem.message


def test_redirect_loop_stops(server: str) -> None:
    problem = refused(f"{server}/loop", allowed_hosts=LOCAL, max_redirects=3)
    assert problem.code == "too_many_redirects"
    assert len(Handler.hosts) == 4  # the first request and three redirects


def test_no_redirects_allowed(server: str) -> None:
    assert refused(f"{server}/to-data", allowed_hosts=LOCAL, max_redirects=0).code == "too_many_redirects"


def test_https_to_http_downgrade_is_refused(monkeypatch: pytest.MonkeyPatch, dials: list[str]) -> None:
    fake_dns(monkeypatch, {"files.example": ["93.184.216.34"]})
    opened: list[str] = []

    class Response:
        status = 302

        def getheader(self, name: str) -> str | None:
            return "http://files.example/users.csv" if name == "Location" else None

        def close(self) -> None:
            pass

    class FakeHTTPS:
        def __init__(self, host: str, port: int, addresses: list[Any], timeout: float) -> None:
            opened.append(f"https://{host}:{port} via {[str(a) for a in addresses]}")

        def request(self, *args: Any, **kwargs: Any) -> None:
            pass

        def getresponse(self) -> Response:
            return Response()

        def close(self) -> None:
            pass

    monkeypatch.setattr(http_source, "_PinnedHTTPSConnection", FakeHTTPS)
    problem = refused("https://files.example/users.csv", allow_http=True)
    assert problem.code == "url_not_allowed"
    assert "https down to plain http" in problem.message
    assert opened == ["https://files.example:443 via ['93.184.216.34']"]
    assert dials == []


# ------------------------------------------------------------------ errors and size
def test_http_error_status(server: str) -> None:
    assert refused(f"{server}/missing", allowed_hosts=LOCAL).code == "source_http_error"


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    assert refused(f"http://{LOCAL}:{port}/x.csv", allowed_hosts=LOCAL).code == "source_unreachable"


def test_declared_length_over_the_cap_is_refused_upfront(server: str) -> None:
    problem = refused(f"{server}/data", allowed_hosts=LOCAL, max_bytes=len(BODY) - 1)
    assert problem.code == "source_too_large"


def test_body_over_the_cap_stops_while_reading(server: str) -> None:
    body = open_url(f"{server}/nolength", True, 2, allowed_hosts=LOCAL, max_bytes=10)  # no Content-Length
    with body, pytest.raises(SourceUnavailable) as caught:
        body.read()
    assert body.closed
    assert caught.value.code == "source_too_large"
    assert "MAX_SOURCE_BYTES" in caught.value.message


def test_body_exactly_at_the_cap_is_read(server: str) -> None:
    with open_url(f"{server}/nolength", True, 2, allowed_hosts=LOCAL, max_bytes=len(BODY)) as body:
        assert body.readline() == b"id,email\n"
        assert body.read() == BODY[len(b"id,email\n") :]


# ------------------------------------------------------------------ settings
def test_settings_read_the_url_guards() -> None:
    settings = Settings.from_env(
        {"URL_ALLOWED_HOSTS": "127.0.0.1,localhost", "MAX_URL_REDIRECTS": "5", "MAX_SOURCE_BYTES": "1024"}
    )
    assert (settings.url_allowed_hosts, settings.max_url_redirects, settings.max_source_bytes) == (
        "127.0.0.1,localhost",
        5,
        1024,
    )
    defaults = Settings.from_env({})
    assert (defaults.url_allowed_hosts, defaults.max_url_redirects, defaults.max_source_bytes) == ("", 3, 5 * 1024**3)
    assert defaults.allow_http_urls is False


def test_a_download_that_trickles_past_its_deadline_stops_with_source_too_slow(server: str) -> None:
    started = time.monotonic()
    body = open_url(f"{server}/trickle", True, 2, allowed_hosts=LOCAL, max_seconds=1)
    with pytest.raises(SourceUnavailable) as caught:
        while body.read(16):
            pass
    body.close()
    assert caught.value.code == "source_too_slow"
    assert "URL_MAX_SECONDS" in caught.value.message
    assert time.monotonic() - started < 5  # it stopped at its deadline, not at the end of the body (20 s)


# ------------------------------------------------------------------ post_url (completion callbacks)
def test_a_callback_is_posted_to_an_allowed_server_and_its_answer_kept(server: str) -> None:
    answer = post_url(f"{server}/hooks", b'{"job_id":"j"}', {"Bulkio-Event": "x"}, True, 2, allowed_hosts=LOCAL)
    assert (answer.status_code, answer.excerpt, answer.delivered) == (202, "thank you", True)
    [(body, headers)] = Handler.posted
    assert body == b'{"job_id":"j"}' and headers["Bulkio-Event"] == "x"


def test_a_callback_follows_no_redirect(server: str) -> None:
    answer = post_url(f"{server}/moved", b"{}", {}, True, 2, allowed_hosts=LOCAL)
    assert answer.status_code == 307 and not answer.delivered
    assert "redirect" in (answer.error() or "")
    assert len(Handler.posted) == 1


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest", "http://10.0.0.5/hooks", "http://[::1]:9/x"])
def test_a_callback_to_a_non_public_address_is_refused_without_connecting(url: str, dials: list[str]) -> None:
    with pytest.raises(SourceUnavailable) as refused_post:
        post_url(url, b"{}", {}, True, 2, allowed_hosts="127.0.0.1")
    assert refused_post.value.code == "url_not_allowed"
    assert dials == []


def test_a_callback_host_resolving_to_a_private_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, dials: list[str]
) -> None:
    fake_dns(monkeypatch, {"hooks.example": ["10.0.0.5"]})
    with pytest.raises(SourceUnavailable) as refused_post:
        post_url("https://hooks.example/x", b"{}", {}, False, 2)
    assert refused_post.value.message.startswith("hooks.example resolves to a private address 10.0.0.5")
    assert dials == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://10.0.0.1/users.csv", "10.0.0.1 is a private address: only public hosts"),
        ("http://[::ffff:10.0.0.1]/users.csv", "::ffff:10.0.0.1 is a private address (IPv4 10.0.0.1): only public"),
        ("http://[fd00::1]/users.csv", "fd00::1 is a private address: only public hosts"),
    ],
)
def test_a_literal_address_is_named_once(url: str, message: str, dials: list[str]) -> None:
    assert refused(url).message.startswith(message)
    assert dials == []
