"""Pair fits on planted gains and offsets: errors-in-variables, sky band, clipping, skips, dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import convolve, gaussian_filter

from zemosaic_dask.tasks.intertile import PairFit, apply_affine_correction, fit_pair_affine

SKY = 500.0


def structured_sky(rng, shape, *, amplitude, scale=6.0, stars=True):
    """Smooth sky around 500 ADU with nebulous structure of relative amplitude ``amplitude``, plus stars."""
    field = gaussian_filter(rng.normal(size=shape), scale)
    field /= field.std()
    sky = SKY * np.exp(amplitude * field)
    if stars:
        n = shape[0] * shape[1] // 300
        points = np.zeros(shape)
        np.add.at(points, (rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)), rng.pareto(1.5, n) * 300 + 100)
        sky += gaussian_filter(points, 1.3) * 2 * np.pi * 1.3**2
    return sky


def planted_pair(rng, truth, gain, offset, sigma_i=5.0, sigma_j=5.0):
    vi = truth + rng.normal(0.0, sigma_i, truth.shape)
    vj = gain * truth + offset + rng.normal(0.0, sigma_j, truth.shape)
    return vi.astype(np.float32), vj.astype(np.float32)


def sky_band(vi, vj, percentiles=(30.0, 70.0)):
    """The documented sky band: the pair mean over each pixel's 8 neighbours within the percentiles."""
    ring = np.ones((3, 3))
    ring[1, 1] = 0.0
    total = convolve((vi.astype(np.float64) + vj) / 2.0, ring, mode="constant")
    count = convolve(np.ones(vi.shape), ring, mode="constant")
    coordinate = total / count
    low, high = np.percentile(coordinate, percentiles)
    return (coordinate >= low) & (coordinate <= high)


def orthogonal_slope(x, y):
    """Total least squares (equal noise assumed): the principal axis of the (x, y) cloud."""
    _, vectors = np.linalg.eigh(np.cov(x, y))
    return vectors[1, -1] / vectors[0, -1]


def test_planted_gain_beats_regression_dilution():
    """Weak sky structure (band spread ~3x the noise): OLS is shrunk by ~10 %, the fit is not."""
    rng = np.random.default_rng(1)
    gains, ols = [], []
    planted = [(1.15, -20.0), (0.85, 15.0), (1.05, 10.0), (0.92, -5.0)]
    for gain, offset in planted:
        truth = structured_sky(rng, (300, 300), amplitude=0.08)
        vi, vj = planted_pair(rng, truth, gain, offset)
        cov = np.ones(truth.shape, np.float32)
        fit = fit_pair_affine(3, 7, vi, vj, cov, cov)
        assert fit.skipped is None and (fit.i, fit.j) == (3, 7)
        gains.append(fit.gain[0] / gain - 1.0)
        # Offset: the fitted line must give layer j's sky level at layer i's sky level.
        assert abs(fit.gain[0] * fit.sky_level[0] + fit.offset[0] - (gain * fit.sky_level[0] + offset)) < 1.0
        band = sky_band(vi, vj)
        ols.append(np.polyfit(vi[band], vj[band], 1)[0] / gain - 1.0)
        assert abs(fit.gain[0] / gain - 1.0) < 4 * fit.gain_error[0] / gain + 1e-3
    assert np.max(np.abs(gains)) < 0.012 and abs(np.mean(gains)) < 0.005
    assert np.mean(ols) < -0.08  # the naive estimator really is biased on these data


def test_unequal_noise_needs_the_measured_variance_ratio():
    """Noise 2 ADU in i and 8 ADU in j: the ratio of spreads and the orthogonal fit are biased, the fit is not."""
    rng = np.random.default_rng(2)
    truth = structured_sky(rng, (300, 300), amplitude=0.1)
    gain, offset = 1.12, 12.0
    vi, vj = planted_pair(rng, truth, gain, offset, sigma_i=2.0, sigma_j=8.0)
    cov = np.ones(truth.shape, np.float32)
    fit = fit_pair_affine(0, 1, vi, vj, cov, cov)
    assert abs(fit.gain[0] / gain - 1.0) < 0.01
    band = sky_band(vi, vj)
    assert abs(fit.n_samples - band.sum()) < 0.01 * band.sum()  # the same sky pixels, less the clipped ones
    x, y = vi[band].astype(np.float64), vj[band].astype(np.float64)
    assert np.std(y) / np.std(x) / gain - 1.0 > 0.05
    assert orthogonal_slope(x, y) / gain - 1.0 > 0.05


