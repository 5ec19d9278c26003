"""Local AWS endpoint: moto's server, with Lambda Invoke API calls routed to the local functions host.

`python -m infra.local.aws_endpoint`. Environment: LOCAL_AWS_PORT (4566), LOCAL_INVOKE_PORT (4567),
LOCAL_STATE_DIR (.state). GET /_local/ready answers 200 once the saved state is restored.

State under <state>/aws, saved on SIGINT/SIGTERM and restored at start (moto's backends hold locks and
cannot be pickled, so the data is dumped explicitly):
- kept: S3 buckets and objects (with content type and user metadata), DynamoDB tables (key schema, indexes,
  TTL) and items, SQS queues (attributes, redrive policies) and their message bodies and attributes;
  Objects keep their ETags (a single PUT's stays an MD5, a multipart one is uploaded again in the same 8 MiB
  parts), so a job pinned to an object's ETag still reads it after a restart;
- not kept: SQS receive counts and in-flight state (restored messages are new messages), S3 versions, bucket
  notifications (the functions host sets them up at each start), Step Functions state machines (provisioning
  creates them from the template at each start) and executions, anything else;
  and nothing at all when the process is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import http.client
import json
import logging
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from werkzeug.serving import make_server

from infra.local.provision import local_client
from infra.local.s3_streaming import (
    STREAMED_BODY_BYTES,
    StreamedObjects,
    compute_etags_in_pieces,
    join_multipart_uploads_on_disk,
    list_versions_without_reading_bodies,
)
from infra.local.stack import free_port
from infra.local.stop_signal import StopSignal
from infra.local.template_model import ACCOUNT_ID, REGION

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/[^/]+/invocations$")
READY_PATH = "/_local/ready"
STEP_FUNCTIONS_TARGET = "AWSStepFunctions."  # the X-Amz-Target of every Step Functions API call
STEP_FUNCTIONS_START_SECONDS = 60
# mallopt's parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class LambdaInvokeRouter:
    """WSGI middleware: the Lambda Invoke API goes to the functions host, the Step Functions API to its own moto
    server (when there is one), large S3 object bodies to files, everything else to moto."""

    def __init__(
        self,
        moto_app: Any,
        invoke_port: int,
        streamed_objects: StreamedObjects | None = None,
        step_functions_port: int | None = None,
    ):
        self.moto_app = moto_app
        self.invoke_port = invoke_port
        self.streamed_objects = streamed_objects
        self.step_functions_port = step_functions_port
        self.ready = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == READY_PATH:
            status = "200 OK" if self.ready.is_set() else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [status.encode()]
        if environ["REQUEST_METHOD"] == "POST" and INVOKE_PATH.match(path):
            return self._forward(environ, start_response, self.invoke_port, "functions host")
        if self.step_functions_port is not None and environ.get("HTTP_X_AMZ_TARGET", "").startswith(
            STEP_FUNCTIONS_TARGET
        ):
            return self._forward(environ, start_response, self.step_functions_port, "Step Functions server")
        if self.streamed_objects is not None:
            streamed = self.streamed_objects.answer(environ, start_response)
            if streamed is not None:
                return streamed
        return self.moto_app(environ, start_response)

    def _forward(self, environ: dict[str, Any], start_response: Any, port: int, name: str) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=960)
        target = environ["PATH_INFO"] + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        try:
            connection.request("POST", target, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError as error:
            message = json.dumps({"message": f"{name} unreachable on port {port}: {error}"})
            start_response(
                "502 Bad Gateway", [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ServiceException")]
            )
            return [message.encode()]
        finally:
            connection.close()
        forwarded = [(name, value) for name, value in response.getheaders() if name.lower() not in _HOP_BY_HOP]
        start_response(f"{response.status} {response.reason}", [*forwarded, ("Content-Length", str(len(payload)))])
        return [payload]


def _object_file_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# boto3's default parts, which the service's uploads (upload_fileobj, MultipartWriter) use too.
_SAVED_PARTS = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)


def save_state(endpoint: str, aws_state: Path) -> None:
    """Dump what moto holds into <state>/aws (replacing the previous dump)."""
    staging = aws_state.with_name(aws_state.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "s3").mkdir(parents=True)
    s3 = local_client("s3", endpoint)
    for bucket in s3.list_buckets().get("Buckets", []):
        bucket_dir = staging / "s3" / _object_file_name(bucket["Name"])
        bucket_dir.mkdir()
        index = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
            for listed in page.get("Contents", []):
                head = s3.head_object(Bucket=bucket["Name"], Key=listed["Key"])
                file_name = _object_file_name(listed["Key"])
                s3.download_file(bucket["Name"], listed["Key"], str(bucket_dir / file_name))
                index.append(
                    {
                        "key": listed["Key"],
                        "file": file_name,
                        "content_type": head.get("ContentType"),
                        "metadata": head.get("Metadata", {}),
                        "etag": head.get("ETag", "").strip('"'),
                    }
                )
        (bucket_dir / "index.json").write_text(json.dumps({"bucket": bucket["Name"], "objects": index}))

    dynamodb = local_client("dynamodb", endpoint)
    tables = []
    for table_name in dynamodb.list_tables().get("TableNames", []):
        description = dynamodb.describe_table(TableName=table_name)["Table"]
        ttl = dynamodb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
        items = [
            item
            for page in dynamodb.get_paginator("scan").paginate(TableName=table_name)
            for item in page.get("Items", [])
        ]
        tables.append({"description": description, "ttl": ttl, "items": items})

    queues = []
    from moto.sqs.models import sqs_backends  # read directly: receiving through the API would change the messages

    sqs_backend = sqs_backends[ACCOUNT_ID][REGION]
    for queue in sqs_backend.queues.values():
        attributes = _queue_attributes(endpoint, queue.name)
        messages = [{"body": message.body, "attributes": message.message_attributes} for message in queue._messages]
        queues.append({"name": queue.name, "attributes": attributes, "messages": messages})
    # Item values hold bytes and sets, which pickle keeps exactly; the state folder is local and trusted.
    (staging / "data.pickle").write_bytes(pickle.dumps({"tables": tables, "queues": queues}))
    shutil.rmtree(aws_state, ignore_errors=True)
    staging.rename(aws_state)


def _queue_attributes(endpoint: str, queue_name: str) -> dict[str, str]:
    sqs = local_client("sqs", endpoint)
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    settable = {
        "DelaySeconds",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "VisibilityTimeout",
        "RedrivePolicy",
        "FifoQueue",
        "ContentBasedDeduplication",
    }
    return {name: value for name, value in attributes.items() if name in settable}


def restore_state(endpoint: str, aws_state: Path) -> None:
    if not (aws_state / "data.pickle").exists():
        return
    s3 = local_client("s3", endpoint)
    for index_file in (aws_state / "s3").glob("*/index.json"):
        index = json.loads(index_file.read_text())
        s3.create_bucket(Bucket=index["bucket"])
        for stored in index["objects"]:
            extra: dict[str, Any] = {"Metadata": stored["metadata"]}
            if stored["content_type"]:
                extra["ContentType"] = stored["content_type"]
            path = index_file.parent / stored["file"]
            if "-" in stored.get("etag", "-"):  # a multipart upload's ETag: the same parts give it back
                s3.upload_file(str(path), index["bucket"], stored["key"], ExtraArgs=extra, Config=_SAVED_PARTS)
            else:  # a single PUT's ETag is its MD5: one PUT gives it back
                with path.open("rb") as body:
                    s3.put_object(Bucket=index["bucket"], Key=stored["key"], Body=body, **extra)

    data = pickle.loads((aws_state / "data.pickle").read_bytes())  # our own dump, in the local state folder
    dynamodb = local_client("dynamodb", endpoint)
    for table in data["tables"]:
        description = table["description"]
        arguments: dict[str, Any] = {
            "TableName": description["TableName"],
            "KeySchema": description["KeySchema"],
            "AttributeDefinitions": description["AttributeDefinitions"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if description.get("GlobalSecondaryIndexes"):
            arguments["GlobalSecondaryIndexes"] = [
                {key: index[key] for key in ("IndexName", "KeySchema", "Projection")}
                for index in description["GlobalSecondaryIndexes"]
            ]
        dynamodb.create_table(**arguments)
        if table["ttl"].get("TimeToLiveStatus") == "ENABLED":
            dynamodb.update_time_to_live(
                TableName=description["TableName"],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table["ttl"]["AttributeName"]},
            )
        for item in table["items"]:
            dynamodb.put_item(TableName=description["TableName"], Item=item)

    sqs = local_client("sqs", endpoint)
    urls = {}
    # Redrive policies name their dead-letter queue, so every queue must exist before any policy is set.
    for queue in data["queues"]:
        attributes = {name: value for name, value in queue["attributes"].items() if name != "RedrivePolicy"}
        urls[queue["name"]] = sqs.create_queue(QueueName=queue["name"], Attributes=attributes)["QueueUrl"]
    for queue in data["queues"]:
        if "RedrivePolicy" in queue["attributes"]:
            sqs.set_queue_attributes(
                QueueUrl=urls[queue["name"]], Attributes={"RedrivePolicy": queue["attributes"]["RedrivePolicy"]}
            )
        for message in queue["messages"]:
            arguments = {"QueueUrl": urls[queue["name"]], "MessageBody": message["body"]}
            if message["attributes"]:
                arguments["MessageAttributes"] = message["attributes"]
            sqs.send_message(**arguments)


def make_sqs_receive_linear() -> None:
    """moto 5.2 checks each message's retention period by building all the queue's attributes, several of
    which count every message: a receive costs O(depth²), and an import's 1,000 queued chunks made the endpoint
    the busiest process of the stack. Reading the one attribute it needs keeps a receive linear."""
    from moto.core.utils import unix_time
    from moto.sqs.models import Message, SQSBackend

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        # moto sets a queue's attributes with setattr, from their CamelCase names: its types cannot list them.
        retention_seconds = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
        return retention_seconds + message.sent_timestamp / 1000 > unix_time()  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]


DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def make_dynamodb_writes_atomic() -> None:
    """DynamoDB applies a conditional write atomically. moto's server checks the condition and then writes, on
    whichever request thread: two concurrent conditional updates could both succeed (a job "finished" twice by two
    writers, its metrics counted twice). One lock around moto's DynamoDB writes gives the guarantee back. Applying
    it twice changes nothing."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in DYNAMODB_WRITES:
        write = getattr(DynamoDBBackend, name)
        if getattr(write, "atomic", False):
            continue

        def atomic(self: DynamoDBBackend, *args: Any, _write: Any = write, **kwargs: Any) -> Any:
            with lock:
                return _write(self, *args, **kwargs)

        atomic.atomic = True  # type: ignore[attr-defined]  # marks the wrapper, so that it is applied once
        setattr(DynamoDBBackend, name, functools.wraps(write)(atomic))


