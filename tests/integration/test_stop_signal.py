"""The local stack's processes stop on SIGINT then SIGTERM in quick succession (Ctrl-C reaches the whole process
group, then `make run` sends SIGTERM): the handler must not deadlock the main thread, as Event.set() did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.local.stop_signal import StopSignal

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

# A main thread waiting for the stop signal while other threads keep busy, as the functions host's does.
WAITER = """
import threading, time
from infra.local.stop_signal import StopSignal
stop = StopSignal().install()
def busy():
    while True:
        sum(range(1000))
for _ in range(4):
    threading.Thread(target=busy, daemon=True).start()
print("ready", flush=True)
stop.wait()
print("stopped", flush=True)
"""


def test_a_wait_ends_with_the_timeout_when_no_signal_comes() -> None:
    started = time.monotonic()
    assert StopSignal().wait(0.3) is False
    assert 0.25 < time.monotonic() - started < 2


def test_sigint_then_sigterm_at_once_stops_the_waiting_process_every_time() -> None:
    for _ in range(10):
        process = subprocess.Popen(
            [sys.executable, "-c", WAITER], cwd=REPOSITORY_ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
            os.kill(process.pid, signal.SIGINT)
            os.kill(process.pid, signal.SIGTERM)
            output, _ = process.communicate(timeout=10)
            assert output.strip() == "stopped"
            assert process.returncode == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
