"""Rejection methods against per-pixel references written with plain numpy loops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import ndtri

from zemosaic_dask.tasks.rejection import (
    expected_order_statistics,
    huber_mean,
    kept_median,
    reject_kappa_sigma,
    reject_linear_fit,
    reject_winsorized_sigma,
    weighted_mean,
)

KAPPA = dict(kappa_low=2.5, kappa_high=2.5, max_iterations=3, min_samples=3)
K, C, H, W = 10, 2, 6, 7


def planted_stack(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean Gaussian samples plus planted outliers, missing samples and a thin pixel.

    Returns the values (NaN where missing), a mask of the planted outliers and a
    (K, 1, H, W) weight array.
    """
    rng = np.random.default_rng(seed)
    values = rng.normal(1000.0, 10.0, (K, C, H, W)).astype(np.float32)
    planted = np.zeros(values.shape, dtype=bool)
    planted[3, :, 2, 4] = True  # cosmic ray
    planted[7, 0, 4, 1] = True
    planted[5, :, 1, :] = True  # satellite trail along a row of one frame
    values[planted] += 900.0
    values[1, 1, 0, 0] = 0.0  # dead pixel, low outlier
    planted[1, 1, 0, 0] = True
    values[rng.random(values.shape) < 0.08] = np.nan
    values[[0, 2, 4, 6, 8], :, 5, 6] = np.nan  # five samples left
    values[3:, :, 5, 5] = np.nan  # three samples left
    values[:, 1, 5, 3] = np.nan  # no sample
    planted &= np.isfinite(values)
    weights = rng.uniform(0.3, 1.0, (K, 1, H, W)).astype(np.float32)
    return values, planted, weights


def per_pixel(values: np.ndarray, weights: np.ndarray, estimator) -> np.ndarray:
    """Apply ``estimator(x, w)`` to the finite samples of every pixel (NaN where none)."""
    weights = np.broadcast_to(weights, values.shape)
    out = np.full(values.shape[1:], np.nan)
    for index in np.ndindex(*values.shape[1:]):
        x = values[(slice(None),) + index].astype(np.float64)
        w = weights[(slice(None),) + index].astype(np.float64)
        finite = np.isfinite(x)
        if finite.any():
            out[index] = estimator(x[finite], w[finite])
    return out


def survivors_mean(x: np.ndarray, w: np.ndarray, keep: np.ndarray) -> float:
    return float(np.sum(w[keep] * x[keep]) / np.sum(w[keep]))


def kappa_sigma_reference(x, w, kappa_low=2.5, kappa_high=2.5, max_iterations=3, min_samples=3):
    keep = np.ones(x.size, dtype=bool)
    for _ in range(max_iterations):
        if keep.sum() < min_samples:
            break
        n = keep.sum()
        deep = (n - 1) / np.sqrt(n) > 1.15 * max(kappa_low, kappa_high)
        centre = np.mean(x[keep]) if deep else np.median(x[keep])
        sigma = np.std(x[keep], ddof=1)
        new = keep & (x >= centre - kappa_low * sigma) & (x <= centre + kappa_high * sigma)
        if new.sum() in (0, keep.sum()):
            break
        keep = new
    return keep


def winsorized_reference(x, w, kappa=2.5, max_iterations=3, min_samples=3):
    keep = np.ones(x.size, dtype=bool)
    for _ in range(max_iterations):
        kept = x[keep]
        if kept.size < min_samples:
            break
        centre, sigma = np.median(kept), np.std(kept, ddof=1)
        for _ in range(10):
            if sigma <= 0:
                break
            clamped = np.clip(kept, centre - 1.5 * sigma, centre + 1.5 * sigma)
            centre, new_sigma = np.median(clamped), 1.134 * np.std(clamped, ddof=1)
            converged = abs(new_sigma - sigma) <= 5e-4 * sigma
            sigma = new_sigma
            if converged:
                break
        new = keep & (x >= centre - kappa * sigma) & (x <= centre + kappa * sigma)
        if new.sum() in (0, keep.sum()):
            break
        keep = new
    return keep


