"""Large S3 bodies streamed to and from disk in front of moto (infra/local/s3_streaming.py).

The endpoint's WSGI stack, as `aws_endpoint.main()` builds it, on a free port of this process, with a 1 MiB
threshold: bodies above it take the streamed path (a spy records which requests it answered), the rest, and
anything unusual, stay moto's.
"""

from __future__ import annotations

import base64
import copy
import gc
import hashlib
import http.client
import io
import json
import os
import socket
import threading
import time
import tracemalloc
import urllib.parse
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from werkzeug.serving import make_server

from infra.local.aws_endpoint import LambdaInvokeRouter, stop_tracking_model_instances
from infra.local.s3_streaming import (
    STREAMED_BODY_BYTES,
    StreamedObjects,
    compute_etags_in_pieces,
    join_multipart_uploads_on_disk,
    list_versions_without_reading_bodies,
    moto_s3_backend,
)
from infra.local.stack import free_port
from infra.local.template_model import ACCOUNT_ID, REGION

pytestmark = pytest.mark.integration

THRESHOLD = 1024 * 1024
BIG = 3 * 1024 * 1024 + 12_345  # not a whole number of the 1 MiB pieces


class SpiedStreamedObjects(StreamedObjects):
    """Records the requests the streamed path answered (its answer was not None)."""

    def __init__(self, spool_dir: str, threshold: int) -> None:
        super().__init__(spool_dir=spool_dir, threshold=threshold)
        self.answered: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def answer(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes] | None:
        response = super().answer(environ, start_response)
        if response is not None:
            with self._lock:
                self.answered.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ["QUERY_STRING"]))
        return response

    def saw(self, method: str, bucket: str, key: str, query: str = "") -> bool:
        """Whether it answered `method` on that object (PATH_INFO is decoded; `query` a part of the query)."""
        with self._lock:
            return any(
                m == method and path == f"/{bucket}/{key}" and query in query_string
                for m, path, query_string in self.answered
            )


@dataclass
class Endpoint:
    url: str
    port: int
    spy: SpiedStreamedObjects
    spool_dir: Path
    buckets: list[str] = field(default_factory=list)

    def client(self, service: str, signature_version: str = "s3v4", response_checksums: str = "when_supported") -> Any:
        """A client as the service builds one (bulkio.adapters.aws: SigV4, so presigned URLs are SigV4 too, and
        botocore's default checksum settings, whose GetObject sends `x-amz-checksum-mode: ENABLED`)."""
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(signature_version=signature_version, response_checksum_validation=response_checksums),
        )

    def reader(self) -> Any:
        """An S3 client whose GetObject sends no `x-amz-checksum-mode`, which the streamed path leaves to moto."""
        return self.client("s3", response_checksums="when_required")

    def bucket(self, versioned: bool = False) -> str:
        name = f"streaming-{uuid.uuid4().hex[:12]}"
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        self.buckets.append(name)
        return name


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    spool_dir = tmp_path_factory.mktemp("s3-spool")
    with pytest.MonkeyPatch.context() as patch:
        # As main() does: moto keeps object bodies above 64 KiB in files.
        patch.setenv("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(STREAMED_BODY_BYTES))
        # As main() does too, undone at the end (moto's backends are this process's for every test).
        from moto.core.common_models import BaseModel
        from moto.s3.models import FakeKey, S3Backend

        patch.setattr(S3Backend, "complete_multipart_upload", S3Backend.complete_multipart_upload)
        join_multipart_uploads_on_disk(str(spool_dir))
        patch.setattr(FakeKey, "etag", FakeKey.etag)
        compute_etags_in_pieces()
        patch.setattr(S3Backend, "list_object_versions", S3Backend.list_object_versions)
        # Undone at the end: to moto's own deep copy, or to the one another module's endpoint installed.
        patch.setattr(FakeKey, "__deepcopy__", getattr(FakeKey, "__deepcopy__", None), raising=False)
        list_versions_without_reading_bodies()
        patch.setattr(BaseModel, "__new__", BaseModel.__new__)
        stop_tracking_model_instances()
        spy = SpiedStreamedObjects(spool_dir=str(spool_dir), threshold=THRESHOLD)
        router = LambdaInvokeRouter(
            DomainDispatcherApplication(create_backend_app), invoke_port=free_port(), streamed_objects=spy
        )
        router.ready.set()
        server = make_server("127.0.0.1", 0, router, threaded=True, request_handler=MotoRequestHandler)
        serving = threading.Thread(target=server.serve_forever, name="s3-streaming-endpoint", daemon=True)
        serving.start()
        running = Endpoint(
            url=f"http://127.0.0.1:{server.server_port}", port=server.server_port, spy=spy, spool_dir=spool_dir
        )
        try:
            yield running
        finally:
            _empty_buckets(running)
            server.shutdown()
            serving.join(timeout=10)
            server.server_close()


def _empty_buckets(running: Endpoint) -> None:
    """moto's backends are global to the process: leave none of this module's buckets behind."""
    s3 = running.client("s3")
    for bucket in running.buckets:
        try:
            listed = s3.list_object_versions(Bucket=bucket)
        except ClientError:
            continue
        for entry in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
        s3.delete_bucket(Bucket=bucket)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def presigned_put(
    running: Endpoint,
    bucket: str,
    key: str,
    body: bytes,
    content_type: str = "application/octet-stream",
    extra_params: dict[str, Any] | None = None,
    extra_headers: dict[str, str] | None = None,
    signature_version: str = "s3v4",
) -> Response:
    """A browser-style upload: a presigned PUT URL, then the body with the signed headers."""
    url = running.client("s3", signature_version).generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ContentType": content_type, **(extra_params or {})},
        ExpiresIn=300,
    )
    return put_to(running, url, body, {"Content-Type": content_type, **(extra_headers or {})})


