"""The global gain/offset solve on layers cut from a truth sky with planted gains and offsets.

Gains can only be read from overlaps whose sky has structure: on a perfectly flat sky every
gain/offset pair that matches the sky level is equally good. The truth sky is therefore a
smooth nebulous background (median 500 ADU, structure on ~6 px scales) plus stars, with
Gaussian noise of 5 ADU per layer; a gain error then shows as a mismatch of the structure.
Results are compared after normalising planted and solved corrections to the anchor, since
the solve can only fix gains and offsets up to one global affine map.
"""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from zemosaic_dask.io.diagnostics import PAIR_DIAGNOSTIC_COLUMNS, write_pair_diagnostics
from zemosaic_dask.plans.overlaps import box_slices, find_overlapping_pairs, overlap_box
from zemosaic_dask.plans.pair_graph import select_overlapping_pairs
from zemosaic_dask.tasks.closure_weights import MAX_DETOURS, closure_weights
from zemosaic_dask.tasks.gain_solve import solve_tile_corrections
from zemosaic_dask.tasks.intertile import PairFit, apply_affine_correction, fit_pair_affine

SKY = 500.0
NOISE = 5.0
TOLERANCE = 0.005  # 0.5 % in gain, 0.5 % of the sky level in offset


def truth_sky(rng, channels, height, width, amplitude, scale=6.0):
    field = gaussian_filter(rng.normal(size=(height, width)), scale)
    field /= field.std()
    background = SKY * np.exp(amplitude * field)
    n_stars = height * width // 300
    points = np.zeros((height, width))
    where = (rng.integers(0, height, n_stars), rng.integers(0, width, n_stars))
    np.add.at(points, where, rng.pareto(1.5, n_stars) * 300 + 100)
    stars = gaussian_filter(points, 1.3) * 2 * np.pi * 1.3**2
    colour = np.array([1.0, 0.85, 1.15])[:channels]
    return background[None] * colour[:, None, None] + stars[None]


def grid_boxes(rows, cols, size, step):
    return [(r * step, r * step + size, c * step, c * step + size) for r in range(rows) for c in range(cols)]


def planted_layers(rng, truth, boxes):
    """Layers ``G_k * truth + O_k + noise`` with G in [0.8, 1.2] and O within +-5 % of the sky."""
    channels = truth.shape[0]
    gains = rng.uniform(0.8, 1.2, (len(boxes), channels))
    offsets = rng.uniform(-0.05, 0.05, (len(boxes), channels)) * SKY
    layers = []
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        cut = truth[:, y0:y1, x0:x1]
        noisy = cut * gains[k][:, None, None] + offsets[k][:, None, None] + rng.normal(0.0, NOISE, cut.shape)
        layers.append(noisy.astype(np.float32))
    return layers, gains, offsets


def fit_all_pairs(boxes, layers, **options):
    fits = []
    for i, j in find_overlapping_pairs(boxes):
        box = overlap_box(boxes[i], boxes[j])
        rows_i, cols_i = box_slices(boxes[i], box)
        rows_j, cols_j = box_slices(boxes[j], box)
        coverage = np.ones((box[1] - box[0], box[3] - box[2]), np.float32)
        fits.append(
            fit_pair_affine(
                i, j, layers[i][:, rows_i, cols_i], layers[j][:, rows_j, cols_j], coverage, coverage, **options
            )
        )
    return fits


def recovery_errors(corrections, gains, offsets, reference):
    """Relative gain error and offset error (fraction of the sky), both relative to ``reference``.

    Layer k corrected is ``E_k * truth + F_k`` with ``E = g G`` and ``F = g O + o``: a perfect
    solve makes E and F the same for every layer.
    """
    effective_gain = corrections.gain_array * gains
    effective_offset = corrections.gain_array * offsets + corrections.offset_array
    gain_error = effective_gain / effective_gain[reference] - 1.0
    offset_error = (effective_offset - effective_offset[reference]) / effective_gain[reference] / SKY
    return gain_error, offset_error


