"""The global background model: known offsets and planes recovered from overlaps, halo kept."""

from __future__ import annotations

import numpy as np
import pytest

from zemosaic_dask.tasks.background_solve import (
    PLANE_LENGTH,
    FrameAffine,
    frame_gradients,
    planes_in_frame_pixels,
    solve_background_planes,
)
from zemosaic_dask.tasks.overlap_planes import pair_points, summarise_pair
from zemosaic_dask.tasks.sky_blocks import SkyCells, measure_sky_cells, subtract_background_plane
from zemosaic_dask.testing import held_bytes

FRAME = (240, 160)  # (H, W) frame pixels
CELL = 16


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


def _cells(affine: FrameAffine, offset: float, slope: tuple[float, float], halo: float) -> SkyCells:
    """Cell means of a frame on a 16-px grid: the sky plus the frame's own offset and detector-fixed plane."""
    height, width = FRAME
    n_columns = 400
    rows, columns = np.mgrid[0:50, 0:n_columns]
    ids = (rows * n_columns + columns).ravel()
    probe = SkyCells(ids, np.zeros((1, ids.size)), np.zeros((1, ids.size)), CELL, n_columns)
    gx, gy = probe.centres()
    fx, fy = affine.to_frame(gx, gy)
    margin = CELL  # the whole cell inside the frame
    inside = (fx > margin / 2) & (fx < width - margin / 2) & (fy > margin / 2) & (fy < height - margin / 2)
    xc, yc = affine.centre
    values = _sky(gx, gy, halo) + offset + slope[0] * (fx - xc) + slope[1] * (fy - yc)
    return SkyCells(ids[inside], values[None, inside], np.zeros((1, int(inside.sum()))), CELL, n_columns)


def _solve(affines, cells, model="plane"):
    pairs = []
    for i in range(len(affines)):
        for j in range(i + 1, len(affines)):
            found = summarise_pair(i, j, cells[i], cells[j], model=model)
            if found is not None:
                pairs.append(found)
    observed = frame_gradients(cells, affines)
    centres = np.array([a.grid_centre for a in affines])
    solution = solve_background_planes(len(affines), pairs, centres, observed, model=model)
    return solution, planes_in_frame_pixels(solution, affines)


def _corrected(affines, blocks, planes, gx, gy):
    """Mean of the corrected frames that cover each grid point (NaN where none)."""
    total, count = np.zeros(gx.shape), np.zeros(gx.shape)
    for affine, sky, plane in zip(affines, blocks, planes, strict=True):
        fx, fy = affine.to_frame(gx, gy)
        ids = (np.floor((gy + 0.5) / CELL) * sky.n_columns + np.floor((gx + 0.5) / CELL)).astype(np.int64)
        found = np.searchsorted(sky.ids, ids)
        hit = (found < sky.ids.size) & (sky.ids[np.minimum(found, sky.ids.size - 1)] == ids)
        value = np.where(hit, sky.values[0][np.minimum(found, sky.ids.size - 1)], np.nan)
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
    blocks = [_cells(a, o, slope, halo) for a, o in zip(affines, offsets, strict=True)]
    solution, planes = _solve(affines, blocks)
    assert solution.rms_after[0] < 0.01 * solution.rms_before[0]
    # The detector gradient is removed in every frame (the gauge takes the frames' mean gradient).
    np.testing.assert_allclose(planes[:, 0, 2], slope[1], atol=0.02 * slope[1])
    np.testing.assert_allclose(planes[:, 0, 1], 0.0, atol=0.02 * slope[1])
    # Offsets recovered up to their mean (the mosaic keeps the frames' mean level).
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1.0)
    # The halo, common to overlapping frames, is kept: the corrected mosaic is sky + halo + a constant.
    gy, gx = (np.mgrid[12:23, 12:27].astype(float) + 0.5) * CELL - 0.5  # cell centres
    mosaic = _corrected(affines, blocks, planes, gx, gy)
    truth = _sky(gx, gy, halo)
    ok = np.isfinite(mosaic)
    assert ok.mean() > 0.9 and np.ptp(truth[ok]) > 0.4 * halo
    residual = (mosaic - truth)[ok]
    assert np.ptp(residual) < 0.05 * np.ptp(truth[ok])


