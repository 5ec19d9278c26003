"""Remote import sources: opens a URL as a binary stream, read by the chunker in pieces."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import BinaryIO
from urllib.parse import urlsplit


class SourceUnavailable(Exception):
    """The source could not be opened; `message` says why and what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_url(url: str, allow_http: bool) -> str | None:
    """Returns why the URL is not acceptable, or None."""
    parts = urlsplit(url)
    allowed = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in allowed:
        return f"url scheme {parts.scheme or '(none)'!r} is not allowed: use {' or '.join(sorted(allowed))}"
    if not parts.hostname:
        return "url has no host: give an absolute URL like https://example.com/users.csv"
    return None


def open_url(url: str, allow_http: bool, timeout_seconds: int) -> BinaryIO:
    reason = check_url(url, allow_http)
    if reason:
        raise SourceUnavailable("invalid_url", reason)
    request = urllib.request.Request(url, headers={"User-Agent": "bulkio-importer/1", "Accept-Encoding": "identity"})
    try:
        return urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as error:
        raise SourceUnavailable(
            "source_http_error",
            f"GET {url} answered HTTP {error.code}: make sure the file exists and is readable without credentials",
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise SourceUnavailable(
            "source_unreachable", f"could not fetch {url}: {getattr(error, 'reason', error)}; check the URL"
        ) from error
