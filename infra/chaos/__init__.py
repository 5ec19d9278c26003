"""Fault drills for the import pipeline (issue 8): `make chaos`, `python -m infra.chaos`.

Each scenario starts a fresh embedded stack exactly as `make run` does (`python -m infra.local.run` in a
subprocess, on free ports, with its own PostgreSQL cluster in a fresh state folder), imports a seeded file in
the reference shape through a presigned upload, injects a fault, waits (bounded) for the job to end and
compares the outcome with a clean run of the same file on another fresh stack: the job's status, counters,
errors by code, its error report, and an md5 of every table.

- `stack.py`: one embedded stack as a child process; faults it can take (fault points, kill -9 of workers,
  `pg_ctl restart -m immediate`, Ctrl-C and start again).
- `api.py`: a bounded HTTP client for the stack's API.
- `outcome.py`: what a run produced, and how two runs differ.
- `scenarios.py`: the scenarios and the drill that runs them; `__main__.py`: the command line and the table.

`tests/e2e/test_chaos.py` runs a short version (scenarios a, c and e on 20,000 rows) with the same code.
"""
