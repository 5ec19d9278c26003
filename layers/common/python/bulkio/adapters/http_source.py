"""Remote import sources: opens a URL as a binary stream, read by the chunker in pieces; and POSTs a job's
completion callback.

Remote URLs are chosen by API callers, so fetching them (and posting to them) is guarded against SSRF:

* only https, unless ALLOW_HTTP_URLS (local tests) also allows plain http; no credentials in the URL;
* the host is resolved once and every address it resolves to must be public (not loopback, private,
  link-local such as 169.254.169.254, multicast, reserved or unspecified; IPv4-mapped IPv6 is unwrapped),
  unless URL_ALLOWED_HOSTS names the host or covers the address (an entry with a port, `127.0.0.1:8000`,
  admits that port only);
* a port in URL_DENIED_PORTS is never reached on a non-public address, whatever URL_ALLOWED_HOSTS says: the
  embedded stack lists its own services there (API, AWS endpoint, Invoke API, PostgreSQL, Pushgateway,
  Prometheus), which listen on loopback and trust whoever connects; the API refuses such URLs up front when
  the host is literally this machine (a loopback or unspecified address, localhost), the chunker in any case;
* the connection goes to that vetted address (the Host header, SNI and certificate checks still use the
  host name), so a DNS answer that changes between the check and the connect cannot redirect us;
* redirects are followed here, not by urllib: at most MAX_URL_REDIRECTS, each hop checked again the same
  way, and never from https down to http;
* every socket operation has a timeout, the body stops with source_too_large past MAX_SOURCE_BYTES, and the
  whole download with source_too_slow past URL_MAX_SECONDS.

Environment proxies (HTTP_PROXY...) are deliberately not used: a proxy would make the address checks moot.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from bulkio.domain.callbacks import RESPONSE_EXCERPT_CHARS, CallbackAnswer
from bulkio.domain.sources import SourceUnavailable

DEFAULT_MAX_REDIRECTS = 3
DEFAULT_MAX_BYTES = 5 * 1024**3
# Under the chunker's 15-minute Lambda limit: the job fails with the reason, not with a timed-out function.
DEFAULT_MAX_SECONDS = 840
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "bulkio-importer/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_url(url: str, allow_http: bool, denied_ports: Collection[int] = (), field: str = "url") -> str | None:
    """Returns why the URL is not acceptable, or None, naming it as the request's `field`. Syntax only: no DNS, no
    connection.

    A port in `denied_ports` (URL_DENIED_PORTS) is refused here when the host is literally this machine; other
    hosts are only known once resolved, and then refused by the chunker (resolve_vetted)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"{field} is malformed ({error}): give an absolute URL like https://example.com/users.csv"
    allowed = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in allowed:
        return f"{field} scheme {parts.scheme or '(none)'!r} is not allowed: use {' or '.join(sorted(allowed))}"
    if not parts.hostname:
        return f"{field} has no host: give an absolute URL like https://example.com/users.csv"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return f"{field} must not carry credentials (user:password@host): the file must be readable without them"
    if port == 0:
        return f"{field} port 0 is not allowed"
    effective_port = port or (443 if parts.scheme == "https" else 80)
    if effective_port in denied_ports and _is_this_machine(parts.hostname):
        return _denied_port_reason(parts.hostname, None, effective_port)
    return None