def test_per_channel_fit_ignores_stars_nan_and_empty_coverage():
    rng = np.random.default_rng(3)
    truth = np.stack([structured_sky(rng, (160, 160), amplitude=0.4) * f for f in (1.0, 0.8, 1.2)])
    gains, offsets = np.array([1.1, 0.9, 1.2]), np.array([-20.0, 10.0, 25.0])
    vi = (truth + rng.normal(0, 5, truth.shape)).astype(np.float32)
    vj = (truth * gains[:, None, None] + offsets[:, None, None] + rng.normal(0, 5, truth.shape)).astype(np.float32)
    cov_i = np.ones(truth.shape[1:], np.float32)
    cov_j = cov_i.copy()
    vj[:, :40, :] = np.nan  # layer j has no data there ...
    cov_j[:, 150:] = 0.0  # ... nor there (coverage 0, values garbage)
    vj[:, :, 150:] = 1e6
    vi[1, 80, 80] = np.inf
    fit = fit_pair_affine(0, 1, vi, vj, cov_i, cov_j, sky_percentiles=(10.0, 90.0))
    assert fit.n_channels == 3 and fit.skipped is None
    np.testing.assert_allclose(fit.gain, gains, rtol=0.005)
    level_i = np.array(fit.sky_level)
    np.testing.assert_allclose(np.array(fit.gain) * level_i + fit.offset, gains * level_i + offsets, atol=1.5)
    np.testing.assert_allclose(fit.residual_rms, np.hypot(5.0, 5.0 * gains), rtol=0.1)


def test_trail_in_one_layer_is_clipped():
    rng = np.random.default_rng(4)
    truth = structured_sky(rng, (200, 200), amplitude=0.3)
    gain, offset = 0.9, 20.0
    vi, vj = planted_pair(rng, truth, gain, offset)
    yy, xx = np.mgrid[:200, :200]
    vj[np.abs(yy - 0.7 * xx - 30) < 10] += 40.0  # a satellite trail, partly inside the sky band
    cov = np.ones(truth.shape, np.float32)
    fit = fit_pair_affine(0, 1, vi, vj, cov, cov)
    unclipped = fit_pair_affine(0, 1, vi, vj, cov, cov, clip_sigma=math.inf)
    assert abs(fit.gain[0] / gain - 1.0) < 0.005
    assert abs(fit.gain[0] * fit.sky_level[0] + fit.offset[0] - (gain * fit.sky_level[0] + offset)) < 1.0
    level_error = abs(unclipped.gain[0] * unclipped.sky_level[0] + unclipped.offset[0] - gain * unclipped.sky_level[0])
    assert level_error - offset > 2.5  # without clipping the trail drags the level
    assert abs(unclipped.gain[0] / gain - 1.0) > 0.01


def test_too_few_samples_is_a_skip_not_an_error():
    rng = np.random.default_rng(5)
    truth = structured_sky(rng, (20, 40), amplitude=0.3)
    vi, vj = planted_pair(rng, truth, 1.0, 0.0)
    cov = np.ones(truth.shape, np.float32)
    fit = fit_pair_affine(2, 9, vi, vj, cov, cov)  # 800 px, 320 in the band < 500
    assert fit.skipped is not None and "too few" in fit.skipped
    assert math.isnan(fit.gain[0]) and fit.gain_error == ()
    assert fit.n_samples == 800
    ok = fit_pair_affine(2, 9, vi, vj, cov, cov, min_samples=200)
    assert ok.skipped is None and ok.n_samples >= 200
    empty = fit_pair_affine(2, 9, vi, vj, cov, np.zeros_like(cov))
    assert empty.skipped is not None and empty.n_samples == 0


def test_flat_sky_fixes_levels_but_not_the_gain():
    rng = np.random.default_rng(6)
    truth = np.full((100, 100), SKY)
    vi, vj = planted_pair(rng, truth, 1.0, 0.0)
    vj = -vi + 2 * SKY + 30.0  # anti-correlated: no gain can be read
    cov = np.ones(truth.shape, np.float32)
    fit = fit_pair_affine(0, 1, vi, vj, cov, cov)
    assert fit.skipped is None and fit.gain == (1.0,) and fit.gain_error == (math.inf,)
    assert abs(fit.offset[0] - 30.0) < 1.0


def test_subsampling_is_deterministic_and_bounded():
    rng = np.random.default_rng(7)
    truth = structured_sky(rng, (200, 200), amplitude=0.4)
    vi, vj = planted_pair(rng, truth, 1.1, 5.0)
    cov = np.ones(truth.shape, np.float32)
    first = fit_pair_affine(0, 1, vi, vj, cov, cov, max_samples=3000)
    second = fit_pair_affine(0, 1, vi, vj, cov, cov, max_samples=3000)
    assert first == second
    assert first.n_samples <= 3000
    full = fit_pair_affine(0, 1, vi, vj, cov, cov)
    assert full.n_samples > 10_000
    assert abs(first.gain[0] / 1.1 - 1.0) < 0.01 and abs(full.gain[0] / 1.1 - 1.0) < 0.005


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same overlap box"):
        fit_pair_affine(0, 1, np.ones((1, 5, 5)), np.ones((1, 5, 6)), np.ones((5, 5)), np.ones((5, 6)))


