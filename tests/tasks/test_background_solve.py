"""The global background model: known offsets and planes recovered from overlaps, halo kept."""

from __future__ import annotations

import numpy as np
import pytest

from zemosaic_dask.tasks.background_solve import (
    PLANE_LENGTH,
    FrameAffine,
    PairPoints,
    frame_gradients,
    pair_points,
    planes_in_frame_pixels,
    solve_background_planes,
)
from zemosaic_dask.tasks.sky_blocks import SkyBlocks, measure_sky_blocks, subtract_background_plane

FRAME = (240, 160)  # (H, W) frame pixels
BLOCK = 16


def _layout(nx: int = 3, ny: int = 2, rotation_deg: float = 0.0, seed: int = 0) -> list[FrameAffine]:
    """Frames on an nx x ny panel grid with 30 % overlap, two frames per panel, small dithers/rotations."""
    rng = np.random.default_rng(seed)
    height, width = FRAME
    affines = []
    for repeat in range(2):
        for iy in range(ny):
            for ix in range(nx):
                angle = np.radians(rotation_deg * (repeat - 0.5) + rng.normal(0, 0.3))
                c, s = np.cos(angle), np.sin(angle)
                centre = (ix * 0.7 * width + rng.uniform(-4, 4) + 200, iy * 0.7 * height + rng.uniform(-4, 4) + 200)
                affines.append(FrameAffine(((width - 1) / 2, (height - 1) / 2), centre, ((c, -s), (s, c))))
    return affines


def _sky(gx: np.ndarray, gy: np.ndarray, halo: float) -> np.ndarray:
    """Sky on the grid: level 300 plus a Gaussian halo larger than a frame, centred on the field."""
    r2 = ((gx - 312.0) ** 2 + (gy - 284.0) ** 2) / (2 * 120.0**2)
    return 300.0 + halo * np.exp(-r2)


def _blocks(affine: FrameAffine, offset: float, slope: tuple[float, float], halo: float) -> SkyBlocks:
    """Block medians of a frame: the sky plus the frame's own offset and detector-fixed plane."""
    height, width = FRAME
    y = np.arange(height // BLOCK) * BLOCK + (BLOCK - 1) / 2
    x = np.arange(width // BLOCK) * BLOCK + (BLOCK - 1) / 2
    yy, xx = np.meshgrid(y, x, indexing="ij")
    gx, gy = affine.to_grid(xx, yy)
    xc, yc = affine.centre
    values = _sky(gx, gy, halo) + offset + slope[0] * (xx - xc) + slope[1] * (yy - yc)
    return SkyBlocks(values[None].astype(np.float32), BLOCK, y, x)


def _solve(affines, blocks, model="plane"):
    pairs = []
    for i in range(len(affines)):
        for j in range(i + 1, len(affines)):
            found = pair_points(blocks[i], affines[i], blocks[j], affines[j])
            if found is not None:
                pairs.append(PairPoints(i, j, *found))
    observed = frame_gradients(blocks, affines)
    centres = np.array([a.grid_centre for a in affines])
    solution = solve_background_planes(len(affines), pairs, centres, observed, model=model)
    return solution, planes_in_frame_pixels(solution, affines)


def _corrected(affines, blocks, planes, gx, gy):
    """Mean of the corrected frames that cover each grid point (NaN where none)."""
    total, count = np.zeros(gx.shape), np.zeros(gx.shape)
    for affine, sky, plane in zip(affines, blocks, planes, strict=True):
        fx, fy = affine.to_frame(gx, gy)
        value = sky.sample(fx, fy)[0]
        xc, yc = affine.centre
        value = value - (plane[0, 0] + plane[0, 1] * (fx - xc) + plane[0, 2] * (fy - yc))
        ok = np.isfinite(value)
        total[ok] += value[ok]
        count[ok] += 1
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def test_known_offsets_and_detector_gradients_are_removed_and_the_halo_is_kept():
    affines = _layout(rotation_deg=4.0)
    rng = np.random.default_rng(1)
    offsets = rng.uniform(-60, 60, len(affines))  # sky drift of +-20 % of 300 ADU
    # Light pollution fixed to the detector: the same direction in every frame, 25 % of the sky over the frame.
    slope = (0.0, 0.25 * 300 / FRAME[0])
    halo = 40.0
    blocks = [_blocks(a, o, slope, halo) for a, o in zip(affines, offsets, strict=True)]
    solution, planes = _solve(affines, blocks)
    assert solution.rms_after[0] < 0.01 * solution.rms_before[0]
    # The detector gradient is removed in every frame (the gauge takes the frames' mean gradient).
    np.testing.assert_allclose(planes[:, 0, 2], slope[1], atol=0.02 * slope[1])
    np.testing.assert_allclose(planes[:, 0, 1], 0.0, atol=0.02 * slope[1])
    # Offsets recovered up to their mean (the mosaic keeps the frames' mean level).
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1.0)
    # The halo, common to overlapping frames, is kept: the corrected mosaic is sky + halo + a constant.
    gy, gx = np.mgrid[200:370:10, 200:430:10].astype(float)
    mosaic = _corrected(affines, blocks, planes, gx, gy)
    truth = _sky(gx, gy, halo)
    ok = np.isfinite(mosaic)
    assert ok.mean() > 0.9 and np.ptp(truth[ok]) > 0.4 * halo
    residual = (mosaic - truth)[ok]
    assert np.ptp(residual) < 0.05 * np.ptp(truth[ok])


def test_offset_model_fits_no_plane():
    affines = _layout()
    offsets = np.linspace(-30, 30, len(affines))
    blocks = [_blocks(a, o, (0.0, 0.0), 0.0) for a, o in zip(affines, offsets, strict=True)]
    solution, planes = _solve(affines, blocks, model="offset")
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1e-3)
    assert np.all(planes[:, 0, 1:] == 0)