def assemble(boxes, layers, shape):
    """Each output pixel from the layer whose centre is nearest (Chebyshev): sharp, straight seams."""
    channels = layers[0].shape[0]
    mosaic = np.full((channels, *shape), np.nan, np.float64)
    owner = np.full(shape, -1)
    best = np.full(shape, np.inf)
    for k, (y0, y1, x0, x1) in enumerate(boxes):
        yy, xx = np.mgrid[y0:y1, x0:x1]
        distance = np.maximum(np.abs(yy - (y0 + y1 - 1) / 2), np.abs(xx - (x0 + x1 - 1) / 2))
        closer = distance < best[y0:y1, x0:x1]
        best[y0:y1, x0:x1][closer] = distance[closer]
        owner[y0:y1, x0:x1][closer] = k
        mosaic[:, y0:y1, x0:x1][:, closer] = layers[k][:, closer]
    return mosaic, owner


def seam_steps(image, owner):
    """Per seam (pair of owners), the median jump across it, each jump measured between the two
    sides' linear extrapolations to the seam (so the sky's own slope does not count)."""
    steps, keys = [], []
    for values, owners in ((image, owner), (image.T, owner.T)):
        a, b = owners[:, 1:-2], owners[:, 2:-1]
        seam = (a != b) & (a >= 0) & (b >= 0) & (owners[:, :-3] == a) & (owners[:, 3:] == b)
        left = 1.5 * values[:, 1:-2] - 0.5 * values[:, :-3]
        right = 1.5 * values[:, 2:-1] - 0.5 * values[:, 3:]
        steps.append((right - left)[seam])
        keys.append(a[seam] * 1_000_000 + b[seam])
    steps, keys = np.concatenate(steps), np.concatenate(keys)
    medians = [np.median(steps[keys == key]) for key in np.unique(keys) if np.count_nonzero(keys == key) >= 8]
    return np.abs(np.array(medians))


def seam_metric(boxes, layers, shape):
    mosaic, owner = assemble(boxes, layers, shape)
    return [float(np.median(seam_steps(mosaic[c], owner))) for c in range(mosaic.shape[0])]


def corrected(layers, corrections):
    pairs = zip(layers, corrections.gains, corrections.offsets, strict=True)
    return [apply_affine_correction(layer, g, o) for layer, g, o in pairs]


def check_recovery_and_seams(boxes, layers, gains, offsets, fits, shape):
    corrections = solve_tile_corrections(len(boxes), fits)
    assert corrections.anchor is not None and not corrections.unconnected and not corrections.clamped
    gain_error, offset_error = recovery_errors(corrections, gains, offsets, corrections.anchor)
    assert np.abs(gain_error).max() < TOLERANCE, np.abs(gain_error).max()
    assert np.abs(offset_error).max() < TOLERANCE, np.abs(offset_error).max()
    noise_after = NOISE * float(np.median(corrections.gain_array))  # the noise in corrected units
    before = seam_metric(boxes, layers, shape)
    after = seam_metric(boxes, corrected(layers, corrections), shape)
    assert min(before) > 5 * NOISE, before
    assert max(after) < noise_after, (after, noise_after)
    return corrections


def test_ten_tiles_in_a_row_three_channels():
    rng = np.random.default_rng(10)
    size, step, n = 160, 112, 10  # 48 px (30 %) overlaps
    truth = truth_sky(rng, 3, size, step * (n - 1) + size, amplitude=0.8)
    boxes = [(0, size, c * step, c * step + size) for c in range(n)]
    layers, gains, offsets = planted_layers(rng, truth, boxes)
    fits = fit_all_pairs(boxes, layers, sky_percentiles=(10.0, 90.0))
    assert [(f.i, f.j) for f in fits] == [(k, k + 1) for k in range(n - 1)]
    corrections = check_recovery_and_seams(boxes, layers, gains, offsets, fits, truth.shape[1:])
    assert corrections.anchor in range(1, n - 1)  # an end layer has one pair only