def linear_fit_reference(x, w, kappa=2.5, max_iterations=3, min_samples=3):
    keep = np.ones(x.size, dtype=bool)
    for _ in range(max_iterations):
        n = int(keep.sum())
        if n < min_samples:
            break
        index = np.flatnonzero(keep)
        order = index[np.argsort(x[index], kind="stable")]
        y = x[order] - x[order].mean()
        q = ndtri((np.arange(1, n + 1) - 0.375) / (n + 0.25))
        fit_weights = np.ones(n)
        for step in range(11):
            design = np.stack([np.ones(n), q], axis=1) * np.sqrt(fit_weights)[:, None]
            (intercept, slope), *_ = np.linalg.lstsq(design, y * np.sqrt(fit_weights), rcond=None)
            residual = y - intercept - slope * q
            if step == 0:
                floor = max(np.abs(residual).mean() * 1e-3, 1e-30)
            fit_weights = 1 / np.maximum(np.abs(residual), floor)
        sigma = np.sqrt(np.pi / 2) * np.abs(residual).mean()
        rejected = order[np.abs(residual) > kappa * sigma]
        if rejected.size in (0, n):
            break
        keep[rejected] = False
    return keep


def huber_reference(x, w, min_samples=3):
    if x.size < min_samples:
        return np.sum(w * x) / np.sum(w)
    centre = np.median(x)
    scale = 1.4826 * np.median(np.abs(x - centre)) or np.std(x)
    if scale == 0:
        return np.sum(w * x) / np.sum(w)
    for _ in range(10):
        r = np.abs(x - centre) / scale
        h = np.where(r > 1.345, 1.345 / np.maximum(r, 1.345), 1.0)
        centre = np.sum(w * h * x) / np.sum(w * h)
    return centre


CLIPPERS = [
    (reject_kappa_sigma, kappa_sigma_reference),
    (reject_winsorized_sigma, winsorized_reference),
    (reject_linear_fit, linear_fit_reference),
]


@pytest.mark.parametrize(("clipper", "reference"), CLIPPERS, ids=["kappa_sigma", "winsorized", "linear_fit"])
def test_clipping_matches_reference_and_rejects_planted_outliers(clipper, reference):
    values, planted, weights = planted_stack()
    keep = clipper(values, np.isfinite(values), **KAPPA)
    assert not keep[planted].any(), "a planted cosmic ray, trail or dead pixel survived"
    assert not keep[~np.isfinite(values)].any()
    expected = per_pixel(values, weights, lambda x, w: survivors_mean(x, w, reference(x, w)))
    assert_allclose(weighted_mean(values, weights, keep), expected, rtol=1e-5)
    assert np.isnan(expected[1, 5, 3])