def put_to(running: Endpoint, url: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A PUT of `body` to a presigned URL of the endpoint, with plain http.client (which copies nothing)."""
    parts = urllib.parse.urlsplit(url)
    assert (parts.hostname, parts.port) == ("127.0.0.1", running.port)
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=60)
    try:
        connection.request("PUT", f"{parts.path}?{parts.query}", body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return Response(response.status, {name.lower(): value for name, value in response.getheaders()}, payload)
    finally:
        connection.close()


def quoted_md5(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


def random_body(size: int = BIG) -> bytes:
    return os.urandom(size)


# ------------------------------------------------------------------------------------------------------- PUT/GET
def test_a_big_presigned_put_is_streamed_and_reads_back(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket(versioned=True)
    key = "uploads/source.csv"
    body = random_body()

    put = presigned_put(endpoint, bucket, key, body, content_type="text/csv")

    assert put.status == 200, put.body
    assert put.headers["etag"] == quoted_md5(body)
    version_id = put.headers.get("x-amz-version-id")
    assert version_id and version_id != "null"
    assert endpoint.spy.saw("PUT", bucket, key)

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/csv"
    assert got["ETag"] == quoted_md5(body)
    assert got["VersionId"] == version_id
    assert got["ContentLength"] == len(body)
    assert endpoint.spy.saw("GET", bucket, key)

    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == quoted_md5(body)
    assert head["ContentType"] == "text/csv"

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="uploads/")["Contents"]
    assert [(item["Key"], item["Size"], item["ETag"]) for item in listed] == [(key, len(body), quoted_md5(body))]


def test_a_body_with_a_short_last_piece_reads_back_whole(endpoint: Endpoint) -> None:
    """2 MiB and 7 bytes: the body arrives in 1 MiB pieces, and a last one of 7 bytes."""
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    key = "short-tail.bin"
    body = random_body(2 * 1024 * 1024 + 7)
    assert presigned_put(endpoint, bucket, key, body).status == 200
    assert endpoint.spy.saw("PUT", bucket, key)

    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=-7")["Body"].read() == body[-7:]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_an_overwrite_in_an_unversioned_bucket(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    key = "overwritten.bin"
    first, second = random_body(), random_body(BIG - 1000)
    assert presigned_put(endpoint, bucket, key, first).status == 200
    put = presigned_put(endpoint, bucket, key, second)
    assert put.status == 200
    assert "x-amz-version-id" not in put.headers

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == second
    assert endpoint.spy.saw("GET", bucket, key)
    assert got["ETag"] == quoted_md5(second)
    assert "VersionId" not in got
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(second)
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def test_single_ranges_of_a_streamed_object(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    key = "ranges.bin"
    body = random_body()
    size = len(body)
    assert presigned_put(endpoint, bucket, key, body).status == 200
    before = len(endpoint.spy.answered)

    for header, first, last in [
        ("bytes=100-199", 100, 199),
        ("bytes=-10", size - 10, size - 1),
        (f"bytes={size - 5}-", size - 5, size - 1),
        # Across a 1 MiB piece boundary, and an end past the object (clamped to its last byte).
        (f"bytes={THRESHOLD - 3}-{THRESHOLD + 2}", THRESHOLD - 3, THRESHOLD + 2),
        (f"bytes={size - 3}-{size + 100}", size - 3, size - 1),
    ]:
        got = s3.get_object(Bucket=bucket, Key=key, Range=header)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
        assert got["ContentRange"] == f"bytes {first}-{last}/{size}", header
        assert got["ContentLength"] == last - first + 1, header
        assert got["Body"].read() == body[first : last + 1], header
    assert len(endpoint.spy.answered) == before + 5

    # A range past the end is moto's to refuse.
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={size}-")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert len(endpoint.spy.answered) == before + 5


def test_versions_of_a_streamed_key(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket(versioned=True)
    key = "versions/data.bin"
    first_body, second_body = random_body(), random_body(BIG + 1000)

    first = presigned_put(endpoint, bucket, key, first_body)
    second = presigned_put(endpoint, bucket, key, second_body)
    assert (first.status, second.status) == (200, 200)
    first_version, second_version = first.headers["x-amz-version-id"], second.headers["x-amz-version-id"]
    assert first_version != second_version

    old = s3.get_object(Bucket=bucket, Key=key, VersionId=first_version)
    assert old["Body"].read() == first_body
    assert (old["VersionId"], old["ETag"]) == (first_version, quoted_md5(first_body))
    assert endpoint.spy.saw("GET", bucket, key, query=f"versionId={first_version}")

    latest = s3.get_object(Bucket=bucket, Key=key)
    assert latest["Body"].read() == second_body
    assert (latest["VersionId"], latest["ETag"]) == (second_version, quoted_md5(second_body))

    ranged_old = s3.get_object(Bucket=bucket, Key=key, VersionId=first_version, Range="bytes=10-19")
    assert ranged_old["Body"].read() == first_body[10:20]

    versions = s3.list_object_versions(Bucket=bucket, Prefix="versions/")["Versions"]
    assert {(v["VersionId"], v["Size"]) for v in versions} == {
        (first_version, len(first_body)),
        (second_version, len(second_body)),
    }


def test_if_match_on_a_streamed_object(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    key = "conditional.bin"
    body = random_body()
    assert presigned_put(endpoint, bucket, key, body).status == 200

    matched = s3.get_object(Bucket=bucket, Key=key, IfMatch=quoted_md5(body))
    assert matched["Body"].read() == body
    ranged = s3.get_object(Bucket=bucket, Key=key, IfMatch=quoted_md5(body), Range="bytes=0-9")
    assert ranged["Body"].read() == body[:10]
    assert endpoint.spy.saw("GET", bucket, key)

    answered = len(endpoint.spy.answered)
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket=bucket, Key=key, IfMatch='"wrong"')
    error = failed.value.response
    assert error["Error"]["Code"] in {"PreconditionFailed", "412"}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert len(endpoint.spy.answered) == answered  # moto answered it


def test_a_streamed_put_sends_one_object_created_event(endpoint: Endpoint) -> None:
    s3, sqs = endpoint.client("s3"), endpoint.client("sqs")
    bucket = endpoint.bucket()
    queue_name = f"{bucket}-events"
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    try:
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_name}",
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
        )
        key = "incoming/upload.bin"
        body = random_body()
        assert presigned_put(endpoint, bucket, key, body).status == 200
        assert endpoint.spy.saw("PUT", bucket, key)

        records = _object_records(sqs, queue_url)
        assert len(records) == 1, records  # the empty placeholder object sent none
        record = records[0]
        assert record["eventName"] == "ObjectCreated:Put"
        assert record["s3"]["bucket"]["name"] == bucket
        assert urllib.parse.unquote_plus(record["s3"]["object"]["key"]) == key
        assert record["s3"]["object"]["size"] == len(body)
        assert record["s3"]["object"]["eTag"].strip('"') == hashlib.md5(body).hexdigest()
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


def _object_records(sqs: Any, queue_url: str, settle_seconds: float = 1.0) -> list[dict[str, Any]]:
    """Every S3 event record in the queue (s3:TestEvent skipped), once nothing more arrives."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        if not messages and records:
            break
        for message in messages:
            event = json.loads(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if event.get("Event") == "s3:TestEvent":
                continue
            records.extend(event["Records"])
    time.sleep(settle_seconds)
    records.extend(
        record
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        for record in json.loads(message["Body"]).get("Records", [])
    )
    return records


# ---------------------------------------------------------------------------------------------- moto's answers
def test_a_small_body_stays_with_moto(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket(versioned=True)
    key = "small.json"
    body = random_body(THRESHOLD)  # not above the threshold

    put = presigned_put(endpoint, bucket, key, body, content_type="application/json")
    assert put.status == 200, put.body
    assert put.headers["etag"] == quoted_md5(body)
    assert not endpoint.spy.saw("PUT", bucket, key)

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/json"
    assert got["VersionId"] == put.headers["x-amz-version-id"]
    assert not endpoint.spy.saw("GET", bucket, key)


def test_a_big_put_to_a_missing_bucket_is_moto_s_no_such_bucket(endpoint: Endpoint) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    put = presigned_put(endpoint, bucket, "lost.bin", random_body())
    assert put.status == 404
    assert b"NoSuchBucket" in put.body
    assert not endpoint.spy.saw("PUT", bucket, "lost.bin")


def test_the_service_s_own_get_object_is_streamed(endpoint: Endpoint) -> None:
    """S3ObjectStore reads (the chunker's read of an upload) with a client of botocore's default checksum
    settings: that read is the one the streamed path exists for."""
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    key = "imports/job-1/source"
    body = random_body()
    assert presigned_put(endpoint, bucket, key, body).status == 200

    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert endpoint.spy.saw("GET", bucket, key)


def test_a_sigv2_presigned_put_still_round_trips(endpoint: Endpoint) -> None:
    """boto3's default S3 presigning (no signature_version) is SigV2, whose query carries AWSAccessKeyId,
    Signature, Expires and content-type: moto takes it (not streamed), and the object is still right."""
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    key = "sigv2.bin"
    body = random_body()
    put = presigned_put(endpoint, bucket, key, body, content_type="text/csv", signature_version="s3")
    assert put.status == 200, put.body
    assert put.headers["etag"] == quoted_md5(body)
    got = s3.get_object(Bucket=bucket, Key=key)
    assert (got["Body"].read(), got["ContentType"]) == (body, "text/csv")


def test_boto3_s_put_object_with_its_crc32_is_streamed_and_the_checksum_comes_back(endpoint: Endpoint) -> None:
    """boto3's put_object sends a CRC32 (botocore's default flexible checksum), as the chunker's writes do: it
    is verified and kept, and a GET that asks for checksums gets it back (botocore then checks the body)."""
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    key = "by-boto3.bin"
    body = random_body()
    put = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-test", Metadata={"origin": "sdk"})
    assert endpoint.spy.saw("PUT", bucket, key)
    assert put["ChecksumCRC32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()

    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ChecksumCRC32"] == put["ChecksumCRC32"]
    assert got["ETag"] == quoted_md5(body)
    assert got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"origin": "sdk"}
    assert endpoint.spy.saw("GET", bucket, key)

    ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-99", ChecksumMode="ENABLED")
    assert ranged["Body"].read() == body[:100]
    assert "ChecksumCRC32" not in ranged  # S3 sends no whole-object checksum with a range


def test_a_put_whose_crc32_does_not_match_is_refused_and_stores_nothing(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    body = random_body()
    wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="corrupt.bin", Body=body, ChecksumCRC32=wrong)

    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert endpoint.spy.saw("PUT", bucket, "corrupt.bin")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_put_with_another_checksum_algorithm_stays_with_moto(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    body = random_body()
    s3.put_object(Bucket=bucket, Key="sha.bin", Body=body, ChecksumAlgorithm="SHA256")
    assert not endpoint.spy.saw("PUT", bucket, "sha.bin")

    got = s3.get_object(Bucket=bucket, Key="sha.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert not endpoint.spy.saw("GET", bucket, "sha.bin")  # moto answers with its stored SHA-256


def test_user_metadata_of_a_streamed_put(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    key = "with-metadata.bin"
    body = random_body()
    put = presigned_put(
        endpoint,
        bucket,
        key,
        body,
        extra_params={"Metadata": {"job-id": "j-1"}, "ContentDisposition": 'attachment; filename="a.csv"'},
        extra_headers={"x-amz-meta-job-id": "j-1", "Content-Disposition": 'attachment; filename="a.csv"'},
    )
    assert put.status == 200, put.body
    assert endpoint.spy.saw("PUT", bucket, key)

    for read in (s3.head_object(Bucket=bucket, Key=key), s3.get_object(Bucket=bucket, Key=key)):
        assert read["Metadata"] == {"job-id": "j-1"}
        assert read["ContentDisposition"] == 'attachment; filename="a.csv"'


def test_a_copy_of_a_streamed_object(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    body = random_body()
    assert presigned_put(endpoint, bucket, "original.bin", body).status == 200
    assert endpoint.spy.saw("PUT", bucket, "original.bin")

    s3.copy_object(Bucket=bucket, Key="copy.bin", CopySource={"Bucket": bucket, "Key": "original.bin"})
    assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key="copy.bin")["ETag"] == quoted_md5(body)


@pytest.mark.parametrize(
    "key",
    [
        "odd/a b+c=d&e.bin",
        "odd/100%.bin",
        "odd/c%41.bin",
        "odd/caf\u00e9.bin",
    ],
)
def test_a_streamed_key_is_stored_under_its_own_name(endpoint: Endpoint, key: str) -> None:
    """A key travels percent-encoded in the URL; the streamed path must store it under the name moto would."""
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    body = random_body()
    before = len(endpoint.spy.answered)
    assert presigned_put(endpoint, bucket, key, body).status == 200
    assert [method for method, _, _ in endpoint.spy.answered[before:]] == ["PUT"]

    assert [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_a_multithreaded_ranged_download(endpoint: Endpoint, tmp_path: Path) -> None:
    """s3transfer's download (as the endpoint's save_state uses): parallel ranged GETs, each with If-Match."""
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    body = random_body(6 * 1024 * 1024 + 12_345)
    assert presigned_put(endpoint, bucket, "download.bin", body).status == 200

    target = tmp_path / "download.bin"
    s3.download_file(
        bucket,
        "download.bin",
        str(target),
        Config=TransferConfig(multipart_threshold=THRESHOLD, multipart_chunksize=THRESHOLD, max_concurrency=4),
    )
    assert target.read_bytes() == body
    assert endpoint.spy.saw("GET", bucket, "download.bin")


# ------------------------------------------------------------------------------------------------------- deletes
def test_delete_objects_removes_streamed_versions(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket(versioned=True)
    versions = []
    for index in range(3):
        put = presigned_put(endpoint, bucket, f"gone/{index}.bin", random_body())
        assert put.status == 200
        versions.append({"Key": f"gone/{index}.bin", "VersionId": put.headers["x-amz-version-id"]})
    kept = presigned_put(endpoint, bucket, "kept/0.bin", random_body())
    assert kept.status == 200
    assert endpoint.spy.saw("PUT", bucket, "gone/0.bin")

    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": versions, "Quiet": False})
    assert sorted((d["Key"], d["VersionId"]) for d in deleted["Deleted"]) == sorted(
        (v["Key"], v["VersionId"]) for v in versions
    )
    assert not deleted.get("Errors")

    listed = s3.list_object_versions(Bucket=bucket, Prefix="gone/")
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="gone/0.bin", VersionId=versions[0]["VersionId"])
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] in {400, 404}
    assert [v["Key"] for v in s3.list_object_versions(Bucket=bucket, Prefix="kept/")["Versions"]] == ["kept/0.bin"]


def test_a_latest_version_behind_a_delete_marker_is_moto_s(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket(versioned=True)
    body = random_body()
    put = presigned_put(endpoint, bucket, "marked.bin", body)
    s3.delete_object(Bucket=bucket, Key="marked.bin")  # a delete marker on top

    answered = len(endpoint.spy.answered)
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="marked.bin")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert len(endpoint.spy.answered) == answered
    old = s3.get_object(Bucket=bucket, Key="marked.bin", VersionId=put.headers["x-amz-version-id"])
    assert old["Body"].read() == body


# ---------------------------------------------------------------------------------------------- incomplete body
def test_a_body_shorter_than_its_content_length_is_refused(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    key = "truncated.bin"
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": "application/octet-stream"}, ExpiresIn=300
    )
    parts = urllib.parse.urlsplit(url)
    announced, sent = 2 * 1024 * 1024, 1024 * 1024 + 500
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{endpoint.port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {announced}\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=30) as connection:
        connection.sendall(head.encode() + random_body(sent))
        connection.shutdown(socket.SHUT_WR)  # the body ends here
        answer = b""
        while piece := connection.recv(65536):
            answer += piece

    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"400", answer[:500]
    assert b"IncompleteBody" in answer
    assert endpoint.spy.saw("PUT", bucket, key)
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key=key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


# ============================================================================ multipart uploads joined on disk

PART = 5 * 1024 * 1024  # S3's smallest part


def upload_parts(
    s3: Any, bucket: str, key: str, upload_id: str, body: bytes, checksum: str | None = None
) -> list[dict[str, Any]]:
    """The body uploaded in PART-sized parts; the parts list that completes the upload."""
    parts = []
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    for number, at in enumerate(range(0, len(body), PART), start=1):
        answer = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body[at : at + PART], **extra
        )
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if checksum:
            part[f"Checksum{checksum}"] = answer[f"Checksum{checksum}"]
        parts.append(part)
    return parts


def multipart_etag(body: bytes, part_size: int) -> str:
    digests = b"".join(hashlib.md5(body[at : at + part_size]).digest() for at in range(0, len(body), part_size))
    return f'"{hashlib.md5(digests).hexdigest()}-{-(-len(body) // part_size)}"'


def test_a_multipart_upload_is_joined_whole_with_s3_s_etag_metadata_and_event(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    sqs = endpoint.client("sqs")
    bucket = endpoint.bucket(versioned=True)
    queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    body = os.urandom(7 * PART + 4321)  # seven whole parts and a short last one
    upload = s3.create_multipart_upload(Bucket=bucket, Key="reports/r.ndjson", ContentType="application/x-ndjson")
    parts = upload_parts(s3, bucket, "reports/r.ndjson", upload["UploadId"], body)

    tracemalloc.start()
    try:
        completed = s3.complete_multipart_upload(
            Bucket=bucket, Key="reports/r.ndjson", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )
        _, peak = tracemalloc.get_traced_memory()  # the server's threads are this process's
    finally:
        tracemalloc.stop()

    # Joined piece by piece: a part or two at a time at most (moto's own join holds the whole object twice).
    assert peak < len(body) // 2
    assert completed["ETag"] == multipart_etag(body, PART)
    got = s3.get_object(Bucket=bucket, Key="reports/r.ndjson")
    assert got["Body"].read() == body
    assert (got["ETag"], got["ContentType"], got["VersionId"]) == (
        multipart_etag(body, PART),
        "application/x-ndjson",
        completed["VersionId"],
    )
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    records = [
        record
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get(
            "Messages", []
        )
        for record in json.loads(message["Body"]).get("Records", [])
    ]
    # Event keys are URL-encoded, as S3 sends them.
    assert [
        (r["eventName"], urllib.parse.unquote_plus(r["s3"]["object"]["key"]), r["s3"]["object"]["size"])
        for r in records
    ] == [("ObjectCreated:CompleteMultipartUpload", "reports/r.ndjson", len(body))]


def test_boto3_s_managed_upload_round_trips(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    body = os.urandom(2 * PART + 17)
    s3.upload_fileobj(
        io.BytesIO(body),
        bucket,
        "exports/e.csv",
        Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART),
    )
    assert s3.get_object(Bucket=bucket, Key="exports/e.csv")["Body"].read() == body


def test_a_multipart_upload_naming_a_wrong_part_or_a_small_part_is_refused_as_moto_does(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")
    first = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"small")
    second = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload["UploadId"], PartNumber=2, Body=b"last")

    with pytest.raises(ClientError) as wrong:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]},
        )
    with pytest.raises(ClientError) as small:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="k",
            UploadId=upload["UploadId"],
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 2, "ETag": second["ETag"]}]
            },
        )

    assert wrong.value.response["Error"]["Code"] == "InvalidPart"
    assert small.value.response["Error"]["Code"] == "EntityTooSmall"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")  # nothing was stored