def test_four_hundred_tiles_grid():
    rng = np.random.default_rng(20)
    size, step, n = 64, 48, 20  # 16 px overlaps
    extent = step * (n - 1) + size
    truth = truth_sky(rng, 1, extent, extent, amplitude=1.0)
    boxes = grid_boxes(n, n, size, step)
    layers, gains, offsets = planted_layers(rng, truth, boxes)
    fits = fit_all_pairs(boxes, layers, sky_percentiles=(5.0, 95.0), min_samples=100)
    assert len(fits) == 2 * n * (n - 1) + 2 * (n - 1) ** 2  # edge and corner neighbours
    corrections = check_recovery_and_seams(boxes, layers, gains, offsets, fits, (extent, extent))
    row, col = divmod(corrections.anchor, n)
    assert 0 < row < n - 1 and 0 < col < n - 1  # interior layers have the most pairs (8)


@pytest.fixture(scope="module")
def small_grid():
    """A 7x7 grid of 64 px layers with 24 px overlaps, fitted."""
    rng = np.random.default_rng(30)
    size, step, n = 64, 40, 7
    extent = step * (n - 1) + size
    truth = truth_sky(rng, 1, extent, extent, amplitude=1.0)
    boxes = grid_boxes(n, n, size, step)
    layers, gains, offsets = planted_layers(rng, truth, boxes)
    fits = fit_all_pairs(boxes, layers, sky_percentiles=(5.0, 95.0), min_samples=200)
    assert all(f.skipped is None for f in fits)
    return boxes, layers, gains, offsets, fits


def corrupt(fit, gain_factor, offset_shift):
    return PairFit(
        fit.i, fit.j, tuple(g * gain_factor for g in fit.gain), tuple(o + offset_shift for o in fit.offset),
        fit.n_samples, fit.residual_rms, fit.sky_level, None, fit.gain_error,
    )  # fmt: skip


def test_bad_pair_is_down_weighted(small_grid):
    boxes, _, gains, offsets, fits = small_grid
    bad = next(k for k, f in enumerate(fits) if (f.i, f.j) == (24, 25))  # the centre layer and its right neighbour
    fits = list(fits)
    fits[bad] = corrupt(fits[bad], 1.25, 60.0)
    plain = solve_tile_corrections(len(boxes), fits, max_iterations=1)
    robust = solve_tile_corrections(len(boxes), fits)
    plain_gain, _ = recovery_errors(plain, gains, offsets, plain.anchor)
    assert np.abs(plain_gain).max() > TOLERANCE  # the bad pair does pull an unweighted solve
    gain_error, offset_error = recovery_errors(robust, gains, offsets, robust.anchor)
    assert np.abs(gain_error).max() < TOLERANCE and np.abs(offset_error).max() < TOLERANCE
    weights = {(r["i"], r["j"]): r["weight"] for r in robust.pair_residuals}
    assert weights[(24, 25)] < 0.1
    others = [w for key, w in weights.items() if key != (24, 25)]
    assert np.median(others) == 1.0 and np.mean(others) > 0.8
    row = next(r for r in robust.pair_residuals if (r["i"], r["j"]) == (24, 25))
    assert abs(row["residual_gain"] - (1 / 1.25 - 1)) < 0.02  # the solve disagrees with the bad fit by its error


