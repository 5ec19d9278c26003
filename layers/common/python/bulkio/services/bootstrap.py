"""Wires the import service to the real adapters, once per process (warm invocations reuse it)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import orjson
import psycopg2
from psycopg2.extensions import connection as Connection

from bulkio.adapters import aws
from bulkio.adapters.export_jobs import DynamoExportJobRepository
from bulkio.adapters.export_store import ExportStore
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.adapters.metrics import Metrics
from bulkio.adapters.postgres import ImportStore, connect
from bulkio.adapters.s3 import S3ObjectStore
from bulkio.adapters.secrets import read_database_url
from bulkio.adapters.sqs import ChunkQueue
from bulkio.adapters.tokens import TokenVerifier
from bulkio.config import Settings
from bulkio.services.exports import ExportService
from bulkio.services.imports import ImportService

T = TypeVar("T")


@cache
def metrics() -> Metrics:
    """One registry per process: the API function serves imports and exports from the same one."""
    return Metrics(Settings.from_env().pushgateway_url, os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"))


def pushing_metrics(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Pushes this instance's metrics after every invocation, whatever its outcome."""

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> T:
        try:
            return handler(event, context)
        finally:
            metrics().push()

    return invoke


def resolve_database_url(settings: Settings, secrets_client: Callable[[], Any]) -> str:
    """DATABASE_URL when it is set (locally), else the URL in the DATABASE_SECRET_ARN secret (on AWS).

    With neither, the empty string: libpq then connects with its defaults and the PG* variables.
    Raises SecretError when the secret can't be read or used; its message holds no credentials.
    """
    if settings.database_url.strip():
        return settings.database_url.strip()
    if settings.database_secret_arn.strip():
        return read_database_url(secrets_client(), settings.database_secret_arn.strip())
    return ""


@cache
def database_url() -> str:
    """The database's connection URL, resolved once per process on first use (never logged: it holds the password).

    The services call it when they first connect, so functions that never reach the database never read the
    secret. A failure is not cached: the next connection tries again.
    """
    return resolve_database_url(Settings.from_env(), lambda: aws.client("secretsmanager"))


def resolved_database_url() -> str:
    """What database_url() holds now, or "" before it has resolved anything: never reads the secret."""
    return database_url() if database_url.cache_info().currsize else ""


def connect_database() -> Connection:
    """A connection to database_url(). When it fails, the secret is read again and, if it changed (rotated),
    the connection is tried once more with the new credentials; with DATABASE_URL nothing is re-read."""
    url = database_url()
    try:
        return connect(url)
    except psycopg2.OperationalError:
        database_url.cache_clear()
        fresh = database_url()
        if fresh == url:
            raise
        return connect(fresh)


@cache
def token_verifier() -> TokenVerifier:
    """The bearer-token check of the authorizer and the streamed export, counting every outcome."""
    return TokenVerifier(
        Settings.from_env().auth(), on_outcome=lambda outcome: metrics().token_checks.labels(outcome).inc()
    )


@cache
def import_service() -> ImportService:
    settings = Settings.from_env()

    def launch_chunker(job_id: str) -> None:
        aws.client("lambda").invoke(
            FunctionName=settings.chunker_function_name,
            InvocationType="Event",
            Payload=orjson.dumps({"job_id": job_id}),
        )

    return ImportService(
        settings=settings,
        jobs=DynamoJobRepository(aws.dynamodb_table(settings.jobs_table)),
        objects=S3ObjectStore(aws.client("s3"), settings.import_bucket),
        queue=ChunkQueue(aws.client("sqs"), settings.chunk_queue_url),
        store=ImportStore(connect_database),
        rules=settings.validation_rules(),
        launch_chunker=launch_chunker,
        metrics=metrics(),
    )


@cache
def export_service() -> ExportService:
    settings = Settings.from_env()

    def start_execution(job_id: str) -> None:
        aws.client("stepfunctions").start_execution(
            stateMachineArn=settings.state_machine_arn, name=job_id, input=orjson.dumps({"job_id": job_id}).decode()
        )

    table = aws.dynamodb_table(settings.jobs_table)
    return ExportService(
        settings=settings,
        jobs=DynamoExportJobRepository(table),
        idempotency=DynamoJobRepository(table),
        objects=S3ObjectStore(aws.client("s3"), settings.export_bucket),
        store=ExportStore(connect_database),
        start_execution=start_execution,
        metrics=metrics(),
    )
