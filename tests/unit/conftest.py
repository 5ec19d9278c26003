"""Fixtures of the import recovery tests (the fault points, the sweeper, the scratch cleanup): a clock the test
moves, and a world of fakes with small chunks. A module defining its own `world` uses that one."""

from __future__ import annotations

import pytest
from bulkio.services.imports import chunking, sweeping, writing

from tests.fakes import FakeClock, FakeWorld, build_world, make_settings

CHUNK_RECORDS = 2


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    for part in (chunking, writing, sweeping):  # the service's time.time() and time.monotonic()
        monkeypatch.setattr(part, "time", fake)
    return fake


@pytest.fixture
def world(clock: FakeClock) -> FakeWorld:
    return build_world(make_settings(chunk_records=CHUNK_RECORDS), clock=clock)