def test_outlier_points_do_not_move_the_solution():
    affines = _layout(seed=2)
    offsets = np.random.default_rng(3).uniform(-50, 50, len(affines))
    blocks = [_blocks(a, o, (0.02, -0.05), 0.0) for a, o in zip(affines, offsets, strict=True)]
    # A satellite trail raises a column of blocks of frame 4 by 400 ADU.
    values = blocks[4].values.copy()
    values[:, :, 3] += 400.0
    blocks[4] = SkyBlocks(values, BLOCK, blocks[4].y, blocks[4].x)
    _, planes = _solve(affines, blocks)
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1.5)


def test_separate_groups_are_gauged_on_their_own():
    left = _layout(nx=1, ny=1)
    right = [FrameAffine(a.centre, (a.grid_centre[0] + 5000, a.grid_centre[1]), a.matrix) for a in left]
    affines = left + right
    offsets = np.array([10.0, -10.0, 40.0, 20.0])
    blocks = [_blocks(a, o, (0.0, 0.0), 0.0) for a, o in zip(affines, offsets, strict=True)]
    solution, planes = _solve(affines, blocks, model="offset")
    assert solution.groups == 2
    np.testing.assert_allclose(planes[:, 0, 0], [10.0, -10.0, 10.0, -10.0], atol=1e-3)


def test_plane_units_in_frame_pixels_match_grid_units():
    rotation = np.radians(30.0)
    c, s = np.cos(rotation), np.sin(rotation)
    affine = FrameAffine((10.0, 20.0), (500.0, 600.0), ((2 * c, -2 * s), (2 * s, 2 * c)))
    coefficients = np.array([[[5.0, 3.0, -1.5]]])
    solution = type("S", (), {"coefficients": coefficients})()
    plane = planes_in_frame_pixels(solution, [affine])[0, 0]
    x, y = np.array([0.0, 37.0, -12.0]), np.array([0.0, 8.0, 50.0])
    gx, gy = affine.to_grid(x, y)
    grid_value = 5.0 + 3.0 * (gx - 500.0) / PLANE_LENGTH - 1.5 * (gy - 600.0) / PLANE_LENGTH
    frame_value = plane[0] + plane[1] * (x - 10.0) + plane[2] * (y - 20.0)
    np.testing.assert_allclose(frame_value, grid_value, rtol=1e-12)


def test_block_medians_ignore_stars_and_subtract_plane_in_place():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (2, 64, 96)).astype(np.float32)
    image[:, 10, 10] = 5000.0  # a star's core in one block
    image[:, 40:, :] = np.nan  # the bottom rows have no data: their blocks are NaN
    sky = measure_sky_blocks(image, 16)
    assert sky.values.shape == (2, 4, 6)
    assert np.all(np.isnan(sky.values[:, 3])) and np.isfinite(sky.values[:, :2]).all()
    assert abs(float(sky.values[0, 0, 0]) - 100.0) < 2.0
    window = np.zeros((2, 4, 5), dtype=np.float32)
    plane = [(1.0, 0.5, -2.0), (0.0, 0.0, 1.0)]
    subtract_background_plane(window, (10, 20), (22.0, 11.0), plane)
    ys, xs = np.mgrid[10:14, 20:25]
    np.testing.assert_allclose(window[0], -(1.0 + 0.5 * (xs - 22.0) - 2.0 * (ys - 11.0)), rtol=1e-6)
    np.testing.assert_allclose(window[1], -(ys - 11.0), rtol=1e-6)
    with pytest.raises(ValueError, match="block-px"):
        measure_sky_blocks(image, 1)
