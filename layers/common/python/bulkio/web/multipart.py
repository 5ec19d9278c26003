"""Streaming multipart/form-data parsing: text fields in memory, the file part spooled (bounded memory)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from bulkio.problems import bad_request

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024


@dataclass(slots=True)
class UploadedFile:
    filename: str | None
    stream: BinaryIO
    size: int
    sha256: str


@dataclass(slots=True)
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: UploadedFile | None = None


def boundary_of(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_request("invalid_multipart", "multipart/form-data needs a boundary parameter in Content-Type")
    return boundary


def parse_form(body: bytes, content_type: str, file_field: str = "file") -> Form:
    form = Form()
    state: dict[str, object] = {}
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    spool: tempfile.SpooledTemporaryFile[bytes] | None = None
    digest = hashlib.sha256()
    size = 0
    uploaded_filename: str | None = None
    text = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        text.clear()
        state.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal spool, uploaded_filename
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        state["name"] = name
        if name == file_field:
            if spool is not None:
                raise bad_request("invalid_multipart", "send exactly one 'file' part")
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115 - closed by its reader
            uploaded_filename = filename.decode("utf-8", "replace") if filename else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal size
        chunk = data[start:end]
        if state.get("name") == file_field and spool is not None:
            spool.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        else:
            text.extend(chunk)
            if len(text) > MAX_FIELD_BYTES:
                raise bad_request("invalid_multipart", f"form field {state.get('name')!r} is too long")

    def on_end() -> None:
        state["complete"] = True

    def on_part_end() -> None:
        name = str(state.get("name", ""))
        if name != file_field and name:
            form.fields[name] = text.decode("utf-8", "replace").strip()

    parser = MultipartParser(
        boundary_of(content_type),
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
        if not state.get("complete"):
            raise bad_request("invalid_multipart", "the body ends before its closing boundary: send the whole file")
    except Exception as error:
        if spool is not None:
            spool.close()
        if hasattr(error, "status"):
            raise
        raise bad_request("invalid_multipart", f"the multipart body could not be parsed: {error}") from error
    if spool is not None:
        spool.seek(0)
        form.file = UploadedFile(uploaded_filename, spool, size, digest.hexdigest())  # type: ignore[arg-type]
    return form