def test_offset_model_fits_no_plane():
    affines = _layout()
    offsets = np.linspace(-30, 30, len(affines))
    blocks = [_cells(a, o, (0.0, 0.0), 0.0) for a, o in zip(affines, offsets, strict=True)]
    solution, planes = _solve(affines, blocks, model="offset")
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1e-3)
    assert np.all(planes[:, 0, 1:] == 0)


def test_outlier_points_do_not_move_the_solution():
    affines = _layout(seed=2)
    offsets = np.random.default_rng(3).uniform(-50, 50, len(affines))
    blocks = [_cells(a, o, (0.02, -0.05), 0.0) for a, o in zip(affines, offsets, strict=True)]
    # A satellite trail raises a column of blocks of frame 4 by 400 ADU.
    values = blocks[4].values.copy()
    gx, _ = blocks[4].centres()
    values[:, np.abs(gx - np.median(gx)) < CELL] += 400.0
    blocks[4] = SkyCells(blocks[4].ids, values, blocks[4].fluxes, CELL, blocks[4].n_columns)
    _, planes = _solve(affines, blocks)
    np.testing.assert_allclose(planes[:, 0, 0], offsets - offsets.mean(), atol=1.5)


def test_separate_groups_are_gauged_on_their_own():
    left = _layout(nx=1, ny=1)
    right = [FrameAffine(a.centre, (a.grid_centre[0] + 5000, a.grid_centre[1]), a.matrix) for a in left]
    affines = left + right
    offsets = np.array([10.0, -10.0, 40.0, 20.0])
    blocks = [_cells(a, o, (0.0, 0.0), 0.0) for a, o in zip(affines, offsets, strict=True)]
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


def test_cell_means_clip_stars_and_trails_and_cover_the_same_sky():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (2, 96, 128)).astype(np.float32)
    image[:, 10:13, 10:13] = 5000.0  # a star's core
    image[:, 40, :] += 400.0  # a satellite trail
    image[:, 80:, :] = np.nan  # no data at the bottom: those cells are not filled
    shift = FrameAffine((0.0, 0.0), (32.0, 16.0), ((1.0, 0.0), (0.0, 1.0)))
    cells = measure_sky_cells(image, shift.to_grid, 16, (200, 200), noise=(5.0, 5.0))
    gx, gy = cells.centres()
    assert cells.values.shape == (2, cells.ids.size) and cells.ids.size == 8 * 5
    assert gx.min() == 39.5 and gy.max() <= 16 + 80  # cells fully inside the frame's data only
    np.testing.assert_allclose(cells.values, 100.0, atol=1.0)
    with pytest.raises(ValueError, match="block-px"):
        measure_sky_cells(image, shift.to_grid, 1, (200, 200))


def test_subtract_plane_in_place():
    window = np.zeros((2, 4, 5), dtype=np.float32)
    plane = [(1.0, 0.5, -2.0), (0.0, 0.0, 1.0)]
    subtract_background_plane(window, (10, 20), (22.0, 11.0), plane)
    ys, xs = np.mgrid[10:14, 20:25]
    np.testing.assert_allclose(window[0], -(1.0 + 0.5 * (xs - 22.0) - 2.0 * (ys - 11.0)), rtol=1e-6)
    np.testing.assert_allclose(window[1], -(ys - 11.0), rtol=1e-6)