def test_a_multipart_upload_with_checksums_keeps_moto_s_completion(endpoint: Endpoint) -> None:
    s3 = endpoint.reader()
    bucket = endpoint.bucket()
    body = os.urandom(PART + 10)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="c", ChecksumAlgorithm="SHA256")
    parts = upload_parts(s3, bucket, "c", upload["UploadId"], body, checksum="SHA256")
    s3.complete_multipart_upload(Bucket=bucket, Key="c", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})

    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == body


def test_the_etag_of_a_small_object_in_a_file_is_computed_without_a_large_read(endpoint: Endpoint) -> None:
    """moto read 16 MB at a time to hash an object; from a file each read allocated all 16 MB (a 200 KB chunk
    object: 16 MB), and the writers' concurrent PUTs added up to hundreds of MB. Measured on the key itself,
    so that no other thread of the test process counts."""
    from moto.s3.models import FakeKey

    body = os.urandom(200_000)
    key = FakeKey("chunks/j/000001.ndjson", body, ACCOUNT_ID, REGION, max_buffer_size=64 * 1024)  # in a file
    tracemalloc.start()
    try:
        etag = key.etag
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert etag == quoted_md5(body)
    assert peak < 4 * 1024 * 1024


# ------------------------------------------------------------------------------------------------------ listings
def test_listing_versions_reads_no_body_and_keeps_every_object_whole(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto lists versions from deep copies of every key in the bucket, each of which read the key's whole body;
    a purge of a job's chunks read the whole bucket, uploads included."""
    from moto.s3.models import FakeKey

    s3 = endpoint.client("s3")
    bucket = endpoint.bucket(versioned=True)
    bodies = [random_body() for _ in range(4)]
    versions = [
        s3.put_object(Bucket=bucket, Key=f"chunks/{index % 2}.ndjson", Body=body) for index, body in enumerate(bodies)
    ]
    s3.put_object(Bucket=bucket, Key="uploads/source.csv", Body=random_body())  # outside the prefix: not read either
    bodies_read: list[str] = []
    read_whole = FakeKey.__getstate__  # what a deep copy calls, and reads the body with

    def recorded(key: FakeKey) -> dict[str, Any]:
        bodies_read.append(key.name)
        return read_whole(key)

    monkeypatch.setattr(FakeKey, "__getstate__", recorded)

    listed = s3.list_object_versions(Bucket=bucket, Prefix="chunks/")

    assert bodies_read == []
    newest_first = sorted(listed["Versions"], key=lambda v: (v["Key"], not v["IsLatest"]))
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"], v["ETag"]) for v in newest_first] == [
        ("chunks/0.ndjson", versions[2]["VersionId"], True, len(bodies[2]), quoted_md5(bodies[2])),
        ("chunks/0.ndjson", versions[0]["VersionId"], False, len(bodies[0]), quoted_md5(bodies[0])),
        ("chunks/1.ndjson", versions[3]["VersionId"], True, len(bodies[3]), quoted_md5(bodies[3])),
        ("chunks/1.ndjson", versions[1]["VersionId"], False, len(bodies[1]), quoted_md5(bodies[1])),
    ]
    gc.collect()  # the listing's copies are gone: their end must leave the keys' bodies alone
    for version, body in zip(versions, bodies, strict=True):
        key = f"chunks/{bodies.index(body) % 2}.ndjson"
        assert s3.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read() == body


