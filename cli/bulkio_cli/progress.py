"""Progress bars on standard error, drawn only when it is a terminal: a script that reads stdout, or a log, gets
no control characters (rich's Progress, told so explicitly)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    FileSizeColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def bars_wanted() -> bool:
    return sys.stderr.isatty()


class Bar:
    """One bar, or nothing at all when bars are off: the callers update it the same way."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def update(self, **fields: Any) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, **fields)

    def advance(self, amount: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)


@contextmanager
def byte_bar(description: str, total: int | None) -> Iterator[Bar]:
    """Bytes sent or received, with the speed."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with _bar(columns, description, total, rows="") as bar:
        yield bar


@contextmanager
def export_bar(description: str) -> Iterator[Bar]:
    """An export streamed to a file: rows and bytes so far, with the speed (the total is unknown)."""
    columns = (
        TextColumn("{task.description}"),
        TextColumn("{task.fields[rows]:,} rows"),
        FileSizeColumn(),
        TransferSpeedColumn(),
    )
    with _bar(columns, description, None, rows=0) as bar:
        yield bar


@contextmanager
def record_bar(description: str) -> Iterator[Bar]:
    """A job's records: validated and staged out of the total (or its estimate), rows/s, and the ETA."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with _bar(columns, description, None, rate="") as bar:
        yield bar


@contextmanager
def _bar(columns: tuple[Any, ...], description: str, total: int | None, **fields: Any) -> Iterator[Bar]:
    if not bars_wanted():
        yield Bar(None, None)
        return
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total, **fields))
