"""The embedded stack's monitoring: a real Prometheus Pushgateway and Prometheus, when they are installed.

Debian packages `prometheus-pushgateway` and `prometheus`. Without them `make run` says so once and runs on;
functions then push nowhere (PUSHGATEWAY_URL stays empty).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

READY_TIMEOUT_SECONDS = 30


@dataclass
class Monitoring:
    pushgateway_url: str | None = None
    prometheus_url: str | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], url: str, output: IO[bytes] | None) -> str | None:
        """Runs one server until stop(); its URL once it answers /-/ready, None if it does not."""
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if output else None)
        self.processes.append(process)
        return url if _wait_ready(f"{url}/-/ready", process) else None

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    return False


def prometheus_config(pushgateway_port: int) -> str:
    # honor_labels keeps the pushed job/function/instance labels instead of the Pushgateway's own.
    return (
        "global:\n  scrape_interval: 5s\n"
        "scrape_configs:\n"
        "  - job_name: pushgateway\n"
        "    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{pushgateway_port}']\n"
    )


def start_monitoring(state_dir: Path, output: IO[bytes] | None = None) -> Monitoring:
    pushgateway = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    prometheus = shutil.which("prometheus")
    if pushgateway is None:
        print(
            "Pushgateway and Prometheus are not installed (apt-get install prometheus-pushgateway prometheus): "
            "metrics are not collected; everything else runs.",
            flush=True,
        )
        return Monitoring()
    monitoring = Monitoring()
    folder = state_dir / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    gateway_port = int(os.environ.get("LOCAL_PUSHGATEWAY_PORT", "9091"))
    gateway_url = monitoring.start(
        [
            pushgateway,
            f"--web.listen-address=127.0.0.1:{gateway_port}",
            # Debian's build defaults to /var/lib/prometheus/pushgateway.data, shared by every run on the machine.
            f"--persistence.file={folder / 'pushgateway.data'}",
        ],
        f"http://127.0.0.1:{gateway_port}",
        output,
    )
    if gateway_url is None:
        print("the Pushgateway did not start: metrics are not collected", flush=True)
        monitoring.stop()
        return Monitoring()
    monitoring.pushgateway_url = gateway_url
    if prometheus is not None:
        prometheus_port = int(os.environ.get("LOCAL_PROMETHEUS_PORT", "9090"))
        config = folder / "prometheus.yml"
        config.write_text(prometheus_config(gateway_port))
        monitoring.prometheus_url = monitoring.start(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            f"http://127.0.0.1:{prometheus_port}",
            output,
        )
    return monitoring