@pytest.mark.parametrize(("clipper", "reference"), CLIPPERS, ids=["kappa_sigma", "winsorized", "linear_fit"])
@pytest.mark.parametrize("seed", [2, 3])
def test_clipping_keep_mask_equals_reference(clipper, reference, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_t(3, (12, 1, 5, 5)).astype(np.float32) * 5 + 50  # heavy tails
    keep = clipper(values, np.isfinite(values), **KAPPA)
    for index in np.ndindex(*values.shape[1:]):
        x = values[(slice(None),) + index].astype(np.float64)
        assert np.array_equal(keep[(slice(None),) + index], reference(x, None)), index


@pytest.mark.parametrize("clipper", [item[0] for item in CLIPPERS])
def test_no_rejection_below_min_samples(clipper):
    two = np.array([1.0, 500.0], dtype=np.float32).reshape(2, 1, 1, 1)
    assert clipper(two, np.isfinite(two), **{**KAPPA, "min_samples": 2}).all()
    eight = np.array([10.0, 10.5, 10.2, 9.8, 10.1, 9.9, 10.3, 400.0], dtype=np.float32).reshape(8, 1, 1, 1)
    rejected = ~clipper(eight, np.isfinite(eight), **{**KAPPA, "min_samples": 8})[:, 0, 0, 0]
    assert rejected.tolist() == [False] * 7 + [True]
    assert clipper(eight, np.isfinite(eight), **{**KAPPA, "min_samples": 9}).all()


def test_kappa_low_and_high_are_separate():
    values = np.array([100.0, 101, 99, 100.5, 99.5, 100.2, 99.8, 90, 110], dtype=np.float32).reshape(9, 1, 1, 1)
    options = dict(max_iterations=1, min_samples=3)
    keep = reject_kappa_sigma(values, np.isfinite(values), kappa_low=1.5, kappa_high=10.0, **options)
    assert keep[:, 0, 0, 0].tolist() == [True] * 7 + [False, True]
    keep = reject_kappa_sigma(values, np.isfinite(values), kappa_low=10.0, kappa_high=1.5, **options)
    assert keep[:, 0, 0, 0].tolist() == [True] * 7 + [True, False]


def test_kept_median_equals_nanmedian():
    values, _, _ = planted_stack(seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN pixel
        expected = np.nanmedian(values, axis=0)
    assert_allclose(kept_median(values, np.isfinite(values)), expected, rtol=1e-6)


def test_huber_mean_matches_reference_and_resists_outliers():
    values, planted, weights = planted_stack(seed=5)
    result = huber_mean(values, weights, np.isfinite(values), min_samples=3)
    expected = per_pixel(values, weights, huber_reference)
    assert_allclose(result, expected, rtol=1e-5)
    # an M-estimate is pulled a little by an outlier, but far less than the mean
    mean = weighted_mean(values, weights, np.isfinite(values))
    hit = planted[:, 0].any(axis=0) & np.isfinite(mean[0])
    assert np.all(np.abs(result[0][hit] - 1000) < 0.2 * np.abs(mean[0][hit] - 1000))


def test_expected_order_statistics_are_blom_scores():
    table = expected_order_statistics(6)
    for n in range(1, 7):
        assert_allclose(table[n, :n], ndtri((np.arange(1, n + 1) - 0.375) / (n + 0.25)), rtol=1e-6, atol=1e-7)
        assert np.all(table[n, n:] == 0)


@pytest.mark.parametrize("depth", [2, 4, 7, 12, 40])
@pytest.mark.parametrize(("kappa_low", "kappa_high", "min_samples"), [(2.0, 2.0, 3), (1.2, 2.2, 4), (3.0, 1.1, 1)])
def test_compiled_kappa_sigma_equals_the_array_version(depth, kappa_low, kappa_high, min_samples):
    from zemosaic_dask.tasks.rejection import _reject_kappa_sigma_arrays

    rng = np.random.default_rng(depth)
    values = (rng.standard_t(3, (depth, 3, 9, 11)) * 5 + 50).astype(np.float32)
    values[rng.random(values.shape) < 0.15] = np.nan
    values[:, 0, 0, 0] = 7.0  # identical samples: sigma 0
    values[: depth // 2, 1, 0, 0] = 1.0  # two clusters: a pass could empty the pixel
    values[depth // 2 :, 1, 0, 0] = 1000.0
    keep = np.isfinite(values)
    keep[:, 2, 1, 1] = False  # a pixel with no sample
    options = dict(kappa_low=kappa_low, kappa_high=kappa_high, max_iterations=5, min_samples=min_samples)
    compiled = reject_kappa_sigma(values, keep, **options)
    reference = _reject_kappa_sigma_arrays(values, keep, **options)
    np.testing.assert_array_equal(compiled, reference)
    if depth >= 7:
        assert (keep & ~compiled).any()  # the stacks are heavy-tailed: something was rejected


@pytest.mark.parametrize("weight_channels", [1, 3])
def test_compiled_weighted_mean_equals_the_array_version(weight_channels):
    from zemosaic_dask.tasks.rejection import _weighted_mean_arrays

    rng = np.random.default_rng(weight_channels)
    values = rng.normal(100, 10, (9, 3, 6, 7)).astype(np.float32)
    keep = rng.random(values.shape) > 0.3
    keep[:, :, 0, 0] = False  # no sample: NaN
    weights = rng.uniform(0, 1, (9, weight_channels, 6, 7)).astype(np.float32)
    weights[:, :, 1, 1] = 0.0  # no weight: NaN
    compiled = weighted_mean(values, weights, keep)
    reference = _weighted_mean_arrays(values, weights, keep)
    np.testing.assert_array_equal(compiled, reference)
    assert np.isnan(compiled[:, 0, 0]).all() and np.isnan(compiled[:, 1, 1]).all()
    assert np.isfinite(compiled[:, 2:, 2:]).all()
