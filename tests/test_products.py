"""Output products written in one pass over the store: FITS equal to the store, preview of block means."""

import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from zemosaic_dask.io.products import write_mosaic_products
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid


def block_mean(image, factor):
    """NaN-aware block means by reshaping a NaN-padded copy (an independent reference)."""
    channels, height, width = image.shape
    out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
    padded = np.full((channels, out_h * factor, out_w * factor), np.nan, dtype=np.float64)
    padded[:, :height, :width] = image
    blocks = padded.reshape(channels, out_h, factor, out_w, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        return np.nanmean(blocks, axis=(2, 4))


def _filled_store(tmp_path, shape=(150, 230), chunk=64, channels=3):
    grid = OutputGrid(
        crval=(150.0, 20.0), pixel_scale=2.4, crpix=(shape[1] / 2, shape[0] / 2), shape=shape, chunk=chunk
    )
    store, _ = open_mosaic_store(str(tmp_path / "mosaic.zarr"), grid, channels, fingerprint="test")
    rng = np.random.default_rng(3)
    image = rng.normal(300, 20, (channels, *shape)).astype(np.float32)
    image[:, :10, :17] = np.nan  # an uncovered corner
    coverage = rng.uniform(0, 9, shape).astype(np.float32)
    alpha = np.where(np.isfinite(image).all(axis=0), 255, 0).astype(np.uint8)
    ny, nx = grid.n_regions
    for iy in range(ny):
        for ix in range(nx):
            region = grid.region(iy, ix)
            window = (slice(region.y0, region.y1), slice(region.x0, region.x1))
            store.write_region(region, image[(slice(None), *window)], coverage[window], alpha[window])
    return grid, store, image, coverage, alpha


@pytest.mark.parametrize(("max_side", "factor"), [(60, 4), (80, 3), (7, 33)])  # 3 and 33 split 64-row bands
def test_products_equal_the_store_and_the_preview_is_its_block_mean(tmp_path, max_side, factor):
    grid, store, image, coverage, alpha = _filled_store(tmp_path)
    write_mosaic_products(tmp_path, store, grid, extra_header={"ZMMODE": "test"}, preview_max_side=max_side)
    with fits.open(tmp_path / "mosaic.fits") as hdul:
        hdul.verify("exception")
        assert hdul[0].header["ZMMODE"] == "test" and hdul[0].header["NAXIS3"] == 3
        np.testing.assert_array_equal(hdul[0].data, image)  # NaN where NaN, bit for bit elsewhere
        np.testing.assert_array_equal(hdul["ALPHA"].data, alpha)
    np.testing.assert_array_equal(fits.getdata(tmp_path / "mosaic_coverage.fits"), coverage)
    expected = block_mean(image, factor)
    with Image.open(tmp_path / "preview.png") as preview:
        rgba = np.asarray(preview)
    assert rgba.shape == (*expected.shape[1:], 4) and max(rgba.shape[:2]) <= max_side
    np.testing.assert_array_equal(rgba[..., 3] == 255, np.isfinite(expected).any(axis=0))
    # The stretch keeps the order of the block means: brighter blocks are not darker in the preview.
    green = expected[1][np.isfinite(expected[1])]
    shown = rgba[..., 1][np.isfinite(expected[1])].astype(float)
    assert np.corrcoef(green, shown)[0, 1] > 0.9


def test_mono_products(tmp_path):
    grid, store, image, _, _ = _filled_store(tmp_path, shape=(70, 90), chunk=32, channels=1)
    write_mosaic_products(tmp_path, store, grid, preview_max_side=3200)
    data = fits.getdata(tmp_path / "mosaic.fits")
    assert data.shape == (70, 90)
    np.testing.assert_array_equal(data, image[0])
    with Image.open(tmp_path / "preview.png") as preview:
        assert preview.size == (90, 70)