def test_a_deep_copy_of_a_key_outside_a_listing_still_copies_its_body() -> None:
    from moto.s3.models import FakeKey

    original = FakeKey("copied.bin", b"x" * 100_000, account_id=ACCOUNT_ID, region_name=REGION)
    try:
        copied = copy.deepcopy(original)
        assert copied.value == original.value
        copied.dispose()
        assert original.value == b"x" * 100_000  # each has its own buffer
    finally:
        original.dispose()


def test_the_endpoint_keeps_no_list_of_every_object_it_made(endpoint: Endpoint) -> None:
    from moto.s3.models import FakeKey

    tracked = len(FakeKey.instances_tracked)  # type: ignore[attr-defined]
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    for index in range(5):
        s3.put_object(Bucket=bucket, Key=f"k{index}", Body=b"small")
        s3.delete_object(Bucket=bucket, Key=f"k{index}")
    assert len(FakeKey.instances_tracked) == tracked  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------- upload parts
def test_upload_parts_are_streamed_to_files_and_complete_to_the_whole_object(endpoint: Endpoint) -> None:
    """The service's multipart uploads (error reports, export files) send 8 MiB parts, which moto would read
    into memory whole, several at once when several writers end jobs together."""
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket(versioned=True)
    key = "reports/parts.ndjson"
    body = os.urandom(2 * PART + 4321)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/x-ndjson")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body[:PART])  # boto3's
    second_part = body[PART : 2 * PART]
    second_url = s3.generate_presigned_url(
        "upload_part", Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": 2}
    )

    second = put_to(endpoint, second_url, second_part)  # as a browser or curl would
    assert second.status == 200, second.body
    multipart = moto_s3_backend().buckets[bucket].multiparts[upload_id]
    stored = [type(multipart.parts[number]._value_buffer).__name__ for number in (1, 2)]
    assert stored == ["BufferedRandom", "BufferedRandom"]  # files of their own, written a piece at a time

    third = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=3, Body=body[2 * PART :])
    answered = [query for method, path, query in endpoint.spy.answered if path == f"/{bucket}/{key}"]
    assert sum("uploadId" in query for query in answered) == 2  # the short third went to moto
    parts = [
        {"PartNumber": number, "ETag": etag}
        for number, etag in enumerate([first["ETag"], second.headers["etag"], third["ETag"]], start=1)
    ]
    completed = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert completed["ETag"] == multipart_etag(body, PART)
    got = s3.get_object(Bucket=bucket, Key=key)
    assert (got["Body"].read(), got["ContentType"]) == (body, "application/x-ndjson")


