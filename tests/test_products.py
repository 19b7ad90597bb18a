"""Output products written in one pass over the store: FITS equal to the store, preview of block means."""

import logging
import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from zemosaic_dask.execute.product_tasks import band_runner
from zemosaic_dask.io.fits_layout import image_header
from zemosaic_dask.io.product_bands import PreviewBlocks, band_block_sums
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


def _filled_store(tmp_path, shape=(150, 230), chunk=64, channels=3, skip=()):
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
            if (iy, ix) in skip:  # never written: NaN, zero coverage and alpha in the store
                continue
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


def _streamed_reference(folder, store, grid, extra_header):
    """The products as astropy's StreamingHDU writes them from whole arrays (an independent reference)."""
    image = np.asarray(store.array("mosaic", mode="r")[...], dtype=np.float32)
    shape = image.shape[1:] if image.shape[0] == 1 else image.shape
    header = image_header(grid, shape, extension=False)
    header["BUNIT"] = ("ADU", "linear, same units as the input frames")
    for key, value in extra_header.items():
        header[key] = value
    folder.mkdir()
    streams = [
        (folder / "mosaic.fits", header, image.reshape(shape).astype(">f4")),
        (folder / "mosaic.fits", image_header(grid, grid.shape, extension=True, name="ALPHA"), None),
    ]
    coverage_header = image_header(grid, grid.shape, extension=False)
    coverage_header["BUNIT"] = ("weight", "sum of the frames' footprint weights")
    streams.append((folder / "mosaic_coverage.fits", coverage_header, store.array("coverage", mode="r")[...]))
    for path, hdr, data in streams:
        if data is None:
            data = np.asarray(store.array("alpha", mode="r")[...], dtype=np.uint8)
        with fits.StreamingHDU(str(path), hdr) as hdu:
            hdu.write(np.asarray(data, dtype=">f4" if hdr["BITPIX"] == -32 else np.uint8))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


@pytest.mark.parametrize("channels", [3, 1])
def test_workers_write_the_same_bytes_as_the_serial_writer_and_a_streamed_reference(tmp_path, client, channels):
    grid, store, image, coverage, alpha = _filled_store(
        tmp_path, shape=(150, 230), chunk=32, channels=channels, skip={(2, 3), *((4, ix) for ix in range(8))}
    )
    image[:, 64:96, :] = -np.float32(np.nan)  # NaN with its sign bit: kept bit for bit
    store.array("mosaic")[:, 64:96, :] = image[:, 64:96, :]
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    serial.mkdir(), parallel.mkdir()
    header = {"ZMMODE": "test"}
    summary = write_mosaic_products(serial, store, grid, extra_header=header, preview_max_side=50)
    assert summary == {"fits": "written", "fits_max_pixels": None, "pixels": 150 * 230, "parallel": False, "bands": 5}
    summary = write_mosaic_products(
        parallel, store, grid, run_bands=band_runner(client), extra_header=header, preview_max_side=50
    )
    assert summary["parallel"] is True and summary["bands"] == 5
    _streamed_reference(tmp_path / "reference", store, grid, header)
    for name in ("mosaic.fits", "mosaic_coverage.fits"):
        expected = (tmp_path / "reference" / name).read_bytes()
        assert (serial / name).read_bytes() == expected, name
        assert (parallel / name).read_bytes() == expected, name
    assert (serial / "preview.png").read_bytes() == (parallel / "preview.png").read_bytes()
    assert sorted(p.name for p in parallel.iterdir()) == ["mosaic.fits", "mosaic_coverage.fits", "preview.png"]
    with fits.open(parallel / "mosaic.fits") as hdul:
        hdul.verify("exception")
        expected_shape = (150, 230) if channels == 1 else (channels, 150, 230)
        assert hdul[0].data.shape == expected_shape and hdul["ALPHA"].data.shape == (150, 230)
        np.testing.assert_array_equal(hdul[0].data.reshape(channels, 150, 230)[:, 128:], np.nan)  # an empty band
        np.testing.assert_array_equal(hdul["ALPHA"].data[128:], 0)
        sky = WCS(hdul[0].header).celestial
        np.testing.assert_allclose(sky.pixel_to_world_values(17.0, 40.0), grid.wcs.pixel_to_world_values(17.0, 40.0))
    written = fits.getdata(parallel / "mosaic_coverage.fits")
    coverage[128:] = 0
    coverage[64:96, 96:128] = 0
    np.testing.assert_array_equal(written, coverage)


def test_fits_skipped_above_the_size_limit_preview_written(tmp_path, client, caplog):
    grid, store, image, _, _ = _filled_store(tmp_path, shape=(70, 90), chunk=32)
    with caplog.at_level(logging.WARNING, logger="zemosaic_dask.io.products"):
        summary = write_mosaic_products(
            tmp_path, store, grid, run_bands=band_runner(client), fits_max_pixels=70 * 90 - 1
        )
    assert summary["fits"] == "skipped" and summary["fits_max_pixels"] == 70 * 90 - 1
    assert "FITS too large, Zarr written" in caplog.text and "zemosaic.output.fits-max-pixels" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic.zarr", "preview.png"]  # no partial file left
    with Image.open(tmp_path / "preview.png") as preview:
        assert preview.size == (90, 70)
    assert write_mosaic_products(tmp_path, store, grid, fits_max_pixels=70 * 90)["fits"] == "written"
    np.testing.assert_array_equal(fits.getdata(tmp_path / "mosaic.fits"), image)


def test_a_failed_band_leaves_no_product_behind(tmp_path, client):
    grid, store, _, _, _ = _filled_store(tmp_path, shape=(70, 90), chunk=32)
    chunk = next((tmp_path / "mosaic.zarr" / "coverage").rglob("c/1/*"))
    chunk.write_bytes(b"not a blosc chunk")
    with pytest.raises(RuntimeError, match="blosc"):  # the worker's error reaches the caller
        write_mosaic_products(tmp_path, store, grid, run_bands=band_runner(client))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mosaic.zarr"]


@pytest.mark.parametrize(
    ("factor", "cuts"), [(1, [0, 7, 61]), (3, [0, 7, 8, 40, 61]), (5, [0, 5, 23, 24, 61]), (64, [0, 30, 61])]
)
def test_block_sums_of_bands_cut_anywhere_add_up_to_the_block_means(factor, cuts):
    rng = np.random.default_rng(8)
    image = rng.normal(10, 3, (2, 61, 47)).astype(np.float32)
    image[:, rng.random((61, 47)) < 0.2] = np.nan
    image[1, 30:45] = np.nan
    blocks = PreviewBlocks(2, (61, 47), factor)
    for y0, y1 in zip(cuts[:-1], cuts[1:], strict=True):
        blocks.add(band_block_sums(image[:, y0:y1], factor, y0))
    np.testing.assert_allclose(blocks.take_image(), block_mean(image, factor), rtol=1e-5)
    with pytest.raises(RuntimeError, match="already taken"):
        blocks.take_image()
    assert band_block_sums(np.full((2, 4, 47), np.nan, np.float32), factor, 8).sums is None
