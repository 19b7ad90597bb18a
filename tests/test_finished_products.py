"""Finished products: display and aesthetic images beside an unchanged ``mosaic.fits``."""

import struct
import zlib

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from zemosaic_dask.execute.product_tasks import band_runner
from zemosaic_dask.io.finished_products import FinishingOptions
from zemosaic_dask.io.png16 import write_png16
from zemosaic_dask.io.products import write_mosaic_products
from zemosaic_dask.io.store import open_mosaic_store
from zemosaic_dask.plans.grid import OutputGrid
from zemosaic_dask.tasks.display_stretch import fit_display_stretch, stretch_to_uint16
from zemosaic_dask.tasks.sky_flattening import fill_small_holes

BOTH = FinishingOptions(write_display=True, write_aesthetic=True, background_block_px=64)
NOISE = 5.0


def _store(tmp_path, image, chunk=64):
    shape = image.shape[1:]
    grid = OutputGrid(
        crval=(150.0, 20.0), pixel_scale=2.4, crpix=(shape[1] / 2, shape[0] / 2), shape=shape, chunk=chunk
    )
    store, _ = open_mosaic_store(str(tmp_path / "mosaic.zarr"), grid, image.shape[0], fingerprint="test")
    coverage = np.where(np.isfinite(image).all(axis=0), 4.0, 0.0).astype(np.float32)
    alpha = np.where(coverage > 0, 255, 0).astype(np.uint8)
    ny, nx = grid.n_regions
    for iy in range(ny):
        for ix in range(nx):
            r = grid.region(iy, ix)
            window = (slice(r.y0, r.y1), slice(r.x0, r.x1))
            store.write_region(r, image[(slice(None), *window)], coverage[window], alpha[window])
    return grid, store


def _sky_with_gradient(shape=(384, 512), seed=5):
    """Three channels: a strong, differently coloured gradient, noise, 80 Gaussian stars, an empty corner."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    image = np.empty((3, *shape), dtype=np.float32)
    for c, (level, gx, gy) in enumerate([(300, 0.40, 0.10), (260, 0.25, 0.30), (200, 0.10, 0.45)]):
        image[c] = level + gx * xx + gy * yy + rng.normal(0, NOISE, shape)
    stars = np.column_stack([rng.uniform(20, shape[0] - 20, 80), rng.uniform(20, shape[1] - 20, 80)])
    fluxes = rng.uniform(2e3, 4e4, 80)
    colour = np.array([0.8, 1.0, 1.3])  # stars bluer than the camera's grey
    for (y, x), flux in zip(stars, fluxes, strict=True):
        profile = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.6**2)) / (2 * np.pi * 1.6**2)
        image += (flux * colour)[:, None, None] * profile
    image[:, :40, :60] = np.nan  # outside the footprint
    return image, stars


def _block_sky_rms(image, block=32):
    """Robust rms (MAD) of the 32 px block medians of each channel's sky, in units of the pixel noise."""
    c, h, w = image.shape
    blocks = image[:, 64 : h - h % block, 64 : w - w % block]  # away from the empty corner
    blocks = blocks.reshape(c, blocks.shape[1] // block, block, blocks.shape[2] // block, block)
    medians = np.nanmedian(blocks, axis=(2, 4)).reshape(c, -1)
    return 1.4826 * np.median(np.abs(medians - np.median(medians, axis=1, keepdims=True)), axis=1) / NOISE


def _aperture_fluxes(image, stars, radius=6, annulus=(9, 13)):
    yy, xx = np.mgrid[: image.shape[1], : image.shape[2]]
    out = []
    for y, x in stars:
        r = np.hypot(yy - y, xx - x)
        sky = np.median(image[:, (r >= annulus[0]) & (r < annulus[1])], axis=1)
        inside = r < radius
        out.append(image[:, inside].sum(axis=1) - sky * inside.sum())
    return np.array(out)  # (stars, channels)


def test_display_stretch_maps_its_black_point_to_zero_and_its_white_point_to_65535():
    rng = np.random.default_rng(1)
    image = rng.normal([[[100.0]], [[50.0]]], 10.0, (2, 200, 300)).astype(np.float32)
    image[:, 0, 0] = np.nan
    for kind in ("linear", "asinh"):
        stretch = fit_display_stretch(image, kind=kind)
        assert stretch.black[0] == pytest.approx(np.nanpercentile(image[0], 0.5))
        assert stretch.white[1] == pytest.approx(np.nanpercentile(image[1], 99.95))
        probe = np.array([[[stretch.black[0], stretch.white[0], -1e9, np.nan]]] * 2, np.float32)
        probe[1, 0, :2] = stretch.black[1], stretch.white[1]
        values = stretch_to_uint16(probe, stretch)
        assert values.dtype == np.uint16
        np.testing.assert_array_equal(values[:, 0, 0], 0)
        np.testing.assert_array_equal(values[:, 0, 1], 65535)
        np.testing.assert_array_equal(values[:, 0, 2:], 0)  # below black, and no data
    middle = np.array([[[np.mean(stretch.black[0:1] + stretch.white[0:1])]]], np.float32)
    half = fit_display_stretch(image[:1], kind="linear")
    assert stretch_to_uint16(middle, half)[0, 0, 0] == pytest.approx(65535 / 2, abs=1)


def _decode_png16(path):
    data = path.read_bytes()
    position, idat, header = 8, b"", None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels * 2)
    assert depth == 16 and not raw[:, 0].any()  # filter 0 on every row
    return np.moveaxis(raw[:, 1:].copy().view(">u2").reshape(height, width, channels), -1, 0)