def _is_this_machine(host: str) -> bool:
    """Whether `host`, as written, names this machine: localhost, or a loopback or unspecified address in any
    spelling getaddrinfo accepts (127.1, 2130706433, 0x7f000001, ::ffff:127.0.0.1...). No DNS."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address: IPAddress
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            return False
    address = _unwrap(address)
    return address.is_loopback or address.is_unspecified


def _denied_port_reason(host: str, address: IPAddress | None, port: int) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    where = host if address is None or host.strip("[]") == str(address) else f"{host} ({address})"
    return (
        f"port {port} of {where} is one of this stack's own services (URL_DENIED_PORTS: its API, AWS endpoint, "
        "Invoke API, PostgreSQL, Pushgateway or Prometheus), which URL imports may never reach, whatever "
        "URL_ALLOWED_HOSTS says: serve the file from a web server on another port (python3 -m http.server 8000) "
        "and import it from there"
    )


def parse_ports(entries: str | Iterable[int | str] | None) -> frozenset[int]:
    """Port numbers from a comma-separated list (URL_DENIED_PORTS); raises ValueError on anything else."""
    if entries is None:
        return frozenset()
    if isinstance(entries, str):
        entries = entries.split(",")
    ports: set[int] = set()
    for entry in entries:
        text = str(entry).strip()
        if not text:
            continue
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"{text!r} is not a port number (1-65535)")
        ports.add(int(text))
    return frozenset(ports)


# ------------------------------------------------------------------ allowlist and address checks
@dataclass(frozen=True, slots=True)
class Allowlist:
    """URL_ALLOWED_HOSTS: host names (exact, case-insensitive) and IP addresses or CIDR networks, each with an
    optional port (`127.0.0.1:8000`, `localhost:8000`, `[::1]:8000`, `10.0.0.0/8:443`) that it then admits
    alone; without one, every port. An entry whose port is not a number admits nothing."""

    names: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[tuple[IPNetwork, int | None], ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str] | None) -> Allowlist:
        if entries is None:
            return cls()
        if isinstance(entries, str):
            entries = entries.split(",")
        names: list[tuple[str, int | None]] = []
        networks: list[tuple[IPNetwork, int | None]] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                host, port = _host_and_port(entry)
            except ValueError:
                continue
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                names.append((host.rstrip("."), port))
        return cls(tuple(names), tuple(networks))

    def allows_name(self, host: str, port: int | None = None) -> bool:
        """Whether an entry names `host` for `port` (None: an entry without a port)."""
        name = host.lower().rstrip(".")
        return any(entry == name and allowed in (None, port) for entry, allowed in self.names)

    def allows_address(self, address: IPAddress, port: int | None = None) -> bool:
        """Whether an entry covers `address` for `port` (None: an entry without a port)."""
        return any(
            address.version == net.version and address in net and allowed in (None, port)
            for net, allowed in self.networks
        )

    def ports_for(self, host: str, address: IPAddress) -> list[int]:
        """The ports that entries with a port admit for this host or address, for the refusal's message."""
        name = host.lower().rstrip(".")
        ports = {port for entry, port in self.names if entry == name and port is not None}
        ports |= {
            port
            for net, port in self.networks
            if port is not None and address.version == net.version and address in net
        }
        return sorted(ports)


def _host_and_port(entry: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]', '[v6]:port', or a bare IPv6 address or network (no port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if not rest:
            return host, None
        port_text = rest.removeprefix(":")
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:
        return entry, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{entry!r}: the port is not a number from 1 to 65535")
    return host, int(port_text)


def _unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return mapped
    return address


def address_problem(address: IPAddress) -> str | None:
    """Names why an address is not public (e.g. 'a loopback'), or None when it is a public address."""
    address = _unwrap(address)
    for attribute, label in (
        ("is_unspecified", "an unspecified"),
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_reserved", "a reserved"),
        ("is_private", "a private"),
    ):
        if getattr(address, attribute):
            return label
    if not address.is_global:
        return "a non-public"
    return None


