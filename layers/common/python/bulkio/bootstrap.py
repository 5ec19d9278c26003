"""Wires the services to the real adapters, once per process (warm invocations reuse them).

The functions ask this module for what they run (`chunker()`, `import_api()`, `export_service()`, ...), which the
process-wide `wiring` builds on first use. A test replaces the whole wiring in one place, whatever module calls
it: `monkeypatch.setattr(bootstrap, "wiring", Wiring(imports=world.parts))`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from functools import cache, cached_property
from typing import Any, BinaryIO, TypeVar

import orjson
import psycopg2
from psycopg2.extensions import connection as Connection

from bulkio.adapters import aws
from bulkio.adapters.events import EventBridgePublisher
from bulkio.adapters.export_jobs import DynamoExportJobRepository
from bulkio.adapters.export_store import ExportStore
from bulkio.adapters.http_source import open_url, post_url
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.adapters.metrics import Metrics
from bulkio.adapters.postgres import ImportStore, connect
from bulkio.adapters.s3 import S3ObjectStore
from bulkio.adapters.secrets import read_database_url, redact
from bulkio.adapters.sqs import CallbackQueue, ChunkQueue
from bulkio.adapters.tokens import TokenVerifier
from bulkio.config import Settings
from bulkio.domain.callbacks import CallbackAnswer
from bulkio.domain.export_messages import ExportExecutionInput
from bulkio.services.exports import ExportService
from bulkio.services.health import check_health
from bulkio.services.imports.api import ImportApi
from bulkio.services.imports.chunking import Chunker
from bulkio.services.imports.completion import CallbackDeliverer
from bulkio.services.imports.sweeping import DeadLetters, Sweeper
from bulkio.services.imports.wiring import ImportParts, wire_imports
from bulkio.services.imports.writing import ChunkWriter
from bulkio.services.ports import CallbackSender

T = TypeVar("T")


class Wiring:
    """The process's services on the real adapters, each built on first use and kept. A part handed in
    (`Wiring(imports=..., metrics=...)`) is used instead of the one that would be built."""

    def __init__(self, **given: Any) -> None:
        unknown = set(given) - {name for name, value in vars(Wiring).items() if isinstance(value, cached_property)}
        if unknown:
            raise TypeError(f"Wiring has no parts {sorted(unknown)}")
        self.__dict__.update(given)  # found before the cached properties, as their own cached values are

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def metrics(self) -> Metrics:
        """One registry per process: the API function serves imports and exports from the same one."""
        return Metrics(self.settings.pushgateway_url, os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"))

    @cached_property
    def token_verifier(self) -> TokenVerifier:
        """The bearer-token check of the authorizer and the streamed export, counting every outcome."""
        return TokenVerifier(
            self.settings.auth(), on_outcome=lambda outcome: self.metrics.token_checks.labels(outcome).inc()
        )

    @cached_property
    def events(self) -> EventBridgePublisher:
        return EventBridgePublisher(aws.retried_elsewhere_client("events"), self.settings.event_bus_name)

    @cached_property
    def imports(self) -> ImportParts:
        settings = self.settings

        def launch_chunker(job_id: str) -> None:
            aws.client("lambda").invoke(
                FunctionName=settings.chunker_function_name,
                InvocationType="Event",
                Payload=orjson.dumps({"job_id": job_id}),
            )

        jobs = DynamoJobRepository(aws.dynamodb_table(settings.jobs_table))
        return wire_imports(
            settings=settings,
            jobs=jobs,
            idempotency=jobs,
            objects=S3ObjectStore(aws.client("s3"), settings.import_bucket),
            queue=ChunkQueue(aws.client("sqs"), settings.chunk_queue_url),
            store=ImportStore(connect_database),
            rules=settings.validation_rules(),
            metrics=self.metrics,
            launch_chunker=launch_chunker,
            open_source_url=url_opener(settings),
            events=self.events,
            callbacks=CallbackQueue(aws.client("sqs"), settings.callback_queue_url),
            send_callback=callback_sender(settings),
        )

    @cached_property
    def export_service(self) -> ExportService:
        settings = self.settings

        def start_execution(job_id: str) -> None:
            aws.client("stepfunctions").start_execution(
                stateMachineArn=settings.state_machine_arn,
                name=job_id,
                input=ExportExecutionInput(job_id=job_id).model_dump_json(),
            )

        table = aws.dynamodb_table(settings.jobs_table)
        return ExportService(
            settings=settings,
            jobs=DynamoExportJobRepository(table),
            idempotency=DynamoJobRepository(table),
            objects=S3ObjectStore(aws.client("s3"), settings.export_bucket),
            store=ExportStore(connect_database),
            start_execution=start_execution,
            metrics=self.metrics,
            events=self.events,
        )


def url_opener(settings: Settings) -> Callable[[str], BinaryIO]:
    """The vetted HTTP fetch of URL imports, within the settings' hosts, ports, redirects, size and time."""

    def open_source_url(url: str) -> BinaryIO:
        return open_url(
            url,
            settings.allow_http_urls,
            settings.url_timeout_seconds,
            allowed_hosts=settings.url_allowed_hosts,
            denied_ports=settings.url_denied_ports,
            max_redirects=settings.max_url_redirects,
            max_bytes=settings.max_source_bytes,
            max_seconds=settings.url_max_seconds,
        )

    return open_source_url


