"""Pure helpers of the benchmarks' results: medians over runs, peaks over runs, and the JSON files they write.

Nothing here measures; the benchmarks hand in their figures and get back what goes into bench-results/*.json.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

KIB_PER_MIB = 1024


def median(values: Sequence[float]) -> float:
    """The median of a run's figures; with an even count, the mean of the middle two (statistics.median)."""
    if not values:
        raise ValueError("a median needs at least one value")
    return float(statistics.median(values))


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero (a run too short to measure)."""
    return numerator / denominator if denominator > 0 else None


def median_of_ratios(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The median of numerator / denominator over runs; runs with a zero denominator are left out."""
    ratios = [value for numerator, denominator in pairs if (value := ratio(numerator, denominator)) is not None]
    return median(ratios) if ratios else None


def mib(kib: int) -> float:
    return round(kib / KIB_PER_MIB, 1)


def peak_over_runs(runs: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Per process name, the largest peak (KiB) any run saw: a process that grew in one run only still counts."""
    peaks: dict[str, int] = {}
    for run in runs:
        for name, kib in run.items():
            peaks[name] = max(peaks.get(name, 0), kib)
    return dict(sorted(peaks.items()))


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def write_results(path: Path, payload: Mapping[str, Any]) -> Path:
    """Writes the JSON whole or not at all (a reader never sees half a file), keys in the order given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    partial.replace(path)
    return path
