"""Step Functions tasks of the asynchronous export: run the export into S3, or record why it failed; then put the
job's completion event on the bus."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import export_service, pushing_metrics
from bulkio.domain.export_messages import ExportExecutionInput, ExportFailedInput

logger = Logger()


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def run_export(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    execution = ExportExecutionInput.model_validate(event)
    logger.append_keys(job_id=execution.job_id)
    return export_service().run(execution.job_id)


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def publish_completion(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    execution = ExportExecutionInput.model_validate(event)
    logger.append_keys(job_id=execution.job_id)
    export_service().publish_completion(execution.job_id)
    return {"job_id": execution.job_id, "published": True}


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def mark_failed(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    failed = ExportFailedInput.model_validate(event)
    logger.append_keys(job_id=failed.job_id)
    export_service().mark_failed(failed.job_id, failed.error)
    return {"job_id": failed.job_id, "status": "failed"}
