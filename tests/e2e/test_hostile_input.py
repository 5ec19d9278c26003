"""Hostile input, end to end: every case goes through the real pipeline (API -> S3 -> chunker -> SQS -> writers ->
PostgreSQL on the embedded stack) and must end with its documented outcome, an HTTP problem code, a job status
and failure code, or exactly the per-record errors of the job's report, while nothing else in the database
changes: users, articles and comments are fingerprinted (row count and md5 of every row in id order) before
and after each case, leaving out only the rows the case is meant to write, whose values are checked too.

Three tables of cases: files to import (`FILE_CASES`), URLs that must not be fetched (`URL_CASES`), and other
hostile HTTP requests to the import and export endpoints (`REQUEST_CASES`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson
import psycopg2
import pytest
from psycopg2 import sql

from tests.e2e.client import Api, Reply, request
from tests.fixtures.aws import RunningStack

pytestmark = pytest.mark.e2e

TABLES = ("users", "articles", "comments")
MIB = 1024 * 1024
# The limits the local stack runs with (the defaults of README's Configuration table): the big files are made
# to overstep them. A gzip file's ratio is only judged once 10 MiB have come out of it.
MAX_RECORD_BYTES = MIB
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_AFTER_BYTES = 10 * MIB
# No hostile file may make a chunker or writer process grow by this much: the 50 MB records must stream past.
MEMORY_GROWTH_LIMIT_KIB = 25 * 1024

# Rows imported before the cases, so that "nothing else changes" has something to protect. Hostile records
# aim at them: a record that slipped through would overwrite seed-admin.
SEED_USERS = [
    {"id": "seed-admin", "email": "seed-admin@hostile.example", "name": "Seed Admin", "role": "admin"},
    {"id": "seed-author", "email": "seed-author@hostile.example", "name": "Seed Author", "role": "author"},
]
SEED_ARTICLE = {
    "id": "seed-article",
    "slug": "seed-article",
    "title": "Seed",
    "author_id": "seed-author",
    "status": "published",
    "published_at": "2024-05-01T12:00:00Z",
}
SEED_COMMENT = {"id": "seed-comment", "article_id": "seed-article", "user_id": "seed-admin", "body": "First!"}
TAKEOVER = {"id": "seed-admin", "email": "attacker@evil.example", "name": "Pwned", "role": "admin"}


# ============================================================================================ content helpers


def user(number: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"hx-{number}", "email": f"hx-{number}@hostile.example", "name": f"Hostile {number}", **fields}


def ndjson(*lines: dict[str, Any] | bytes, end: bytes = b"\n") -> bytes:
    """One line per argument: objects are encoded, bytes are taken as they are (the hostile part)."""
    return b"".join((orjson.dumps(line) if isinstance(line, dict) else line) + end for line in lines)


def csv_row(record: dict[str, Any]) -> bytes:
    return f"{record['id']},{record['email']},{record['name']}".encode()


def stored(*records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows these records must become: id -> the values of the record's columns."""
    return {record["id"]: {name: value for name, value in record.items() if name != "id"} for record in records}


def gzip_bomb() -> bytes:
    """A valid record, then 20 MiB of blank space: about 20 kB compressed, some 1000 times smaller."""
    expanded = ndjson(user(60)) + b" " * (20 * MIB)
    bomb = gzip.compress(expanded, compresslevel=9)
    assert len(expanded) > RATIO_CHECKED_AFTER_BYTES and len(expanded) > 2 * MAX_COMPRESSION_RATIO * len(bomb)
    return bomb


def fifty_mb_ndjson_line() -> bytes:
    """The takeover record with a 50 MB name, between two good ones."""
    huge = orjson.dumps({**TAKEOVER, "name": "A" * (50 * MIB)})
    assert len(huge) > 50 * MAX_RECORD_BYTES
    return ndjson(user(70), huge, user(71))


def fifty_mb_csv_cell() -> bytes:
    """A quoted CSV cell of 50 MB over 50,000 lines, with a row hidden in its middle: the cell must be one
    record_too_large, and the text inside it must never be read as rows (it would overwrite seed-admin)."""
    filler = (b"A" * 1000 + b"\n") * 25_000
    cell = b'"' + filler + csv_row(TAKEOVER) + b"\n" + filler + b'"'
    assert len(cell) > 40 * MAX_RECORD_BYTES
    return (
        b"id,email,name\n"
        + csv_row(user(72))
        + b"\nhx-73,hx-73@hostile.example,"
        + cell
        + b"\n"
        + csv_row(user(74))
        + b"\n"
    )


def records_just_under_the_limit() -> bytes:
    """30 records of 1 MB each, every one within MAX_RECORD_BYTES (the padding is an unknown field, ignored)."""
    return ndjson(*({**user(number), "bio": "B" * 1_000_000} for number in range(80, 110)))


def cross_line_csv_record() -> bytes:
    """One quoted CSV record kept open across about 30 MiB of lines that end in `,"` and start with `",` (each
    line closes the cell the line before opened, adds an empty cell and opens another), between two good rows:
    one record_too_large, read in constant memory, and nothing inside it read as rows."""
    lines = b'",,"\n' * (6 * MIB)
    assert len(lines) >= 30 * MIB
    return (
        b"id,email,name\n"
        + csv_row(user(120))
        + b'\nhx-121,hx-121@hostile.example,"\n'
        + lines
        + b'"\n'
        + csv_row(user(122))
        + b"\n"
    )


NUL = "\x00"
NUL_ARTICLE = {"slug": "hx-nul", "title": "T", "author_id": "seed-author"}
NUL_COMMENT = {"article_id": "seed-article", "user_id": "seed-admin", "body": "Nice"}