def test_skipped_pairs_are_counted_and_left_out():
    rng = np.random.default_rng(40)
    size, step, n = 64, 40, 5
    extent = step * (n - 1) + size
    truth = truth_sky(rng, 1, extent, extent, amplitude=0.6)
    boxes = grid_boxes(n, n, size, step)
    layers, gains, offsets = planted_layers(rng, truth, boxes)
    # Corner neighbours share 24x24 px (~460 sky samples), edge neighbours 24x64: only corners fall short.
    fits = fit_all_pairs(boxes, layers, sky_percentiles=(10.0, 90.0), min_samples=600)
    corners = {
        (i, j) for i, j in find_overlapping_pairs(boxes) if boxes[i][0] != boxes[j][0] and boxes[i][2] != boxes[j][2]
    }
    skipped = {(f.i, f.j) for f in fits if f.skipped is not None}
    assert skipped == corners and len(corners) == 2 * (n - 1) ** 2
    corrections = solve_tile_corrections(len(boxes), fits)
    assert corrections.skipped_pairs == len(corners)
    assert not {(r["i"], r["j"]) for r in corrections.pair_residuals} & corners
    gain_error, offset_error = recovery_errors(corrections, gains, offsets, corrections.anchor)
    assert np.abs(gain_error).max() < TOLERANCE and np.abs(offset_error).max() < TOLERANCE


def test_unconnected_layers_keep_identity(small_grid, caplog):
    boxes, _, _, _, fits = small_grid
    n = len(boxes)
    island = PairFit(n + 1, n + 2, (1.3,), (10.0,), 900, (7.0,), (500.0,), None, (0.002,))
    skipped = PairFit(0, n, (math.nan,), (math.nan,), 12, (math.nan,), (math.nan,), "too few common pixels: 12 < 1250")
    with caplog.at_level(logging.WARNING, logger="zemosaic_dask"):
        corrections = solve_tile_corrections(n + 3, [*fits, island, skipped])
    assert corrections.unconnected == [n, n + 1, n + 2]
    for k in corrections.unconnected:
        assert corrections.gains[k] == (1.0,) and corrections.offsets[k] == (0.0,)
    assert corrections.skipped_pairs == 1
    assert "not connected" in caplog.text


def test_mean_gain_anchor_is_the_same_solution_normalised_differently(small_grid):
    boxes, _, gains, offsets, fits = small_grid
    best = solve_tile_corrections(len(boxes), fits, anchor="best-connected")
    mean = solve_tile_corrections(len(boxes), fits, anchor="mean-gain")
    assert mean.anchor is None
    assert abs(np.log(mean.gain_array).mean()) < 1e-9 and abs(mean.offset_array.mean()) < 1e-6
    # Both describe the same corrected mosaic up to one global affine map: the planted-truth
    # comparison relative to any reference layer agrees.
    for reference in (0, 24):
        best_gain, best_offset = recovery_errors(best, gains, offsets, reference)
        mean_gain, mean_offset = recovery_errors(mean, gains, offsets, reference)
        np.testing.assert_allclose(mean_gain, best_gain, atol=1e-6)
        np.testing.assert_allclose(mean_offset, best_offset, atol=1e-6)


def test_clamps_are_applied_listed_and_logged(small_grid, caplog):
    boxes, _, _, _, fits = small_grid
    with caplog.at_level(logging.WARNING, logger="zemosaic_dask"):
        corrections = solve_tile_corrections(len(boxes), fits, gain_limits=(0.95, 1.05), offset_limit=0.001)
    g = corrections.gain_array
    assert g.min() >= 0.95 - 1e-12 and g.max() <= 1.05 + 1e-12
    gain_lines = [line for line in corrections.clamped if "gain" in line]
    assert len(gain_lines) == int(np.count_nonzero((g <= 0.95 + 1e-12) | (g >= 1.05 - 1e-12)))
    assert any("offset" in line for line in corrections.clamped)
    assert "clamped" in caplog.text
    unclamped = solve_tile_corrections(len(boxes), fits)
    assert unclamped.clamped == []


def test_all_skipped_gives_identity():
    fits = [PairFit(0, 1, (math.nan,) * 3, (math.nan,) * 3, 0, (math.nan,) * 3, (math.nan,) * 3, "too few")]
    corrections = solve_tile_corrections(3, fits)
    assert corrections.gains == ((1.0,) * 3,) * 3 and corrections.offsets == ((0.0,) * 3,) * 3
    assert corrections.skipped_pairs == 1 and corrections.unconnected == [0, 1, 2] and corrections.anchor is None