def _refuse(host: str, address: IPAddress, label: str, port: int, allowlist: Allowlist) -> SourceUnavailable:
    if _literal_address(host) == address:
        # An IPv4-mapped IPv6 address is judged as the IPv4 address it carries: named as written, then that one.
        carried = _unwrap(address)
        what = f"{host.strip('[]')} is {label} address" + ("" if carried == address else f" (IPv4 {carried})")
    else:
        what = f"{host} resolves to {label} address {address}"
    other_ports = allowlist.ports_for(host, address)
    if other_ports:
        listed = ", ".join(map(str, other_ports))
        return SourceUnavailable(
            "url_not_allowed",
            f"{what}, which URL_ALLOWED_HOSTS admits on port {listed} only, not on port {port}: use the allowed "
            f"port, or ask an operator to add {host}:{port} to URL_ALLOWED_HOSTS",
        )
    return SourceUnavailable(
        "url_not_allowed",
        f"{what}: only public hosts may be imported from; ask an operator to add it to URL_ALLOWED_HOSTS",
    )


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def resolve_vetted(host: str, port: int, allowlist: Allowlist, denied_ports: Collection[int] = ()) -> list[IPAddress]:
    """Resolves `host`; refuses it if ANY address is not public, unless allowlisted for this port, and always
    when `port` is one of `denied_ports`. Returns the addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as error:
        raise SourceUnavailable("source_unreachable", f"could not resolve {host}: {error}; check the URL") from error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise SourceUnavailable("source_unreachable", f"{host} has no address; check the URL")
    for address in addresses:
        label = address_problem(address)
        if label is None:
            continue
        if port in denied_ports:
            raise SourceUnavailable("url_not_allowed", _denied_port_reason(host, address, port))
        if not (
            allowlist.allows_name(host, port)
            or allowlist.allows_address(address, port)
            or allowlist.allows_address(_unwrap(address), port)
        ):
            raise _refuse(host, address, label, port, allowlist)
    return addresses


# ------------------------------------------------------------------ connections pinned to a vetted address
def _pinned(addresses: list[IPAddress]) -> Callable[..., socket.socket]:
    """Replaces socket.create_connection for one connection: ignores the host name, dials the vetted addresses."""

    def create_connection(
        address: tuple[str, int], timeout: float | None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        port = address[1]
        last: OSError | None = None
        for ip in addresses:
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as error:
                last = error
        raise last or OSError("no address to connect to")

    return create_connection


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: list[IPAddress], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._create_connection = _pinned(addresses)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the vetted address; TLS still uses the host name for SNI and certificate verification."""

    def __init__(self, host: str, port: int, addresses: list[IPAddress], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._create_connection = _pinned(addresses)


# ------------------------------------------------------------------ size-bounded body
class _BoundedBody(io.RawIOBase):
    """Reads the response body; raises source_too_large once more than `max_bytes` have come in, and
    source_too_slow once the whole download has taken longer than `max_seconds` (a server that trickles a byte
    now and then never trips the per-read timeout)."""

    def __init__(
        self,
        response: http.client.HTTPResponse,
        connection: http.client.HTTPConnection,
        url: str,
        max_bytes: int,
        deadline: float,
        max_seconds: int,
    ) -> None:
        super().__init__()
        self._response = response
        self._connection = connection
        self._url = url
        self._max_bytes = max_bytes
        self._count = 0
        self._deadline = deadline
        self._max_seconds = max_seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        # read at most one byte past the limit, so that an exact-size body still ends cleanly
        room = self._max_bytes - self._count + 1
        wanted = min(len(view), room)
        try:
            # read1: what one receive brings, so the deadline is checked between receives (readinto would
            # wait for the whole buffer, as long as a trickling server likes).
            data = self._response.read1(wanted)
            got = len(data)
            view[:got] = data
        except (http.client.HTTPException, OSError) as error:
            raise SourceUnavailable(
                "source_unreachable", f"reading {self._url} failed: {error}; try the import again"
            ) from error
        self._count += got
        if time.monotonic() > self._deadline:
            raise SourceUnavailable(
                "source_too_slow",
                f"{self._url} did not arrive within {self._max_seconds} s (URL_MAX_SECONDS; {self._count} bytes "
                "came): serve it faster, or upload the file instead",
            )
        if self._count > self._max_bytes:
            raise SourceUnavailable(
                "source_too_large",
                f"{self._url} is larger than {self._max_bytes} bytes (MAX_SOURCE_BYTES): split the file",
            )
        return got

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
            finally:
                self._connection.close()
        super().close()


# ------------------------------------------------------------------ open_url
def open_url(
    url: str,
    allow_http: bool,
    timeout_seconds: int,
    *,
    allowed_hosts: str | Iterable[str] | Allowlist | None = None,
    denied_ports: Collection[int] = (),
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_seconds: int = DEFAULT_MAX_SECONDS,
) -> BinaryIO:
    """GETs `url` with the SSRF guards described in the module docstring; returns the body as a stream."""
    deadline = time.monotonic() + max_seconds
    allowlist = allowed_hosts if isinstance(allowed_hosts, Allowlist) else Allowlist.parse(allowed_hosts)
    current = url
    for hop in range(max_redirects + 1):
        response, connection = _request(current, allow_http, timeout_seconds, allowlist, denied_ports, first=hop == 0)
        if response.status in REDIRECT_STATUSES:
            location = response.getheader("Location")
            response.close()
            connection.close()
            if not location:
                raise SourceUnavailable(
                    "source_http_error", f"GET {current} answered HTTP {response.status} without a Location"
                )
            target = urljoin(current, location.strip())
            if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
                raise SourceUnavailable(
                    "url_not_allowed", f"{current} redirects from https down to plain http ({target}): refused"
                )
            current = target
            continue
        if response.status != 200:
            status = response.status
            response.close()
            connection.close()
            raise SourceUnavailable(
                "source_http_error",
                f"GET {current} answered HTTP {status}: make sure the file exists and is readable without credentials",
            )
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > max_bytes:
            response.close()
            connection.close()
            raise SourceUnavailable(
                "source_too_large", f"{current} is {int(length)} bytes, over MAX_SOURCE_BYTES ({max_bytes}): split it"
            )
        body = _BoundedBody(response, connection, current, max_bytes, deadline, max_seconds)
        return io.BufferedReader(body)
    raise SourceUnavailable(
        "too_many_redirects",
        f"{url} redirected more than {max_redirects} times (MAX_URL_REDIRECTS): give the final URL",
    )


def post_url(
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow_http: bool,
    timeout_seconds: int,
    *,
    allowed_hosts: str | Iterable[str] | Allowlist | None = None,
    denied_ports: Collection[int] = (),
) -> CallbackAnswer:
    """POSTs `body` to `url` with the SSRF guards of the module docstring, following no redirect (a callback's
    URL is final). Raises SourceUnavailable when no HTTP answer came."""
    allowlist = allowed_hosts if isinstance(allowed_hosts, Allowlist) else Allowlist.parse(allowed_hosts)
    response, connection = _request(
        url, allow_http, timeout_seconds, allowlist, denied_ports, first=True, method="POST", body=body, headers=headers
    )
    try:
        excerpt = response.read(RESPONSE_EXCERPT_CHARS).decode("utf-8", "replace")
    except (http.client.HTTPException, OSError):
        excerpt = ""
    finally:
        response.close()
        connection.close()
    return CallbackAnswer(response.status, excerpt)


def _request(
    url: str,
    allow_http: bool,
    timeout_seconds: int,
    allowlist: Allowlist,
    denied_ports: Collection[int],
    *,
    first: bool,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    reason = check_url(url, allow_http)
    if reason:
        raise SourceUnavailable(
            "invalid_url" if first else "url_not_allowed", reason if first else f"redirect to {url} refused: {reason}"
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = resolve_vetted(host, port, allowlist, denied_ports)
    connection_class = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    connection = connection_class(host, port, addresses, timeout_seconds)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            method, target, body, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        )
        return connection.getresponse(), connection
    except (http.client.HTTPException, OSError) as error:
        connection.close()
        doing = "fetch" if method == "GET" else method
        raise SourceUnavailable("source_unreachable", f"could not {doing} {url}: {error}; check the URL") from error
