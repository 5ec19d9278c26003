"""The import pipeline's service layer against real PostgreSQL and moto's server (S3, SQS, DynamoDB).

Writers are driven by hand here so that the tests control the number of workers, the order in which chunks
finish and redeliveries; the event wiring itself is covered by the end-to-end tests.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import orjson
import psycopg2
import pytest
from bulkio.adapters.events import EventBridgePublisher
from bulkio.adapters.jobs_repo import DynamoJobRepository
from bulkio.adapters.metrics import Metrics
from bulkio.adapters.postgres import ImportStore, connect
from bulkio.adapters.s3 import S3ObjectStore
from bulkio.adapters.sqs import ChunkQueue
from bulkio.bootstrap import callback_sender, url_opener
from bulkio.config import Settings
from bulkio.domain.chunks import ChunkMessage
from bulkio.domain.jobs import ImportJob
from bulkio.domain.records import ValidationRules
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key
from bulkio.services.imports.wiring import ImportParts, wire_imports
from prometheus_client.parser import text_string_to_metric_families

from infra.local.monitoring import start_monitoring
from infra.local.stack import free_port
from infra.tools import datagen
from tests.fakes import CALLER, OWNER, FakeCallbackQueue
from tests.fixtures.aws import create_jobs_table

BUCKET = "pipeline-imports"
TABLE = "pipeline-jobs"
QUEUE = "pipeline-chunks"
CHUNK_RECORDS = 100


@pytest.fixture
def aws(aws_environment: str) -> boto3.session.Session:
    session = boto3.session.Session()
    s3 = session.client("s3")
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
        create_jobs_table(session, TABLE)
        session.client("sqs").create_queue(QueueName=QUEUE)
    _drain(session)
    return session


def _queue_url(session: boto3.session.Session) -> str:
    return str(session.client("sqs").get_queue_url(QueueName=QUEUE)["QueueUrl"])


def _drain(session: boto3.session.Session) -> list[dict[str, Any]]:
    """Takes every message off the chunk queue and returns their bodies."""
    sqs = session.client("sqs")
    url = _queue_url(session)
    bodies: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return bodies
        for message in batch:
            bodies.append(orjson.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class Pipeline:
    session: boto3.session.Session
    database_url: str
    settings: Settings

    def service(self) -> ImportParts:
        """The import service with its own connections, as each Lambda instance has."""
        jobs = DynamoJobRepository(self.session.resource("dynamodb").Table(TABLE))
        return wire_imports(
            settings=self.settings,
            jobs=jobs,
            idempotency=jobs,
            objects=S3ObjectStore(self.session.client("s3"), BUCKET),
            queue=ChunkQueue(self.session.client("sqs"), _queue_url(self.session)),
            store=ImportStore(lambda: connect(self.database_url)),
            rules=ValidationRules(),
            metrics=Metrics(self.settings.pushgateway_url, "imports"),
            launch_chunker=lambda job_id: None,
            open_source_url=url_opener(self.settings),
            events=EventBridgePublisher(self.session.client("events"), "default"),
            callbacks=FakeCallbackQueue(),  # no job here has a callback_url
            send_callback=callback_sender(self.settings),
        )

    def upload_and_chunk(self, resource: Resource, fmt: Format, data: bytes) -> tuple[str, list[dict[str, Any]]]:
        service = self.service()
        created = service.api.submit(NewImport(resource=resource, format=fmt), idempotency_key=None, owner=OWNER)
        job_id = created.body["job_id"]
        service.api.objects.put_bytes(source_key(job_id), data)
        service.chunker.run_chunker(job_id)
        return job_id, _drain(self.session)


@pytest.fixture
def pipeline(aws: boto3.session.Session, clean_db: str) -> Pipeline:
    settings = Settings.from_env(
        {
            "JOBS_TABLE": TABLE,
            "IMPORT_BUCKET": BUCKET,
            "DATABASE_URL": clean_db,
            "CHUNK_RECORDS": str(CHUNK_RECORDS),
        }
    )
    return Pipeline(aws, clean_db, settings)


def _file(resource: str, rows: int, fmt: str, seed: int = 7, **kwargs: int) -> bytes:
    sink = io.BytesIO()
    datagen.write(resource, datagen.generate(resource, rows, seed, **kwargs), fmt, sink)
    return sink.getvalue()


def _run_writers(pipeline: Pipeline, messages: list[dict[str, Any]], workers: int) -> None:
    """Processes the chunk messages with `workers` parallel writers, each with its own connections."""
    pending = list(messages)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer() -> None:
        service = pipeline.service()
        while True:
            with lock:
                if not pending:
                    return
                message = pending.pop()
            try:
                service.writer.process_chunk(ChunkMessage.model_validate(message))
            except BaseException as error:  # surfaced below: a thread must not swallow it
                failures.append(error)
                return
            finally:
                service.writer.metrics.push()  # as each Lambda invocation ends

    threads = [threading.Thread(target=writer) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def _snapshot(database_url: str, job_id: str) -> dict[str, Any]:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id, lower(email), name, role, active FROM users ORDER BY id")
        users = cursor.fetchall()
        cursor.execute(
            "SELECT idx, line, code, field, message FROM import_errors WHERE job_id = %s ORDER BY idx, code, field",
            (job_id,),
        )
        errors = cursor.fetchall()
    connection.close()
    return {"users": users, "errors": errors}


def _import_users(pipeline: Pipeline, data: bytes, workers: int, order: Callable[[list[Any]], None]) -> dict:
    job_id, messages = pipeline.upload_and_chunk(Resource.USERS, Format.CSV, data)
    order(messages)
    _run_writers(pipeline, messages, workers)
    job = pipeline.service().api.jobs.get(job_id)
    assert job is not None
    return {"job": job, "snapshot": _snapshot(pipeline.database_url, job_id)}


def test_outcome_is_identical_with_one_and_several_writers(pipeline: Pipeline, database_url: str) -> None:
    data = _file("users", 1500, "csv")

    sequential = _import_users(
        pipeline, data, workers=1, order=lambda messages: messages.sort(key=lambda m: m["chunk"])
    )
    psycopg2_truncate(database_url)
    parallel = _import_users(pipeline, data, workers=4, order=random.Random(3).shuffle)

    assert sequential["job"].status.value == "completed_with_errors"
    assert parallel["job"].status == sequential["job"].status
    assert parallel["job"].counters == sequential["job"].counters
    assert parallel["job"].errors_by_code == sequential["job"].errors_by_code
    assert parallel["snapshot"]["users"] == sequential["snapshot"]["users"]
    # Same errors on the same lines, apart from the job id.
    assert parallel["snapshot"]["errors"] == sequential["snapshot"]["errors"]
    codes = set(sequential["job"].errors_by_code)
    assert {"invalid_email", "invalid_role", "duplicate_in_file"} <= codes
    counters = sequential["job"].counters
    assert counters.total == 1500
    assert counters.succeeded + counters.failed == counters.total
    assert counters.succeeded == len(sequential["snapshot"]["users"])


def psycopg2_truncate(database_url: str) -> None:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE comments, articles, users, import_errors, import_runs, import_chunks")
    connection.close()


def test_a_redelivered_chunk_counts_once(pipeline: Pipeline) -> None:
    data = _file("users", 250, "csv", seed=11)
    job_id, messages = pipeline.upload_and_chunk(Resource.USERS, Format.CSV, data)
    assert len(messages) == 3
    service = pipeline.service()
    first = ChunkMessage.model_validate(messages[0])
    service.writer.process_chunk(first)
    service.writer.process_chunk(first)  # at-least-once delivery: the same message again
    in_progress = service.api.view(job_id, CALLER)
    assert in_progress["status"] == "processing"
    assert in_progress["counters"]["processed"] == CHUNK_RECORDS
    assert in_progress["progress"]["chunks_done"] == 1

    for message in messages[1:] + messages:  # the rest, then everything again after the job ended
        service.writer.process_chunk(ChunkMessage.model_validate(message))
    job = service.api.jobs.get(job_id)
    assert job is not None
    assert job.is_final
    assert job.counters.total == 250
    assert job.counters.processed == 250
    assert job.counters.succeeded + job.counters.failed == 250
    errors = service.api.store.first_errors(job_id, limit=1000)
    assert len({(e["index"], e["code"], e["field"]) for e in errors}) == len(errors)


def test_reimporting_the_same_file_gives_the_same_counts(pipeline: Pipeline) -> None:
    data = _file("users", 300, "csv", seed=5)
    first = _import_users(pipeline, data, workers=2, order=lambda m: None)["job"]
    second = _import_users(pipeline, data, workers=2, order=lambda m: None)["job"]
    assert first.counters == second.counters
    assert first.errors_by_code == second.errors_by_code


def _import_and_report(pipeline: Pipeline, fmt: Format, data: bytes) -> tuple[ImportJob, list[dict[str, Any]]]:
    """Imports users with one writer; the finished job and its NDJSON error report."""
    job_id, messages = pipeline.upload_and_chunk(Resource.USERS, fmt, data)
    _run_writers(pipeline, messages, workers=1)
    service = pipeline.service()
    job = service.api.jobs.get(job_id)
    assert job is not None
    report = service.api.error_report(job_id, "ndjson", CALLER)
    assert report.body is not None
    return job, [orjson.loads(line) for line in report.body.splitlines()]


def test_error_report_names_source_lines(pipeline: Pipeline) -> None:
    rows = [
        "id,email,name,role,active,created_at,updated_at",
        "u1,ann@example.com,Ann,admin,true,,",
        "u2,foo@bar,Bob,reader,true,,",
        'u3,cy@example.com,"Cy',
        'Smith",manager,false,,',
        "u4,ANN@example.com,Ann Again,reader,true,,",
    ]
    data = ("\r\n".join(rows) + "\r\n").encode()
    job, errors = _import_and_report(pipeline, Format.CSV, data)
    assert (job.status.value, job.counters.succeeded, job.counters.failed) == ("completed_with_errors", 1, 3)
    by_code = {e["code"]: e for e in errors}
    assert by_code["invalid_email"]["line"] == 3 and by_code["invalid_email"]["index"] == 2
    assert by_code["invalid_email"]["value"] == "foo@bar"
    assert by_code["invalid_email"]["record"]["email"] == "foo@bar"
    assert by_code["invalid_role"]["line"] == 4 and by_code["invalid_role"]["index"] == 3
    duplicate = by_code["duplicate_in_file"]
    assert duplicate["line"] == 6 and duplicate["field"] == "email"
    assert "line 2" in duplicate["message"]
    csv_report = pipeline.service().api.error_report(job.job_id, "csv", CALLER)
    assert csv_report.body is not None
    assert csv_report.body.decode().splitlines()[0] == "line,index,code,field,message,value,record"


def test_a_finished_job_puts_its_completion_event_on_the_bus(pipeline: Pipeline) -> None:
    """Through EventBridge as moto serves it: a rule on the default bus routes bulkio's events to a queue."""
    events, sqs = pipeline.session.client("events"), pipeline.session.client("sqs")
    queue_url = sqs.create_queue(QueueName="completions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="bulkio-completions", EventPattern=orjson.dumps({"source": ["bulkio"]}).decode())
    events.put_targets(Rule="bulkio-completions", Targets=[{"Id": "queue", "Arn": queue_arn}])
    sqs.purge_queue(QueueUrl=queue_url)

    job, _ = _import_and_report(pipeline, Format.NDJSON, b'{"email": "ann@example.com", "name": "Ann"}\n')

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    [event] = [orjson.loads(message["Body"]) for message in messages]
    assert (event["source"], event["detail-type"]) == ("bulkio", "Import Job Completed")
    assert (event["detail"]["job_id"], event["detail"]["status"]) == (job.job_id, "completed")
    assert event["detail"]["counters"] == {"total": 1, "processed": 1, "succeeded": 1, "failed": 0}
    assert [open_job.job_id for open_job in pipeline.service().api.jobs.open_jobs()] == []


def test_unreadable_file_fails_the_job_with_the_reason(pipeline: Pipeline) -> None:
    job_id, messages = pipeline.upload_and_chunk(Resource.USERS, Format.JSON, b'{"not": "an array"}')
    assert messages == []
    job = pipeline.service().api.jobs.get(job_id)
    assert job is not None
    assert job.status.value == "failed"
    assert job.failure is not None and job.failure.code == "not_a_json_array"


def test_articles_and_comments_check_references(pipeline: Pipeline) -> None:
    users, articles, comments = 200, 200, 300
    _import_users(pipeline, _file("users", users, "csv"), workers=2, order=lambda m: None)
    sizes = {"user_rows": users, "article_rows": articles}
    article_job, messages = pipeline.upload_and_chunk(
        Resource.ARTICLES, Format.NDJSON, _file("articles", articles, "ndjson", **sizes)
    )
    _run_writers(pipeline, messages, workers=2)
    comment_job, messages = pipeline.upload_and_chunk(
        Resource.COMMENTS, Format.NDJSON, _file("comments", comments, "ndjson", **sizes)
    )
    _run_writers(pipeline, messages, workers=2)
    service = pipeline.service()
    article = service.api.jobs.get(article_job)
    comment = service.api.jobs.get(comment_job)
    assert article is not None and comment is not None
    assert article.counters.succeeded > articles * 0.8
    assert comment.counters.succeeded > comments * 0.8
    assert "unknown_author" in article.errors_by_code
    assert {"unknown_article", "unknown_user", "body_too_long"} & set(comment.errors_by_code)


def test_concurrent_requests_with_one_idempotency_key_make_one_job(pipeline: Pipeline) -> None:
    data = _file("users", 20, "csv", seed=21)
    results: list[Any] = []

    def submit() -> None:
        request = NewImport(
            resource=ImportTarget.USERS,
            format=Format.CSV,
            filename="users.csv",
            file=io.BytesIO(data),
            file_sha256="same-file",
        )
        results.append(pipeline.service().api.submit(request, idempotency_key="concurrent-key", owner=OWNER))

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 5
    assert {result.body["job_id"] for result in results} == {results[0].body["job_id"]}
    assert sum(not result.replayed for result in results) == 1
    listed, _ = pipeline.service().api.jobs.list_jobs(50, None)
    assert [job.job_id for job in listed].count(results[0].body["job_id"]) == 1


def test_a_nul_character_fails_its_record_not_its_chunk(pipeline: Pipeline) -> None:
    lines = [
        b'{"id": "nul-1", "email": "nul1@example.com", "name": "Fine"}',
        b'{"id": "nul-2", "email": "nul2@example.com", "name": "Bad\\u0000Name"}',
    ]
    job, errors = _import_and_report(pipeline, Format.NDJSON, b"\n".join(lines) + b"\n")
    assert (job.status.value, job.counters.succeeded, job.counters.failed) == ("completed_with_errors", 1, 1)
    (error,) = errors
    assert (error["line"], error["code"], error["field"]) == (2, "invalid_character", "name")
    assert error["record"]["id"] == "nul-2"


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway on a free port (Debian package prometheus-pushgateway; .ci/run installs it).

    Its persistence file is the test's own: Debian's build otherwise restores what earlier runs pushed."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={tmp_path / 'pushgateway.data'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_pushgateway_totals_match_the_job_counters_with_several_writers(pipeline: Pipeline, pushgateway: str) -> None:
    pipeline.settings = pipeline.settings.model_copy(update={"pushgateway_url": pushgateway})
    data = _file("users", 1200, "csv", seed=31)
    job = _import_users(pipeline, data, workers=3, order=random.Random(5).shuffle)["job"]

    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))

    def total(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    instances = {
        sample.labels["instance"]
        for family in families
        for sample in family.samples
        if sample.name == "bulkio_chunks_total"
    }
    assert len(instances) >= 2  # several writers pushed, none overwrote another
    assert total("bulkio_chunks_total", resource="users") == job.chunks_total
    assert total("bulkio_records_total", resource="users", outcome="succeeded") == job.counters.succeeded
    assert total("bulkio_records_total", resource="users", outcome="failed") == job.counters.failed
    for code, count in job.errors_by_code.items():
        assert total("bulkio_record_errors_total", resource="users", code=code) == count
    assert total("bulkio_job_rows", job_id=job.job_id) == job.counters.total


def _prometheus_value(prometheus: str, promql: str) -> float | None:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{query}", timeout=5) as response:
        result = orjson.loads(response.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_an_imports_metrics_show_in_prometheus(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path `make run` sets up: functions push to the Pushgateway, Prometheus scrapes it, and the
    README's queries answer with the job's figures."""
    if shutil.which("prometheus") is None or shutil.which("prometheus-pushgateway") is None:
        pytest.skip("prometheus and prometheus-pushgateway are not installed (apt-get install both; .ci/run does)")
    monkeypatch.setenv("LOCAL_PUSHGATEWAY_PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_PROMETHEUS_PORT", str(free_port()))
    monitoring = start_monitoring(tmp_path)
    try:
        assert monitoring.pushgateway_url and monitoring.prometheus_url
        pipeline.settings = pipeline.settings.model_copy(update={"pushgateway_url": monitoring.pushgateway_url})
        job = _import_users(pipeline, _file("users", 600, "csv", seed=47), workers=2, order=lambda _: None)["job"]

        expected = {
            'sum(bulkio_records_total{resource="users",outcome="succeeded"})': job.counters.succeeded,
            'sum(bulkio_records_total{resource="users",outcome="failed"})': job.counters.failed,
            f'bulkio_job_rows{{kind="import",job_id="{job.job_id}"}}': job.counters.total,
        }
        seen: dict[str, float | None] = {}
        deadline = time.monotonic() + 40  # Prometheus scrapes the local Pushgateway every 5 s
        while time.monotonic() < deadline:
            seen = {promql: _prometheus_value(monitoring.prometheus_url, promql) for promql in expected}
            if seen == expected:
                break
            time.sleep(1)
        assert seen == expected
        rows_per_second = _prometheus_value(
            monitoring.prometheus_url, f'bulkio_job_rows_per_second{{kind="import",job_id="{job.job_id}"}}'
        )
        assert rows_per_second is not None and rows_per_second > 0
    finally:
        monitoring.stop()
