"""`make run`'s monitoring: a real Pushgateway (and Prometheus where installed) on loopback, stopped cleanly."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from infra.local.monitoring import start_monitoring
from infra.local.stack import free_port


def test_the_pushgateway_starts_with_its_own_state_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("prometheus-pushgateway") is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)")
    monkeypatch.setenv("LOCAL_PUSHGATEWAY_PORT", str(free_port()))
    monkeypatch.setenv("LOCAL_PROMETHEUS_PORT", str(free_port()))

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
