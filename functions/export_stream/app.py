"""Streamed export: GET /v1/exports?resource=...&format=... from a Lambda function URL in RESPONSE_STREAM mode.

The body is a generator: the streaming runtime (AWS) or the local functions host sends each piece as it
comes out of PostgreSQL, and closes the generator when the client goes away, which cancels the query.
"""

from __future__ import annotations

from typing import Any

import orjson
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import export_service, pushing_metrics, token_verifier
from bulkio.domain.errors import Refusal
from bulkio.problems import PROBLEM_CONTENT_TYPE, Problem
from bulkio.web.auth import caller_from_header, require_scope
from bulkio.web.openapi import DECLARED_SCOPES, STREAMED_EXPORT
from bulkio.web.problems import problem_from_refusal

logger = Logger()


def _problem(problem: Problem, path: str) -> dict[str, Any]:
    return {
        "statusCode": problem.status,
        "headers": {"Content-Type": PROBLEM_CONTENT_TYPE, **problem.headers},
        "body": orjson.dumps(problem.to_dict(path)).decode(),
    }


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    path = event.get("rawPath", "/v1/exports")
    method = event.get("requestContext", {}).get("http", {}).get("method", "GET")
    if method != "GET" or path.rstrip("/") != "/v1/exports":
        return _problem(Problem(404, "route_not_found", "Not found", f"no route {method} {path}"), path)
    try:
        # A function URL has no authorizer in front of it: the same token check as the API's, here.
        caller = caller_from_header(token_verifier(), (event.get("headers") or {}).get("authorization"))
        require_scope(caller, DECLARED_SCOPES[STREAMED_EXPORT])
        export = export_service().stream(event.get("queryStringParameters") or {})
    except Problem as problem:  # the token check's 401 and 403
        return _problem(problem, path)
    except Refusal as refusal:  # a bad export request: the status the API would give it
        return _problem(problem_from_refusal(refusal), path)
    logger.info("streamed export started", extra={"file": export.filename, "subject": caller.subject})
    return {
        "statusCode": 200,
        "headers": {
            "Content-Type": export.content_type,
            "Content-Disposition": f'inline; filename="{export.filename}"',
            "Cache-Control": "no-store",
        },
        "body": export.body,
    }
