"""Reading a window of many layer stores at once gives what reading them one by one gives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.tasks.stacking import StackOptions
from zemosaic_dask.units import layer_reader
from zemosaic_dask.units.combine_region import CombineJob, LayerInput, build_combined_region, layer_count
from zemosaic_dask.units.layer_reader import LayerReader

GRID = OutputGrid(crval=(10.0, 20.0), pixel_scale=2.4, crpix=(1.0, 1.0), shape=(96, 80), chunk=64)


def _layers(tmp_path, n, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    stores, truth = [], []
    for k in range(n):
        store, _ = open_mosaic_store(str(tmp_path / "m.zarr"), GRID, channels, fingerprint="f", prefix=f"layers/{k}")
        image = rng.normal(100.0 + k, 5.0, (channels, *GRID.shape)).astype(np.float32)
        coverage = rng.integers(0, 4, GRID.shape).astype(np.float32)
        coverage[:, : 10 * k] = 0  # each layer reaches a different part
        for region in GRID.regions():
            window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
            alpha = (coverage[window] > 0).astype(np.uint8) * 255
            store.write_region(region, image[(slice(None), *window)], coverage[window], alpha)
        stores.append(store)
        truth.append((image, coverage))
    return stores, truth


def test_a_window_of_every_layer_equals_the_layers_read_one_by_one(tmp_path):
    stores, truth = _layers(tmp_path, 5)
    region = next(iter(GRID.regions()))
    window = dataclasses.replace(region, y0=region.y0 + 7, y1=region.y0 + 30)  # a band inside a chunk
    read = LayerReader(stores).read(window)
    assert len(read) == 5
    for (image, coverage), (true_image, true_coverage) in zip(read, truth, strict=True):
        assert image.dtype == np.float32 and coverage.dtype == np.float32
        np.testing.assert_array_equal(image, true_image[:, window.y0 : window.y1, window.x0 : window.x1])
        np.testing.assert_array_equal(coverage, true_coverage[window.y0 : window.y1, window.x0 : window.x1])
    covers = LayerReader(stores, coverage_only=True).read(window)
    assert all(img is None for img, _ in covers)
    for (_, coverage), (_, true_coverage) in zip(covers, truth, strict=True):
        np.testing.assert_array_equal(coverage, true_coverage[window.y0 : window.y1, window.x0 : window.x1])


@pytest.mark.parametrize("stack", [StackOptions(rejection="none"), StackOptions(rejection="kappa_sigma")])
def test_the_combination_counts_layers_as_the_separate_count_does(tmp_path, stack):
    """Both combinations (streamed mean, stacked with rejection) and a reused region report the same counts."""
    stores, truth = _layers(tmp_path, 4, channels=1)
    out, _ = open_mosaic_store(str(tmp_path / "out.zarr"), GRID, 1, fingerprint="f")
    for region in GRID.regions():
        job = CombineJob(region, tuple(LayerInput(k, s) for k, s in enumerate(stores)), out, n_channels=1, stack=stack)
        window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        expected = sum((cover[window] > 0).astype(int) for _, cover in truth)
        np.testing.assert_array_equal(layer_count(job), expected)
        for done in (build_combined_region(job), build_combined_region(job)):  # computed, then reused
            assert done["max_layers"] == expected.max()
            assert done["layer_max"] == {k: float(cover[window].max()) for k, (_, cover) in enumerate(truth)}
        assert done["summary"].reused


def test_reads_in_groups_bounded_by_their_decoded_bytes_give_the_same_layers(tmp_path, monkeypatch):
    stores, truth = _layers(tmp_path, 5)
    region = next(iter(GRID.regions()))
    chunk_bytes = (3 + 1) * GRID.chunk * GRID.chunk * 4  # one layer's mosaic and coverage chunks
    monkeypatch.setattr(layer_reader, "READ_BYTES", 2 * chunk_bytes)
    reader = LayerReader(stores)
    assert reader._per_read == 2  # 5 layers in 3 reads
    got = list(reader.iter_read(region))
    assert len(got) == 5
    for (image, coverage), (true_image, true_coverage) in zip(got, truth, strict=True):
        np.testing.assert_array_equal(image, true_image[:, region.y0 : region.y1, region.x0 : region.x1])
        np.testing.assert_array_equal(coverage, true_coverage[region.y0 : region.y1, region.x0 : region.x1])
        assert image.base is None or image.base.nbytes == image.nbytes  # a copy, not a view of the chunk
