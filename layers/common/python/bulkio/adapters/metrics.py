"""Prometheus metrics, pushed to a Pushgateway (PUSHGATEWAY_URL) at the end of every invocation.

Grouping keys, so that many Lambda instances pushing at once never overwrite each other and totals add up:
- `job="bulkio", function=<name>, instance=<random id of this process>`: the process's own cumulative counters
  and histograms. A push replaces only this instance's group, and an instance only ever pushes its own totals,
  so `sum by (...) (metric)` over all instance groups is the service's total. Groups of instances that are
  gone keep their last values: they are totals, so the sums stay right.
- `job="bulkio_jobs", kind=import|export, job_id=<id>`: one group per finished job (duration, rows/s, error
  rate, finish time), pushed once when the job ends, and deleted by the sweeper once it is older than
  JOB_METRICS_RETENTION_SECONDS (Prometheus has scraped it long before; the Pushgateway never forgets by itself).

Without PUSHGATEWAY_URL nothing is pushed; a failing push is logged and never fails the invocation.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aws_lambda_powertools import Logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, delete_from_gateway, push_to_gateway

from bulkio.domain.metrics import JobSummary

logger = Logger(child=True)

PUSH_TIMEOUT_SECONDS = 2.0
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Metrics:
    pushgateway_url: str
    function: str
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.records = Counter(
            "bulkio_records", "Imported records by outcome (succeeded, failed)", ["resource", "outcome"], registry=r
        )
        self.record_errors = Counter("bulkio_record_errors", "Record errors by code", ["resource", "code"], registry=r)
        self.chunks = Counter("bulkio_chunks", "Chunks validated and staged", ["resource"], registry=r)
        self.chunk_seconds = Histogram(
            "bulkio_chunk_duration_seconds",
            "Time to validate and stage one chunk",
            ["resource"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "bulkio_dead_letters",
            "Messages that reached the dead-letter queue (chunks, chunker events)",
            ["kind"],
            registry=r,
        )
        self.export_rows = Counter("bulkio_export_rows", "Exported rows", ["resource", "format", "mode"], registry=r)
        self.export_bytes = Counter("bulkio_export_bytes", "Exported bytes", ["resource", "format", "mode"], registry=r)
        self.api_requests = Counter(
            "bulkio_api_requests", "API requests by route and status", ["route", "method", "status"], registry=r
        )
        self.token_checks = Counter(
            "bulkio_token_checks",
            "Bearer tokens checked by the authorizer or the streamed export: accepted, or the reason refused",
            ["outcome"],
            registry=r,
        )
        self.api_seconds = Histogram(
            "bulkio_api_request_duration_seconds",
            "API request latency",
            ["route", "method"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )

    def push(self) -> None:
        """Replaces this instance's group with its current totals."""
        if not self.pushgateway_url:
            return
        try:
            push_to_gateway(
                self.pushgateway_url,
                job="bulkio",
                registry=self.registry,
                grouping_key={"function": self.function, "instance": self.instance},
                timeout=PUSH_TIMEOUT_SECONDS,
            )
        except OSError as error:
            # The host only: a Pushgateway URL may carry basic-auth credentials.
            host = urlsplit(self.pushgateway_url).hostname
            logger.warning("metrics push failed", extra={"pushgateway_host": host, "error": type(error).__name__})

    def job_finished(self, summary: JobSummary) -> None:
        """One group per job: a job ends once, so nothing else ever writes to it."""
        if not self.pushgateway_url:
            return
        registry = CollectorRegistry()
        labels = {"resource": summary.resource, "status": summary.status}
        gauges = {
            "bulkio_job_duration_seconds": ("Job duration from start to end", summary.duration_seconds),
            "bulkio_job_rows": ("Records (imports) or rows (exports) the job handled", summary.rows),
            "bulkio_job_rows_per_second": (
                "Job throughput",
                summary.rows / summary.duration_seconds if summary.duration_seconds > 0 else 0.0,
            ),
            "bulkio_job_error_rate": (
                "Failed records / records",
                summary.failed / summary.rows if summary.rows else 0.0,
            ),
            "bulkio_job_finished_timestamp_seconds": ("When the job ended (Unix time)", time.time()),
        }
        for name, (description, value) in gauges.items():
            Gauge(name, description, list(labels), registry=registry).labels(**labels).set(value)
        try:
            push_to_gateway(
                self.pushgateway_url,
                job="bulkio_jobs",
                registry=registry,
                grouping_key={"kind": summary.kind, "job_id": summary.job_id},
                timeout=PUSH_TIMEOUT_SECONDS,
            )
        except OSError as error:
            logger.warning("job metrics push failed", extra={"job_id": summary.job_id, "error": str(error)})

    def delete_job_groups_older_than(self, seconds: float) -> int:
        """Deletes the per-job groups pushed more than `seconds` ago; returns how many went."""
        if not self.pushgateway_url:
            return 0
        base = self.pushgateway_url if "://" in self.pushgateway_url else f"http://{self.pushgateway_url}"
        with urllib.request.urlopen(f"{base.rstrip('/')}/api/v1/metrics", timeout=PUSH_TIMEOUT_SECONDS) as answer:
            groups = json.load(answer).get("data") or []
        oldest_kept = time.time() - seconds
        deleted = 0
        for group in groups:
            labels = group.get("labels") or {}
            pushed = (group.get("push_time_seconds") or {}).get("metrics") or [{}]
            if labels.get("job") != "bulkio_jobs" or float(pushed[0].get("value") or 0) >= oldest_kept:
                continue
            grouping_key = {name: value for name, value in labels.items() if name != "job"}
            delete_from_gateway(
                self.pushgateway_url, job="bulkio_jobs", grouping_key=grouping_key, timeout=PUSH_TIMEOUT_SECONDS
            )
            deleted += 1
        return deleted
