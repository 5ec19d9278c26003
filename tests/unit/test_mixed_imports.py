"""Mixed imports without services: archives read member by member (resource from the name, lines of the member,
record numbers running on), the refusals of formats that cannot hold what is imported, and a mixed job through
the service on the fakes, with its counters per resource."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from typing import Any

import orjson
import pytest
from bulkio.domain.parsing import UnreadableFile
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import CALLER, OWNER, FakeWorld, build_world, make_settings
from tests.fixtures.parsing import iter_source_records
from tests.unit.test_import_service import BUCKET, deliver_all, job_of

USERS_CSV = b"id,email,name,active\nu-1,ann@x.io,Ann,true\nu-2,bob@x.io,Bob,false\n"
ARTICLES_NDJSON = b'{"id": "a-1", "slug": "s-1", "title": "T", "author_id": "u-1"}\n'
COMMENTS_JSON = b'[{"id": "c-1", "article_id": "a-1", "user_id": "u-2", "body": "Hi"}]'


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def records(content: bytes, fmt: Format, target: ImportTarget = ImportTarget.MIXED, **limits: Any) -> list[Any]:
    return list(iter_source_records(io.BytesIO(content), fmt, target, **limits))


def unreadable(content: bytes, fmt: Format, target: ImportTarget = ImportTarget.MIXED, **limits: Any) -> str:
    with pytest.raises(UnreadableFile) as refused:
        records(content, fmt, target, **limits)
    return refused.value.code


ARCHIVE = {
    "export/users.csv": USERS_CSV,
    "__MACOSX/export/._users.csv": b"\x00\x05junk",
    "export/.DS_Store": b"\x00junk",
    "export/articles.ndjson.gz": gzip.compress(ARTICLES_NDJSON),
    "export/comments.json": COMMENTS_JSON,
}


@pytest.mark.parametrize("pack", [zip_of, tar_gz_of], ids=["zip", "tar.gz"])
def test_an_archives_members_are_read_as_the_resource_their_name_gives(pack: Any) -> None:
    fmt = Format.ZIP if pack is zip_of else Format.TAR
    found = records(pack(ARCHIVE), fmt)

    assert [(r.index, r.line, r.resource) for r in found] == [
        (1, 2, Resource.USERS),
        (2, 3, Resource.USERS),
        (3, 1, Resource.ARTICLES),
        (4, 1, Resource.COMMENTS),
    ]
    assert found[0].data == {
        "id": "u-1",
        "email": "ann@x.io",
        "name": "Ann",
        "active": True,  # the CSV member is read with its resource's coercions
        "resource": "users",
        "_file": "export/users.csv",
    }
    assert found[3].data is not None and found[3].data["_file"] == "export/comments.json"


def test_an_unparseable_member_record_keeps_its_resource() -> None:
    [bad] = records(zip_of({"users.ndjson": b"{not json\n"}), Format.ZIP)
    assert (bad.error is not None, bad.resource, bad.line) == (True, Resource.USERS, 1)


@pytest.mark.parametrize(
    ("content", "fmt", "target", "code"),
    [
        (zip_of({"orders.csv": b"id\n1\n"}), Format.ZIP, ImportTarget.MIXED, "unknown_archive_member"),
        (zip_of({"users.csv": USERS_CSV}), Format.ZIP, ImportTarget.USERS, "archive_needs_mixed"),
        (zip_of({"users.zip": zip_of({"users.csv": USERS_CSV})}), Format.ZIP, ImportTarget.MIXED, "invalid_archive"),
        (zip_of({}), Format.ZIP, ImportTarget.MIXED, "empty_file"),
        (b"PK\x03\x04 but no zip at all", Format.ZIP, ImportTarget.MIXED, "invalid_archive"),
        (b"not a tar" * 100, Format.TAR, ImportTarget.MIXED, "invalid_archive"),
        (USERS_CSV, Format.CSV, ImportTarget.MIXED, "mixed_needs_resource"),
    ],
    ids=["unknown member", "archive for one resource", "nested", "empty", "bad zip", "bad tar", "mixed csv"],
)
def test_an_archive_or_format_that_cannot_be_imported_fails_with_its_reason(
    content: bytes, fmt: Format, target: ImportTarget, code: str
) -> None:
    assert unreadable(content, fmt, target) == code


def test_an_archive_that_expands_past_the_limits_is_refused() -> None:
    bomb = zip_of({"users.ndjson": b"\n" * (12 * 1024 * 1024)})  # blank lines: no record, only expansion
    assert unreadable(bomb, Format.ZIP, max_compression_ratio=100) == "compression_ratio_too_high"
    assert unreadable(zip_of({"users.csv": USERS_CSV * 50}), Format.ZIP, max_decompressed_bytes=1000) == (
        "decompressed_too_large"
    )
    big_tar = tar_gz_of({"users.csv": USERS_CSV * 50})
    assert unreadable(big_tar, Format.TAR, max_decompressed_bytes=1000) == "decompressed_too_large"


def test_mixed_ndjson_records_keep_their_resource_member() -> None:
    content = b'{"resource": "users", "email": "a@x.io", "name": "A"}\n{"resource": "articles", "slug": "s"}\n'
    found = records(content, Format.NDJSON)
    assert [(r.data or {}).get("resource") for r in found] == ["users", "articles"]
    assert [r.resource for r in found] == [None, None]  # the writers read the member


# ------------------------------------------------------------------------------------------------ the service
@pytest.fixture
def world() -> FakeWorld:
    return build_world(make_settings(chunk_records=2))


def mixed_import(world: FakeWorld, content: bytes, filename: str, fmt: Format | None) -> str:
    request = NewImport(ImportTarget.MIXED, fmt, filename=filename, file=io.BytesIO(content), file_sha256=filename)
    job_id = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")
    deliver_all(world)
    return job_id


def test_a_mixed_job_counts_each_resource_and_a_record_naming_none_in_the_job_only(world: FakeWorld) -> None:
    lines = [
        {"resource": "comments", "id": "c-1", "article_id": "a-1", "user_id": "u-1", "body": "Hi"},
        {"resource": "articles", "id": "a-1", "slug": "s-1", "title": "T", "author_id": "u-1"},
        {"resource": "users", "id": "u-1", "email": "ann@x.io", "name": "Ann"},
        {"resource": "users", "id": "u-2", "email": "broken", "name": "Bad"},
        {"id": "x-1"},
    ]
    job_id = mixed_import(world, b"".join(orjson.dumps(line) + b"\n" for line in lines), "all.ndjson", None)

    view = world.api.view(job_id, CALLER)
    assert (view["resource"], view["format"], view["status"]) == ("mixed", "ndjson", "completed_with_errors")
    assert view["counters"] == {"total": 5, "processed": 5, "succeeded": 3, "failed": 2}
    assert view["counters_by_resource"] == {
        "users": {"total": 2, "processed": 2, "succeeded": 1, "failed": 1},
        "articles": {"total": 1, "processed": 1, "succeeded": 1, "failed": 0},
        "comments": {"total": 1, "processed": 1, "succeeded": 1, "failed": 0},
    }
    assert [(e["line"], e["code"]) for e in view["errors"]] == [(4, "invalid_email"), (5, "invalid_resource")]
    assert "resource" in view["errors"][1]["message"] and "users, articles, comments" in view["errors"][1]["message"]


def test_a_mixed_archive_goes_through_the_service(world: FakeWorld) -> None:
    job_id = mixed_import(world, tar_gz_of(ARCHIVE), "export.tar.gz", Format.TAR)

    job = job_of(world, job_id)
    assert (job.status.value, job.counters.total, job.counters.succeeded) == ("completed", 4, 4)
    assert job.counters_by_resource is not None
    assert {name: counters["total"] for name, counters in job.counters_by_resource.items()} == {
        "users": 2,
        "articles": 1,
        "comments": 1,
    }


def test_an_archive_sent_for_one_resource_fails_with_a_reason_naming_mixed(world: FakeWorld) -> None:
    request = NewImport(
        ImportTarget.USERS, None, filename="users", file=io.BytesIO(zip_of({"users.csv": USERS_CSV})), file_sha256="z"
    )
    job_id = world.api.submit(request, None, OWNER).body["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(job_id), "etag-1")

    job = job_of(world, job_id)
    assert job.failure is not None and job.failure.code == "unknown_format"  # no name, no format: not sniffed
    assert "zip or tar archive" in job.failure.message
