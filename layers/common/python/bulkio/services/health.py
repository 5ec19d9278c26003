"""Readiness of every part the service needs: PostgreSQL, DynamoDB, S3 and SQS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bulkio.adapters import aws
from bulkio.adapters.postgres import connect
from bulkio.config import Settings


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as error:
        return f"unavailable: {type(error).__name__}: {error}"[:300]
    return "ok"


def check_health(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings.from_env()

    def database() -> None:
        with connect(settings.database_url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM import_runs LIMIT 1")
        connection.close()

    checks = {
        "database": _check(database),
        "jobs_table": _check(lambda: aws.client("dynamodb").describe_table(TableName=settings.jobs_table)),
        "bucket": _check(lambda: aws.client("s3").head_bucket(Bucket=settings.import_bucket)),
        "chunk_queue": _check(
            lambda: aws.client("sqs").get_queue_attributes(
                QueueUrl=settings.chunk_queue_url, AttributeNames=["QueueArn"]
            )
        ),
    }
    return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}
