"""Function URLs of the fixture template on the functions host's API port: events, streaming, disconnects."""

from __future__ import annotations

import base64
import json
from http.client import HTTPConnection
from urllib.parse import urlsplit
from uuid import uuid4

import pytest

from tests.fixtures.aws import FIXTURE_MAX_REQUEST_BYTES, FixtureStack
from tests.fixtures.local_stack.helpers import eventually, http

pytestmark = pytest.mark.integration

SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDLOCAL/20260101/us-east-1/lambda/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=0123"
}


def connect(fixture_stack: FixtureStack) -> HTTPConnection:
    api = urlsplit(fixture_stack.stack.api_url)
    return HTTPConnection(api.hostname or "127.0.0.1", api.port, timeout=30)


def test_streamed_url_sends_the_first_chunk_before_the_handler_goes_on(fixture_stack: FixtureStack) -> None:
    go = f"go-{uuid4().hex}"
    connection = connect(fixture_stack)
    connection.request("GET", f"/v1/downloads?mode=wait&go={go}")
    response = connection.getresponse()

    first = response.read(len(b"first\n"))
    # The handler is now waiting for this file: had the host held the first chunk back, it would have given up.
    (fixture_stack.record_dir / go).touch()
    rest = response.read()
    connection.close()

    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert first == b"first\n"
    assert rest == b"after-go\nlast\n"


def test_client_going_away_closes_the_generator_and_the_worker_serves_on(fixture_stack: FixtureStack) -> None:
    go, marker = f"go-{uuid4().hex}", uuid4().hex
    connection = connect(fixture_stack)
    connection.request("GET", f"/v1/downloads?mode=endless&go={go}&marker={marker}")
    response = connection.getresponse()
    assert response.read(len(b"first\n")) == b"first\n"

    connection.close()
    (fixture_stack.record_dir / go).touch()

    ended = eventually(lambda: [r for r in fixture_stack.records("downloads") if r["marker"] == marker])
    assert ended == [{"marker": marker, "completed": False}]  # its finally ran, before it produced everything
    status, _, body = http("GET", f"{fixture_stack.stack.api_url}/v1/downloads/after")
    assert (status, json.loads(body)["rawPath"]) == (200, "/v1/downloads/after")


def test_local_url_path_keeps_the_full_path_and_api_routes_under_it_win(fixture_stack: FixtureStack) -> None:
    api_url = fixture_stack.stack.api_url

    url_status, _, url_body = http("DELETE", f"{api_url}/v1/downloads/a%20b/c")
    api_status, _, api_body = http("POST", f"{api_url}/v1/downloads", b"{}")

    assert url_status == 200
    assert json.loads(url_body) == {"rawPath": "/v1/downloads/a%20b/c", "method": "DELETE"}
    assert (api_status, api_body) == (202, b"api route")


def test_url_event_is_payload_format_2(fixture_stack: FixtureStack) -> None:
    status, headers, body = http(
        "POST",
        f"{fixture_stack.stack.api_url}/_url/EchoUrlFunction/some/path?a=1&a=2&b=",
        b'{"name": "x"}',
        {**SIGNED, "Content-Type": "application/json", "X-Custom": "v", "Cookie": "c1=1; c2=2", "User-Agent": "t/1"},
    )

    assert status == 200
    assert headers["Set-Cookie"] == "seen=yes; Path=/"
    event = json.loads(body)
    assert (event["version"], event["routeKey"]) == ("2.0", "$default")
    assert event["rawPath"] == "/some/path"  # the default mount stands for the URL's own host
    assert event["rawQueryString"] == "a=1&a=2&b="
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["cookies"] == ["c1=1", "c2=2"]
    assert event["headers"]["x-custom"] == "v"
    assert "cookie" not in event["headers"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"name": "x"}', False)
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/some/path",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "t/1",
    }
    assert context["accountId"] == "123456789012"
    assert context["authorizer"]["iam"]["accessKey"] == "AKIDLOCAL"
    assert context["domainName"] == urlsplit(fixture_stack.stack.api_url).netloc
    assert context["requestId"] and context["time"] and context["timeEpoch"] > 0


def test_binary_url_body_arrives_base64_encoded(fixture_stack: FixtureStack) -> None:
    payload = bytes(range(256))

    _, _, body = http(
        "PUT",
        f"{fixture_stack.stack.api_url}/_url/EchoUrlFunction",
        payload,
        {**SIGNED, "Content-Type": "application/octet-stream"},
    )

    event = json.loads(body)
    assert event["rawPath"] == "/"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


@pytest.mark.parametrize(
    ("shape", "status", "content_type", "expected_body"),
    [
        ("inferred", 200, "application/json", b'{"inferred": true}'),  # no statusCode: Lambda infers a 200
        ("generator", 201, "text/plain", b"one two"),  # BUFFERED collects a streamed body
    ],
)
def test_buffered_url_responses(
    fixture_stack: FixtureStack, shape: str, status: int, content_type: str, expected_body: bytes
) -> None:
    answered, headers, body = http(
        "GET", f"{fixture_stack.stack.api_url}/_url/EchoUrlFunction?shape={shape}", None, SIGNED
    )

    assert (answered, headers["Content-Type"], body) == (status, content_type, expected_body)
    assert headers["Content-Length"] == str(len(expected_body))


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/_url/EchoUrlFunction", None, {}, 403),  # AWS_IAM: unsigned requests are refused
        ("/_url/EchoUrlFunction?shape=fail", None, SIGNED, 502),
        ("/_url/EchoUrlFunction", b"x" * (FIXTURE_MAX_REQUEST_BYTES + 1), SIGNED, 413),
    ],
)
def test_url_refusals_and_failures(
    fixture_stack: FixtureStack, path: str, body: bytes | None, headers: dict[str, str], status: int
) -> None:
    answered, _, answer = http("POST", f"{fixture_stack.stack.api_url}{path}", body, headers)

    assert answered == status
    if status == 403:
        assert json.loads(answer) == {"Message": "Forbidden"}