def article(number: int, **fields: Any) -> dict[str, Any]:
    return {**NUL_ARTICLE, "id": f"hx-art-{number}", "slug": f"hx-art-{number}", **fields}


def comment(number: int, **fields: Any) -> dict[str, Any]:
    return {**NUL_COMMENT, "id": f"hx-cm-{number}", **fields}


def derived_id(resource: str, key: str) -> str:
    """The id a record without one gets from its natural key (README, Validation rules)."""
    return str(uuid.UUID(hashlib.md5(f"{resource}:{key}".encode()).hexdigest()))


def two_mb_json_element() -> bytes:
    """The takeover record padded to 2 MB over 2000 lines (pretty-printed), as the second element of three."""
    huge = orjson.dumps({**TAKEOVER, "tags": ["x" * 1000] * 2000}, option=orjson.OPT_INDENT_2)
    assert len(huge) > MAX_RECORD_BYTES
    return b"[\n" + orjson.dumps(user(75)) + b",\n" + huge + b",\n" + orjson.dumps(user(76)) + b"\n]\n"


# ================================================================================================ file cases


@dataclass(frozen=True)
class FileCase:
    name: str
    content: bytes | Callable[[], bytes]
    """The file, or a function making it (big files are only made when their case runs)."""
    via: Literal["multipart", "presigned", "drop"] = "multipart"
    """multipart: POST /v1/imports with the file; presigned: PUT to the upload URL; drop: put under drop/<resource>/."""
    filename: str = "hostile.ndjson"
    """The uploaded or dropped file's name (its extension names the format); unused for presigned uploads."""
    fmt: str | None = None
    """Presigned uploads: the format the request names (None: the chunker sniffs it from the content)."""
    resource: str = "users"
    status: str = "completed_with_errors"
    failure: str | None = None
    """The job's failure code when it must fail."""
    errors: tuple[tuple[int, str, str | None], ...] = ()
    """(line, code, field) of every record error in the job's error report."""
    imported: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The only rows the case may write (by id), with the values they must hold."""

    def make(self) -> bytes:
        return self.content() if callable(self.content) else self.content


# Each file holds several hostile records where they can share one (the error report names each one's line),
# which keeps the number of jobs, and the time, down.
SQL_NAME = "Robert'); DROP TABLE users; --"
FORMULA_NAME = "=cmd|' /C calc'!A0"

FILE_CASES: list[Any] = [  # FileCase, or a pytest.param of one for a known bug
    # ------------------------------------------------------------------------------ malformed JSON
    FileCase(
        "ndjson-malformed-lines",
        ndjson(
            {**user(1), "name": SQL_NAME},  # values that look like code are only values
            b'{"id": "hx-90", "email": "hx-90@hostile.example", "name": ',  # cut short
            b'{"id": "hx-91" "email": "hx-91@hostile.example"}',  # a missing comma
            b"[1, 2]",  # JSON, but not an object
            b"{'id': 'hx-92'}",  # Python, not JSON
            b'{"id": "hx-93", "email": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",  # nested 10,000 deep
            {**user(2), "email": "o'reilly+x@hostile.example", "name": FORMULA_NAME},
        ),
        errors=tuple((line, "invalid_json", None) for line in range(2, 7)),
        imported=stored(
            {**user(1), "name": SQL_NAME}, {**user(2), "email": "o'reilly+x@hostile.example", "name": FORMULA_NAME}
        ),
    ),
    FileCase(
        "json-array-malformed-elements",
        b"[\n"
        + orjson.dumps(user(4))
        + b',\n{"id": "hx-94", "email": },\n42,\n{"id": "hx-95", "name": "\xc0\xaf"},\n'  # invalid UTF-8
        + orjson.dumps(user(5))
        + b"\n]\n",
        filename="hostile.json",
        errors=((3, "invalid_json", None), (4, "invalid_json", None), (5, "invalid_json", None)),
        imported=stored(user(4), user(5)),
    ),
    FileCase(
        "json-array-never-closes",  # the complete elements before the cut must not be written either
        b"[\n" + orjson.dumps(user(6)) + b",\n" + orjson.dumps(user(7)) + b',\n{"id": "hx-96", "name": "cut',
        filename="hostile.json",
        status="failed",
        failure="unterminated_json_array",
    ),
    # ------------------------------------------------------------------------------------- wrong types
    FileCase(
        "users-wrong-types",
        ndjson(
            {"id": "hx-97", "email": 42, "name": "N"},
            {**user(98), "active": "yes"},
            {**user(99), "active": "true"},  # a string, not a JSON boolean
            {**user(100), "name": ["a", "b"]},
            {**user(101), "id": 101},
            {**user(102), "role": {"$ne": None}},  # a NoSQL operator
            {**user(103), "created_at": 1_700_000_000},
        ),
        errors=(
            (1, "invalid_type", "email"),
            (2, "invalid_boolean", "active"),
            (3, "invalid_boolean", "active"),
            (4, "invalid_type", "name"),
            (5, "invalid_type", "id"),
            (6, "invalid_type", "role"),
            (7, "invalid_type", "created_at"),
        ),
    ),
    FileCase(
        "articles-wrong-types",
        ndjson({**SEED_ARTICLE, "id": "hx-art", "slug": "hx-art", "title": 5, "tags": "a,b", "status": True}),
        resource="articles",
        errors=((1, "invalid_type", "status"), (1, "invalid_type", "tags"), (1, "invalid_type", "title")),
    ),
    # ------------------------------ invalid UTF-8 and NUL bytes, in files with a BOM and CRLF line endings
    FileCase(
        "ndjson-bom-crlf-invalid-utf8-and-nul",
        b"\xef\xbb\xbf"
        + ndjson(
            user(10),
            b'{"id": "hx-104", "email": "\xff\xfe@hostile.example", "name": "N"}',
            b'{"id": "hx-105", "email": "hx-105@hostile.example", "name": "\xed\xa0\x80"}',  # an encoded surrogate
            b'{"id": "hx-106", "email": "hx-106@hostile.example", "name": "\\ud800"}',  # a lone surrogate escape
            {**user(107), "name": "a\x00b"},  # \u0000: valid JSON, but PostgreSQL text cannot hold it
            b'{"id": "hx-108", "email": "hx-108@hostile.example", "name": "a\x00b"}',  # a raw NUL in a string
            b'{"id": "hx-109",\x00 "email": "hx-109@hostile.example", "name": "N"}',  # a raw NUL between tokens
            user(11),
            end=b"\r\n",
        ),
        errors=(
            (2, "invalid_json", None),
            (3, "invalid_json", None),
            (4, "invalid_json", None),
            (5, "invalid_character", "name"),
            (6, "invalid_json", None),
            (7, "invalid_json", None),
        ),
        imported=stored(user(10), user(11)),
    ),
    FileCase(
        "csv-bom-crlf-bad-rows",  # the BOM must not stick to the first column's name: the ids are the file's
        b"\xef\xbb\xbfid,email,name\r\n"
        + csv_row(user(12))
        + b"\r\nhx-110,hx-110@hostile.example,\xc3\x28\r\n"  # invalid UTF-8
        + b"hx-111,hx-111@hostile.example,a\x00b\r\n"  # a NUL byte
        + b"hx-112,hx-112@hostile.example\r\n"  # a cell missing
        + b"hx-113,hx-113@hostile.example,N,extra\r\n"  # a cell too many
        + csv_row(user(13))
        + b'\r\nhx-114,hx-114@hostile.example,"quote left open\r\n'  # runs to the end: the row after is inside
        + csv_row(TAKEOVER)
        + b"\r\n",
        filename="hostile.csv",
        errors=(
            (3, "invalid_csv_row", None),
            (4, "invalid_character", "name"),
            (5, "invalid_csv_row", None),
            (6, "invalid_csv_row", None),
            (8, "invalid_csv_row", None),
        ),
        imported=stored(user(12), user(13)),
    ),
    FileCase(
        "json-array-bom-sniffed",  # no format named, no file name: the format is sniffed past the BOM
        b"\xef\xbb\xbf  [" + orjson.dumps(user(14)) + b"]\r\n",
        via="presigned",
        status="completed",
        imported=stored(user(14)),
    ),
    FileCase(
        "binary-sniffed",  # a zip header and NULs, like a spreadsheet: not text in any format
        b"PK\x03\x04" + b"\x00" * 4096,
        via="presigned",
        status="failed",
        failure="unknown_format",
    ),
    # -------------------------------------------------------------- records over MAX_RECORD_BYTES (1 MiB)
    FileCase(
        "ndjson-50mb-line",
        fifty_mb_ndjson_line,
        via="presigned",
        fmt="ndjson",
        errors=((2, "record_too_large", None),),
        imported=stored(user(70), user(71)),
    ),
    FileCase(
        "csv-50mb-quoted-cell-hiding-a-row",
        fifty_mb_csv_cell,
        via="presigned",
        errors=((3, "record_too_large", None),),
        imported=stored(user(72), user(74)),
    ),
    FileCase(
        "json-array-2mb-element",
        two_mb_json_element,
        filename="hostile.json",
        errors=((3, "record_too_large", None),),
        imported=stored(user(75), user(76)),
    ),
    # ---------------------------------------------------------------------------------- empty files
    FileCase("empty-file", b"", filename="hostile.csv", status="failed", failure="empty_file"),
    FileCase("whitespace-only", b"\xef\xbb\xbf \r\n\t\n\n", status="failed", failure="empty_file"),
    # ---------------------------------------------------------------------------------- CSV columns
    FileCase(
        "csv-missing-column",
        b"id,email\nhx-115,hx-115@hostile.example\n",
        filename="hostile.csv",
        errors=((2, "missing_field", "name"),),
    ),
    FileCase(
        "csv-extra-column-ignored",  # documented: unknown fields are ignored (and stored nowhere)
        b"id,email,name,password_hash\n" + csv_row(user(15)) + b",$2b$12$secret\n",
        filename="hostile.csv",
        status="completed",
        imported=stored(user(15)),
    ),
    FileCase(
        "csv-duplicated-header",  # which email would count? Neither: the file is refused
        b"id,email,name,email\nhx-116,hx-116@hostile.example,N,seed-admin@hostile.example\n",
        filename="hostile.csv",
        status="failed",
        failure="invalid_csv_header",
    ),
    # ------------------------------------------------------------------------------------------ gzip
    FileCase(
        "gzip-bomb-dropped",
        gzip_bomb,
        via="drop",
        filename="hostile.ndjson.gz",
        status="failed",
        failure="compression_ratio_too_high",
    ),
    # ------------------------------------ NUL (\u0000) in every field of every resource: one record's error
    # each, never the chunk's (text that is only reported carries it as \u0000), the valid records imported.
    FileCase(
        "users-nul-in-every-field",
        ndjson(
            {**user(130), "id": "hx-130" + NUL},
            {**user(131), "email": f"hx-131{NUL}@hostile.example"},
            {**user(132), "name": "N" + NUL},
            {**user(133), "role": "admin" + NUL},
            {**user(134), "active": NUL},  # a users file whose active is "\u0000" failed the whole job
            {**user(135), "created_at": "2024-05-01T12:00:00Z" + NUL},
            {**user(136), "updated_at": NUL},
            {**TAKEOVER, "name": NUL},
            {**user(137), "nickname": NUL},  # an unknown field: ignored, the record imports
            user(138),
        ),
        errors=(
            (1, "invalid_character", "id"),
            (2, "invalid_character", "email"),
            (3, "invalid_character", "name"),
            (4, "invalid_character", "role"),
            (5, "invalid_boolean", "active"),
            (6, "invalid_character", "created_at"),
            (7, "invalid_character", "updated_at"),
            (8, "invalid_character", "name"),
        ),
        imported=stored(user(137), user(138)),
    ),
    FileCase(
        "users-csv-nul-active",
        b"id,email,name,active\n" + csv_row(user(139)) + b",\x00\n" + csv_row(user(140)) + b",false\n",
        filename="hostile.csv",
        errors=((2, "invalid_boolean", "active"),),
        imported=stored({**user(140), "active": False}),
    ),
    FileCase(
        "articles-nul-in-every-field",
        ndjson(
            article(1, id="hx-art-1" + NUL),
            article(2, slug="hx-art-2" + NUL),
            article(3, title="T" + NUL),
            article(4, body="text" + NUL),
            article(5, author_id="seed-author" + NUL),
            article(6, tags=["ok", "a" + NUL]),
            article(7, tags=["x" * 60 + NUL]),  # an over-long tag: its message quotes it
            article(8, published_at="2024-05-01T12:00:00Z" + NUL),
            article(9, status="published" + NUL),
            article(10, created_at=NUL),
            article(11, updated_at="2024-05-01T12:00:00Z" + NUL),
            {**SEED_ARTICLE, "title": NUL},
            article(12),
        ),
        resource="articles",
        errors=(
            (1, "invalid_character", "id"),
            (2, "invalid_character", "slug"),
            (3, "invalid_character", "title"),
            (4, "invalid_character", "body"),
            (5, "invalid_character", "author_id"),
            (6, "invalid_character", "tags"),
            (7, "invalid_tags", "tags"),
            (8, "invalid_character", "published_at"),
            (9, "invalid_character", "status"),
            (10, "invalid_character", "created_at"),
            (11, "invalid_character", "updated_at"),
            (12, "invalid_character", "title"),
        ),
        imported=stored(article(12)),
    ),
    FileCase(
        "comments-nul-in-every-field",
        ndjson(
            comment(1, id="hx-cm-1" + NUL),
            comment(2, article_id="seed-article" + NUL),
            comment(3, user_id="seed-admin" + NUL),
            comment(4, body="Nice" + NUL),
            comment(5, created_at=NUL),
            comment(6, updated_at=NUL),
            {**SEED_COMMENT, "body": NUL},
            comment(7),
        ),
        resource="comments",
        errors=(
            (1, "invalid_character", "id"),
            (2, "invalid_character", "article_id"),
            (3, "invalid_character", "user_id"),
            (4, "invalid_character", "body"),
            (5, "invalid_character", "created_at"),
            (6, "invalid_character", "updated_at"),
            (7, "invalid_character", "body"),
        ),
        imported=stored(comment(7)),
    ),
    # ------------------------------------------------ a CSV record that the quotes keep open over 30 MiB
    FileCase(
        "csv-30mb-record-kept-open-by-cross-line-quotes",
        cross_line_csv_record,
        via="presigned",
        fmt="csv",
        errors=((3, "record_too_large", None),),
        imported=stored(user(120), user(122)),
    ),
    # Last: its memory stays counted in the processes' peaks, which the cases before it must not inherit.
    FileCase(
        "ndjson-30-records-of-1mb",
        records_just_under_the_limit,
        via="presigned",
        fmt="ndjson",
        status="completed",
        imported=stored(*(user(number) for number in range(80, 110))),
    ),
]


# ============================================================================================ fixtures


@pytest.fixture(scope="module")
def api(local_stack: RunningStack) -> Api:
    return Api(local_stack)


@pytest.fixture(scope="module")
def admin(local_stack: RunningStack) -> Api:
    """Dropped files have no caller: their jobs are the admins' to read."""
    return Api(local_stack, {"Authorization": f"Bearer {local_stack.token(['admin'], 'hostile-ops')}"})


