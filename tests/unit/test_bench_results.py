"""The benchmarks' pure helpers: medians and peaks over runs, and the JSON they write."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from infra.bench.results import median, median_of_ratios, mib, peak_over_runs, ratio, rounded, write_results


def test_median_of_an_odd_and_an_even_count() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_median_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        median([])


def test_ratio_of_a_zero_denominator_is_none() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None


def test_median_of_ratios_is_not_the_ratio_of_medians() -> None:
    runs = [(1.0, 10.0), (2.0, 10.0), (30.0, 10.0)]  # ratios 0.1, 0.2, 3.0
    assert median_of_ratios(runs) == pytest.approx(0.2)


def test_median_of_ratios_leaves_out_unmeasurable_runs() -> None:
    assert median_of_ratios([(1.0, 0.0), (1.0, 4.0)]) == 0.25
    assert median_of_ratios([(1.0, 0.0)]) is None


def test_peaks_keep_the_largest_of_any_run_and_every_name() -> None:
    runs = [{"writer": 100, "chunker": 50}, {"writer": 90, "api": 70}]
    assert peak_over_runs(runs) == {"api": 70, "chunker": 50, "writer": 100}


def test_mib_and_rounding() -> None:
    assert mib(1536) == 1.5
    assert rounded(0.123456) == 0.123
    assert rounded(None) is None


def test_write_results_keeps_the_order_and_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "bench-results" / "import.json"
    write_results(target, {"rows": 10, "ratio_to_copy": 0.2, "articles": {"rows": 10}})
    assert list(orjson.loads(target.read_bytes())) == ["rows", "ratio_to_copy", "articles"]
    assert [path.name for path in target.parent.iterdir()] == ["import.json"]
