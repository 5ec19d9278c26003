"""Lambda function URLs on the local functions host: where each is served and the event its function gets.

Function URLs (`FunctionUrlConfig`) are served on the API port too, since locally there is no URL host per
function. Where: the function resource's `Metadata: {LocalUrlPath: /v1/exports}` names the path, and the
function gets the full request path as rawPath (as behind a CDN that routes that path to the function URL);
without it, the path is `/_url/<LogicalId>`, which stands for the URL's own host: rawPath is what follows it.
Any method and any sub-path under the path reach the function, except requests an Api route of the template
matches (path and method): those go to the route. The event is Lambda's function URL event (payload format
2.0). InvokeMode RESPONSE_STREAM sends a handler's generator body with chunked transfer encoding as it is
produced, and closes the generator when the client goes away; BUFFERED collects it first. AuthType AWS_IAM
only asks for a SigV4-signed request (unsigned ones get AWS's 403); the signature is not checked.
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from infra.local.template_model import ACCOUNT_ID, Function, FunctionUrl, StackTemplate


@dataclass(frozen=True)
class UrlMount:
    function: Function
    url: FunctionUrl

    def serves(self, path: str) -> bool:
        return path == self.url.path or path.startswith(self.url.path + "/")


def compile_url_mounts(stack: StackTemplate) -> list[UrlMount]:
    mounts = [UrlMount(function, function.url) for function in stack.functions.values() if function.url]
    # A path below another function's path belongs to its own function.
    return sorted(mounts, key=lambda mount: len(mount.url.path), reverse=True)


_TEXT_MEDIA_TYPES = {
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/yaml",
}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def is_text(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in _TEXT_MEDIA_TYPES or media_type.endswith(("+json", "+xml"))


def sigv4_access_key(handler: BaseHTTPRequestHandler) -> str | None:
    """The access key of a SigV4-signed request (header or presigned query), None if it is unsigned."""
    authorization = handler.headers.get("Authorization", "")
    if authorization.startswith("AWS4-HMAC-SHA256") and (match := _CREDENTIAL.search(authorization)):
        return match[1]
    credential = parse_qs(urlsplit(handler.path).query).get("X-Amz-Credential")
    return credential[0].split("/", 1)[0] if credential else None


def function_url_event(
    handler: BaseHTTPRequestHandler, mount: UrlMount, body: bytes | None, access_key: str | None
) -> dict[str, Any]:
    """Lambda's function URL event (payload format 2.0): lower-case headers, repeated values comma-joined."""
    url = urlsplit(handler.path)
    raw_path = url.path
    if mount.url.strips_path:
        raw_path = raw_path[len(mount.url.path) :] or "/"
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in handler.headers.items():
        if name.lower() == "cookie":
            cookies.extend(cookie.strip() for cookie in value.split(";") if cookie.strip())
        else:
            headers[name.lower()] = f"{headers[name.lower()]},{value}" if name.lower() in headers else value
    query = {name: ",".join(values) for name, values in parse_qs(url.query, keep_blank_values=True).items()}
    url_id = uuid.uuid5(uuid.NAMESPACE_URL, mount.function.arn).hex
    now = time.time()
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID if access_key else "anonymous",
        "apiId": url_id,
        "domainName": headers.get("host", url_id),
        "domainPrefix": url_id,
        "http": {
            "method": handler.command,
            "path": unquote(raw_path),
            "protocol": handler.request_version,
            "sourceIp": handler.client_address[0],
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if access_key:
        request_context["authorizer"] = {
            "iam": {
                "accessKey": access_key,
                "accountId": ACCOUNT_ID,
                "callerId": access_key,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/local",
                "userId": access_key,
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    # As on AWS, absent parts are left out rather than null.
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        text = is_text(headers.get("content-type", ""))
        event["body"] = body.decode("utf-8", "replace") if text else base64.b64encode(body).decode()
        event["isBase64Encoded"] = not text
    return event
