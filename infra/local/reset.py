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
    # The dev cluster, and the clusters of the tests and benchmarks in sub-folders: a running cluster would
    # keep writing into the folder being deleted.
    for cluster_state in [state_dir, *(path.parent for path in state_dir.glob("*/postgres"))]:
        if (cluster_state / "postgres").exists():
            _remove_cluster(cluster_state)
    shutil.rmtree(state_dir)
    print(f"removed {state_dir}")


def _remove_cluster(cluster_state: Path) -> None:
    from infra.local.postgres import stop_cluster

    stop_cluster(cluster_state)
    postgres_dir = cluster_state / "postgres"
    if postgres_dir.is_symlink():
        # The cluster may live outside the state folder (see infra/local/postgres.py); remove it too.
        shutil.rmtree(postgres_dir.resolve(), ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state"))
    )
    reset_state(parser.parse_args(argv).state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
