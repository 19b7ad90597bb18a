"""The alt-az edge mask on small coverage maps: thresholds, opening, margin, soft edge, median."""

from __future__ import annotations

import numpy as np
import pytest

from zemosaic_dask.tasks.altaz_edges import (
    EdgeCleanupOptions,
    coverage_histogram,
    coverage_threshold,
    edge_alpha,
    median_coverage,
    merge_histograms,
)


def _alpha(coverage: np.ndarray, threshold: float, options: EdgeCleanupOptions) -> np.ndarray:
    """The mask of a whole map, computed as one region with its halo of zeros."""
    return edge_alpha(np.pad(coverage, options.halo), threshold, options)


def _field() -> np.ndarray:
    """A 10-frame rectangle with a 1-frame wedge on its right and a 10-frame 2-px spike on top."""
    cov = np.zeros((80, 100), np.float32)
    cov[20:60, 20:70] = 10
    for y in range(20, 60):  # a ragged wedge covered by one frame only
        cov[y, 70 : 70 + (y - 18) // 2] = 1
    cov[8:20, 40:42] = 10  # a thin spike, deep enough but two pixels wide
    return cov


def test_pixels_below_the_threshold_are_removed_and_kept_ones_reach_it():
    cov = _field()
    options = EdgeCleanupOptions(min_coverage=2, min_coverage_fraction=0, opening_px=0, margin_px=0, decay_px=0)
    alpha = _alpha(cov, 2.0, options)
    assert np.all(alpha[cov < 2] == 0)
    assert np.all(alpha[cov >= 2] == 255)


def test_the_opening_removes_slivers_narrower_than_its_square_and_keeps_the_body():
    cov = _field()
    options = EdgeCleanupOptions(opening_px=2, margin_px=0, decay_px=0)
    alpha = _alpha(cov, 2.0, options)
    assert np.all(alpha[8:20, 40:42] == 0), "a 2-px spike is narrower than a 5-px square"
    assert np.all(alpha[20:60, 20:70] == 255), "a rectangle wider than the square survives the opening whole"
    assert np.all(alpha[cov < 2] == 0)


def test_the_margin_pulls_the_edge_inwards_by_its_width():
    cov = _field()
    options = EdgeCleanupOptions(opening_px=2, margin_px=3, decay_px=0)
    alpha = _alpha(cov, 2.0, options)
    kept = alpha > 0
    assert kept[23:57, 23:67].all()
    assert not kept[20:23].any() and not kept[57:60].any()
    assert not kept[:, 20:23].any() and not kept[:, 67:70].any()


def test_the_soft_edge_rises_from_the_edge_to_255_over_decay_pixels():
    cov = np.zeros((60, 60), np.float32)
    cov[10:50, 10:50] = 5
    options = EdgeCleanupOptions(min_coverage=1, opening_px=0, margin_px=0, decay_px=8)
    alpha = _alpha(cov, 1.0, options)
    row = alpha[30, 10:30].astype(int)
    assert row[0] == round(255 / 8)  # one pixel from the removed area
    assert np.all(np.diff(row) >= 0) and np.any(np.diff(row) > 0)
    assert np.all(row[7:] == 255)
    assert np.all(alpha[cov == 0] == 0)


def test_a_threshold_of_zero_keeps_every_covered_pixel_and_nothing_else():
    cov = _field()
    options = EdgeCleanupOptions(min_coverage=0, min_coverage_fraction=0, opening_px=0, margin_px=0, decay_px=0)
    alpha = _alpha(cov, coverage_threshold(options, 7.0), options)
    np.testing.assert_array_equal(alpha > 0, cov > 0)


def test_the_threshold_is_the_higher_of_the_absolute_and_the_fractional_one():
    options = EdgeCleanupOptions(min_coverage=2, min_coverage_fraction=0.3)
    assert coverage_threshold(options, 20.0) == pytest.approx(6.0)
    assert coverage_threshold(options, 4.0) == pytest.approx(2.0)


def test_the_median_of_merged_region_histograms_is_the_median_of_the_whole_map():
    rng = np.random.default_rng(3)
    cov = rng.integers(0, 40, size=(64, 96)).astype(np.float32)
    parts = [coverage_histogram(cov[:, :30]), coverage_histogram(cov[:, 30:]), coverage_histogram(cov[:0])]
    covered = cov[cov > 0]
    expected = np.sort(covered)[(covered.size + 1) // 2 - 1]
    assert median_coverage(merge_histograms(parts)) == expected
    bins, counts = merge_histograms(parts)
    assert counts.sum() == covered.size
    assert median_coverage(merge_histograms([])) == 0.0


def test_fractional_coverage_is_binned_to_a_sixteenth_of_a_frame():
    bins, counts = coverage_histogram(np.array([[0.5, 0.5, 2.25, 0.0, np.nan]], np.float32))
    assert bins.tolist() == [8, 36] and counts.tolist() == [2, 1]
