"""Fault drills in the suite (issue 8): scenarios a, c and e of `make chaos` on 20,000 users, same code.

Each runs on a fresh embedded stack started as `make run` starts it (its own PostgreSQL cluster, free ports), with
faults at deterministic points: the chunker dies after its 8th chunk of 20 (a); PostgreSQL restarts with
`-m immediate` once 8 of the 20 chunks are in import_chunks (c); every chunk message is sent twice (e). The job
must end within GIVE_UP_SECONDS of the fault with exactly the outcome of a clean run of the same file on another
fresh stack: status, counters, errors by code, the error report, and an md5 of every table.
"""

from __future__ import annotations

import pytest

from infra.chaos.scenarios import Drill, DrillSettings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROWS = 20_000
GIVE_UP_SECONDS = 150.0  # issue 8 promises 2 minutes on the embedded stack; the rest is polling slack


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Drill:
    """One drill for the module: its clean run (on a stack of its own) is made once, by the first scenario."""
    return Drill(
        DrillSettings(
            work_dir=tmp_path_factory.mktemp("chaos"),
            rows=ROWS,
            give_up_seconds=GIVE_UP_SECONDS,
            finish_within_seconds=None,  # ending within GIVE_UP_SECONDS is what is checked here
            log=lambda text: print(text, flush=True),
        )
    )


@pytest.mark.parametrize("key", ["a", "c", "e"])
def test_a_fault_ends_the_job_with_the_clean_outcome(drill: Drill, key: str) -> None:
    result = drill.run(key)
    assert result.ended, result.report()
    assert result.passed, result.report()
