"""The noise clip's sensitivity term on structure only: trails across bright smooth emission go, star cores stay.

Measured against a pixel's full signal, the sensitivity term (``noise_scale`` of it) made
the window of a bright galaxy core several hundred ADU wide, and a satellite trail across
it stayed in the stack (half of one, averaged with a clean frame in an SDS batch, crossed
the simulated galaxy's core). Against the local smooth level only stars widen it, and the
shot term gives bright emission the photon noise it has.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import ndimage

from zemosaic_dask.tasks.noise_rejection import reject_noise_clip
from zemosaic_dask.tasks.signal_structure import smooth_level
from zemosaic_dask.tasks.stacking import StackOptions, stack_samples

SKY, NOISE = 400.0, 20.0  # noise measured on the sky: shot level SKY
CLIP = StackOptions(rejection="noise_clip", kappa_low=3.0, kappa_high=3.0, noise_scale=0.3, min_samples_for_rejection=2)


def _gaussian_stars(shape: tuple[int, int], rng: np.random.Generator, count: int, fwhm: float) -> np.ndarray:
    """Unit-peak positions and peaks of ``count`` stars, rendered with ``fwhm`` (one image)."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros(shape, dtype=np.float32)
    sigma = fwhm / 2.3548
    for cy, cx, peak in zip(
        rng.uniform(5, height - 5, count), rng.uniform(5, width - 5, count), rng.uniform(300, 3000, count), strict=True
    ):
        image += peak * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
    return image


def _bright_core(shape: tuple[int, int], peak: float) -> np.ndarray:
    """A smooth galaxy core: a wide Gaussian (sigma 60 px) of ``peak`` ADU."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return (peak * np.exp(-((y - height / 2) ** 2 + (x - width / 2) ** 2) / (2 * 60.0**2))).astype(np.float32)


def _observe(truth: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` frames of ``SKY + truth`` with photon noise (gain 1) scaled to ``NOISE`` on the sky."""
    variance = (NOISE**2) * (1.0 + truth / SKY)
    return (SKY + truth + rng.normal(0.0, 1.0, (count, 1) + truth.shape) * np.sqrt(variance)).astype(np.float32)


def _stack(samples: np.ndarray, **model) -> np.ndarray:
    footprint = np.ones((samples.shape[0],) + samples.shape[2:], dtype=np.float32)
    return stack_samples(samples, footprint, CLIP, noise=NOISE, background=SKY, **model).image[0]


