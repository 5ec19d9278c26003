"""End to end through the embedded stack: HTTP API, S3 events, SQS writers, PostgreSQL, as `make run` wires them."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.tools import datagen
from tests.e2e.client import Api, generated, multipart, request
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(local_stack: RunningStack) -> Api:
    return Api(local_stack)


@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving a folder, as a remote source for URL imports."""
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def test_users_articles_comments_by_multipart_upload(api: Api) -> None:
    sizes = {"user_rows": 1200, "article_rows": 800}
    users = api.upload("users", "users.csv", generated("users", 1200, 101, "csv"))
    assert users.status == 202, users.body
    created = users.json()
    assert (created["status"], created["resource"], created["format"]) == ("queued", "users", "csv")
    assert users.headers["location"] == f"/v1/imports/{created['job_id']}"
    user_job = api.wait(created["job_id"])
    assert user_job["status"] == "completed_with_errors"
    assert user_job["counters"]["total"] == 1200
    assert user_job["counters"]["succeeded"] + user_job["counters"]["failed"] == 1200
    assert user_job["progress"] == {
        "chunks_total": 2,
        "chunks_done": 2,
        "percent": 100.0,
        "basis": "records",
        "eta_seconds": None,
    }
    assert user_job["metrics"]["rows_per_second"] > 0
    assert {"invalid_email", "invalid_role", "duplicate_in_file"} <= set(user_job["errors_by_code"])
    first = user_job["errors"][0]
    assert set(first) == {"line", "index", "code", "field", "message", "value", "record"}
    assert first["line"] == first["index"] + 1  # the CSV header is line 1

    articles = api.upload("articles", "articles.ndjson", generated("articles", 800, 101, "ndjson", **sizes))
    article_job = api.wait(articles.json()["job_id"])
    assert article_job["counters"]["succeeded"] > 600
    assert {"unknown_author", "invalid_slug", "draft_has_published_at"} <= set(article_job["errors_by_code"])

    comments = api.upload("comments", "comments.ndjson", generated("comments", 1000, 101, "ndjson", **sizes))
    comment_job = api.wait(comments.json()["job_id"])
    assert comment_job["counters"]["succeeded"] > 800
    assert {"unknown_article", "unknown_user", "body_too_long"} <= set(comment_job["errors_by_code"])