def test_rejects_bad_input():
    fit = PairFit(0, 5, (1.0,), (0.0,), 900, (1.0,), (500.0,), None, (0.01,))
    with pytest.raises(ValueError, match="anchor"):
        solve_tile_corrections(6, [fit], anchor="first")
    with pytest.raises(ValueError, match="does not name"):
        solve_tile_corrections(3, [fit])


def test_json_and_csv_diagnostics(small_grid, tmp_path):
    boxes, _, _, _, fits = small_grid
    fits = [
        *fits,
        PairFit(3, 40, (math.nan,), (math.nan,), 7, (math.nan,), (math.nan,), "too few sky samples: 7 < 200"),
    ]
    corrections = solve_tile_corrections(len(boxes), fits)
    data = json.loads(json.dumps(corrections.to_dict(), allow_nan=False))
    assert len(data["gains"]) == len(boxes) and data["anchor"] == corrections.anchor
    path = write_pair_diagnostics(tmp_path / "diag" / "intertile_pairs.csv", fits, corrections)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == PAIR_DIAGNOSTIC_COLUMNS
    assert len(rows) == len(fits)  # one channel
    first = rows[0]
    assert (int(first["i"]), int(first["j"])) == (fits[0].i, fits[0].j)
    assert float(first["gain"]) == fits[0].gain[0] and int(first["n_samples"]) == fits[0].n_samples
    solved = next(r for r in corrections.pair_residuals if (r["i"], r["j"]) == (fits[0].i, fits[0].j))
    assert float(first["solved_residual_gain"]) == pytest.approx(solved["residual_gain"])
    last = rows[-1]
    assert last["skipped"].startswith("too few") and last["gain"] == "" and last["solved_residual_gain"] == ""


def test_exact_fits_give_exact_corrections_at_scale():
    """Noise-free pair relations on 1600 layers: the algebra alone, to rounding, and quickly."""
    rng = np.random.default_rng(50)
    n = 40
    boxes = grid_boxes(n, n, 64, 48)
    gains = rng.uniform(0.8, 1.2, (len(boxes), 3))
    offsets = rng.uniform(-25.0, 25.0, (len(boxes), 3))
    fits = []
    for i, j in find_overlapping_pairs(boxes):
        a = gains[j] / gains[i]  # x_j = a x_i + b exactly when x_k = G_k truth + O_k
        b = offsets[j] - a * offsets[i]
        sky = rng.uniform(300.0, 900.0, 3)
        fits.append(PairFit(i, j, tuple(a), tuple(b), 900, (7.0,) * 3, tuple(sky), None, (0.002,) * 3))
    for anchor in ("best-connected", "mean-gain"):
        corrections = solve_tile_corrections(len(boxes), fits, anchor=anchor)
        gain_error, offset_error = recovery_errors(corrections, gains, offsets, 0)
        assert np.abs(gain_error).max() < 1e-9 and np.abs(offset_error).max() < 1e-9
        assert all(row["weight"] == 1.0 for row in corrections.pair_residuals)
    # mean-gain: the corrections are the planted gains' inverses over their geometric mean.
    expected = np.exp(np.log(gains).mean(axis=0)) / gains
    np.testing.assert_allclose(corrections.gain_array, expected, rtol=1e-9)


def deep_session_fits(rng, boxes, pairs, gains, offsets, noise=0.003, bad=None):
    """Pair fits of layers ``G_k truth + O_k`` (sky level 500), each gain measured to ``noise``."""
    fits = []
    for i, j in pairs:
        a = gains[j] / gains[i] * (1.0 + rng.normal(0.0, noise, gains.shape[1]))
        if (i, j) == bad:
            a = a * 1.25
        b = offsets[j] + gains[j] / gains[i] * (SKY - offsets[i]) - a * SKY + rng.normal(0.0, 0.5, gains.shape[1])
        fits.append(PairFit(i, j, tuple(a), tuple(b), 900, (15.0,) * len(a), (SKY,) * len(a), None, (noise,) * len(a)))
    return fits