def test_json_round_trip():
    rng = np.random.default_rng(8)
    truth = structured_sky(rng, (100, 100), amplitude=0.4)
    vi, vj = planted_pair(rng, truth, 1.1, 5.0)
    cov = np.ones(truth.shape, np.float32)
    for fit in (fit_pair_affine(0, 1, vi, vj, cov, cov), fit_pair_affine(0, 1, vi[:10], vj[:10], cov[:10], cov[:10])):
        data = fit.to_dict()
        assert all(v is None or math.isfinite(v) for v in data["gain"])
        back = PairFit.from_dict(data)
        assert back.to_dict() == data


def test_apply_affine_correction_per_channel():
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    values[1, 0, 0] = np.nan
    out = apply_affine_correction(values, [2.0, 0.5], [1.0, -3.0])
    np.testing.assert_allclose(out[0], values[0] * 2 + 1)
    np.testing.assert_allclose(out[1], values[1] * 0.5 - 3, equal_nan=True)
    assert np.isnan(out[1, 0, 0]) and out.dtype == np.float32
    np.testing.assert_allclose(apply_affine_correction(values[0], [2.0], [1.0]), values[0] * 2 + 1)
    with pytest.raises(ValueError, match="channel"):
        apply_affine_correction(values, [1.0], [0.0])


def test_runs_in_the_input_namespace(fakecupy):
    rng = np.random.default_rng(9)
    truth = np.stack([structured_sky(rng, (120, 120), amplitude=0.4)] * 2)
    vi, vj = planted_pair(rng, truth, 1.07, -8.0)
    cov = np.ones(truth.shape[1:], np.float32)
    host = fit_pair_affine(0, 1, vi, vj, cov, cov)
    device = fit_pair_affine(
        0, 1, fakecupy.asarray(vi), fakecupy.asarray(vj), fakecupy.asarray(cov), fakecupy.asarray(cov)
    )
    assert device.n_samples == host.n_samples
    np.testing.assert_allclose(device.gain, host.gain, rtol=1e-9)
    np.testing.assert_allclose(device.offset, host.offset, rtol=1e-9, atol=1e-9)
    corrected = apply_affine_correction(fakecupy.asarray(vi), host.gain, host.offset)
    assert isinstance(corrected, fakecupy.ndarray)
    np.testing.assert_allclose(fakecupy.asnumpy(corrected), apply_affine_correction(vi, host.gain, host.offset))


@pytest.mark.gpu
def test_runs_on_cupy_like_numpy():
    import cupy

    rng = np.random.default_rng(10)
    truth = np.stack([structured_sky(rng, (160, 160), amplitude=0.4)] * 3)
    vi, vj = planted_pair(rng, truth, 0.93, 11.0, sigma_i=3.0, sigma_j=6.0)
    cov = np.ones(truth.shape[1:], np.float32)
    host = fit_pair_affine(0, 1, vi, vj, cov, cov)
    device = fit_pair_affine(0, 1, cupy.asarray(vi), cupy.asarray(vj), cupy.asarray(cov), cupy.asarray(cov))
    assert device.n_samples == host.n_samples
    np.testing.assert_allclose(device.gain, host.gain, rtol=1e-7)
    np.testing.assert_allclose(device.offset, host.offset, rtol=1e-6, atol=1e-4)
    corrected = apply_affine_correction(cupy.asarray(vi), host.gain, host.offset)
    assert isinstance(corrected, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(corrected), apply_affine_correction(vi, host.gain, host.offset), rtol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_uncorrelated_flat_sky_matches_levels_only(seed):
    """Flat sky with independent noise: any fitted slope would be noise (gains of 0.01 or 250 were seen)."""
    rng = np.random.default_rng(seed)
    truth = np.full((3, 200, 200), SKY)
    vi, vj = planted_pair(rng, truth, 1.0, 25.0)
    cov = np.ones(truth.shape[1:], np.float32)
    fit = fit_pair_affine(0, 1, vi, vj, cov, cov)
    assert fit.gain == (1.0, 1.0, 1.0) and fit.gain_error == (math.inf,) * 3
    assert all(abs(offset - 25.0) < 1.0 for offset in fit.offset)
