"""The rejected-records file: the upload's own format, errors in `_` columns the importer ignores, so that a
user fixes cells and uploads the file as it is. Rendering here; the whole round trip through the service with
fakes; the store's SQL against PostgreSQL in tests/integration/test_import_store.py."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from bulkio.domain.errors import NotFound
from bulkio.domain.jobs import JobStatus
from bulkio.domain.records import ValidationRules, validate_record
from bulkio.domain.rejected import (
    RejectedRecord,
    rejected_csv_header,
    rejected_csv_row,
    rejected_format_of,
    rejected_ndjson_line,
)
from bulkio.domain.resources import Format, ImportTarget, Resource
from bulkio.services.imports.api import NewImport
from bulkio.services.imports.common import source_key

from tests.fakes import CALLER, OWNER, FakeWorld, build_world
from tests.fixtures.parsing import iter_source_records
from tests.unit.test_import_service import BUCKET, deliver_all, job_of, upload_and_chunk

COLUMNS = ["id", "email", "name", "active", "tags"]


def test_a_csv_row_gives_back_the_cells_as_the_reader_reads_them() -> None:
    rejected = RejectedRecord(
        7,
        {"id": "u1", "email": "bad", "name": None, "active": False, "tags": ["a", "b"]},
        [("invalid_email", "email", "email 'bad' is not valid"), ("missing_field", "name", "name is required")],
    )

    row = next(csv.reader(io.StringIO(rejected_csv_row(COLUMNS, rejected))))

    assert row == [
        "u1",
        "bad",
        "",
        "false",
        "a|b",
        "7",
        "invalid_email,missing_field",
        "email 'bad' is not valid | name is required",
        "",
    ]


def test_a_tag_holding_the_separator_is_written_as_a_json_array() -> None:
    rejected = RejectedRecord(2, {"tags": ["a|b", "c"]}, [("invalid_tags", "tags", "…")])

    assert next(csv.reader(io.StringIO(rejected_csv_row(["tags"], rejected))))[0] == '["a|b","c"]'


def test_a_record_that_could_not_be_read_keeps_its_raw_text() -> None:
    rejected = RejectedRecord(3, 'u2,"open quote', [("invalid_csv_row", None, "the row cannot be read")])

    row = next(csv.reader(io.StringIO(rejected_csv_row(COLUMNS, rejected))))
    assert row[: len(COLUMNS)] == [""] * len(COLUMNS)
    assert row[-1] == 'u2,"open quote'
    assert orjson.loads(rejected_ndjson_line(rejected)) == {
        "_raw": 'u2,"open quote',
        "_line": 3,
        "_errors": [{"code": "invalid_csv_row", "field": None, "message": "the row cannot be read"}],
    }


def test_an_ndjson_line_is_the_original_object_with_its_errors() -> None:
    rejected = RejectedRecord(1, {"email": "bad", "name": "Ann"}, [("invalid_email", "email", "not valid")])

    assert orjson.loads(rejected_ndjson_line(rejected)) == {
        "email": "bad",
        "name": "Ann",
        "_line": 1,
        "_errors": [{"code": "invalid_email", "field": "email", "message": "not valid"}],
    }


@pytest.mark.parametrize(
    ("upload", "rejected"), [("csv", "csv"), ("ndjson", "ndjson"), ("json", "ndjson"), (None, "ndjson")]
)
def test_the_file_comes_in_the_uploads_format(upload: str | None, rejected: str) -> None:
    assert rejected_format_of(upload) == rejected


def test_the_importer_ignores_the_underscore_columns() -> None:
    text = rejected_csv_header(["email", "name"]) + rejected_csv_row(
        ["email", "name"], RejectedRecord(2, {"email": "ann@example.com", "name": "Ann"}, [("x", None, "y")])
    )
    [record] = iter_source_records(io.BytesIO(text.encode()), Format.CSV, Resource.USERS)

    result = validate_record(Resource.USERS, record.data or {}, ValidationRules())

    assert result.errors == []
    assert result.row is not None and set(result.row) == {"email", "name"}


# ------------------------------------------------------------------------------------------------ the round trip
@pytest.fixture
def world() -> FakeWorld:
    return build_world()


def test_fixed_rejected_records_re_import_as_they_are(world: FakeWorld) -> None:
    source = "".join(
        f"{row}\r\n"
        for row in (
            "id,email,name,active",
            "u1,ann@example.com,Ann,true",
            "u2,not-an-email,Bob,false",
            "u3,cy@example.com,,true",
        )
    )
    job_id = upload_and_chunk(world, source.encode(), "users.csv", Format.CSV)
    deliver_all(world)
    assert job_of(world, job_id).counters.failed == 2

    rejected = world.api.rejected_file(job_id, None, CALLER)

    assert rejected.content_type.startswith("text/csv") and rejected.body is not None
    rows = list(csv.reader(io.StringIO(rejected.body.decode())))
    assert rows[0] == ["id", "email", "name", "active", "_line", "_error_codes", "_error_messages", "_raw"]
    assert [row[:4] + row[4:6] for row in rows[1:]] == [
        ["u2", "not-an-email", "Bob", "false", "3", "invalid_email"],
        ["u3", "cy@example.com", "", "true", "4", "missing_field"],
    ]
    fixed = rejected.body.decode().replace("not-an-email", "bob@example.com").replace(",,true", ",Cy,true")
    again = upload_and_chunk(world, fixed.encode(), "users-fixed.csv", Format.CSV)
    deliver_all(world)
    job = job_of(world, again)
    assert (job.status, job.counters.succeeded, job.counters.failed) == (JobStatus.COMPLETED, 2, 0)
    assert world.api.rejected_file(job_id, "ndjson", CALLER).body is not None


def test_a_re_import_naming_its_parent_credits_it_once(world: FakeWorld) -> None:
    source = "id,email,name\r\nu1,ann@example.com,Ann\r\nu2,not-an-email,Bob\r\nu3,nope,Cy\r\n"
    parent = upload_and_chunk(world, source.encode(), "users.csv", Format.CSV)
    deliver_all(world)
    rejected = world.api.rejected_file(parent, None, CALLER).body
    assert rejected is not None
    fixed = rejected.decode().replace("not-an-email", "bob@example.com")  # u3 stays wrong

    submitted = world.api.submit(
        NewImport(
            ImportTarget.USERS,
            Format.CSV,
            filename="fixed.csv",
            file=io.BytesIO(fixed.encode()),
            file_sha256="x",
            parent_job_id=parent,
        ),
        None,
        OWNER,
    ).body
    assert submitted["parent_job_id"] == parent
    child = submitted["job_id"]
    world.chunker.on_object_created(BUCKET, source_key(child), "etag-2")
    deliver_all(world)
    world.sweeper.sweep()  # a second pass over the end changes nothing

    assert job_of(world, child).parent_job_id == parent
    assert (job_of(world, child).counters.succeeded, job_of(world, child).counters.failed) == (1, 1)
    assert world.api.view(parent, CALLER)["rejected_reimported"] == 1
    assert world.ending.completion.publish(child) is False  # already done: no second credit
    assert job_of(world, parent).rejected_reimported == 1


def test_a_parent_must_be_one_of_the_callers_jobs(world: FakeWorld) -> None:
    with pytest.raises(NotFound) as refused:
        world.api.submit(NewImport(ImportTarget.USERS, Format.CSV, parent_job_id="no-such-job"), None, OWNER)
    assert refused.value.code == "parent_job_not_found"
    other = world.api.submit(NewImport(ImportTarget.USERS, Format.CSV), None, "someone-else").body["job_id"]
    with pytest.raises(NotFound):
        world.api.submit(NewImport(ImportTarget.USERS, Format.CSV, parent_job_id=other), None, OWNER)
