"""Worker processes that run function code, one invocation at a time each, kept warm between invocations."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from infra.local import denied_ports
from infra.local.auth import local_auth_parameters
from infra.local.template import load_template
from infra.local.template_model import REGION, Function, StackTemplate

RUNTIME_SCRIPT = Path(__file__).with_name("lambda_runtime.py")
_FRAME_PREFIX = struct.Struct(">II")
# Variables a worker inherits from the host; everything else comes from the template, like on Lambda.
# Read by bulkio/faults.py in the functions: where fault drills arm crash points (the host does not import the layer).
FAULTS_DIR_VARIABLE = "BULKIO_FAULTS_DIR"
_INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "TZ")


@dataclass(frozen=True)
class HostSettings:
    template_path: Path
    state_dir: Path
    aws_port: int = 4566
    env_file: Path | None = None
    database_url: str | None = None
    stack_name: str = "bulkio-local"

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def _env_file_sections(settings: HostSettings) -> dict[str, dict[str, Any]]:
    if settings.env_file is None or not settings.env_file.exists():
        return {}
    return json.loads(settings.env_file.read_text())


def load_stack(settings: HostSettings) -> StackTemplate:
    """The template as the host runs it: the local token settings (infra/local/auth.py), env.json "Parameters",
    DATABASE_URL and PUSHGATEWAY_URL override parameters."""
    overrides: dict[str, Any] = {
        **local_auth_parameters(settings.state_dir),
        **_env_file_sections(settings).get("Parameters", {}),
    }
    if settings.database_url:
        overrides["DatabaseUrl"] = settings.database_url
    if pushgateway_url := os.environ.get("PUSHGATEWAY_URL"):
        overrides["PushgatewayUrl"] = pushgateway_url
    return load_template(
        settings.template_path,
        parameter_overrides=overrides,
        stack_name=settings.stack_name,
        aws_endpoint=settings.aws_endpoint,
    )


def function_environment(function: Function, settings: HostSettings) -> dict[str, str]:
    """Environment of a worker: resolved template variables, env.json overrides, Lambda's own variables."""
    sections = _env_file_sections(settings)
    variables = dict(function.environment)
    for section_name in (function.logical_id, function.name):
        # As `sam local --env-vars`: only variables the template declares can be overridden.
        for name, value in sections.get(section_name, {}).items():
            if name in variables:
                variables[name] = str(value)
    inherited = {name: os.environ[name] for name in _INHERITED_VARIABLES if name in os.environ}
    plain_layers = [str(layer.folder) for layer in function.layers if not layer.is_site_dir]
    site_layers = [str(layer.folder) for layer in function.layers if layer.is_site_dir]
    return {
        **inherited,
        **variables,
        "AWS_ENDPOINT_URL": settings.aws_endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[$LATEST]{uuid.uuid4().hex}",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        "_HANDLER": function.handler,
        "PYTHONPATH": os.pathsep.join([str(function.code_dir), *plain_layers]),
        "LOCAL_RUNTIME_SITE_DIRS": os.pathsep.join(site_layers),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Where fault drills arm their crash points (bulkio/faults.py); nothing there, nothing happens.
        FAULTS_DIR_VARIABLE: str(settings.state_dir / "faults"),
        # The stack's own ports: URL imports may never reach them, even on an allowlisted loopback address.
        denied_ports.VARIABLE: denied_ports.denied_ports_value(settings.aws_port, settings.database_url),
    }


class ReceiverGone(Exception):
    """Raised by a StreamSink whose receiver went away (an HTTP client that disconnected)."""


class StreamSink(Protocol):
    """Receives a streamed response as it is produced; raises ReceiverGone when it no longer can."""

    def start(self, metadata: dict[str, Any]) -> None: ...

    def write(self, data: bytes) -> None: ...


