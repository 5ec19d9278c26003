"""multipart/form-data parsing: text fields, the one file part (hashed, spooled), and malformed bodies."""

from __future__ import annotations

import hashlib
import tempfile
from typing import Any

import pytest
from bulkio.problems import Problem
from bulkio.web.multipart import SPOOL_IN_MEMORY_BYTES, parse_form

BOUNDARY = "----bulkio-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CSV = b"email,name\r\nann@example.com,Ann\r\nbob@example.com,Bob\r\n"


def field_part(name: str, value: str) -> bytes:
    return f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file_part(content: bytes, filename: str | None = "users.csv", name: str = "file") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: text/csv\r\n\r\n"
    return head.encode() + content + b"\r\n"


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def test_fields_and_file_are_parsed() -> None:
    body = field_part("resource", "users") + field_part("format", " csv ") + file_part(CSV) + closing()

    form = parse_form(body, CONTENT_TYPE)

    assert form.fields == {"resource": "users", "format": "csv"}
    assert form.file is not None
    assert form.file.filename == "users.csv"
    assert form.file.size == len(CSV)
    assert form.file.sha256 == hashlib.sha256(CSV).hexdigest()
    assert form.file.stream.read() == CSV


def test_a_file_part_without_filename_has_none() -> None:
    form = parse_form(file_part(CSV, filename=None) + closing(), CONTENT_TYPE)

    assert form.file is not None
    assert form.file.filename is None
    assert form.file.stream.read() == CSV


def test_a_body_without_file_part_has_no_file() -> None:
    form = parse_form(field_part("resource", "users") + closing(), CONTENT_TYPE)

    assert form.file is None
    assert form.fields == {"resource": "users"}


def test_the_file_content_keeps_its_crlf_and_binary_bytes() -> None:
    content = b"\x1f\x8b\x08\x00binary\r\n\r\n--not-a-boundary\r\n\x00\xff"

    form = parse_form(file_part(content, "users.csv.gz") + closing(), CONTENT_TYPE)

    assert form.file is not None
    assert form.file.stream.read() == content
    assert form.file.sha256 == hashlib.sha256(content).hexdigest()


def test_a_small_file_stays_in_memory_and_a_large_one_is_spooled_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    files_on_disk: list[Any] = []
    real_temporary_file = tempfile.TemporaryFile

    def recording_temporary_file(*args: Any, **kwargs: Any) -> Any:
        opened = real_temporary_file(*args, **kwargs)
        files_on_disk.append(opened)
        return opened

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)
    parse_form(file_part(CSV) + closing(), CONTENT_TYPE)
    assert files_on_disk == []

    large = (b"user@example.com,A Name\n" * (SPOOL_IN_MEMORY_BYTES // 24 + 1000))[: SPOOL_IN_MEMORY_BYTES + 4096]
    form = parse_form(file_part(large) + closing(), CONTENT_TYPE)

    assert len(files_on_disk) == 1
    assert form.file is not None
    assert form.file.size == len(large)
    assert form.file.sha256 == hashlib.sha256(large).hexdigest()
    assert form.file.stream.read() == large


def problem_of(body: bytes, content_type: str = CONTENT_TYPE) -> Problem:
    with pytest.raises(Problem) as raised:
        parse_form(body, content_type)
    return raised.value


def test_a_content_type_without_boundary_is_invalid_multipart() -> None:
    problem = problem_of(file_part(CSV) + closing(), "multipart/form-data")

    assert (problem.status, problem.code) == (400, "invalid_multipart")
    assert "boundary" in problem.detail


@pytest.mark.parametrize(
    "body",
    [
        b"this is not multipart at all",
        b'--wrong-boundary\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--wrong-boundary--\r\n',
    ],
)
def test_a_malformed_body_is_invalid_multipart(body: bytes) -> None:
    problem = problem_of(body)

    assert (problem.status, problem.code) == (400, "invalid_multipart")


def test_a_body_cut_before_its_closing_boundary_is_invalid_multipart() -> None:
    """A truncated upload must not be imported as if it were the whole file."""
    body = field_part("resource", "users") + file_part(CSV) + closing()

    problem = problem_of(body[: -len(closing()) - 10])

    assert (problem.status, problem.code) == (400, "invalid_multipart")


def test_two_file_parts_are_refused() -> None:
    problem = problem_of(file_part(CSV) + file_part(CSV, "other.csv") + closing())

    assert (problem.status, problem.code) == (400, "invalid_multipart")
    assert "exactly one" in problem.detail


def test_an_oversized_text_field_is_refused() -> None:
    problem = problem_of(field_part("resource", "u" * (64 * 1024 + 1)) + closing())

    assert (problem.status, problem.code) == (400, "invalid_multipart")
    assert "resource" in problem.detail
