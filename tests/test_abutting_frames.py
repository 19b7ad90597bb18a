"""Frames that abut edge to edge leave no crack on the mosaic (each covers its whole pixel area)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from zemosaic_dask.io.frames import inspect_frame
from zemosaic_dask.plans.frames import FrameInfo
from zemosaic_dask.plans.grid import OutputRegion
from zemosaic_dask.tasks.accumulate import MeanSums, WindowMapping, accumulate_window, sample_window
from zemosaic_dask.tasks.mapping import exact_pixel_map
from zemosaic_dask.units.frame_window import FrameWindowOptions, prepare_frame_window, resample_frame_to_region

IMAGE_SHAPE = (64, 80)  # cut into 2x2 tiles of 32x40
TILE = (32, 40)
OUT_SHAPE = (96, 110)
OPTIONS = FrameWindowOptions(hot_pixel_correction=False, n_channels=1)


def _tan(crval, crpix, scale_arcsec, rotation_deg):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = crpix
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    wcs.wcs.cd = scale_arcsec / 3600.0 * np.array([[-c, s], [s, c]])
    return wcs


IMAGE_WCS = _tan([150.0, 35.0], [40.5, 32.5], 2.4, 0.0)
# Finer, rotated and shifted: output pixel centres fall everywhere between the tiles' pixel centres.
OUT_WCS = _tan([150.0, 35.0], [55.3, 48.7], 1.9, 11.0)


def _sky():
    gy, gx = np.mgrid[0 : IMAGE_SHAPE[0], 0 : IMAGE_SHAPE[1]].astype(np.float64)
    return (1000.0 + 3.0 * gx + 2.0 * gy + 50.0 * np.sin(gx / 7.0) * np.cos(gy / 5.0)).astype(np.float32)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> list[tuple[FrameInfo, tuple[int, int]]]:
    """The sky cut into 2x2 float mono tiles, each with the exact WCS of its part of the image."""
    folder = tmp_path_factory.mktemp("abutting")
    sky = _sky()
    out = []
    for oy in (0, TILE[0]):
        for ox in (0, TILE[1]):
            wcs = IMAGE_WCS.deepcopy()
            wcs.wcs.crpix = [IMAGE_WCS.wcs.crpix[0] - ox, IMAGE_WCS.wcs.crpix[1] - oy]
            path = folder / f"tile-{oy}-{ox}.fits"
            fits.PrimaryHDU(sky[oy : oy + TILE[0], ox : ox + TILE[1]], header=wcs.to_header()).writeto(path)
            frame = inspect_frame(str(path))
            assert isinstance(frame, FrameInfo), frame
            out.append((frame, (oy, ox)))
    return out


def _positions():
    """Where every output pixel falls in the full image (before cutting)."""
    gy, gx = np.mgrid[0 : OUT_SHAPE[0], 0 : OUT_SHAPE[1]].astype(np.float64)
    return exact_pixel_map(OUT_WCS, IMAGE_WCS, gy, gx)


def _union_and_cracks():
    x, y = _positions()
    union = (x >= 0) & (x <= IMAGE_SHAPE[1] - 1) & (y >= 0) & (y <= IMAGE_SHAPE[0] - 1)
    # Between two tiles' outer pixel centres: what a pixel-centre box would leave empty.
    cracks = union & (((x > TILE[1] - 1) & (x < TILE[1])) | ((y > TILE[0] - 1) & (y < TILE[0])))
    return union, cracks


REGION = OutputRegion(0, 0, 0, OUT_SHAPE[0], 0, OUT_SHAPE[1])


def test_the_output_grid_really_falls_between_the_tiles():
    union, cracks = _union_and_cracks()
    assert union.sum() > 0.3 * union.size
    assert cracks.sum() > 100


def test_resampled_tiles_leave_no_crack_and_repeat_edge_pixels(tiles):
    union, cracks = _union_and_cracks()
    coverage = np.zeros(OUT_SHAPE, np.float32)
    total = np.zeros(OUT_SHAPE, np.float64)
    sky = _sky()
    x, y = _positions()
    for frame, (oy, ox) in tiles:
        contribution = resample_frame_to_region(frame, OUT_WCS, REGION, OPTIONS)
        assert contribution is not None
        footprint = contribution.footprint.astype(bool)
        coverage += footprint
        total += np.where(footprint, contribution.values[0], 0.0)
        # Inside the tile's outer half pixel the value is its edge pixel's (bilinear along the edge).
        tx, ty = x - ox, y - oy
        half = footprint & ((tx < 0) | (tx > TILE[1] - 1) | (ty < 0) | (ty > TILE[0] - 1))
        assert half.sum() > 10
        cx, cy = np.clip(tx[half], 0, TILE[1] - 1), np.clip(ty[half], 0, TILE[0] - 1)
        tile = sky[oy : oy + TILE[0], ox : ox + TILE[1]].astype(np.float64)
        x0, y0 = np.minimum(np.floor(cx), TILE[1] - 2).astype(int), np.minimum(np.floor(cy), TILE[0] - 2).astype(int)
        fx, fy = cx - x0, cy - y0
        expected = (
            tile[y0, x0] * (1 - fx) * (1 - fy)
            + tile[y0, x0 + 1] * fx * (1 - fy)
            + tile[y0 + 1, x0] * (1 - fx) * fy
            + tile[y0 + 1, x0 + 1] * fx * fy
        )
        # The map is interpolated to 0.01 px; the sky's gradient is below 12 ADU/px.
        np.testing.assert_allclose(contribution.values[0][half], expected, atol=0.2)
    assert int((union & (coverage == 0)).sum()) == 0
    assert (coverage[cracks] >= 1).all()
    mean = total / np.maximum(coverage, 1)
    truth_x, truth_y = np.clip(x, 0, IMAGE_SHAPE[1] - 1), np.clip(y, 0, IMAGE_SHAPE[0] - 1)
    # Across the seams the mosaic is the sky within half a pixel of its gradient.
    assert np.abs(mean - _bilinear(sky, truth_x, truth_y))[union].max() < 8.0


def _bilinear(image, x, y):
    from scipy.ndimage import map_coordinates

    return map_coordinates(image.astype(np.float64), [y, x], order=1, mode="nearest")


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "lanczos3"])
def test_fused_kernels_leave_no_crack(tiles, method):
    union, cracks = _union_and_cracks()
    sums = MeanSums.zeros(1, OUT_SHAPE)
    sampled = np.zeros(OUT_SHAPE, np.float32)
    for frame, _ in tiles:
        prepared = prepare_frame_window(frame, OUT_WCS, REGION, OPTIONS)
        assert prepared is not None
        mapping = WindowMapping.from_coarse(prepared.coarse, prepared.origin, prepared.valid_box, method)
        accumulate_window(prepared.image, mapping, sums)
        values, footprint = np.empty((1, *OUT_SHAPE), np.float32), np.empty(OUT_SHAPE, np.float32)
        sample_window(prepared.image, mapping, values, footprint)
        sampled += footprint
    assert int((union & (sums.coverage == 0)).sum()) == 0
    assert int((union & (sampled == 0)).sum()) == 0
    assert (sums.coverage[cracks] >= 1).all()
    mean, _ = sums.mean()
    assert np.isfinite(mean[0][union]).all()