@pytest.fixture(scope="module")
def seeded(api: Api) -> None:
    for resource, records in (("users", SEED_USERS), ("articles", [SEED_ARTICLE]), ("comments", [SEED_COMMENT])):
        reply = api.upload(resource, f"seed-{resource}.ndjson", ndjson(*records))
        assert reply.status == 202, reply.body
        assert api.wait(reply.json()["job_id"])["status"] == "completed"


# ================================================================================= database fingerprints


def fingerprint(database_url: str, leaving_out: Collection[str] = ()) -> dict[str, tuple[int, str]]:
    """Per table: row count and md5 of all rows in id order, without the rows whose ids are in `leaving_out`."""
    result = {}
    with closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), ''))"
                    " FROM {} t WHERE t.id <> ALL(%s::text[])"
                ).format(sql.Identifier(table)),
                (list(leaving_out),),
            )
            count, digest = cursor.fetchone()
            result[table] = (count, digest)
    return result


def stored_rows(database_url: str, resource: str, expected: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The rows with the expected ids, reduced to the columns the expectation names."""
    if not expected:
        return {}
    with closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE t.id = ANY(%s::text[])").format(sql.Identifier(resource)),
            (list(expected),),
        )
        rows = {row["id"]: row for (row,) in cursor.fetchall()}
    return {row_id: {name: rows[row_id].get(name) for name in expected[row_id]} for row_id in rows}


# ============================================================================== memory of the functions


def peak_memory_kib(stack: RunningStack) -> int:
    """Largest peak resident size (VmHWM) among this stack's chunker and writer processes. The processes stay
    warm from case to case, so a case that held a big record in memory raises it; a worker started meanwhile
    starts from the same baseline as the others and does not."""
    names = {stack.functions["ChunkerFunction"].encode(), stack.functions["WriterFunction"].encode()}
    endpoint = stack.aws_endpoint_url.encode()
    peaks = []
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            environ = dict(
                entry.split(b"=", 1) for entry in (process / "environ").read_bytes().split(b"\0") if b"=" in entry
            )
            status = (process / "status").read_text()
        except OSError:
            continue  # gone, or not ours
        if environ.get(b"AWS_ENDPOINT_URL") == endpoint and environ.get(b"AWS_LAMBDA_FUNCTION_NAME") in names:
            peaks += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    assert peaks, "no chunker or writer process of the local stack found"
    return max(peaks)


# ================================================================================================ imports


def start_import(case: FileCase, api: Api, admin: Api, stack: RunningStack) -> tuple[Api, str]:
    """Sends the case's file the case's way; returns the client that may read the job, and the job id."""
    content = case.make()
    if case.via == "multipart":
        reply = api.upload(case.resource, case.filename, content)
        assert reply.status == 202, reply.body
        return api, reply.json()["job_id"]
    if case.via == "presigned":
        reply = api.post_json({"resource": case.resource, **({"format": case.fmt} if case.fmt else {})})
        assert reply.status == 202, reply.body
        put = request("PUT", reply.json()["upload"]["url"], content, {"Content-Type": "application/octet-stream"})
        assert put.status == 200, put.body
        return api, reply.json()["job_id"]
    filename = f"{uuid.uuid4().hex[:8]}-{case.filename}"
    bucket = stack.buckets["ImportBucket"]
    stack.client("s3").put_object(Bucket=bucket, Key=f"drop/{case.resource}/{filename}", Body=content)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = admin.call("GET", "/imports?limit=20").json()["jobs"]
        found = [job["job_id"] for job in jobs if job["source"]["filename"] == filename]
        if found:
            return admin, found[0]
        time.sleep(0.2)
    raise AssertionError(f"no job for the dropped file {filename}")


def failure_code(job: dict[str, Any]) -> str | None:
    return (job.get("failure") or {}).get("code")


def reported_errors(reader: Api, job_id: str) -> list[tuple[int, str, str | None]]:
    report = reader.errors(job_id)
    assert report.status == 200, report.body
    return sorted(
        (error["line"], error["code"], error["field"]) for error in map(orjson.loads, report.body.splitlines())
    )


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("case", FILE_CASES, ids=lambda case: case.name)
def test_hostile_file_gets_its_documented_outcome_and_touches_nothing_else(
    case: FileCase, api: Api, admin: Api, local_stack: RunningStack, database_url: str
) -> None:
    before = fingerprint(database_url, case.imported)
    memory_before = peak_memory_kib(local_stack)

    reader, job_id = start_import(case, api, admin, local_stack)
    job = reader.wait(job_id, timeout=60)

    assert (job["status"], failure_code(job)) == (case.status, case.failure), job
    assert reported_errors(reader, job_id) == sorted(case.errors)
    assert job["counters"]["succeeded"] == len(case.imported)
    assert fingerprint(database_url, case.imported) == before, "rows other than the case's own changed"
    assert stored_rows(database_url, case.resource, case.imported) == case.imported
    growth = peak_memory_kib(local_stack) - memory_before
    assert growth < MEMORY_GROWTH_LIMIT_KIB, f"a function's peak memory grew by {growth} KiB"


# ====================================================================== renamed keys used again


def imported(api: Api, resource: str, *records: dict[str, Any]) -> dict[str, Any]:
    """Imports the records as one NDJSON file; the finished job, which must have accepted every record."""
    reply = api.upload(resource, f"{resource}.ndjson", ndjson(*records))
    assert reply.status == 202, reply.body
    job = api.wait(reply.json()["job_id"], timeout=60)
    assert (job["status"], job["counters"]["succeeded"]) == ("completed", len(records)), job
    return job


def rows_where(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    with closing(psycopg2.connect(database_url)) as connection, connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.fetchall()


@pytest.mark.usefixtures("seeded")
def test_a_renamed_key_used_again_makes_a_new_row_and_overwrites_nothing(api: Api, database_url: str) -> None:
    """A record without id resolves by natural key to the row that holds the key now; a new row's derived id
    that belongs to another row (the key's first holder, renamed since) gives way to a random one."""
    old_email, new_email = "hx-ren-a@hostile.example", "hx-ren-b@hostile.example"
    first_user, first_article = derived_id("users", old_email), derived_id("articles", "hx-renamed")
    same_file_email = "hx-ren-c@hostile.example"
    claimed = derived_id("users", same_file_email)
    case_ids = [first_user, first_article, claimed, "hx-ren-comment"]
    before = fingerprint(database_url, case_ids)

    imported(api, "users", {"email": old_email, "name": "A", "role": "admin"})
    imported(api, "users", {"id": first_user, "email": new_email, "name": "B"})  # the rename
    imported(api, "users", {"email": old_email.upper(), "name": "Other"})  # the old email, used again
    # In one file: a derived id that an explicit id of the same file claims.
    imported(
        api,
        "users",
        {"email": same_file_email, "name": "C"},
        {"id": claimed, "email": "hx-ren-d@hostile.example", "name": "D"},
    )
    imported(
        api,
        "articles",
        {"slug": "hx-renamed", "title": "First", "author_id": "seed-author", "published_at": "2024-05-01T12:00:00Z"},
    )
    imported(
        api,
        "comments",
        {"id": "hx-ren-comment", "article_id": first_article, "user_id": "seed-admin", "body": "On the first"},
    )
    imported(api, "articles", {"id": first_article, "slug": "hx-renamed-2"})  # the rename (the rest is kept)
    imported(api, "articles", {"slug": "hx-renamed", "title": "Second", "author_id": "seed-author"})

    users = rows_where(
        database_url, "SELECT id, email, name, role FROM users WHERE email LIKE 'hx-ren-%' OR email LIKE 'HX-REN-%'"
    )
    by_email = {email.lower(): (user_id, name, role) for user_id, email, name, role in users}
    assert by_email[new_email] == (first_user, "B", "admin")
    assert by_email[old_email][1:] == ("Other", "reader") and by_email[old_email][0] != first_user
    assert by_email["hx-ren-d@hostile.example"] == (claimed, "D", "reader")
    assert by_email[same_file_email][0] != claimed
    articles = dict(
        rows_where(database_url, "SELECT slug, (id, title, status) FROM articles WHERE slug LIKE 'hx-renamed%'")
    )
    assert articles["hx-renamed-2"] == f"({first_article},First,published)"
    assert not articles["hx-renamed"].startswith(f"({first_article},") and "Second" in articles["hx-renamed"]
    assert rows_where(
        database_url,
        "SELECT a.slug FROM comments c JOIN articles a ON a.id = c.article_id WHERE c.id = 'hx-ren-comment'",
    ) == [("hx-renamed-2",)]
    new_ids = [by_email[old_email][0], by_email[same_file_email][0]]
    new_ids += [row_id for (row_id,) in rows_where(database_url, "SELECT id FROM articles WHERE slug = 'hx-renamed'")]
    assert fingerprint(database_url, [*case_ids, *new_ids]) == before, "rows other than the case's own changed"


# ============================================================================================== SSRF


@dataclass
class Served:
    """A local HTTP server and the paths it was asked for."""

    base: str
    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    """/redirect?to=<url> answers 302 to that URL, /loop redirects to itself; anything else is a small CSV of
    one user, which would be imported (and caught by the fingerprint) if a refused server were ever read."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        parts = urlsplit(self.path)
        if parts.path in ("/redirect", "/loop"):
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0] if parts.path == "/redirect" else "/loop")
            self.end_headers()
            return
        body = b"id,email,name\nhx-ssrf,hx-ssrf@hostile.example,Fetched\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(host: str) -> Iterator[Served]:
    hits: list[str] = []
    handler = type("RecordingHandler", (_Handler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield Served(f"{host}:{server.server_address[1]}", hits)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def allowlisted() -> Iterator[Served]:
    """On 127.0.0.1, which the local stack lets URL imports reach (URL_ALLOWED_HOSTS in infra/local/env.json, so
    that its own tests can serve files): here it only redirects, to places that must stay out of reach."""
    yield from serve("127.0.0.1")


@pytest.fixture(scope="module")
def internal() -> Iterator[Served]:
    """On 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback interface): loopback as well, but not
    allowlisted. It stands for an internal service."""
    for served in serve("127.0.0.2"):
        # It answers: so a refusal below is the guard's doing, not a dead server's.
        with urllib.request.urlopen(f"http://{served.base}/probe", timeout=5) as response:
            assert response.status == 200
        served.hits.clear()
        yield served


def redirect(target: str) -> str:
    return "http://{allowlisted}/redirect?to=" + quote(target, safe=":/{}")


@dataclass(frozen=True)
class UrlCase:
    name: str
    url: str
    """May name {allowlisted} and {internal}: host:port of the two local servers."""
    status: int
    """400: the API refuses the URL itself; 202: it accepts the request and the chunker must refuse the URL."""
    code: str
    """The problem code (400) or the job's failure code (202)."""
    redirects: int = 0
    """Requests the allowlisted server answers (with a redirect) before the refusal."""


# Loopback itself: 127.0.0.1 and localhost are allowlisted on the local stack, so loopback is exercised here
# through the other loopback addresses (127.0.0.2, ::1, 0.0.0.0); 127.0.0.1 and localhost with the production
# setting (an empty allowlist) are covered through the service layer in tests/unit/test_loopback_url_imports.py.
URL_CASES = [
    UrlCase("file-scheme", "file:///etc/passwd", 400, "invalid_url"),
    UrlCase("gopher-scheme", "gopher://{internal}/_FLUSHALL", 400, "invalid_url"),
    UrlCase("ftp-scheme", "ftp://{internal}/users.csv", 400, "invalid_url"),
    UrlCase("credentials-in-url", "http://admin:secret@{internal}/users.csv", 400, "invalid_url"),
    UrlCase("scheme-relative", "//{internal}/users.csv", 400, "invalid_url"),
    UrlCase("metadata", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", 202, "url_not_allowed"),
    UrlCase("metadata-as-decimal", "http://2852039166/latest/meta-data/", 202, "url_not_allowed"),
    UrlCase("metadata-as-hex", "http://0xa9fea9fe/latest/meta-data/", 202, "url_not_allowed"),
    UrlCase("metadata-ipv4-mapped", "http://[::ffff:169.254.169.254]/latest/meta-data/", 202, "url_not_allowed"),
    UrlCase("metadata-ipv6", "http://[fd00:ec2::254]/latest/meta-data/", 202, "url_not_allowed"),
    UrlCase("private-10", "http://10.0.0.1/users.csv", 202, "url_not_allowed"),
    UrlCase("loopback-not-allowlisted", "http://{internal}/users.csv", 202, "url_not_allowed"),
    UrlCase("loopback-ipv6", "http://[::1]/users.csv", 202, "url_not_allowed"),
    UrlCase("unspecified-address", "http://0.0.0.0/users.csv", 202, "url_not_allowed"),
    UrlCase("redirect-to-metadata", redirect("http://169.254.169.254/latest/meta-data/"), 202, "url_not_allowed", 1),
    UrlCase("redirect-to-private", redirect("http://10.0.0.1/users.csv"), 202, "url_not_allowed", 1),
    UrlCase("redirect-to-file", redirect("file:///etc/passwd"), 202, "url_not_allowed", 1),
    UrlCase("redirect-to-loopback", redirect("http://{internal}/users.csv"), 202, "url_not_allowed", 1),
    UrlCase("redirect-loop", "http://{allowlisted}/loop", 202, "too_many_redirects", 4),  # MAX_URL_REDIRECTS=3
]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("case", URL_CASES, ids=lambda case: case.name)
def test_url_import_never_reaches_a_private_address(
    case: UrlCase, api: Api, allowlisted: Served, internal: Served, database_url: str
) -> None:
    before = fingerprint(database_url)
    allowlisted.hits.clear()
    url = case.url.format(allowlisted=allowlisted.base, internal=internal.base)

    reply = api.post_json({"resource": "users", "url": url})
    code = failure_code(api.wait(reply.json()["job_id"], timeout=30)) if reply.status == 202 else reply.json()["code"]
    assert (reply.status, code) == (case.status, case.code)
    assert internal.hits == [], "the internal server was reached"
    assert len(allowlisted.hits) == case.redirects
    assert fingerprint(database_url) == before


# ========================================================================== other hostile HTTP requests


@dataclass(frozen=True)
class RequestCase:
    name: str
    method: str
    path: str
    """Relative to /v1."""
    body: bytes | dict[str, Any] | None
    """A dict is sent as JSON."""
    expected: str | tuple[str, ...]
    """The problem code; for a streamed export (200), the ids of exactly the rows it must return."""
    status: int
    headers: dict[str, str] = field(default_factory=dict)


def streamed(name: str, params: Mapping[str, str | bytes], expected: str | tuple[str, ...]) -> RequestCase:
    """GET /v1/exports with these query parameters: 200 with the expected rows, or 400 with the expected code."""
    path = "/exports?" + urlencode(params, quote_via=quote)
    return RequestCase(name, "GET", path, None, expected, 200 if isinstance(expected, tuple) else 400)


def posted(
    name: str,
    path: str,
    body: bytes | dict[str, Any],
    code: str,
    status: int = 400,
    headers: dict[str, str] | None = None,
) -> RequestCase:
    """A POST with a JSON content type unless `headers` say otherwise."""
    return RequestCase(name, "POST", path, body, code, status, headers or {})


def fetched(name: str, path: str, code: str, status: int = 400) -> RequestCase:
    return RequestCase(name, "GET", path, None, code, status)


def forged_cursor() -> str:
    """Base64 JSON like the cursors the API hands out, but naming a key of its own."""
    return base64.urlsafe_b64encode(orjson.dumps({"pk": {"S": "job#x"}, "sk": {"S": "x"}})).decode()


NESTED_10000_DEEP = b"[" * 10_000 + b"]" * 10_000
USERS = {"resource": "users"}

REQUEST_CASES = [
    # ------------------------- streamed exports: filter values are bound parameters, names come from lists
    streamed("control-filters-work", {**USERS, "ids": "seed-admin,seed-author", "role": "admin"}, ("seed-admin",)),
    streamed("export-role-or-true", {**USERS, "role": "admin' OR '1'='1"}, ()),
    streamed("export-role-stacked-drop", {**USERS, "role": "admin'; DROP TABLE users; --"}, ()),
    streamed("export-ids-with-quote", {**USERS, "ids": "seed-admin,seed-author'--"}, ("seed-admin",)),
    streamed("export-author-or-true", {"resource": "articles", "author_id": "x' OR '1'='1"}, ()),
    streamed("export-tag-pg-sleep", {"resource": "articles", "tag": "x'||pg_sleep(10)||'"}, ()),
    streamed(
        "export-article-stacked-delete", {"resource": "comments", "article_id": "1); DELETE FROM comments; --"}, ()
    ),
    streamed("export-role-invalid-utf8", {**USERS, "role": b"\xff"}, ()),
    streamed("export-active-or-true", {**USERS, "active": "true OR 1=1"}, "invalid_filter_value"),
    streamed(
        "export-timestamp-or-true",
        {**USERS, "created_after": "2024-01-01T00:00:00Z' OR '1'='1"},
        "invalid_filter_value",
    ),
    streamed("export-role-nul", {**USERS, "role": "admin\x00"}, "invalid_filter_value"),
    streamed("export-fields-stacked-drop", {**USERS, "fields": "id;DROP TABLE users"}, "unknown_field"),
    streamed(
        "export-fields-subquery", {**USERS, "fields": "id,(SELECT string_agg(email, ',') FROM users)"}, "unknown_field"
    ),
    streamed("export-fields-star", {**USERS, "fields": "*"}, "unknown_field"),
    streamed("export-fields-system-column", {**USERS, "fields": "id,ctid"}, "unknown_field"),
    streamed("export-resource-stacked-drop", {"resource": "users; DROP TABLE users"}, "invalid_resource"),
    streamed("export-resource-system-table", {"resource": "pg_catalog.pg_authid"}, "invalid_resource"),
    streamed("export-format-injection", {**USERS, "format": "csv'); --"}, "invalid_format"),
    streamed("export-limit-stacked-delete", {**USERS, "limit": "1; DELETE FROM users"}, "invalid_limit"),
    streamed("export-limit-negative", {**USERS, "limit": "-1"}, "invalid_limit"),
    streamed("export-filter-name-injection", {**USERS, "role = role OR 1": "1"}, "unknown_filter"),
    streamed("export-nosql-operator", {**USERS, "role[$ne]": "x"}, "unknown_filter"),
    # ---------------------------------------------------------------------------- asynchronous exports
    posted(
        "export-job-filter-object", "/exports", {**USERS, "filters": {"role": {"$ne": None}}}, "invalid_filter_value"
    ),
    posted("export-job-filters-as-sql", "/exports", {**USERS, "filters": "role='admin' OR 1=1"}, "invalid_filters"),
    posted(
        "export-job-fields-injection", "/exports", {**USERS, "fields": ["id", "email FROM users; --"]}, "unknown_field"
    ),
    posted(
        "export-job-compression-shell", "/exports", {**USERS, "compression": "gzip; rm -rf /"}, "invalid_compression"
    ),
    # --------------------------------------------------------------------------------- import requests
    posted("import-body-not-json", "/imports", b'{"resource": "users",', "invalid_json_body"),
    posted("import-body-array", "/imports", b"[]", "invalid_json_body"),
    posted("import-body-invalid-utf8", "/imports", b'{"resource": "\xff"}', "invalid_json_body"),
    posted(
        "import-body-nested-10000-deep", "/imports", b'{"resource": ' + NESTED_10000_DEEP + b"}", "invalid_json_body"
    ),
    posted("import-resource-injection", "/imports", {"resource": "users; DROP TABLE users"}, "invalid_resource"),
    posted("import-resource-not-a-string", "/imports", {"resource": ["users"]}, "invalid_resource"),
    posted("import-format-injection", "/imports", {**USERS, "format": "csv' --"}, "invalid_format"),
    posted("import-format-not-a-string", "/imports", {**USERS, "format": 42}, "invalid_format"),
    posted("import-prototype-pollution", "/imports", {**USERS, "__proto__": {"admin": True}}, "unknown_field"),
    posted(
        "import-xml-external-entity",
        "/imports",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>',
        "unsupported_media_type",
        415,
        {"Content-Type": "application/xml"},
    ),
    posted(
        "import-multipart-no-boundary",
        "/imports",
        b"--x\r\n\r\n",
        "invalid_multipart",
        headers={"Content-Type": "multipart/form-data"},
    ),
    posted(
        "import-idempotency-key-long",
        "/imports",
        USERS,
        "invalid_idempotency_key",
        headers={"Idempotency-Key": "k" * 300},
    ),
    fetched("job-id-injection", "/imports/" + quote("' OR '1'='1", safe=""), "job_not_found", 404),
    fetched("job-list-limit-injection", "/imports?limit=" + quote("1; DROP TABLE users"), "invalid_limit"),
    fetched("job-list-cursor-garbage", "/imports?cursor=!!!", "invalid_cursor"),
    fetched("job-list-cursor-forged", "/imports?cursor=" + forged_cursor(), "invalid_cursor"),
    fetched("job-errors-format-injection", f"/imports/{uuid.uuid4()}/errors?format=xml", "invalid_format"),
]


def outcome(reply: Reply) -> tuple[int, str | tuple[str, ...]]:
    """(status, problem code), or (200, ids of the exported rows)."""
    if reply.status == 200:
        return 200, tuple(orjson.loads(line)["id"] for line in reply.body.splitlines())
    assert reply.headers["content-type"] == "application/problem+json", reply.body
    return reply.status, reply.json()["code"]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda case: case.name)
def test_hostile_request_gets_its_problem_and_changes_nothing(case: RequestCase, api: Api, database_url: str) -> None:
    before = fingerprint(database_url)
    body = orjson.dumps(case.body) if isinstance(case.body, dict) else case.body
    headers = {"Content-Type": "application/json", **case.headers} if body is not None else case.headers
    reply = api.call(case.method, case.path, body, headers)
    assert outcome(reply) == (case.status, case.expected)
    assert fingerprint(database_url) == before


@pytest.mark.usefixtures("seeded")
def test_export_job_with_sql_in_a_filter_exports_no_row_and_changes_nothing(api: Api, database_url: str) -> None:
    before = fingerprint(database_url)
    request_body = {"resource": "users", "filters": {"role": "admin' OR '1'='1"}, "fields": ["id"]}
    reply = api.call("POST", "/exports", orjson.dumps(request_body), {"Content-Type": "application/json"})
    assert reply.status == 202, reply.body
    deadline = time.monotonic() + 60
    job = api.call("GET", f"/exports/{reply.json()['job_id']}").json()
    while job["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = api.call("GET", f"/exports/{reply.json()['job_id']}").json()
    assert (job["status"], job["counters"]["rows"]) == ("completed", 0), job
    assert fingerprint(database_url) == before