@pytest.mark.parametrize("channels", [3, 1])
def test_png16_holds_the_bands_exactly(tmp_path, channels):
    image = np.random.default_rng(2).integers(0, 65536, (channels, 37, 23), dtype=np.uint16)
    write_png16(tmp_path / "x.png", [image[:, :10], image[:, 10:30], image[:, 30:]], 37, 23, channels)
    np.testing.assert_array_equal(_decode_png16(tmp_path / "x.png"), image)
    with Image.open(tmp_path / "x.png") as png:
        png.load()  # CRCs and stream valid for another reader
        assert png.size == (23, 37)
    with pytest.raises(ValueError, match="36 rows"):
        write_png16(tmp_path / "y.png", [image[:, :36]], 37, 23, channels)


def test_small_holes_are_filled_and_the_outside_stays_empty():
    image = np.full((1, 60, 80), 7.0, dtype=np.float32)
    image[0, :, 60:] = np.nan  # outside the footprint
    image[0, 20:24, 30:33] = np.nan  # a hole 4 x 3 px
    image[0, 40, 10] = np.nan
    filled = fill_small_holes(image, radius=3)
    np.testing.assert_allclose(filled[0, :, :60], 7.0)
    assert np.isnan(filled[0, :, 61:]).all()
    band = fill_small_holes(image[:, 10:40], radius=3)[:, 8:22]  # 8 rows of halo give the same rows
    np.testing.assert_array_equal(band, filled[:, 18:32])
    assert np.isnan(fill_small_holes(image, radius=0)[0, 21, 31])


