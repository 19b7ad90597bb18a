"""Frame statistics, normalisation coefficients, frame weights and the radial weight."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from zemosaic_dask.errors import ConfigError
from zemosaic_dask.tasks.normalisation import FrameStatistics, frame_statistics, normalisation_coefficients
from zemosaic_dask.tasks.stacking import StackOptions, stack_samples
from zemosaic_dask.tasks.weighting import frame_weights, radial_weight


def starry_frame(seed: int, sky=(100.0, 80.0, 60.0), noise=(5.0, 4.0, 3.0), shape=(120, 150)) -> np.ndarray:
    """A (C, H, W) frame: flat sky, Gaussian noise, a few bright stars and some NaN pixels."""
    rng = np.random.default_rng(seed)
    frame = np.stack([rng.normal(level, sigma, shape) for level, sigma in zip(sky, noise, strict=True)])
    ys, xs = rng.integers(3, shape[0] - 3, 40), rng.integers(3, shape[1] - 3, 40)
    for y, x in zip(ys, xs, strict=True):
        frame[:, y - 1 : y + 2, x - 1 : x + 2] += rng.uniform(500, 5000)
    frame[:, :4, :] = np.nan
    return frame.astype(np.float32)


def clipped_sky_reference(pixels: np.ndarray) -> tuple[float, float]:
    sample = pixels.astype(np.float64)
    for _ in range(5):
        centre = np.median(sample)
        spread = 1.4826 * np.median(np.abs(sample - centre))
        inside = sample[np.abs(sample - centre) <= 3 * spread]
        if spread <= 0 or inside.size in (0, sample.size):
            break
        sample = inside
    centre = np.median(sample)
    return centre, 1.4826 * np.median(np.abs(sample - centre))


def test_frame_statistics_match_references_and_truth():
    frame = starry_frame(seed=1)
    stats = frame_statistics(frame)
    assert stats.n_channels == 3
    for channel in range(3):
        assert isinstance(stats.sky[channel], float)
        pixels = frame[channel][np.isfinite(frame[channel])]
        assert stats.p25[channel] == pytest.approx(np.percentile(pixels, 25), rel=1e-5)
        assert stats.p90[channel] == pytest.approx(np.percentile(pixels, 90), rel=1e-5)
        sky, sigma = clipped_sky_reference(pixels)
        assert stats.sky[channel] == pytest.approx(sky, rel=1e-5)
        assert stats.sigma[channel] == pytest.approx(sigma, rel=1e-4)
    # stars barely move the robust estimates away from the truth
    assert_allclose(stats.sky, (100.0, 80.0, 60.0), atol=0.3)
    assert_allclose(stats.sigma, (5.0, 4.0, 3.0), rtol=0.05)


def test_frame_statistics_of_an_empty_channel_and_a_mono_frame():
    frame = starry_frame(seed=2)
    frame[1] = np.nan
    stats = frame_statistics(frame)
    assert all(math.isnan(value[1]) for value in (stats.p25, stats.p90, stats.sky, stats.sigma))
    mono = frame_statistics(frame[0])
    assert mono.n_channels == 1 and mono.sky[0] == stats.sky[0]


def test_linear_fit_maps_p25_and_p90_onto_the_reference():
    reference = starry_frame(seed=3)
    other = reference * np.float32(2.0) + np.float32(30.0)
    stats = [frame_statistics(reference), frame_statistics(other)]
    gains, offsets = normalisation_coefficients(stats, "linear_fit", reference_index=0)
    assert gains.shape == offsets.shape == (2, 3) and gains.dtype == np.float32
    assert_allclose(gains[0], 1.0) and assert_allclose(offsets[0], 0.0, atol=1e-4)
    assert_allclose(gains[1], 0.5, rtol=1e-5)
    assert_allclose(offsets[1], -15.0, rtol=1e-4)
    for channel in range(3):
        for percentile in ("p25", "p90"):
            mapped = gains[1, channel] * getattr(stats[1], percentile)[channel] + offsets[1, channel]
            assert mapped == pytest.approx(getattr(stats[0], percentile)[channel], rel=1e-5)


def test_sky_mean_is_an_additive_offset_and_none_is_identity():
    stats = [frame_statistics(starry_frame(seed=4)), frame_statistics(starry_frame(seed=5, sky=(130, 70, 65)))]
    gains, offsets = normalisation_coefficients(stats, "sky_mean", reference_index=1)
    assert np.all(gains == 1.0)
    assert_allclose(offsets[0], np.subtract(stats[1].sky, stats[0].sky), rtol=1e-6)
    assert np.all(offsets[1] == 0.0)
    gains, offsets = normalisation_coefficients(stats, "none", reference_index=0)
    assert np.all(gains == 1.0) and np.all(offsets == 0.0)


def test_coefficients_from_whole_frames_are_the_same_in_every_region():
    """Two regions of one frame get the same correction, so no seam appears between them."""
    truth = starry_frame(seed=6)
    frames = [truth, truth * np.float32(1.5) - np.float32(20.0), truth * np.float32(0.8) + np.float32(5.0)]
    stats = [frame_statistics(frame) for frame in frames]
    gains, offsets = normalisation_coefficients(stats, "linear_fit", reference_index=0)
    footprint = np.ones((3, 40, 150), dtype=np.float32)
    options = StackOptions(normalisation="linear_fit", rejection="none")
    for rows in (slice(10, 50), slice(70, 110)):
        samples = np.stack([frame[:, rows] for frame in frames])
        result = stack_samples(samples, footprint, options, gains=gains, offsets=offsets)
        assert_allclose(result.image, truth[:, rows], rtol=1e-4, atol=1e-3)


def test_degenerate_statistics_keep_gain_one_with_a_warning(caplog):
    good = FrameStatistics(p25=(10.0,), p90=(20.0,), sky=(12.0,), sigma=(1.0,))
    flat = FrameStatistics(p25=(15.0,), p90=(15.0,), sky=(15.0,), sigma=(0.0,))
    with caplog.at_level(logging.WARNING):
        gains, offsets = normalisation_coefficients([good, flat], "linear_fit", reference_index=0)
    assert gains[1, 0] == 1.0 and offsets[1, 0] == -5.0
    assert "frame 1 channel 0" in caplog.text


def test_invalid_method_and_reference_fail_with_the_value():
    stats = [FrameStatistics(p25=(1.0,), p90=(2.0,), sky=(1.0,), sigma=(1.0,))]
    with pytest.raises(ConfigError, match="'p90'"):
        normalisation_coefficients(stats, "p90", reference_index=0)
    with pytest.raises(ConfigError, match="reference_index.*5"):
        normalisation_coefficients(stats, "linear_fit", reference_index=5)
    with pytest.raises(ConfigError, match="'snr'"):
        frame_weights(stats, "snr")


def test_noise_variance_weights_are_inverse_variance_with_max_one():
    stats = [
        FrameStatistics(p25=(0.0, 0.0), p90=(1.0, 1.0), sky=(0.0, 0.0), sigma=sigma)
        for sigma in ((2.0, 1.0), (4.0, 3.0), (1.0, 6.0))
    ]
    weights = frame_weights(stats, "noise_variance")
    expected = 1 / np.array([[2.0, 1.0], [4.0, 3.0], [1.0, 6.0]]) ** 2
    assert_allclose(weights, expected / expected.max(axis=0), rtol=1e-6)
    assert np.all(frame_weights(stats, "none") == 1.0)


def test_unusable_noise_falls_back_to_equal_weights_for_that_channel(caplog):
    stats = [
        FrameStatistics(p25=(0.0, 0.0), p90=(1.0, 1.0), sky=(0.0, 0.0), sigma=sigma)
        for sigma in ((2.0, 0.0), (4.0, 3.0))
    ]
    with caplog.at_level(logging.WARNING):
        weights = frame_weights(stats, "noise_variance")
    assert_allclose(weights[:, 0], [1.0, 0.25])
    assert np.all(weights[:, 1] == 1.0)
    assert "channel 1" in caplog.text


def test_radial_weight_matches_the_formula():
    width, height, power, floor = 40, 30, 2.0, 0.05
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x[0, 0] = np.nan
    weight = radial_weight(x, y, width, height, power, floor)
    assert weight.dtype == np.float32 and weight.shape == x.shape
    with np.errstate(invalid="ignore"):
        radius = np.hypot((x - (width - 1) / 2) / (width / 2), (y - (height - 1) / 2) / (height / 2))
    expected = np.maximum(np.cos(np.minimum(radius, 1.0) * np.pi / 2) ** power, floor)
    expected[0, 0] = 0.0
    assert_allclose(weight, expected, rtol=1e-5, atol=1e-6)
    assert weight[15, 20] == pytest.approx(1.0, abs=1e-2)  # next to the centre
    assert weight[-1, -1] == pytest.approx(floor)  # corner
    assert weight[15, 0] < 0.1  # border
    outside = radial_weight(np.array([-50.0, 500.0]), np.array([15.0, 15.0]), width, height, power, floor)
    assert_allclose(outside, floor)


def test_radial_weight_power_zero_is_uniform_and_bad_parameters_fail():
    x = np.linspace(0, 9, 10)
    assert np.all(radial_weight(x, x, 10, 10, 0.0, 0.0) == 1.0)
    with pytest.raises(ConfigError, match="floor"):
        radial_weight(x, x, 10, 10, 2.0, 1.5)
    with pytest.raises(ConfigError, match="power"):
        radial_weight(x, x, 10, 10, -1.0, 0.1)