def test_smooth_level_is_the_opening_of_the_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 5, (3, 2, 40, 50)).astype(np.float32)
    valid = rng.random(values.shape) > 0.1
    mean = np.where(valid, values, 0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    expected = ndimage.grey_opening(np.where(valid.any(axis=0), mean, np.inf), size=(1, 1, 9), mode="nearest")
    assert_allclose(smooth_level(values, valid, 4)[0], expected, rtol=1e-6)
    # rows only: a row's level is the same whatever rows come with it (bands, row parts)
    assert_allclose(smooth_level(values[:, :, 7:9], valid[:, :, 7:9], 4)[0], expected[:, 7:9], rtol=1e-6)
    star = np.zeros((1, 1, 30, 30), dtype=np.float32)
    star[0, 0, 14:17, 14:17] = 1000.0  # narrower than the window: not in the smooth level
    assert smooth_level(star, np.ones(star.shape, bool), 4).max() == 0.0
    plateau = np.zeros((1, 1, 30, 30), dtype=np.float32)
    plateau[0, 0, 5:25, 5:25] = 1000.0  # wider than the window: kept
    assert_allclose(smooth_level(plateau, np.ones(plateau.shape, bool), 4)[0, 0, 5:25, 5:25], 1000.0)
    empty = np.full((2, 1, 6, 6), np.nan, dtype=np.float32)
    assert np.isnan(smooth_level(empty, np.zeros(empty.shape, bool))).all()


@pytest.mark.parametrize("count", [2, 4])
def test_a_trail_across_a_bright_smooth_core_is_rejected(count):
    rng = np.random.default_rng(10 + count)
    core = _bright_core((160, 200), peak=1500.0)
    samples = _observe(core, count, rng)
    clean = samples.mean(axis=0)[0]
    samples[0, 0, :, 98:101] += 700.0  # a trail, 3 px wide, down the middle of the core
    image = _stack(samples, shot_level=SKY)
    trail = image[:, 98:101] - clean[:, 98:101]
    # the trail's pixels are the other samples' mean: noise, not 700 / count
    assert np.abs(trail).mean() < 0.2 * 700.0 / count, np.abs(trail).mean()
    assert np.median(trail[60:100]) < 0.1 * 700.0 / count  # through the brightest part too
    # what the sensitivity term measured on the full signal (reference: the sky) left there
    old = reject_noise_clip(
        samples,
        np.ones(samples.shape, bool),
        NOISE,
        background=SKY,
        shot_level=SKY,
        kappa_low=3.0,
        kappa_high=3.0,
        max_iterations=3,
        min_samples=2,
        noise_scale=0.3,
    ).keep
    old_image = (samples * old).sum(axis=0)[0] / old.sum(axis=0)[0]
    assert np.median(old_image[60:100, 98:101] - clean[60:100, 98:101]) > 0.8 * 700.0 / count


@pytest.mark.parametrize("count", [2, 4, 6])
def test_star_cores_varying_with_seeing_keep_their_flux(count):
    rng = np.random.default_rng(20 + count)
    shape = (120, 160)
    frames = []
    for k in range(count):  # the seeing changes from frame to frame (FWHM 2.6-3.6 px), the flux does not
        fwhm = 2.6 + k * 0.2
        frames.append(_gaussian_stars(shape, np.random.default_rng(7), 40, fwhm) * np.float32((2.6 / fwhm) ** 2))
    stars = np.stack(frames)
    samples = np.stack([_observe(s, 1, rng)[0] for s in stars])
    truth = stars.mean(axis=0)
    image = _stack(samples, shot_level=SKY)
    bright = truth > 200.0
    flux_kept = (image - SKY)[bright].sum() / (samples.mean(axis=0)[0] - SKY)[bright].sum()
    assert abs(flux_kept - 1.0) < 0.003, flux_kept  # the cores were not clipped towards one frame
    hard = stack_samples(
        samples,
        np.ones((count,) + shape, np.float32),
        StackOptions(**{**CLIP.__dict__, "noise_scale": 0.0}),
        noise=NOISE,
        background=SKY,
        shot_level=SKY,
    ).image[0]
    assert np.abs(hard - image)[bright].max() > 20.0  # without the term, seeing differences are clipped


@pytest.mark.parametrize("count", [2, 3, 5])
def test_clean_samples_of_bright_emission_are_kept_and_unbiased(count):
    rng = np.random.default_rng(30 + count)
    plateau = np.full((200, 250), 4000.0, dtype=np.float32)  # ten times the sky
    samples = _observe(plateau, count, rng)
    footprint = np.ones((count,) + plateau.shape, np.float32)
    with_shot = stack_samples(samples, footprint, CLIP, noise=NOISE, background=SKY, shot_level=SKY)
    mean = samples.mean(axis=0)[0]
    sigma_mean = NOISE * np.sqrt(1 + 4000.0 / SKY) / np.sqrt(count)
    changed = np.abs(with_shot.image[0] - mean) > 1e-3
    assert changed.mean() < 0.01, changed.mean()  # almost every clean sample kept
    assert abs(float(np.mean(with_shot.image[0] - SKY - 4000.0))) < 0.05 * sigma_mean  # and no bias
    without = stack_samples(samples, footprint, CLIP, noise=NOISE, background=SKY)
    assert (np.abs(without.image[0] - mean) > 1e-3).mean() > 0.1  # the sky's noise alone clips it
