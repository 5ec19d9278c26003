"""S3ObjectStore.purge and read_bytes against the local AWS endpoint (moto's server): every version and delete
marker under a prefix goes, in DeleteObjects batches, and nothing outside the prefix is touched."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from bulkio.adapters import s3 as s3_adapter
from bulkio.adapters.s3 import S3ObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(aws_environment: str) -> Any:
    return boto3.session.Session().client("s3")


def new_bucket(s3: Any, versioned: bool = True) -> str:
    bucket = f"purge-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.fixture
def bucket(s3: Any) -> str:
    return new_bucket(s3)


@pytest.fixture
def store(s3: Any, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3, bucket)


def listing(s3: Any, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
    yield from s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)


def versions(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str, bool]]:
    """(key, version id, is latest) of every object version under `prefix`."""
    return sorted(
        (entry["Key"], entry["VersionId"], entry["IsLatest"])
        for page in listing(s3, bucket, prefix)
        for entry in page.get("Versions", [])
    )


def markers(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str]]:
    return sorted(
        (entry["Key"], entry["VersionId"])
        for page in listing(s3, bucket, prefix)
        for entry in page.get("DeleteMarkers", [])
    )


def assert_nothing_under(s3: Any, bucket: str, prefix: str) -> None:
    answer = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    assert answer.get("Versions", []) == []
    assert answer.get("DeleteMarkers", []) == []
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0


def put(s3: Any, bucket: str, key: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_purge_deletes_every_version_and_delete_marker_under_the_prefix_and_nothing_else(
    s3: Any, bucket: str, store: S3ObjectStore
) -> None:
    for n in range(3):
        put(s3, bucket, "chunks/j1/000001.ndjson", b"one, take %d" % n)
    for n in range(2):
        put(s3, bucket, "chunks/j1/000002.ndjson", b"two, take %d" % n)
    put(s3, bucket, "chunks/j1/000003.ndjson", b"three")
    s3.delete_object(Bucket=bucket, Key="chunks/j1/000002.ndjson")  # a delete marker over two versions
    s3.delete_object(Bucket=bucket, Key="chunks/j1/000003.ndjson")  # a delete marker over its only version
    put(s3, bucket, "chunks/j2/000001.ndjson", b"another job's chunk")
    put(s3, bucket, "chunks/j10/000001.ndjson", b"a job whose id starts like j1's")
    put(s3, bucket, "chunks/j1", b"a key that is the prefix without its slash")
    put(s3, bucket, "uploads/j1/source", b"first upload")
    put(s3, bucket, "uploads/j1/source", b"second upload")
    put(s3, bucket, "reports/j1/errors.ndjson", b"{}\n")
    assert (len(versions(s3, bucket, "chunks/j1/")), len(markers(s3, bucket, "chunks/j1/"))) == (6, 2)
    others = ("chunks/j2/", "chunks/j10/", "uploads/", "reports/")
    before = {prefix: versions(s3, bucket, prefix) for prefix in others}
    lone_key = [entry for entry in versions(s3, bucket, "chunks/j1") if entry[0] == "chunks/j1"]

    assert store.purge("chunks/j1/") == 8  # 6 versions and 2 delete markers

    assert_nothing_under(s3, bucket, "chunks/j1/")
    assert {prefix: versions(s3, bucket, prefix) for prefix in others} == before
    assert [entry for entry in versions(s3, bucket, "chunks/j1") if entry[0] == "chunks/j1"] == lone_key
    assert markers(s3, bucket) == []
    assert store.read_bytes("uploads/j1/source") == b"second upload"
    assert store.read_bytes("chunks/j2/000001.ndjson") == b"another job's chunk"
    with pytest.raises(FileNotFoundError):
        store.read_bytes("chunks/j1/000001.ndjson")


def test_purge_pages_through_more_versions_than_one_delete_batch(
    s3: Any, bucket: str, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_adapter, "DELETE_BATCH", 3)
    for chunk in range(1, 5):
        for take in range(3):
            put(s3, bucket, f"chunks/j1/{chunk:06d}.ndjson", b"chunk %d take %d" % (chunk, take))
    for chunk in (2, 4):
        s3.delete_object(Bucket=bucket, Key=f"chunks/j1/{chunk:06d}.ndjson")
    put(s3, bucket, "chunks/j2/000001.ndjson", b"kept")
    batches: list[int] = []
    delete_objects = s3.delete_objects

    def counted(**kwargs: Any) -> dict[str, Any]:
        batches.append(len(kwargs["Delete"]["Objects"]))
        return delete_objects(**kwargs)

    monkeypatch.setattr(s3, "delete_objects", counted)

    assert store.purge("chunks/j1/") == 14  # 12 versions and 2 delete markers

    assert_nothing_under(s3, bucket, "chunks/j1/")
    assert sum(batches) == 14
    assert len(batches) >= 5 and max(batches) <= 3
    assert store.read_bytes("chunks/j2/000001.ndjson") == b"kept"


def test_purge_of_an_empty_prefix_returns_0(s3: Any, bucket: str, store: S3ObjectStore) -> None:
    put(s3, bucket, "chunks/j2/000001.ndjson", b"kept")
    put(s3, bucket, "uploads/j1/source", b"kept")
    before = versions(s3, bucket)

    assert store.purge("chunks/j1/") == 0
    assert store.purge("fetched/j1/") == 0

    assert versions(s3, bucket) == before


def test_purge_works_in_a_bucket_without_versioning(s3: Any) -> None:
    bucket = new_bucket(s3, versioned=False)
    store = S3ObjectStore(s3, bucket)
    put(s3, bucket, "fetched/j1/source", b"downloaded")
    put(s3, bucket, "chunks/j1/000001.ndjson", b"chunk")
    put(s3, bucket, "uploads/j1/source", b"kept")

    assert store.purge("fetched/j1/") == 1
    assert store.purge("chunks/j1/") == 1

    assert_nothing_under(s3, bucket, "fetched/j1/")
    assert_nothing_under(s3, bucket, "chunks/j1/")
    assert store.read_bytes("uploads/j1/source") == b"kept"


def test_purge_raises_when_delete_objects_reports_errors(
    s3: Any, bucket: str, store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3, bucket, "chunks/j1/000001.ndjson", b"chunk")

    def refused(**kwargs: Any) -> dict[str, Any]:
        key = kwargs["Delete"]["Objects"][0]["Key"]
        return {"Errors": [{"Key": key, "Code": "AccessDenied", "Message": "Access Denied"}]}

    monkeypatch.setattr(s3, "delete_objects", refused)

    with pytest.raises(RuntimeError, match=r"chunks/j1/000001\.ndjson: Access Denied"):
        store.purge("chunks/j1/")


def test_read_bytes_of_a_missing_key_raises_file_not_found(s3: Any, bucket: str, store: S3ObjectStore) -> None:
    put(s3, bucket, "chunks/j1/000002.ndjson", b"chunk")
    s3.delete_object(Bucket=bucket, Key="chunks/j1/000002.ndjson")  # only a delete marker is current

    with pytest.raises(FileNotFoundError, match=r"chunks/j1/000001\.ndjson"):
        store.read_bytes("chunks/j1/000001.ndjson")
    with pytest.raises(FileNotFoundError, match=r"chunks/j1/000002\.ndjson"):
        store.read_bytes("chunks/j1/000002.ndjson")
    put(s3, bucket, "chunks/j1/000003.ndjson", b"present")
    assert store.read_bytes("chunks/j1/000003.ndjson") == b"present"
