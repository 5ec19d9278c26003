"""Worker process of the local functions host: the counterpart of the Lambda Python runtime.

Started as `python -S -P lambda_runtime.py` with cwd = the function's code folder. Standard library only,
because the import path is exactly what the function would see on Lambda (code folder + layers).

Protocol on two dedicated pipes (LOCAL_RUNTIME_FDS="<read fd>,<write fd>"), never stdout/stderr, so whatever
the function prints cannot corrupt it. Each frame is `>II` (header length, payload length), a JSON header
with a "type", then a raw payload:
  host -> worker  invoke        header {request_id, deadline_ms, invoked_function_arn}, payload = event JSON
                  cancel        the receiver of the streamed response went away: the worker closes the body
                                (a generator's `finally:` blocks run) and ends the stream at once
  worker -> host  ready         after the handler module imported (the cold start)
                  init_error    payload = error JSON; the worker exits
                  result        payload = response JSON
                  error         payload = {"errorMessage", "errorType", "stackTrace"}
                  stream_start  payload = response metadata JSON (statusCode, headers) of a streamed response
                  chunk         payload = raw body bytes
                  stream_end    the streamed body is complete
A handler streams by returning a generator/iterator of bytes or str, or a dict whose "body" is one.
The worker looks for a cancel after each chunk it sends, so a handler blocked before its next chunk only
learns of it once that chunk is produced (as on Lambda, where a write to a closed stream is what fails).

LambdaContext is also the context the unit tests hand to handlers they call in-process (tests/functions.py).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
import site
import struct
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

_FRAME_PREFIX = struct.Struct(">II")


def write_frame(stream: BinaryIO, message_type: str, payload: bytes = b"", **header: Any) -> None:
    encoded_header = json.dumps({"type": message_type, **header}).encode()
    stream.write(_FRAME_PREFIX.pack(len(encoded_header), len(payload)) + encoded_header)
    stream.write(payload)  # not joined to the header: a streamed chunk is not copied once more
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            return None
        data += piece
    return data


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """The next frame from an unbuffered stream (so that select() on it tells whether a frame waits)."""
    prefix = _read_exactly(stream, _FRAME_PREFIX.size)
    if prefix is None:
        return None
    header_length, payload_length = _FRAME_PREFIX.unpack(prefix)
    header = _read_exactly(stream, header_length)
    payload = _read_exactly(stream, payload_length)
    if header is None or payload is None:
        return None
    return json.loads(header), payload


def cancel_requested(requests: BinaryIO) -> bool:
    """Whether the host asked to stop the stream (or went away itself); never waits."""
    readable, _, _ = select.select([requests], [], [], 0)
    if not readable:
        return False
    frame = read_frame(requests)
    return frame is None or frame[0]["type"] == "cancel"


# Lambda's longest timeout: what a handler called in-process by a test has ahead of it.
_LONGEST_TIMEOUT_MS = 900_000


def _in_longest_timeout() -> int:
    return int(time.time() * 1000) + _LONGEST_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class LambdaContext:
    """The attributes and method of the AWS Lambda Python context object that functions and Powertools use.

    The worker builds one per invocation (for_invocation); unit tests that call a handler in-process use the
    defaults."""

    function_name: str = "function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:function"
    aws_request_id: str = "request-1"
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: None = None
    client_context: None = None
    deadline_ms: int = field(default_factory=_in_longest_timeout)

    @classmethod
    def for_invocation(cls, request_id: str, deadline_ms: int, invoked_function_arn: str) -> LambdaContext:
        """The context of one invocation in this worker, whose environment the functions host set as Lambda's."""
        return cls(
            function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            memory_limit_in_mb=int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")),
            invoked_function_arn=invoked_function_arn,
            aws_request_id=request_id,
            log_group_name=os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
            log_stream_name=os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
            deadline_ms=deadline_ms,
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def error_payload(error: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "stackTrace": traceback.format_tb(error.__traceback__),
        }
    ).encode()


def _is_stream(value: Any) -> bool:
    plain_values = str | bytes | bytearray | dict | list
    return isinstance(value, Iterator | Iterable) and not isinstance(value, plain_values)


def _send_result(channel: BinaryIO, requests: BinaryIO, result: Any) -> None:
    if _is_stream(result):
        _send_stream(channel, requests, {}, result)
    elif isinstance(result, dict) and _is_stream(result.get("body")):
        metadata = {key: value for key, value in result.items() if key != "body"}
        _send_stream(channel, requests, metadata, result["body"])
    else:
        write_frame(channel, "result", json.dumps(result).encode())


def _send_stream(channel: BinaryIO, requests: BinaryIO, metadata: dict[str, Any], body: Iterable[bytes | str]) -> None:
    write_frame(channel, "stream_start", json.dumps(metadata).encode())
    pieces = iter(body)
    for piece in pieces:
        data = piece.encode() if isinstance(piece, str) else bytes(piece)
        if data:
            write_frame(channel, "chunk", data)
        if cancel_requested(requests):
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            break
    write_frame(channel, "stream_end")


def _configure_logging() -> None:
    # The Lambda runtime installs a root handler on stderr; powertools and plain `logging` rely on it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s]\t%(asctime)s\t%(message)s"))
    logging.getLogger().addHandler(handler)
    # As on Lambda, the root logger passes WARNING and above unless AWS_LAMBDA_LOG_LEVEL says otherwise.
    logging.getLogger().setLevel(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "WARNING"))


# API Gateway's contract for a Lambda authorizer: it refuses a token by raising exactly this.
AUTHORIZER_REFUSAL = "Unauthorized"


def _is_authorizer_refusal(error: Exception) -> bool:
    return type(error) is Exception and str(error) == AUTHORIZER_REFUSAL


def main() -> int:
    # Ctrl-C reaches the whole process group: the host stops its workers itself (it kills them as it shuts down),
    # so a worker ignores it rather than print a KeyboardInterrupt traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Layers built from requirements are site directories: .pth files in them must be honoured.
    for site_dir in filter(None, os.environ.get("LOCAL_RUNTIME_SITE_DIRS", "").split(os.pathsep)):
        site.addsitedir(site_dir)
    read_fd, write_fd = (int(fd) for fd in os.environ["LOCAL_RUNTIME_FDS"].split(","))
    requests = os.fdopen(read_fd, "rb", buffering=0)
    channel = os.fdopen(write_fd, "wb")
    _configure_logging()
    module_name, _, handler_name = os.environ["_HANDLER"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), handler_name)
    except Exception as error:
        traceback.print_exc()
        write_frame(channel, "init_error", error_payload(error))
        return 1
    write_frame(channel, "ready")
    while (frame := read_frame(requests)) is not None:
        header, payload = frame
        if header["type"] == "cancel":
            continue  # it crossed the end of the stream it was meant for
        context = LambdaContext.for_invocation(
            header["request_id"], header["deadline_ms"], header["invoked_function_arn"]
        )
        try:
            _send_result(channel, requests, handler(json.loads(payload), context))
        except Exception as error:
            if _is_authorizer_refusal(error):
                # An expected answer, not a failure: one line instead of a traceback per rejected token.
                print("token refused: the authorizer answered Unauthorized (401)", file=sys.stderr)
            else:
                traceback.print_exc()
            write_frame(channel, "error", error_payload(error))
        sys.stdout.flush()
        sys.stderr.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