def test_finished_products_never_change_mosaic_fits_and_carry_its_wcs(tmp_path):
    image, _ = _sky_with_gradient(shape=(200, 260))
    grid, store = _store(tmp_path, image)
    plain, finished = tmp_path / "plain", tmp_path / "finished"
    plain.mkdir(), finished.mkdir()
    assert "finished" not in write_mosaic_products(plain, store, grid, preview_max_side=100)
    summary = write_mosaic_products(finished, store, grid, preview_max_side=100, finishing=BOTH)["finished"]
    assert summary["written"] == ["mosaic_display.fits", "mosaic_aesthetic.fits", "mosaic_aesthetic.png"]
    for name in ("mosaic.fits", "mosaic_coverage.fits", "preview.png"):
        assert (plain / name).read_bytes() == (finished / name).read_bytes(), name
    with fits.open(finished / "mosaic_display.fits") as hdul:
        hdul.verify("exception")
        display, header = hdul[0].data, hdul[0].header
    assert display.dtype == np.uint16 and display.shape == image.shape and header["BITPIX"] == 16
    assert (display[:, :40, :60] == 0).all() and display.max() == 65535
    black = summary["display"]["stretch"]["black"]
    assert [header[f"BLACK{c}"] for c in (1, 2, 3)] == pytest.approx(black)
    at_black = np.abs(image - np.asarray(black, np.float32)[:, None, None]) < 0.5
    assert display[at_black].max() < 600  # asinh's steep foot: ~0.5 ADU above black is a few hundred
    with fits.open(finished / "mosaic_aesthetic.fits") as hdul:
        aesthetic, wcs = hdul[0].data, WCS(hdul[0].header)
    assert aesthetic.dtype.kind == "f" and aesthetic.shape == image.shape
    np.testing.assert_allclose(
        wcs.celestial.pixel_to_world_values(17.0, 40.0), grid.wcs.celestial.pixel_to_world_values(17.0, 40.0)
    )
    np.testing.assert_allclose(
        WCS(header).celestial.pixel_to_world_values(5.0, 9.0), grid.wcs.pixel_to_world_values(5.0, 9.0)
    )
    png = _decode_png16(finished / "mosaic_aesthetic.png")
    assert png.shape == image.shape and (png[:, :40, :60] == 0).all() and png.max() == 65535


def test_workers_write_the_same_finished_bytes_as_the_serial_writer(tmp_path):
    from distributed import Client, LocalCluster

    image, _ = _sky_with_gradient(shape=(200, 260))
    grid, store = _store(tmp_path, image, chunk=32)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    serial.mkdir(), parallel.mkdir()
    write_mosaic_products(serial, store, grid, finishing=BOTH)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            summary = write_mosaic_products(parallel, store, grid, run_bands=band_runner(client), finishing=BOTH)
    assert summary["parallel"] and summary["bands"] == 7
    for name in ("mosaic.fits", "mosaic_display.fits", "mosaic_aesthetic.fits", "mosaic_aesthetic.png"):
        assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name


def test_aesthetic_flattens_a_strong_gradient_and_keeps_relative_star_fluxes(tmp_path):
    image, stars = _sky_with_gradient()
    holes = [(200, 300), (201, 300), (150, 120)]
    for y, x in holes:
        image[:, y, x] = np.nan
    grid, store = _store(tmp_path, image)
    summary = write_mosaic_products(tmp_path, store, grid, finishing=BOTH)["finished"]["aesthetic"]
    aesthetic = fits.getdata(tmp_path / "mosaic_aesthetic.fits")
    before, after = _block_sky_rms(image), _block_sky_rms(aesthetic)
    assert (before > 5).all() and (after < 0.1 * before).all() and (after < 0.6).all(), (before, after)
    pedestal = summary["background"]["pedestal"]
    sky = np.nanmedian(aesthetic[:, 64:, 64:], axis=(1, 2))
    np.testing.assert_allclose(sky, pedestal, atol=0.5 * NOISE)  # one neutral sky level in every channel
    gains = np.asarray(summary["colour_gains"])
    assert gains[0] > gains[1] > gains[2]  # the stars were blue: red raised, blue lowered
    clear = [
        (y, x) for y, x in stars if not (y < 53 and x < 73) and min(np.hypot(y - hy, x - hx) for hy, hx in holes) > 14
    ]
    linear, flat = _aperture_fluxes(image, clear), _aperture_fluxes(aesthetic, clear)
    ratio = flat / linear / gains
    assert len(clear) > 50 and np.abs(ratio - 1).max() < 0.03, np.abs(ratio - 1).max()
    balanced = np.median(flat, axis=0)
    np.testing.assert_allclose(balanced / balanced.mean(), 1, atol=0.03)  # median star colour now neutral
    assert all(np.isfinite(aesthetic[:, y, x]).all() for y, x in holes)
    assert np.isnan(aesthetic[:, :40, :60]).all()
    assert summary["background"]["shape"] == [6, 8]
