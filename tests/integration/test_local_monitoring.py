"""`make run`'s monitoring: a real Pushgateway (and Prometheus where installed) on loopback, stopped cleanly."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from bulkio.adapters.metrics import JobSummary, Metrics

from infra.local.monitoring import start_monitoring
from infra.local.stack import free_port


@pytest.fixture
def free_monitoring_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("prometheus-pushgateway") is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)")
    monkeypatch.setenv("LOCAL_PUSHGATEWAY_PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_PROMETHEUS_PORT", str(free_port()))


@pytest.mark.usefixtures("free_monitoring_ports")
def test_the_pushgateway_starts_with_its_own_state_and_stops(tmp_path: Path) -> None:
    monitoring = start_monitoring(tmp_path)
    try:
        assert monitoring.pushgateway_url is not None
        with urllib.request.urlopen(f"{monitoring.pushgateway_url}/-/ready", timeout=5) as response:
            assert response.status == 200
        if shutil.which("prometheus"):
            assert monitoring.prometheus_url is not None
            assert "honor_labels: true" in (tmp_path / "monitoring" / "prometheus.yml").read_text()
    finally:
        monitoring.stop()
    assert all(process.poll() is not None for process in monitoring.processes)


@pytest.mark.usefixtures("free_monitoring_ports")
def test_the_sweepers_clean_up_deletes_only_old_job_groups(tmp_path: Path) -> None:
    """Issue 8, item 11: the Pushgateway never forgets a group by itself; one group per finished job grew forever."""
    monitoring = start_monitoring(tmp_path)
    try:
        assert monitoring.pushgateway_url is not None
        metrics = Metrics(monitoring.pushgateway_url, "test")
        for job_id in ("old-job", "new-job"):
            metrics.job_finished(JobSummary("import", job_id, "users", "completed", 10, 1, 2.0))
        metrics.chunks.labels("users").inc()
        metrics.push()  # an instance group: totals, never deleted

        assert metrics.delete_job_groups_older_than(3600) == 0  # both were pushed just now
        time.sleep(1.5)
        metrics.job_finished(JobSummary("import", "new-job", "users", "completed", 10, 1, 2.0))  # pushed again
        assert metrics.delete_job_groups_older_than(1.0) == 1

        with urllib.request.urlopen(f"{monitoring.pushgateway_url}/api/v1/metrics", timeout=5) as response:
            groups = [group["labels"] for group in json.load(response)["data"]]
        assert {group.get("job_id") for group in groups if group["job"] == "bulkio_jobs"} == {"new-job"}
        assert any(group["job"] == "bulkio" for group in groups)
    finally:
        monitoring.stop()
