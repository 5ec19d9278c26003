"""Readiness of every part the service needs: PostgreSQL, DynamoDB, S3 and SQS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bulkio.adapters import aws
from bulkio.adapters.secrets import redact
from bulkio.bootstrap import connect_database, resolved_database_url
from bulkio.config import Settings


def _check(probe: Callable[[], object], scrub: Callable[[str], str] = lambda text: text) -> str:
    try:
        probe()
    except Exception as error:
        return scrub(f"unavailable: {type(error).__name__}: {error}")[:300]
    return "ok"


def check_health(settings: Settings | None = None) -> dict[str, Any]:
    """Probes each part; the database is bootstrap's database_url() (DATABASE_URL or the secret)."""
    settings = settings or Settings.from_env()

    def database() -> None:
        # Resolved inside the check: a secret that can't be read makes the database unavailable.
        with connect_database() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM import_runs LIMIT 1")
        connection.close()

    def without_password(text: str) -> str:
        # libpq may quote the connection string in its errors, and this report is a response.
        return redact(text, resolved_database_url())

    checks = {
        "database": _check(database, without_password),
        "jobs_table": _check(lambda: aws.client("dynamodb").describe_table(TableName=settings.jobs_table)),
        "bucket": _check(lambda: aws.client("s3").head_bucket(Bucket=settings.import_bucket)),
        "chunk_queue": _check(
            lambda: aws.client("sqs").get_queue_attributes(
                QueueUrl=settings.chunk_queue_url, AttributeNames=["QueueArn"]
            )
        ),
    }
    return {"status": "ok" if all(v == "ok" for v in checks.values()) else "degraded", "checks": checks}
