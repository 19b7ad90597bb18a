"""The alt-az edge cleanup of a store, region by region: seamless whatever the chunk size."""

from __future__ import annotations

import numpy as np
import pytest

from zemosaic_dask.graph.altaz import build_altaz_clean_graph, build_altaz_histogram_graph
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.tasks.altaz_edges import (
    EdgeCleanupOptions,
    coverage_threshold,
    edge_alpha,
    median_coverage,
    merge_histograms,
)
from zemosaic_dask.units.altaz_region import AltazJob, clean_altaz_region

SHAPE = (300, 330)
OPTIONS = EdgeCleanupOptions(min_coverage=2, min_coverage_fraction=0.3, opening_px=6, margin_px=3, decay_px=10)


def _rotated_frames_coverage() -> np.ndarray:
    """Coverage of 12 rotated rectangles ("frames" of an alt-az session) on the grid."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    coverage = np.zeros(SHAPE, np.float32)
    for _ in range(12):
        cy, cx = 150 + rng.normal(0, 12), 165 + rng.normal(0, 12)
        angle = np.radians(rng.uniform(-12, 12))
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        coverage += ((np.abs(u) < 120) & (np.abs(v) < 95)).astype(np.float32)
    return coverage


def _store(tmp_path, chunk: int, coverage: np.ndarray):
    grid = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(165.0, 150.0), shape=SHAPE, chunk=chunk)
    store, _ = open_mosaic_store(str(tmp_path / f"c{chunk}.zarr"), grid, 3, fingerprint="altaz")
    rng = np.random.default_rng(1)
    image = rng.normal(100, 5, size=(3, *SHAPE)).astype(np.float32)
    image[:, coverage == 0] = np.nan
    store.array("mosaic")[...] = image
    store.array("coverage")[...] = coverage
    store.array("alpha")[...] = np.where(coverage > 0, 255, 0).astype(np.uint8)
    return grid, store, image


def _clean(grid, store):
    jobs = [AltazJob(store, region, grid.shape, OPTIONS) for region in grid.regions()]
    parts = [task.compute(scheduler="synchronous") for task in build_altaz_histogram_graph(jobs)]
    threshold = coverage_threshold(OPTIONS, median_coverage(merge_histograms(parts)))
    summaries = [task.compute(scheduler="synchronous") for task in build_altaz_clean_graph(jobs, threshold)]
    return threshold, summaries


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    coverage = _rotated_frames_coverage()
    out = {}
    for chunk in (64, 128):
        grid, store, image = _store(tmp_path_factory.mktemp(f"altaz{chunk}"), chunk, coverage)
        threshold, summaries = _clean(grid, store)
        out[chunk] = (store, threshold, summaries)
    return coverage, image, out


def test_the_mask_is_the_same_with_two_chunk_sizes_and_matches_the_whole_map_at_once(cleaned):
    coverage, _, out = cleaned
    (s64, t64, _), (s128, t128, _) = out[64], out[128]
    assert t64 == t128
    alpha64, alpha128 = np.asarray(s64.array("alpha")[...]), np.asarray(s128.array("alpha")[...])
    np.testing.assert_array_equal(alpha64, alpha128)
    np.testing.assert_array_equal(np.asarray(s64.array("mosaic")[...]), np.asarray(s128.array("mosaic")[...]))
    whole = edge_alpha(np.pad(coverage, OPTIONS.halo), t64, OPTIONS)
    np.testing.assert_array_equal(alpha64, np.minimum(whole, np.where(coverage > 0, 255, 0)))


def test_the_ragged_edges_are_masked_and_the_kept_pixels_are_untouched(cleaned):
    coverage, image, out = cleaned
    store, threshold, summaries = out[64]
    alpha = np.asarray(store.array("alpha")[...])
    mosaic = np.asarray(store.array("mosaic")[...])
    kept = alpha > 0
    assert 0 < threshold < coverage.max()
    assert np.all(coverage[kept] >= threshold)
    assert np.any((coverage > 0) & (coverage < threshold)), "the rotated frames leave thin wedges to mask"
    assert not kept[(coverage > 0) & (coverage < threshold)].any()
    assert np.all(np.isnan(mosaic[:, ~kept]))
    np.testing.assert_array_equal(mosaic[:, kept], image[:, kept])  # linear values are never changed
    np.testing.assert_array_equal(np.asarray(store.array("coverage")[...]), coverage)
    masked = sum(s["masked"] for s in summaries)
    assert masked == int(((coverage > 0) & ~kept).sum())
    assert sum(s["covered"] for s in summaries) == int((coverage > 0).sum())
    assert sum(s["faded"] for s in summaries) == int((kept & (alpha < 255)).sum()) > 0


def test_cleaning_again_leaves_the_store_as_it_is(cleaned):
    _, _, out = cleaned
    store, threshold, first = out[128]
    grid = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(165.0, 150.0), shape=SHAPE, chunk=128)
    before = np.asarray(store.array("alpha")[...]), np.asarray(store.array("mosaic")[...])
    again = [clean_altaz_region(AltazJob(store, r, SHAPE, OPTIONS), threshold) for r in grid.regions()]
    assert again == first
    np.testing.assert_array_equal(np.asarray(store.array("alpha")[...]), before[0])
    np.testing.assert_array_equal(np.asarray(store.array("mosaic")[...]), before[1])
