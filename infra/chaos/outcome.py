"""What an import produced (job, error report, tables) and how two outcomes differ.

Tables are compared by an md5 of their rows ordered by id. Timestamp columns that default to now() are left out
where the drill's files never give them (TIMESTAMPS_GIVEN: the reference shape of infra/tools/datagen.py):
articles' created_at and updated_at, comments' updated_at. Users' created_at and updated_at, and comments'
created_at, come from the files and are compared.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from infra.chaos.stack import ChaosStack
from infra.tools import datagen

TABLES = ("users", "articles", "comments")
TIMESTAMP_COLUMNS = ("created_at", "updated_at")
TIMESTAMPS_GIVEN = {
    table: tuple(column for column in TIMESTAMP_COLUMNS if column in datagen.FIELDS[table]) for table in TABLES
}

ErrorEntry = tuple[int | None, int | None, str, str | None]  # (line, index, code, field)


@dataclass(frozen=True)
class JobOutcome:
    resource: str
    status: str
    counters: tuple[int | None, int | None, int | None, int | None]  # total, processed, succeeded, failed
    errors_by_code: tuple[tuple[str, int], ...]
    errors: tuple[ErrorEntry, ...] | str  # the sorted report, or why there is none
    failure: str | None = None

    @classmethod
    def of(cls, job: dict[str, Any], report: list[dict[str, Any]] | str) -> JobOutcome:
        counters = job.get("counters") or {}
        failure = job.get("failure")
        errors: tuple[ErrorEntry, ...] | str = (
            report
            if isinstance(report, str)
            else tuple(
                sorted(
                    ((e.get("line"), e.get("index"), str(e.get("code")), e.get("field")) for e in report),
                    key=lambda entry: tuple((value is None, value) for value in entry),
                )
            )
        )
        return cls(
            resource=str(job.get("resource")),
            status=str(job.get("status")),
            counters=tuple(counters.get(name) for name in ("total", "processed", "succeeded", "failed")),  # type: ignore[arg-type]
            errors_by_code=tuple(sorted((job.get("errors_by_code") or {}).items())),
            errors=errors,
            failure=f"{failure.get('code')}: {failure.get('message')}" if isinstance(failure, dict) else None,
        )

    def summary(self) -> str:
        total, _, succeeded, failed = self.counters
        return f"{self.status} {succeeded}+{failed}/{total}"

    def differences(self, expected: JobOutcome) -> list[str]:
        found = []
        if self.status != expected.status:
            found.append(
                f"status {self.status} (expected {expected.status})"
                + (f", failure {self.failure}" if self.failure else "")
            )
        for name, value, wanted in zip(
            ("total", "processed", "succeeded", "failed"), self.counters, expected.counters, strict=True
        ):
            if value != wanted:
                found.append(f"{name} {value} (expected {wanted})")
        observed_codes, expected_codes = dict(self.errors_by_code), dict(expected.errors_by_code)
        for code in sorted(set(observed_codes) | set(expected_codes)):
            if observed_codes.get(code) != expected_codes.get(code):
                found.append(f"errors_by_code.{code} {observed_codes.get(code)} (expected {expected_codes.get(code)})")
        if isinstance(self.errors, str) or isinstance(expected.errors, str):
            if self.errors != expected.errors:
                found.append(f"error report: {_describe(self.errors)} (expected {_describe(expected.errors)})")
        elif self.errors != expected.errors:
            missing = Counter(expected.errors) - Counter(self.errors)
            extra = Counter(self.errors) - Counter(expected.errors)
            found.append(
                f"error report: {len(self.errors)} entries (expected {len(expected.errors)}), "
                f"{sum(missing.values())} missing (first {_first(missing)}), "
                f"{sum(extra.values())} extra (first {_first(extra)})"
            )
        return found


def _describe(errors: tuple[ErrorEntry, ...] | str) -> str:
    return errors if isinstance(errors, str) else f"{len(errors)} entries"


def _first(entries: Counter[ErrorEntry]) -> str:
    if not entries:
        return "-"
    line, index, code, field = min(entries, key=lambda entry: tuple((v is None, v) for v in entry))
    return f"line {line} index {index} {code} {field}"


@dataclass(frozen=True)
class TableDigest:
    table: str
    rows: int
    md5: str


@dataclass(frozen=True)
class Outcome:
    jobs: tuple[JobOutcome, ...]
    tables: tuple[TableDigest, ...]

    @property
    def digest(self) -> str:
        """Short fingerprint of the tables (what the printed table shows)."""
        text = ";".join(f"{t.table}:{t.rows}:{t.md5}" for t in self.tables)
        return hashlib.md5(text.encode()).hexdigest()[:8]

    def summary(self) -> str:
        jobs = ", ".join(job.summary() for job in self.jobs)
        return f"{jobs}; tables {self.digest}"

    def differences(self, expected: Outcome) -> list[str]:
        found: list[str] = []
        if len(self.jobs) != len(expected.jobs):
            found.append(f"{len(self.jobs)} jobs (expected {len(expected.jobs)})")
        for position, (job, wanted) in enumerate(zip(self.jobs, expected.jobs, strict=False)):
            prefix = f"job {position + 1} ({wanted.resource}): " if len(expected.jobs) > 1 else ""
            found.extend(prefix + difference for difference in job.differences(wanted))
        for table, wanted_table in zip(self.tables, expected.tables, strict=True):
            if table.rows != wanted_table.rows:
                found.append(f"{table.table}: {table.rows} rows (expected {wanted_table.rows})")
            elif table.md5 != wanted_table.md5:
                found.append(f"{table.table}: md5 {table.md5[:8]} (expected {wanted_table.md5[:8]})")
        return found


def table_digests(stack: ChaosStack) -> tuple[TableDigest, ...]:
    digests = []
    with stack.connection() as connection, connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            left_out = set(TIMESTAMP_COLUMNS) - set(TIMESTAMPS_GIVEN[table])
            columns = [name for (name,) in cursor.fetchall() if name not in left_out]
            cursor.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(row_text, E'\\n' ORDER BY id), ''))"
                    " FROM (SELECT id, ROW({columns})::text AS row_text FROM {table}) AS t"
                ).format(columns=sql.SQL(", ").join(map(sql.Identifier, columns)), table=sql.Identifier(table))
            )
            rows, md5 = cursor.fetchone()
            digests.append(TableDigest(table, int(rows), str(md5)))
    return tuple(digests)