@pytest.fixture(scope="module")
def deep_session():
    """120 layers of one field (every layer overlaps every other one), with planted gains and offsets."""
    rng = np.random.default_rng(60)
    n = 120
    centres = np.round(rng.normal(0.0, 40.0, (n, 2))).astype(int)
    boxes = [(int(y), int(y) + 540, int(x), int(x) + 960) for y, x in centres]
    gains = rng.uniform(0.8, 1.2, (n, 2))
    offsets = rng.uniform(-25.0, 25.0, (n, 2))
    return boxes, gains, offsets


def test_bounded_pairs_recover_a_deep_session_as_well_as_every_pair(deep_session):
    """Pair gains measured to 0.3 %: every pair (7,140) recovers every layer's gain and offset
    within 0.3 %, the bounded selection (k = 8, about 560 pairs) within 0.6 % (each layer is
    measured by ~8 pairs instead of 119: the statistical price of the bound, set by k)."""
    boxes, gains, offsets = deep_session
    full = find_overlapping_pairs(boxes)
    bounded = select_overlapping_pairs(boxes, k=8)
    assert len(full) == len(boxes) * (len(boxes) - 1) // 2 and len(bounded) < 10 * len(boxes)
    errors = {}
    for name, pairs in (("full", full), ("bounded", bounded)):
        corrections = solve_tile_corrections(
            len(boxes), deep_session_fits(np.random.default_rng(1), boxes, pairs, gains, offsets)
        )
        assert not corrections.unconnected and not corrections.clamped
        gain_error, offset_error = recovery_errors(corrections, gains, offsets, corrections.anchor)
        errors[name] = max(np.abs(gain_error).max(), np.abs(offset_error).max())
    assert errors["full"] < 0.003 and errors["bounded"] < 0.006, errors


def test_bad_pair_is_down_weighted_on_a_dense_graph(deep_session):
    """Layers with far more pairs than the closure check's detours: one wrong pair still starts down-weighted."""
    boxes, gains, offsets = deep_session
    pairs = find_overlapping_pairs(boxes)
    assert len(pairs) / len(boxes) * 2 > 4 * MAX_DETOURS  # every layer has many more pairs than detours
    bad = pairs[len(pairs) // 2]
    fits = deep_session_fits(np.random.default_rng(2), boxes, pairs, gains, offsets, bad=bad)
    corrections = solve_tile_corrections(len(boxes), fits)
    weights = {(r["i"], r["j"]): r["weight"] for r in corrections.pair_residuals if r["channel"] == 0}
    assert weights[bad] < 0.1
    assert np.median([w for key, w in weights.items() if key != bad]) == 1.0
    gain_error, _ = recovery_errors(corrections, gains, offsets, corrections.anchor)
    assert np.abs(gain_error).max() < 0.003


def test_closure_weights_check_every_common_neighbour_up_to_the_detour_bound(small_grid):
    """The 7x7 grid has at most 8 pairs per layer: the bounded check sees every triangle (bit for bit);
    with one detour per layer it sees fewer triangles and the weights change."""
    boxes, _, _, _, fits = small_grid
    fits = list(fits)
    bad = next(k for k, f in enumerate(fits) if (f.i, f.j) == (24, 25))
    fits[bad] = corrupt(fits[bad], 1.25, 60.0)
    ii, jj = np.array([f.i for f in fits]), np.array([f.j for f in fits])
    rhs = np.log([f.gain[0] for f in fits])
    sigma = np.array([f.gain_error[0] / f.gain[0] for f in fits])
    every = closure_weights(ii, jj, rhs, sigma, 1.5, max_detours=len(fits))
    bounded = closure_weights(ii, jj, rhs, sigma, 1.5)
    np.testing.assert_array_equal(bounded, every)
    assert every[bad] < 0.1 and np.median(every) == 1.0
    one = closure_weights(ii, jj, rhs, sigma, 1.5, max_detours=1)
    assert np.any(one != every)