@pytest.mark.parametrize("plane", [[(1.0, 0.5, -2.0), (0.3, 0.1, 1.0)], [(1.5, -0.25, 0.75, 1.1)]])
def test_subtract_plane_on_a_device_array_stays_there_and_equals_numpy(fakecupy, plane):
    # Every mode's GPU units subtract the planes from device windows: no numpy call on them.
    rng = np.random.default_rng(2)
    host = rng.normal(100.0, 5.0, (2, 6, 7)).astype(np.float32)
    device = subtract_background_plane(fakecupy.asarray(host.copy()), (30, 40), (43.5, 31.0), plane)
    expected = subtract_background_plane(host.copy(), (30, 40), (43.5, 31.0), plane)
    assert type(device).__module__ == "fakecupy" and device.dtype == np.float32
    np.testing.assert_array_equal(fakecupy.asnumpy(device), expected)


def test_pair_summaries_give_the_point_level_least_squares_solution():
    """Without reweighting, 3 rows per pair solve exactly what every overlap point would."""
    affines = _layout(rotation_deg=6.0, seed=4)
    rng = np.random.default_rng(5)
    offsets = rng.uniform(-40, 40, len(affines))
    blocks = []
    for a, o in zip(affines, offsets, strict=True):
        sky = _cells(a, o, (0.01, 0.2), 30.0)
        noisy = sky.values + rng.normal(0.0, 2.0, sky.values.shape)
        blocks.append(SkyCells(sky.ids, noisy, sky.fluxes, CELL, sky.n_columns))
    centres = np.array([a.grid_centre for a in affines])
    summaries, rows, differences = [], [], []
    for i in range(len(affines)):
        for j in range(i + 1, len(affines)):
            found = pair_points(blocks[i], blocks[j])
            if found is None:
                continue
            summaries.append(summarise_pair(i, j, blocks[i], blocks[j], iterations=1))
            gx, gy, d = found
            for x, y, value in zip(gx, gy, d[0], strict=True):
                row = np.zeros(3 * len(affines))
                for frame, sign in ((i, 1.0), (j, -1.0)):
                    dx, dy = (x - centres[frame, 0]) / PLANE_LENGTH, (y - centres[frame, 1]) / PLANE_LENGTH
                    row[3 * frame : 3 * frame + 3] = sign * np.array([1.0, dx, dy])
                rows.append(row)
                differences.append(value)
    design, differences = np.array(rows), np.array(differences)
    reference, *_ = np.linalg.lstsq(design, differences, rcond=None)
    observed = frame_gradients(blocks, affines)
    solution = solve_background_planes(len(affines), summaries, centres, observed, iterations=1)
    solved = solution.coefficients[:, 0, :].ravel()
    # Gauge-free comparison: the fitted differences at every overlap point.
    np.testing.assert_allclose(design @ solved, design @ reference, atol=1e-3)
    # And the gauge: no net offset, the frames' mean observed gradient.
    assert abs(solution.coefficients[:, 0, 0].sum()) < 1e-6
    np.testing.assert_allclose(solution.coefficients[:, 0, 1:].sum(axis=0), observed[:, 0, :].sum(axis=0), atol=1e-9)
    assert solution.pairs == len(summaries) and solution.points == differences.size


def test_a_slope_no_overlap_measures_is_the_frame_own_gradient():
    """Frames in a row joined by strips one cell wide: the solve stays finite and keeps their own slopes."""
    n_columns = 100
    frames, affines = [], []
    for k in range(3):
        rows, columns = np.mgrid[0:6, 10 * k : 10 * k + 11]  # 11 columns: neighbours share one column
        ids = (rows * n_columns + columns).ravel()
        probe = SkyCells(ids, np.zeros((1, ids.size)), np.zeros((1, ids.size)), CELL, n_columns)
        gx, gy = probe.centres()
        centre = (float(gx.mean()), float(gy.mean()))
        values = 200.0 + 10.0 * k + 0.05 * (gx - centre[0]) + 0.02 * (gy - centre[1])
        frames.append(SkyCells(ids, values[None, :], np.zeros((1, ids.size)), CELL, n_columns))
        affines.append(FrameAffine((0.0, 0.0), centre, ((1.0, 0.0), (0.0, 1.0))))
    summaries = [summarise_pair(i, i + 1, frames[i], frames[i + 1]) for i in range(2)]
    observed = frame_gradients(frames, affines)
    centres = np.array([a.grid_centre for a in affines])
    solution = solve_background_planes(3, summaries, centres, observed)
    assert np.all(np.isfinite(solution.coefficients))
    # Each strip fixes the value along it, not the slope across it: the x slopes stay the frames' own.
    np.testing.assert_allclose(solution.coefficients[:, 0, 1], 0.05 * PLANE_LENGTH, rtol=1e-3)