def callback_sender(settings: Settings) -> CallbackSender:
    """The vetted POST of completion callbacks, within the same hosts and ports as URL imports."""

    def send_callback(url: str, body: bytes, headers: dict[str, str]) -> CallbackAnswer:
        return post_url(
            url,
            body,
            headers,
            settings.allow_http_urls,
            settings.callback_timeout_seconds,
            allowed_hosts=settings.url_allowed_hosts,
            denied_ports=settings.url_denied_ports,
        )

    return send_callback


wiring = Wiring()


def reset() -> None:
    """Forgets every part built so far: the next call builds them again from the environment."""
    global wiring
    wiring = Wiring()


def metrics() -> Metrics:
    return wiring.metrics


def token_verifier() -> TokenVerifier:
    return wiring.token_verifier


def import_api() -> ImportApi:
    return wiring.imports.api


def chunker() -> Chunker:
    return wiring.imports.chunker


def chunk_writer() -> ChunkWriter:
    return wiring.imports.writer


def callback_deliverer() -> CallbackDeliverer:
    return wiring.imports.callbacks


def sweeper() -> Sweeper:
    return wiring.imports.sweeper


def dead_letters() -> DeadLetters:
    return wiring.imports.dead_letters


def export_service() -> ExportService:
    return wiring.export_service


def health_report(settings: Settings | None = None) -> dict[str, Any]:
    """Probes PostgreSQL (through database_url(): DATABASE_URL or the secret), DynamoDB, S3 and SQS."""
    settings = settings or wiring.settings

    def database() -> None:
        # Resolved inside the probe: a secret that can't be read makes the database unavailable.
        with connect_database() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM import_runs LIMIT 1")
        connection.close()

    def without_password(text: str) -> str:
        # libpq may quote the connection string in its errors, and this report is a response.
        return redact(text, resolved_database_url())

    probes = {
        "database": database,
        "jobs_table": lambda: aws.client("dynamodb").describe_table(TableName=settings.jobs_table),
        "bucket": lambda: aws.client("s3").head_bucket(Bucket=settings.import_bucket),
        "chunk_queue": lambda: aws.client("sqs").get_queue_attributes(
            QueueUrl=settings.chunk_queue_url, AttributeNames=["QueueArn"]
        ),
    }
    return check_health(probes, without_password)


def pushing_metrics(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Pushes this instance's metrics after every invocation, whatever its outcome."""

    @functools.wraps(handler)
    def invoke(event: Any, context: Any) -> T:
        try:
            return handler(event, context)
        finally:
            metrics().push()

    return invoke


# ---------------------------------------------------------------------------------------------- the database


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