@dataclass
class BufferingSink:
    metadata: dict[str, Any] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    def start(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def write(self, data: bytes) -> None:
        self.chunks.append(data)


@dataclass
class Outcome:
    """How an invocation ended. `payload` is the response JSON, or the error JSON when `failed`."""

    failed: bool
    payload: bytes
    streamed: bool = False
    receiver_gone: bool = False  # the stream was cut short because its sink's receiver went away

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


def _error(error_type: str, message: str) -> Outcome:
    body = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
    return Outcome(failed=True, payload=json.dumps(body).encode())


class LogSink:
    """Writes a function's worker output to the console (prefixed) and to <state>/logs/<function>.log."""

    def __init__(self, function_name: str, logs_dir: Path, console: TextIO | None = None):
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"[{function_name}] "
        self.console = console or sys.stdout
        self._file = (logs_dir / f"{function_name}.log").open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()
            print(self.prefix + text, file=self.console, flush=True)

    def close(self) -> None:
        with self._lock:
            self._file.close()


class WorkerGone(Exception):
    """The worker process ended or timed out; it cannot be reused."""


PIPE_BYTES = 1024 * 1024


def widen_pipe(descriptor: int) -> None:
    """A worker's response pipe holds a whole streamed chunk (512 KiB) instead of Linux's default 64 KiB: one
    write and one read per chunk, not eight of each with a switch between the processes for every one."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or above fs.pipe-max-size: default size
        fcntl.fcntl(descriptor, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class Worker:
    def __init__(self, function: Function, environment: dict[str, str], log: LogSink):
        self.function = function
        self.log = log
        host_to_worker_read, self._requests = os.pipe()
        self._responses, worker_to_host_write = os.pipe()
        widen_pipe(self._responses)
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-P", str(RUNTIME_SCRIPT)],
            cwd=function.code_dir,
            env={**environment, "LOCAL_RUNTIME_FDS": f"{host_to_worker_read},{worker_to_host_write}"},
            pass_fds=(host_to_worker_read, worker_to_host_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(host_to_worker_read)
        os.close(worker_to_host_write)
        self._buffer = bytearray()
        self._readers = [
            threading.Thread(target=self._forward_output, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()
        self.ready = False

    def _forward_output(self, stream: Any) -> None:
        for raw_line in iter(stream.readline, b""):
            self.log.line(raw_line.decode("utf-8", errors="replace"))

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            readable, _, _ = select.select([self._responses], [], [], remaining)
            if not readable:
                raise TimeoutError
            data = os.read(self._responses, max(65536, size - len(self._buffer)))
            if not data:
                raise WorkerGone("worker exited")
            self._buffer += data  # a bytearray grows in place: a streamed chunk is not copied once per read
        taken = bytes(memoryview(self._buffer)[:size])
        del self._buffer[:size]
        return taken

    def _read_frame(self, deadline: float) -> tuple[dict[str, Any], bytes]:
        header_length, payload_length = _FRAME_PREFIX.unpack(self._read_exactly(_FRAME_PREFIX.size, deadline))
        header = json.loads(self._read_exactly(header_length, deadline))
        return header, self._read_exactly(payload_length, deadline)

    def _send(self, header: dict[str, Any], payload: bytes) -> None:
        encoded = json.dumps(header).encode()
        message = _FRAME_PREFIX.pack(len(encoded), len(payload)) + encoded + payload
        unsent = memoryview(message)
        try:
            while unsent:
                unsent = unsent[os.write(self._requests, unsent) :]
        except BrokenPipeError as error:
            raise WorkerGone("worker exited") from error

    def wait_ready(self, deadline: float) -> Outcome | None:
        """Wait for the cold start to finish; an Outcome means the handler could not be imported."""
        header, payload = self._read_frame(deadline)
        if header["type"] == "init_error":
            return Outcome(failed=True, payload=payload)
        self.ready = True
        return None

    def invoke(self, event: bytes, request_id: str, deadline: float, sink: StreamSink | None) -> Outcome:
        deadline_ms = int((time.time() + deadline - time.monotonic()) * 1000)
        self._send(
            {
                "type": "invoke",
                "request_id": request_id,
                "deadline_ms": deadline_ms,
                "invoked_function_arn": self.function.arn,
            },
            event,
        )
        sink = sink or BufferingSink()
        streamed = receiver_gone = False
        while True:
            header, payload = self._read_frame(deadline)
            kind = header["type"]
            if kind == "result":
                return Outcome(failed=False, payload=payload)
            if kind == "error":
                return Outcome(failed=True, payload=payload, streamed=streamed, receiver_gone=receiver_gone)
            if kind == "stream_end":
                body = b"".join(sink.chunks) if isinstance(sink, BufferingSink) else b""
                return Outcome(failed=False, payload=body, streamed=True, receiver_gone=receiver_gone)
            if kind == "stream_start":
                streamed = True
            if receiver_gone:
                continue  # chunks the worker sent before it saw the cancel
            try:
                if kind == "stream_start":
                    sink.start(json.loads(payload))
                elif kind == "chunk":
                    sink.write(payload)
            except ReceiverGone:
                # Closing the body lets the handler clean up (cancel a query) and keeps the worker warm.
                receiver_gone = True
                self._send({"type": "cancel"}, b"")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for fd in (self._requests, self._responses):
            with contextlib.suppress(OSError):  # already closed by an earlier stop
                os.close(fd)
        for reader in self._readers:
            reader.join(timeout=2)


class WorkerPool:
    """Warm workers of one function; a new worker (a cold start) only when all are busy."""

    def __init__(self, function: Function, environment: dict[str, str], log: LogSink):
        self.function = function
        self.environment = environment
        self.log = log
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def invoke(self, event: bytes, sink: StreamSink | None = None, request_id: str | None = None) -> Outcome:
        request_id = request_id or str(uuid.uuid4())
        started = time.monotonic()
        deadline = started + self.function.timeout
        worker = self._acquire()
        self.log.line(f"START RequestId: {request_id} Version: $LATEST")
        reusable = False
        try:
            if not worker.ready:
                init_failure = worker.wait_ready(deadline)
                if init_failure is not None:
                    return init_failure
            outcome = worker.invoke(event, request_id, deadline, sink)
            reusable = True
            return outcome
        except TimeoutError:
            self.log.line(f"{request_id} Task timed out after {self.function.timeout:.2f} seconds")
            return _error("Sandbox.Timedout", f"Task timed out after {self.function.timeout:.2f} seconds")
        except WorkerGone:
            return _error("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited")
        finally:
            duration_ms = (time.monotonic() - started) * 1000
            self.log.line(f"END RequestId: {request_id}")
            self.log.line(f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms")
            self._release(worker, reusable)

    def _acquire(self) -> Worker:
        with self._lock:
            if self._closed:
                raise WorkerGone("host is stopping")
            if self._idle:
                return self._idle.pop()
            worker = Worker(self.function, self.environment, self.log)
            self._all.add(worker)
            return worker

    def _release(self, worker: Worker, reusable: bool) -> None:
        with self._lock:
            if reusable and not self._closed:
                self._idle.append(worker)
                return
            self._all.discard(worker)
        worker.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            worker.stop()


@dataclass
class Functions:
    """All worker pools of a stack, found by logical id, name or ARN."""

    stack: StackTemplate
    settings: HostSettings
    console: TextIO | None = None
    _pools: dict[str, WorkerPool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for function in self.stack.functions.values():
            log = LogSink(function.name, self.settings.logs_dir, self.console)
            self._pools[function.logical_id] = WorkerPool(function, function_environment(function, self.settings), log)

    def pool(self, name_or_arn: str) -> WorkerPool:
        return self._pools[self.stack.function(name_or_arn).logical_id]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            pool.log.close()


def invoke_with_retries(
    invoke: Callable[[], Outcome], attempts: int, delay_seconds: float, stopping: threading.Event
) -> Outcome:
    """Lambda's asynchronous invocation: a failed event is tried again, `attempts` times in all."""
    outcome = invoke()
    for _ in range(attempts - 1):
        if not outcome.failed or stopping.wait(delay_seconds):
            break
        outcome = invoke()
    return outcome