def test_error_report_lines_point_into_the_source_file(api: Api) -> None:
    lines = [
        '{"id": "e2e-a1", "email": "a1@example.com", "name": "A One", "role": "author"}',
        "",
        '{"id": "e2e-a2", "email": "foo@bar", "name": "A Two"}',
        "{not json",
        '{"id": "e2e-a3", "email": "A1@EXAMPLE.COM", "name": "A Three"}',
    ]
    reply = api.upload("users", "people.ndjson", ("\n".join(lines) + "\n").encode())
    job = api.wait(reply.json()["job_id"])
    assert (job["counters"]["total"], job["counters"]["succeeded"], job["counters"]["failed"]) == (4, 1, 3)

    report = api.errors(job["job_id"])
    assert report.status == 200
    assert report.headers["content-type"].startswith("application/x-ndjson")
    errors = {e["code"]: e for e in map(orjson.loads, report.body.splitlines())}
    assert (errors["invalid_email"]["line"], errors["invalid_email"]["index"]) == (3, 2)
    assert errors["invalid_email"]["record"]["id"] == "e2e-a2"
    assert (errors["invalid_json"]["line"], errors["invalid_json"]["index"]) == (4, 3)
    assert errors["invalid_json"]["record"] == "{not json"
    assert errors["duplicate_in_file"]["line"] == 5
    assert "line 1" in errors["duplicate_in_file"]["message"]

    as_csv = api.errors(job["job_id"], "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert sorted(int(row["line"]) for row in rows) == [3, 4, 5]


def test_presigned_upload_starts_the_import(api: Api) -> None:
    reply = api.post_json({"resource": "users"})
    assert reply.status == 202
    created = reply.json()
    assert created["status"] == "awaiting_upload"
    upload = created["upload"]
    assert upload["method"] == "PUT" and upload["expires_at"].endswith("Z")
    assert api.job(created["job_id"])["status"] == "awaiting_upload"

    # Not form-encoded (urllib's default for a body): S3 on moto stores such a body as empty.
    put = request("PUT", upload["url"], generated("users", 300, 202, "csv"), {"Content-Type": "text/csv"})
    assert put.status == 200
    job = api.wait(created["job_id"])
    assert job["format"] == "csv"  # sniffed from the content: the request named none
    assert job["counters"]["total"] == 300


def test_remote_url_import(api: Api, file_server: tuple[str, Path]) -> None:
    base, folder = file_server
    (folder / "users.json").write_bytes(generated("users", 250, 303, "json"))
    reply = api.post_json({"resource": "users", "url": f"{base}/users.json"})
    assert reply.status == 202
    job = api.wait(reply.json()["job_id"])
    assert (job["format"], job["source"]) == ("json", {"kind": "url", "filename": "users.json"})
    assert job["counters"]["total"] == 250

    missing = api.wait(api.post_json({"resource": "users", "url": f"{base}/nope.csv"}).json()["job_id"])
    assert missing["status"] == "failed"
    assert missing["failure"]["code"] == "source_http_error"


def test_s3_drop_imports_itself_and_shows_in_the_list(api: Api, local_stack: RunningStack) -> None:
    # A dropped file has no caller behind it: its job is the admins' (an ordinary caller does not see it).
    admin = Api(local_stack, {"Authorization": f"Bearer {local_stack.token(['admin'], 'ops')}"})
    bucket = local_stack.buckets["ImportBucket"]
    key = f"drop/users/batch {uuid.uuid4().hex[:6]}.csv.gz"
    body = io.BytesIO()
    datagen.write("users", datagen.generate("users", 150, 404), "csv", body, gzip=True)
    local_stack.client("s3").put_object(Bucket=bucket, Key=key, Body=body.getvalue())

    deadline = time.monotonic() + 60
    dropped: list[dict[str, Any]] = []
    while not dropped and time.monotonic() < deadline:
        listing = admin.call("GET", "/imports?limit=50").json()
        dropped = [job for job in listing["jobs"] if job["source"]["filename"] == key.rsplit("/", 1)[-1]]
        time.sleep(0.3)
    assert len(dropped) == 1, "the drop should create exactly one job"
    job = admin.wait(dropped[0]["job_id"])
    assert (job["source"]["kind"], job["format"], job["counters"]["total"]) == ("drop", "csv", 150)
    assert api.call("GET", f"/imports/{job['job_id']}").status == 404
    assert job["job_id"] not in {listed["job_id"] for listed in api.call("GET", "/imports?limit=50").json()["jobs"]}


def test_idempotency_key_replays_and_guards(api: Api) -> None:
    key = f"e2e-{uuid.uuid4()}"
    content = generated("users", 50, 505, "csv")
    first = api.upload("users", "users.csv", content, **{"Idempotency-Key": key})
    again = api.upload("users", "users.csv", content, **{"Idempotency-Key": key})
    assert first.status == again.status == 202
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers

    different = api.upload("users", "users.csv", content + b"\n", **{"Idempotency-Key": key})
    assert different.status == 422
    assert different.json()["code"] == "idempotency_key_reused"
    assert different.headers["content-type"] == "application/problem+json"


def test_problems_for_bad_requests(api: Api) -> None:
    unknown = api.post_json({"resource": "posts"})
    assert unknown.status == 400
    assert unknown.json()["code"] == "invalid_resource"
    assert unknown.json()["allowed"] == ["users", "articles", "comments", "mixed"]
    missing = api.call("GET", f"/imports/{uuid.uuid4()}")
    assert (missing.status, missing.json()["code"]) == (404, "job_not_found")


def test_a_chunk_that_keeps_failing_fails_its_job(api: Api, local_stack: RunningStack) -> None:
    job_id = api.post_json({"resource": "users"}).json()["job_id"]
    # A chunk message whose object does not exist: every delivery fails until the DLQ takes it.
    message = {"job_id": job_id, "resource": "users", "chunk": 1, "key": f"chunks/{job_id}/000001.ndjson"}
    local_stack.client("sqs").send_message(
        QueueUrl=local_stack.queues["ChunkQueue"], MessageBody=orjson.dumps(message).decode()
    )
    job = api.wait(job_id, timeout=90)
    assert job["status"] == "failed"
    assert job["failure"]["code"] == "chunk_failed"
    assert "dead-letter queue" in job["failure"]["message"]
    assert f"chunk object chunks/{job_id}/000001.ndjson is missing" in job["failure"]["message"]


def test_a_dry_run_writes_nothing_and_its_commit_imports_the_same_bytes(api: Api) -> None:
    prefix = f"dry-{uuid.uuid4().hex[:8]}"
    records = [
        {"id": f"{prefix}-1", "email": f"{prefix}-1@example.com", "name": "One"},
        {"id": f"{prefix}-2", "email": f"{prefix}-2@example.com", "name": "Two"},
        {"id": f"{prefix}-3", "email": f"{prefix}-1@example.com", "name": "Same email"},
        {"id": f"{prefix}-4", "email": "not an address", "name": "Broken"},
    ]
    content = b"".join(orjson.dumps(record) + b"\n" for record in records)
    body, content_type = multipart({"resource": "users", "mode": "validate"}, "users.ndjson", content)
    submitted = api.call("POST", "/imports", body, {"Content-Type": content_type})
    assert submitted.status == 202, submitted.body
    assert submitted.json()["mode"] == "validate"
    dry_id = submitted.json()["job_id"]

    dry = api.wait(dry_id)

    ids = ",".join(record["id"] for record in records)
    stored = api.call("GET", f"/exports?resource=users&ids={ids}")
    assert (stored.status, stored.body) == (200, b"")
    assert (dry["status"], dry["mode"]) == ("validated", "validate")
    assert (dry["counters"]["total"], dry["counters"]["succeeded"], dry["counters"]["failed"]) == (4, 2, 2)
    assert dry["errors_by_code"] == {"duplicate_in_file": 1, "invalid_email": 1}
    dry_report = api.errors(dry_id).body

    committed = api.call("POST", f"/imports/{dry_id}/commit")
    assert committed.status == 202, committed.body
    commit_id = committed.json()["job_id"]
    assert committed.headers["location"] == f"/v1/imports/{commit_id}"
    assert (committed.json()["parent_job_id"], committed.json()["mode"]) == (dry_id, "import")
    job = api.wait(commit_id)
    assert job["status"] == "completed_with_errors"
    assert (job["counters"], job["errors_by_code"]) == (dry["counters"], dry["errors_by_code"])
    assert api.errors(commit_id).body == dry_report
    exported = api.call("GET", f"/exports?resource=users&ids={ids}")
    assert sorted(orjson.loads(line)["id"] for line in exported.body.splitlines()) == [f"{prefix}-1", f"{prefix}-2"]
    assert api.job(dry_id)["committed_job_id"] == commit_id

    again = api.call("POST", f"/imports/{dry_id}/commit")
    assert (again.status, again.json()["code"]) == (409, "already_committed")
    not_dry = api.call("POST", f"/imports/{commit_id}/commit")
    assert (not_dry.status, not_dry.json()["code"]) == (409, "not_a_dry_run")


def test_a_job_shows_its_progress_and_answers_a_long_poll(api: Api) -> None:
    created = api.upload("users", "users.csv", generated("users", 2500, 7, "csv")).json()

    answers = []
    for _ in range(60):  # each answer comes when the status or the percentage moves, or after 5 s
        reply = api.call("GET", f"/imports/{created['job_id']}?wait=5")
        assert reply.status == 200, reply.body
        answers.append(reply.json())
        if answers[-1]["status"] == "completed_with_errors":
            break

    final = answers[-1]
    assert final["status"] == "completed_with_errors"
    assert final["progress"] == {
        "chunks_total": 3,
        "chunks_done": 3,
        "percent": 100.0,
        "basis": "records",
        "eta_seconds": None,
    }
    assert all(answer["progress"]["basis"] in {"bytes", "records"} for answer in answers)
    assert all(0.0 <= answer["progress"]["percent"] < 100.0 for answer in answers[:-1])
    too_long = api.call("GET", f"/imports/{created['job_id']}?wait=21")
    assert (too_long.status, too_long.json()["code"]) == (400, "invalid_wait")


def test_every_ended_import_and_export_puts_its_completion_event_on_the_default_bus(
    local_stack: RunningStack, api: Api
) -> None:
    """As an operator subscribes on AWS: a rule on the default bus for source bulkio, with a queue as target."""
    events, sqs = local_stack.client("events"), local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"completions-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = f"bulkio-completions-{uuid.uuid4().hex[:8]}"
    events.put_rule(Name=rule, EventPattern=orjson.dumps({"source": ["bulkio"]}).decode())
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    try:
        finished = api.wait(
            api.upload("users", "u.ndjson", orjson.dumps(user_record("event")) + b"\n").json()["job_id"]
        )
        failed = api.wait(api.upload("users", "empty.ndjson", b"").json()["job_id"])
        export = api.call("POST", "/exports", orjson.dumps({"resource": "users"}), {"Content-Type": "application/json"})
        assert export.status == 202, export.body
        export_id = export.json()["job_id"]

        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 60  # the export's event is its state machine's last step
        while len(seen) < 3 and time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            ):
                event = orjson.loads(message["Body"])
                seen[event["detail"]["job_id"]] = event
    finally:
        events.remove_targets(Rule=rule, Ids=["queue"])
        events.delete_rule(Name=rule)

    assert set(seen) == {finished["job_id"], failed["job_id"], export_id}
    assert seen[finished["job_id"]]["detail-type"] == seen[failed["job_id"]]["detail-type"] == "Import Job Completed"
    assert seen[finished["job_id"]]["detail"]["status"] == "completed"
    assert seen[failed["job_id"]]["detail"]["failure"]["code"] == "empty_file"
    assert seen[export_id]["detail-type"] == "Export Job Completed"
    assert seen[export_id]["detail"]["status"] == "completed"