def list_moto_modules_once() -> None:
    """moto's dispatcher lists its own package folder (a listdir and 150 isdir calls) for every request that
    names no service in its Host header, which is every request to this endpoint: a seventh of the endpoint's
    CPU during an import. The folder does not change while the server runs."""
    from moto import backends

    if hasattr(backends.list_of_moto_modules, "cache_info"):  # applied already
        return
    backends.list_of_moto_modules = functools.cache(lambda listed=backends.list_of_moto_modules: tuple(listed()))


def stop_tracking_model_instances() -> None:
    """moto keeps every model object it ever creates (each version of each S3 key and each copy of one, each SQS
    message, each DynamoDB item) in a list per class, for its dashboard and its reset, neither of which this
    endpoint serves: a long-running endpoint held them all, deleted ones included. New objects are not listed
    there any more. Applying it twice changes nothing."""
    from moto.core.common_models import BaseModel

    def untracked(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(untracked)  # type: ignore[method-assign]


def adapt_moto(spool_dir: str | None) -> None:
    """Every change this endpoint makes to moto, for the endpoint and for tests that run moto as it does (each
    is applied once however often this is called; a multipart upload's joined file goes to `spool_dir`)."""
    make_sqs_receive_linear()
    make_dynamodb_writes_atomic()
    list_moto_modules_once()
    stop_tracking_model_instances()
    join_multipart_uploads_on_disk(spool_dir)
    compute_etags_in_pieces()
    list_versions_without_reading_bodies()


def return_freed_buffers_to_the_system() -> None:
    """glibc serves an allocation above its mmap threshold from a mapping of its own, returned to the system when
    freed; but it raises that threshold to the size of each such block freed (up to 32 MB), after which a
    request's megabyte-sized bodies come from the heaps of the server's many threads and stay there: the endpoint
    grew by hundreds of MB over an import. A fixed threshold and two heaps keep it at its working size."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    libc.mallopt(M_ARENA_MAX, 2)


def main() -> None:
    return_freed_buffers_to_the_system()
    port = int(os.environ.get("LOCAL_AWS_PORT", "4566"))
    invoke_port = int(os.environ.get("LOCAL_INVOKE_PORT", "4567"))
    state_dir = Path(os.environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state")).resolve()
    aws_state = state_dir / "aws"
    spool = state_dir / "tmp"
    spool.mkdir(parents=True, exist_ok=True)
    # Object bodies live in temporary files in the state folder, not in memory: moto spools a body to a file once
    # it outgrows this buffer (5 MB by default, which kept every chunk object of a job in memory), and large
    # bodies stream to and from such files (s3_streaming).
    os.environ["TMPDIR"] = str(spool)
    tempfile.tempdir = str(spool)
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(STREAMED_BODY_BYTES))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    step_functions_port = free_port()
    step_functions = start_step_functions(step_functions_port, port)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    adapt_moto(str(spool))
    # One console line per AWS call drowns the functions' own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    router = LambdaInvokeRouter(
        DomainDispatcherApplication(create_backend_app),
        invoke_port,
        StreamedObjects(spool_dir=str(spool)),
        step_functions_port,
    )
    server = make_server("127.0.0.1", port, router, threaded=True, request_handler=MotoRequestHandler)
    serving = threading.Thread(target=server.serve_forever, name="aws-endpoint", daemon=True)
    serving.start()
    endpoint = f"http://127.0.0.1:{port}"
    wait_for_port(step_functions_port, step_functions)
    restore_state(endpoint, aws_state)
    router.ready.set()
    print(f"[aws] local AWS endpoint ready on {endpoint} (state in {aws_state})", flush=True)

    StopSignal().install().wait()
    try:
        save_state(endpoint, aws_state)
        print(f"[aws] state saved to {aws_state}", flush=True)
    finally:
        server.shutdown()
        step_functions.terminate()
        step_functions.wait()


def start_step_functions(port: int, endpoint_port: int) -> subprocess.Popen[bytes]:
    """The Step Functions server, a child of this process; its executions' Lambda tasks call this endpoint
    (moto's tasks call http://localhost:$MOTO_PORT)."""
    environment = {**os.environ, "LOCAL_STEP_FUNCTIONS_PORT": str(port), "MOTO_PORT": str(endpoint_port)}
    return subprocess.Popen(
        [sys.executable, "-m", "infra.local.step_functions_endpoint"], cwd=REPOSITORY_ROOT, env=environment
    )


def wait_for_port(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STEP_FUNCTIONS_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the Step Functions server exited with {server.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"the Step Functions server did not listen on port {port} within {STEP_FUNCTIONS_START_SECONDS} s"
    )


if __name__ == "__main__":
    main()
