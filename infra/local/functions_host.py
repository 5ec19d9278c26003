"""Local functions host: runs the template's functions for their Api, S3, SQS and Schedule events, their
function URLs and the Invoke API.

`python -m infra.local.functions_host` (the supervisor starts it). Configuration from the environment:
LOCAL_TEMPLATE (template.yaml), LOCAL_STATE_DIR (.state), LOCAL_ENV_FILE (infra/local/env.json), DATABASE_URL,
LOCAL_AWS_PORT (4566), LOCAL_API_PORT (3000), LOCAL_INVOKE_PORT (4567), LOCAL_MAX_REQUEST_BYTES (200 MiB; the
only request size limit, for Api routes and function URLs alike), LOCAL_SQS_CONCURRENCY (twice the cpu count),
LOCAL_SQS_RETRY_DELAY_SECONDS (2: the async invoke retry delay), LOCAL_SCHEDULE_SECONDS (the interval of every
`Schedule` event; unset: the template's rate).

The API port serves Api routes (infra/local/gateway.py, gateway_auth.py) and function URLs
(infra/local/function_urls.py) through infra/local/api_server.py; the Invoke API is infra/local/invoke_api.py;
S3, SQS and Schedule events are polled by infra/local/event_sources.py. Asynchronous invocations (Invoke API
`Event`, S3 events) retry and end at the function's OnFailure destination here.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from infra.local.api_server import make_api_handler
from infra.local.event_sources import start_event_sources
from infra.local.function_urls import compile_url_mounts
from infra.local.gateway import compile_routes
from infra.local.http_server import LocalHttpServer
from infra.local.invoke_api import make_invoke_handler
from infra.local.stop_signal import StopSignal
from infra.local.template_model import REGION, Function
from infra.local.workers import Functions, HostSettings, Outcome, invoke_with_retries, load_stack

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


# A writer waits on the database and the AWS endpoint for about a quarter of each chunk (py-spy): with two pollers
# per core the cores stay busy (1M users: 107 s instead of 129 s with one per core; `make bench-import`).
DEFAULT_SQS_CONCURRENCY = 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class HostConfig:
    settings: HostSettings
    api_port: int = 3000
    invoke_port: int = 4567
    max_request_bytes: int = 209_715_200
    sqs_concurrency: int = DEFAULT_SQS_CONCURRENCY
    retry_delay_seconds: int = 2
    schedule_seconds: float | None = None

    @classmethod
    def from_environment(cls) -> HostConfig:
        environ = os.environ
        return cls(
            settings=HostSettings(
                template_path=Path(environ.get("LOCAL_TEMPLATE", REPOSITORY_ROOT / "template.yaml")),
                state_dir=Path(environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state")).resolve(),
                aws_port=int(environ.get("LOCAL_AWS_PORT", "4566")),
                env_file=Path(environ.get("LOCAL_ENV_FILE", REPOSITORY_ROOT / "infra/local/env.json")),
                database_url=environ.get("DATABASE_URL") or None,
            ),
            api_port=int(environ.get("LOCAL_API_PORT", "3000")),
            invoke_port=int(environ.get("LOCAL_INVOKE_PORT", "4567")),
            max_request_bytes=int(environ.get("LOCAL_MAX_REQUEST_BYTES", "209715200")),
            sqs_concurrency=int(environ.get("LOCAL_SQS_CONCURRENCY", str(DEFAULT_SQS_CONCURRENCY))),
            retry_delay_seconds=int(environ.get("LOCAL_SQS_RETRY_DELAY_SECONDS", "2")),
            schedule_seconds=float(environ["LOCAL_SCHEDULE_SECONDS"])
            if environ.get("LOCAL_SCHEDULE_SECONDS")
            else None,
        )


class FunctionsHost:
    def __init__(self, config: HostConfig):
        self.config = config
        self.stack = load_stack(config.settings)
        self.functions = Functions(self.stack, config.settings)
        self.routes = compile_routes(self.stack)
        self.url_mounts = compile_url_mounts(self.stack)
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: list[LocalHttpServer] = []
        self._access_log_lock = threading.Lock()

    def access_log(self, text: str) -> None:
        with self._access_log_lock:
            print(f"[host] {text}", flush=True)

    def client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.config.settings.aws_endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2}),
        )

    def start(self) -> None:
        for port, handler in (
            (self.config.api_port, make_api_handler(self)),
            (self.config.invoke_port, make_invoke_handler(self)),
        ):
            server = LocalHttpServer(("127.0.0.1", port), handler)
            self._servers.append(server)
            self.spawn(server.serve_forever, f"http-{port}")
        start_event_sources(self)
        self.ready.set()

    def spawn(self, target: Callable[[], object], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def invoke_async(self, logical_id: str, payload: bytes) -> None:
        pool = self.functions.pool(logical_id)

        def run() -> None:
            attempts = pool.function.async_attempts
            outcome = invoke_with_retries(
                lambda: pool.invoke(payload), attempts, self.config.retry_delay_seconds, self.stopping
            )
            if outcome.failed:
                self.async_invocation_failed(pool.function, json.loads(payload or b"{}"), outcome, attempts)

        threading.Thread(target=run, name=f"async-{logical_id}", daemon=True).start()

    def async_invocation_failed(self, function: Function, event: Any, outcome: Outcome, attempts: int) -> None:
        """Retries are exhausted: send Lambda's invocation record to the OnFailure destination, if any."""
        self.access_log(f"{function.name}: asynchronous invocation failed after {attempts} attempts")
        if not function.on_failure_queue_arn:
            return
        try:
            response_payload = json.loads(outcome.payload or b"null")
        except ValueError:
            response_payload = {"errorMessage": outcome.payload.decode("utf-8", "replace")}
        record = {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"{function.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": response_payload,
        }
        sqs = self.client("sqs")
        queue_name = function.on_failure_queue_arn.rsplit(":", 1)[-1]
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.functions.close()


def main() -> None:
    host = FunctionsHost(HostConfig.from_environment())
    stopped = StopSignal().install()
    host.start()
    config = host.config
    print(
        f"[host] functions host ready: API http://127.0.0.1:{config.api_port}, "
        f"Invoke API http://127.0.0.1:{config.invoke_port}",
        flush=True,
    )
    for mount in host.url_mounts:
        print(
            f"[host] function URL http://127.0.0.1:{config.api_port}{mount.url.path}/ -> {mount.function.name} "
            f"({mount.url.invoke_mode}, auth {mount.url.auth_type})",
            flush=True,
        )
    stopped.wait()
    host.stop()


if __name__ == "__main__":
    main()