def user_record(name: str) -> dict[str, str]:
    return {"id": f"{name}-{uuid.uuid4().hex[:8]}", "email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "name": name}


def test_the_rejected_records_come_back_in_the_uploads_format_and_re_import_once_fixed(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    source = (
        "id,email,name,role\r\n"
        f"r1-{tag},r1-{tag}@example.com,One,reader\r\n"
        f"r2-{tag},not-an-email,Two,reader\r\n"
        f"r3-{tag},r3-{tag}@example.com,Three,emperor\r\n"
    )
    job = api.wait(api.upload("users", "users.csv", source.encode()).json()["job_id"])
    assert (job["counters"]["succeeded"], job["counters"]["failed"]) == (1, 2)

    rejected = api.call("GET", f"/imports/{job['job_id']}/rejected")

    assert rejected.status == 200, rejected.body
    assert rejected.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(rejected.body.decode())))
    assert rows[0] == ["id", "email", "name", "role", "_line", "_error_codes", "_error_messages", "_raw"]
    assert [(row[0], row[4], row[5]) for row in rows[1:]] == [
        (f"r2-{tag}", "3", "invalid_email"),
        (f"r3-{tag}", "4", "invalid_role"),
    ]
    fixed = rejected.body.decode().replace("not-an-email", f"r2-{tag}@example.com").replace("emperor", "author")
    body, content_type = multipart({"resource": "users", "parent_job_id": job["job_id"]}, "fixed.csv", fixed.encode())
    again = api.wait(api.call("POST", "/imports", body, {"Content-Type": content_type}).json()["job_id"])
    assert (again["status"], again["counters"]["succeeded"], again["parent_job_id"]) == ("completed", 2, job["job_id"])
    # Credited just after the child's end is recorded (with its completion event): a moment later than its status.
    deadline = time.monotonic() + 30
    while "rejected_reimported" not in api.job(job["job_id"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert api.job(job["job_id"]).get("rejected_reimported") == 2
    as_ndjson = api.call("GET", f"/imports/{job['job_id']}/rejected?format=ndjson")
    assert [orjson.loads(line)["_line"] for line in as_ndjson.body.splitlines()] == [3, 4]
    wrong = api.call("GET", f"/imports/{job['job_id']}/rejected?format=xml")
    assert (wrong.status, wrong.json()["code"]) == (400, "invalid_format")


class CallbackReceiver(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint on loopback: answers 503 to the first POST of each job, 200 after; keeps every POST."""

    received: list[tuple[bytes, dict[str, str]]] = []
    seen_jobs: set[str] = set()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, {k.lower(): v for k, v in self.headers.items()}))
        job_id = orjson.loads(body)["job_id"]
        first = job_id not in self.seen_jobs
        self.seen_jobs.add(job_id)
        self.send_response(503 if first else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no" if first else b"ok")

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def callback_receiver() -> Iterator[str]:
    CallbackReceiver.received, CallbackReceiver.seen_jobs = [], set()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CallbackReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()


def test_a_job_posts_its_signed_summary_to_its_callback_url_retrying_until_taken(
    api: Api, callback_receiver: str
) -> None:
    from bulkio.domain.callbacks import signature_matches

    records = b"".join(orjson.dumps(user_record(f"hook{n}")) + b"\n" for n in range(30))
    body, content_type = multipart({"resource": "users", "callback_url": callback_receiver}, "users.ndjson", records)
    reply = api.call("POST", "/imports", body, {"Content-Type": content_type})
    assert reply.status == 202, reply.body
    created = reply.json()
    job_id, secret = created["job_id"], created["callback_secret"]
    assert created["callback_url"] == callback_receiver
    assert api.wait(job_id)["status"] == "completed"

    deadline = time.monotonic() + 60
    while api.job(job_id)["callback"]["state"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.5)
    job = api.job(job_id)
    assert job["callback"]["state"] == "delivered", job["callback"]
    assert secret not in orjson.dumps(job).decode()

    deliveries = api.call("GET", f"/imports/{job_id}/deliveries").json()["deliveries"]
    assert [(d["outcome"], d["status_code"]) for d in deliveries] == [("failed", 503), ("delivered", 200)]
    (_, first), (posted, headers) = CallbackReceiver.received
    summary = orjson.loads(posted)
    assert (summary["job_id"], summary["status"], summary["counters"]["succeeded"]) == (job_id, "completed", 30)
    assert headers["bulkio-event"] == "Import Job Completed"
    assert headers["bulkio-delivery"] == deliveries[1]["delivery_id"] != first["bulkio-delivery"]
    assert signature_matches(secret, headers["bulkio-signature"], posted, now=int(time.time()))

    redelivery = api.call("POST", f"/imports/{job_id}/deliveries/redeliver")
    assert redelivery.status == 202
    deadline = time.monotonic() + 30
    while len(CallbackReceiver.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(0.5)  # the attempt is recorded after the answer
    triggers = [d["trigger"] for d in api.call("GET", f"/imports/{job_id}/deliveries").json()["deliveries"]]
    assert triggers == ["automatic", "automatic", "redelivery"]


def test_a_callback_url_is_checked_before_the_job_is_created(api: Api) -> None:
    reply = api.post_json({"resource": "users", "callback_url": "ftp://hooks.example.com/x"})
    assert reply.status == 400
    assert reply.json()["code"] == "invalid_callback_url"
    assert "callback_url scheme 'ftp'" in reply.json()["detail"]


def test_a_mixed_file_imports_every_resource_in_dependency_order(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    lines = [
        {"resource": "comments", "id": f"c-{tag}", "article_id": f"a-{tag}", "user_id": f"u-{tag}", "body": "Hi"},
        {"resource": "articles", "id": f"a-{tag}", "slug": f"s-{tag}", "title": "T", "author_id": f"u-{tag}"},
        {"resource": "articles", "id": f"b-{tag}", "slug": f"b-{tag}", "title": "T", "author_id": f"bad-{tag}"},
        {"resource": "users", "id": f"u-{tag}", "email": f"{tag}@example.com", "name": "Ann"},
        {"resource": "users", "id": f"bad-{tag}", "email": "broken", "name": "Bad"},
    ]
    body, content_type = multipart(
        {"resource": "mixed"}, "all.ndjson", b"".join(orjson.dumps(line) + b"\n" for line in lines)
    )
    reply = api.call("POST", "/imports", body, {"Content-Type": content_type})
    assert reply.status == 202, reply.body
    job = api.wait(reply.json()["job_id"])

    assert (job["resource"], job["status"]) == ("mixed", "completed_with_errors")
    assert job["counters_by_resource"] == {
        "users": {"total": 2, "processed": 2, "succeeded": 1, "failed": 1},
        "articles": {"total": 2, "processed": 2, "succeeded": 1, "failed": 1},
        "comments": {"total": 1, "processed": 1, "succeeded": 1, "failed": 0},
    }
    errors = {(error["line"], error["code"]): error["message"] for error in job["errors"]}
    assert errors[(3, "unknown_author")].startswith(f"user bad-{tag} was rejected at line 5 of this file")
    exported = request("GET", f"{api.base}/exports?resource=comments&format=ndjson", headers=api.headers)
    assert f"c-{tag}".encode() in exported.body

    rejected = api.call("GET", f"/imports/{job['job_id']}/rejected")
    assert [orjson.loads(line)["resource"] for line in rejected.body.splitlines()] == ["articles", "users"]


def test_a_zip_of_the_three_resources_imports_as_mixed(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as members:
        members.writestr(
            "comments.ndjson",
            orjson.dumps({"id": f"c-{tag}", "article_id": f"a-{tag}", "user_id": f"u-{tag}", "body": "Hi"}),
        )
        members.writestr("users.csv", f"id,email,name\nu-{tag},{tag}@example.com,Ann\n")
        members.writestr(
            "articles.json",
            orjson.dumps([{"id": f"a-{tag}", "slug": f"s-{tag}", "title": "T", "author_id": f"u-{tag}"}]),
        )
    body, content_type = multipart({"resource": "mixed"}, "export.zip", archive.getvalue())
    reply = api.call("POST", "/imports", body, {"Content-Type": content_type})
    assert reply.status == 202, reply.body
    job = api.wait(reply.json()["job_id"])

    assert (job["format"], job["status"], job["counters"]["succeeded"]) == ("zip", "completed", 3)
    assert {name: counters["succeeded"] for name, counters in job["counters_by_resource"].items()} == {
        "users": 1,
        "articles": 1,
        "comments": 1,
    }
