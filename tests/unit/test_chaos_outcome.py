"""The fault drills' comparison (infra/chaos/outcome.py): a drill is only as good as the differences it sees."""

from __future__ import annotations

from typing import Any

from infra.chaos.outcome import TIMESTAMPS_GIVEN, JobOutcome, Outcome, TableDigest
from infra.chaos.scenarios import export_shape


def job(**changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job_id": "j1",
        "resource": "users",
        "status": "completed_with_errors",
        "counters": {"total": 5, "processed": 5, "succeeded": 3, "failed": 2},
        "errors_by_code": {"invalid_email": 1, "duplicate_in_file": 1},
    }
    view.update(changes)
    return view


REPORT = [
    {"line": 4, "index": 3, "code": "duplicate_in_file", "field": "email", "message": "…"},
    {"line": 2, "index": 1, "code": "invalid_email", "field": "email", "message": "…"},
]
TABLES = (TableDigest("users", 3, "a" * 32), TableDigest("articles", 0, "b" * 32), TableDigest("comments", 0, "c" * 32))


def outcome(
    view: dict[str, Any] | None = None, report: Any = REPORT, tables: tuple[TableDigest, ...] = TABLES
) -> Outcome:
    return Outcome((JobOutcome.of(view or job(), report),), tables)


def test_the_same_outcome_has_no_differences_whatever_the_report_order() -> None:
    assert outcome().differences(outcome(report=list(reversed(REPORT)))) == []
    assert outcome().digest == outcome().digest


def test_status_counters_and_codes_are_compared() -> None:
    stuck = job(status="failed", counters={"total": 5, "processed": 4, "succeeded": None, "failed": 1},
                errors_by_code={"invalid_email": 1}, failure={"code": "chunk_failed", "message": "boom"})  # fmt: skip
    found = outcome(stuck).differences(outcome())
    assert found[0] == "status failed (expected completed_with_errors), failure chunk_failed: boom"
    assert "processed 4 (expected 5)" in found
    assert "succeeded None (expected 3)" in found
    assert "errors_by_code.duplicate_in_file None (expected 1)" in found


def test_a_missing_or_extra_error_is_named() -> None:
    changed = [REPORT[1], {"line": 9, "index": 8, "code": "invalid_role", "field": "role"}]
    (found,) = outcome(report=changed).differences(outcome())
    assert "1 missing (first line 4 index 3 duplicate_in_file email)" in found
    assert "1 extra (first line 9 index 8 invalid_role role)" in found
    (unavailable,) = outcome(report="HTTP 409 report_not_ready").differences(outcome())
    assert unavailable == "error report: HTTP 409 report_not_ready (expected 2 entries)"


def test_tables_are_compared_by_rows_then_md5() -> None:
    fewer = (TableDigest("users", 2, "a" * 32), *TABLES[1:])
    other = (TableDigest("users", 3, "d" * 32), *TABLES[1:])
    assert outcome(tables=fewer).differences(outcome()) == ["users: 2 rows (expected 3)"]
    assert outcome(tables=other).differences(outcome()) == ["users: md5 dddddddd (expected aaaaaaaa)"]
    assert outcome(tables=other).digest != outcome().digest


def test_timestamps_are_compared_only_where_the_files_give_them() -> None:
    assert TIMESTAMPS_GIVEN == {"users": ("created_at", "updated_at"), "articles": (), "comments": ("created_at",)}


def test_an_export_must_be_whole_and_ordered() -> None:
    assert export_shape(200, b'{"id": "a"}\n{"id": "b"}\n') == (2, None)
    assert export_shape(200, b"") == (0, None)
    assert export_shape(200, b'{"id": "b"}\n{"id": "a"}\n') == (None, "ids are not strictly increasing")
    assert export_shape(200, b'{"id": "a"}\n{"id": "b"')[1] == 'line 2 is not a record: b\'{"id": "b"\''
    assert export_shape(502, b"bad gateway") == (None, "502 b'bad gateway'")
