"""Fault points: places in the import pipeline where a drill (`make chaos`, the fault tests) crashes a function on
purpose, at a deterministic moment instead of one that races the work.

Off unless BULKIO_FAULTS_DIR is set, which only the embedded stack's functions host does (to <state>/faults).
A drill arms a point by writing a file named after it into that folder:
- `crash` points (`crash_at`): the file holds a count N. The N-th time any process of the stack reaches the point,
  the file is removed and that process dies at once with os._exit, as a kill -9 would leave it: no exception
  handler, no `finally`, no clean-up. The count is shared by all processes through the file (under flock), so
  "after the 37th chunk staged by any writer" means the same thing with one writer or four.
- `switch` points (`switched_on`): the file's presence turns a behaviour on (for example sending every chunk
  message twice) until the drill removes it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

FAULTS_DIR_VARIABLE = "BULKIO_FAULTS_DIR"
CRASH_EXIT_CODE = 137  # what a process killed by SIGKILL reports

# Crash points.
CHUNKER_AFTER_CHUNK = "chunker.after_chunk"  # a chunk object was written, the chunker dies before going on
WRITER_BEFORE_STAGE = "writer.before_stage"  # a writer received a chunk and dies before staging it
WRITER_AFTER_STAGE = "writer.after_stage"  # a writer staged (committed) a chunk and dies before anything else
MERGE_BEFORE_FINISH = "merge.before_finish"  # the merge committed; the process dies before the job is marked done
# Switch points.
DUPLICATE_CHUNK_MESSAGES = "chunker.duplicate_messages"  # every chunk message is sent twice

CRASH_POINTS = (CHUNKER_AFTER_CHUNK, WRITER_BEFORE_STAGE, WRITER_AFTER_STAGE, MERGE_BEFORE_FINISH)
SWITCH_POINTS = (DUPLICATE_CHUNK_MESSAGES,)


def _point_file(point: str) -> Path | None:
    folder = os.environ.get(FAULTS_DIR_VARIABLE)
    return Path(folder) / point if folder else None


def crash_at(point: str) -> None:
    """Die here if the drill armed this point and this is the N-th time it is reached."""
    path = _point_file(point)
    if path is None or not path.exists():
        return
    try:
        with path.open("r+") as armed:
            fcntl.flock(armed, fcntl.LOCK_EX)
            remaining = int(armed.read().strip() or "1") - 1
            if remaining > 0:
                armed.seek(0)
                armed.truncate()
                armed.write(str(remaining))
                armed.flush()
                return
            path.unlink()
    except (FileNotFoundError, ValueError):
        return  # disarmed meanwhile, or a file that is not a count: no crash
    os._exit(CRASH_EXIT_CODE)


def switched_on(point: str) -> bool:
    path = _point_file(point)
    return path is not None and path.exists()


def arm(faults_dir: Path, point: str, count: int = 1) -> None:
    """For drills: crash the `count`-th time `point` is reached (or turn a switch point on)."""
    if point not in CRASH_POINTS + SWITCH_POINTS:
        raise ValueError(f"unknown fault point {point!r}: use one of {', '.join(CRASH_POINTS + SWITCH_POINTS)}")
    faults_dir.mkdir(parents=True, exist_ok=True)
    staging = faults_dir / f".{point}.arming"
    staging.write_text(str(count))
    staging.replace(faults_dir / point)  # whole, so a process never reads half a count


def disarm(faults_dir: Path, point: str) -> None:
    (faults_dir / point).unlink(missing_ok=True)
