"""The API function behind API Gateway: its routes, models and rules are in bulkio.web.api."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import metrics, pushing_metrics
from bulkio.web.api import resolve

logger = Logger()


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.monotonic()
    response = resolve(event, context)
    # The route template (/v1/imports/{job_id}), not the path: one series per route, not per job.
    route, method = event.get("resource") or "unknown", event.get("httpMethod") or "unknown"
    registry = metrics()
    registry.api_requests.labels(route, method, str(response.get("statusCode"))).inc()
    registry.api_seconds.labels(route, method).observe(time.monotonic() - started)
    return response
