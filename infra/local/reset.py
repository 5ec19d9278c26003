"""Wipe the local stack's state folder (database cluster, AWS state, logs).

python -m infra.local.reset [--state-dir .state]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def reset_state(state_dir: Path) -> None:
    if not state_dir.exists():
        return
    if (state_dir / "postgres").exists():
        # A running cluster would keep writing into the folder being deleted.
        from infra.local.postgres import stop_cluster

        stop_cluster(state_dir)
        postgres_dir = state_dir / "postgres"
        if postgres_dir.is_symlink():
            # The cluster may live outside the state folder (see infra/local/postgres.py); remove it too.
            shutil.rmtree(postgres_dir.resolve(), ignore_errors=True)
    shutil.rmtree(state_dir)
    print(f"removed {state_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state"))
    )
    reset_state(parser.parse_args(argv).state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
