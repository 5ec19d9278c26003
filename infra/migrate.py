"""Apply the SQL files in infra/migrations/ in name order, each once.

    python -m infra.migrate [--database-url URL]     (defaults to $DATABASE_URL)

Each file runs in its own transaction together with its row in schema_migrations, so a failing file leaves
nothing half-applied. A session advisory lock makes concurrent callers (several test workers, a deploy and
a developer) apply each file exactly once: the second caller waits, then finds nothing pending.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg2

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every caller of apply_migrations; it only has to differ from other lock keys.
MIGRATION_LOCK_KEY = 0x6275_6C6B  # "bulk"


def pending_files(applied: set[str]) -> list[Path]:
    return [path for path in sorted(MIGRATIONS_DIR.glob("*.sql")) if path.name not in applied]


def apply_migrations(dsn: str) -> list[str]:
    """Apply the pending migration files; return the names of those applied by this call."""
    connection = psycopg2.connect(dsn, application_name="bulkio-migrate")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            connection.commit()
            cursor.execute("SELECT name FROM schema_migrations")
            applied = {name for (name,) in cursor.fetchall()}
            connection.commit()
            newly_applied: list[str] = []
            for path in pending_files(applied):
                cursor.execute(path.read_text(encoding="utf-8"))
                cursor.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                connection.commit()
                newly_applied.append(path.name)
            cursor.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            connection.commit()
            return newly_applied
    finally:
        # Closing the session also releases the advisory lock if a migration failed.
        connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.migrate", description="Apply pending migrations.")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("no database: pass --database-url or set DATABASE_URL")
    applied = apply_migrations(args.database_url)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
