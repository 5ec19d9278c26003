"""Step Functions tasks of the asynchronous export: run the export into S3, or record why it failed."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import export_service, pushing_metrics

logger = Logger()


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def run_export(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(job_id=event["job_id"])
    return export_service().run(event["job_id"])


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def mark_failed(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(job_id=event["job_id"])
    export_service().mark_failed(event["job_id"], event.get("error") or {})
    return {"job_id": event["job_id"], "status": "failed"}