def test_the_direct_fallback_gives_the_iterative_solution(monkeypatch):
    """When conjugate gradients stop short, the sparse factorisation takes over with the same answer."""
    from zemosaic_dask.tasks import normal_equations

    affines = _layout(rotation_deg=5.0, seed=6)
    offsets = np.random.default_rng(7).uniform(-50, 50, len(affines))
    blocks = [_cells(a, o, (0.01, 0.1), 20.0) for a, o in zip(affines, offsets, strict=True)]
    iterative, _ = _solve(affines, blocks)
    assert iterative.iterations > 0 and iterative.direct == 0
    monkeypatch.setattr(normal_equations, "_CG_MAX_ITER", 1)
    direct, _ = _solve(affines, blocks)
    assert direct.direct > 0
    np.testing.assert_allclose(direct.coefficients, iterative.coefficients, atol=1e-3 * np.ptp(offsets))


def test_pair_table_gives_the_solve_of_the_summaries_and_keeps_their_rows_compact():
    """The pair tasks' table: same rows in order, the same solve bit for bit, a fraction of the bytes."""
    import pickle

    from zemosaic_dask.tasks.overlap_planes import PairTable

    rng = np.random.default_rng(3)
    affines = _layout(3, 2, rotation_deg=4.0)
    cells = [_cells(a, rng.normal(0, 20), (rng.normal(0, 0.05), rng.normal(0, 0.05)), halo=40.0) for a in affines]
    summaries = [
        found
        for i in range(len(affines))
        for j in range(i + 1, len(affines))
        if (found := summarise_pair(i, j, cells[i], cells[j])) is not None
    ]
    assert len(summaries) >= 10
    # Two batches, as two pair tasks return them, and an empty batch between them.
    half = len(summaries) // 2
    parts = [PairTable.from_summaries(summaries[:half]), PairTable.empty(), PairTable.from_summaries(summaries[half:])]
    table = PairTable.concatenate(parts)
    assert len(table) == len(summaries) and table.terms == 3
    for row, summary in enumerate(summaries):
        again = table.summary(row)
        assert (again.i, again.j, again.points) == (summary.i, summary.j, summary.points)
        np.testing.assert_array_equal(again.root, summary.root)
        np.testing.assert_array_equal(again.target, summary.target)
        np.testing.assert_array_equal(again.spread, summary.spread)
        assert again.centre == tuple(summary.centre)
    observed = frame_gradients(cells, affines)
    centres = np.array([a.grid_centre for a in affines])
    from_list = solve_background_planes(len(affines), summaries, centres, observed)
    from_table = solve_background_planes(len(affines), table, centres, observed)
    np.testing.assert_array_equal(from_table.coefficients, from_list.coefficients)
    assert from_table.pairs == from_list.pairs and from_table.points == from_list.points
    # What the client keeps per pair once it has unpickled a pair task's result.
    per_row = held_bytes(pickle.dumps(table)) / len(table)
    per_object = held_bytes(pickle.dumps(summaries)) / len(summaries)
    assert per_row < 0.25 * per_object
    assert PairTable.concatenate([]).terms == 0 and len(PairTable.concatenate([PairTable.empty()])) == 0
