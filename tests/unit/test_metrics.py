"""Metrics pushed to a (fake) Pushgateway: one group per instance, so totals add up across instances."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bulkio.adapters.metrics import JobSummary, Metrics
from prometheus_client.parser import text_string_to_metric_families


class FakePushgateway:
    """Keeps the last body pushed to each group, as the Pushgateway does for a PUT."""

    def __init__(self) -> None:
        self.groups: dict[str, str] = {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gateway.groups[self.path] = body.decode()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"127.0.0.1:{self.server.server_address[1]}"

    def total(self, sample_name: str, **labels: str) -> float:
        """The sum over every group, as `sum(...)` in PromQL over what Prometheus scrapes."""
        total = 0.0
        for body in self.groups.values():
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                        total += sample.value
        return total


@pytest.fixture
def gateway() -> Iterator[FakePushgateway]:
    fake = FakePushgateway()
    yield fake
    fake.server.shutdown()


def test_instances_push_to_their_own_groups_and_totals_add_up(gateway: FakePushgateway) -> None:
    first, second = Metrics(gateway.url, "writer"), Metrics(gateway.url, "writer")
    first.records.labels("users", "succeeded").inc(600)
    first.push()
    first.records.labels("users", "succeeded").inc(400)  # a later invocation of the same instance
    first.push()
    second.records.labels("users", "succeeded").inc(250)
    second.records.labels("users", "failed").inc(5)
    second.push()

    assert set(gateway.groups) == {
        f"/metrics/job/bulkio/function/writer/instance/{first.instance}",
        f"/metrics/job/bulkio/function/writer/instance/{second.instance}",
    }
    assert gateway.total("bulkio_records_total", resource="users", outcome="succeeded") == 1250
    assert gateway.total("bulkio_records_total", resource="users", outcome="failed") == 5


def test_a_finished_job_gets_a_group_of_its_own(gateway: FakePushgateway) -> None:
    Metrics(gateway.url, "writer").job_finished(JobSummary("import", "job-1", "users", "completed", 1000, 50, 4.0))

    body = gateway.groups["/metrics/job/bulkio_jobs/job_id/job-1/kind/import"]
    values = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert values["bulkio_job_rows_per_second"] == 250.0
    assert values["bulkio_job_error_rate"] == 0.05
    assert values["bulkio_job_duration_seconds"] == 4.0
    assert values["bulkio_job_finished_timestamp_seconds"] > 0


def test_without_a_pushgateway_or_with_a_dead_one_nothing_fails() -> None:
    Metrics("", "api").push()  # not configured: no request at all
    unreachable = Metrics("127.0.0.1:9", "api")  # discard port: nothing listens
    unreachable.api_requests.labels("/v1/health", "GET", "200").inc()
    unreachable.push()
    unreachable.job_finished(JobSummary("export", "job-2", "users", "completed", 1, 0, 1.0))