def test_a_part_whose_crc32_does_not_match_is_refused(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="bad-part.bin")
    body = random_body()
    wrong = base64.b64encode((zlib.crc32(body) ^ 1).to_bytes(4, "big")).decode()

    with pytest.raises(ClientError) as refused:
        s3.upload_part(
            Bucket=bucket, Key="bad-part.bin", UploadId=upload["UploadId"], PartNumber=1, Body=body, ChecksumCRC32=wrong
        )

    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert s3.list_parts(Bucket=bucket, Key="bad-part.bin", UploadId=upload["UploadId"]).get("Parts", []) == []


def test_parts_of_an_upload_with_an_additional_checksum_or_a_wrong_number_stay_with_moto(endpoint: Endpoint) -> None:
    s3 = endpoint.client("s3")
    bucket = endpoint.bucket()
    with_sha = s3.create_multipart_upload(Bucket=bucket, Key="sha-parts.bin", ChecksumAlgorithm="SHA256")
    body = os.urandom(PART + 10)
    parts = upload_parts(s3, bucket, "sha-parts.bin", with_sha["UploadId"], body, checksum="SHA256")
    s3.complete_multipart_upload(
        Bucket=bucket, Key="sha-parts.bin", UploadId=with_sha["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert s3.get_object(Bucket=bucket, Key="sha-parts.bin")["Body"].read() == body
    assert not endpoint.spy.saw("PUT", bucket, "sha-parts.bin", "uploadId")

    plain = s3.create_multipart_upload(Bucket=bucket, Key="numbered.bin")
    with pytest.raises(ClientError) as refused:
        s3.upload_part(Bucket=bucket, Key="numbered.bin", UploadId=plain["UploadId"], PartNumber=10_001, Body=body)
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
    assert not endpoint.spy.saw("PUT", bucket, "numbered.bin", "uploadId")
