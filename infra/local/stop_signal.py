"""SIGINT and SIGTERM as a flag that a process's main thread polls.

The handler only assigns a boolean. A handler that calls threading.Event.set() takes the Event's lock in the
main thread; Ctrl-C reaches the whole process group and `make run` then sends its children SIGTERM, so a second
signal can arrive while the first handler holds that lock, and the main thread deadlocks on it (the functions
host then hung until `make run` killed it 60 s later).
"""

from __future__ import annotations

import signal
import time

POLL_SECONDS = 0.2


class StopSignal:
    def __init__(self) -> None:
        self.received = False

    def install(self) -> StopSignal:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, self._handle)
        return self

    def _handle(self, signal_number: int, frame: object) -> None:
        self.received = True

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop signal came; False when `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.received:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
        return True
