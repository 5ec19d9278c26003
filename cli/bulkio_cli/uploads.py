"""Uploading a file to its import: one presigned PUT, or for a big file a resumable upload in parts. A resumable
upload is remembered (the file's path, size and modification time, and the job) until it completes, so that
`bulkio import` run again on the same file resumes it: only the parts S3 does not hold yet are sent."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from bulkio_cli.client import Api, ApiError
from bulkio_cli.progress import Bar

RESUMABLE_ABOVE_BYTES = 100 * 1024**2
READ_BYTES = 1024 * 1024


class _Piece(io.RawIOBase):
    """`size` bytes of a file from `offset`, read in blocks as the request sends them, advancing the bar."""

    def __init__(self, path: Path, offset: int, size: int, bar: Bar) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._file.seek(offset)
        self._left = size
        self._bar = bar

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left, READ_BYTES)
        data = self._file.read(wanted)
        self._left -= len(data)
        self._bar.advance(len(data))
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


def put(api: Api, url: str, path: Path, offset: int, size: int, bar: Bar) -> None:
    """PUTs a piece of the file to a presigned URL, streamed from disk."""
    with _Piece(path, offset, size, bar) as piece:
        body: Any = piece
        # A binary type: urllib would send a form's, and an S3 endpoint may then read the body as a form.
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        with api.open("PUT", url, body, headers) as response:
            response.read()


def upload_parts(api: Api, job_id: str, upload: dict[str, Any], path: Path, bar: Bar) -> None:
    """Sends the parts S3 does not hold yet, then completes the upload (the job starts)."""
    done = {part["part_number"] for part in upload.get("uploaded", [])}
    bar.advance(sum(part["size"] for part in upload.get("uploaded", [])))
    for part in upload["parts"]:
        if part["part_number"] not in done:
            put(api, part["url"], path, part["offset"], part["size"], bar)
    api.call("POST", f"/imports/{job_id}/upload/complete")


# ------------------------------------------------------------------------------------------- resumable state
def state_file() -> Path:
    folder = Path(os.environ.get("BULKIO_STATE_DIR") or Path.home() / ".cache" / "bulkio")
    return folder / "uploads.json"


def upload_key(api: Api, resource: str, path: Path) -> str:
    stat = path.stat()
    return json.dumps([api.base, resource, str(path.resolve()), stat.st_size, stat.st_mtime_ns])


def _read_state() -> dict[str, str]:
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(state: dict[str, str]) -> None:
    target = state_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps(state, indent=1))
    scratch.replace(target)


def remember(key: str, job_id: str) -> None:
    _write_state({**_read_state(), key: job_id})


def forget(key: str) -> None:
    state = _read_state()
    if state.pop(key, None) is not None:
        _write_state(state)


def resumable_job(api: Api, key: str) -> tuple[str, dict[str, Any]] | None:
    """The unfinished upload of this very file, if one was started: its job and its parts (fresh URLs)."""
    job_id = _read_state().get(key)
    if job_id is None:
        return None
    try:
        status = api.call("GET", f"/imports/{job_id}/upload")
    except ApiError:  # completed, ended, expired or gone: start again
        forget(key)
        return None
    return job_id, status["upload"]
