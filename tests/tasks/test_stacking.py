"""stack_samples against per-pixel references computed with plain numpy loops."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from zemosaic_dask.errors import ConfigError
from zemosaic_dask.tasks.stacking import (
    COMBINE_METHODS,
    REJECTION_METHODS,
    StackOptions,
    StackResult,
    peak_memory_bytes,
    stack_samples,
)


def rectangles(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Unit footprints of ``count`` frames, each covering a random rectangle."""
    footprint = np.zeros((count, height, width), dtype=np.float32)
    for index in range(count):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        y1, x1 = rng.integers(height // 2 + 1, height + 1), rng.integers(width // 2 + 1, width + 1)
        footprint[index, y0:y1, x0:x1] = 1.0
    return footprint


def sky_samples(seed: int, count: int = 9, channels: int = 3, height: int = 8, width: int = 9, full: bool = False):
    """Noisy samples of a flat sky, NaN outside each frame's rectangle, with the footprints."""
    rng = np.random.default_rng(seed)
    footprint = rectangles(rng, count, height, width)
    if full:
        footprint[:] = 1.0
    level = np.array([1000.0, 800.0, 600.0])[:channels, None, None]
    samples = (level + rng.normal(0.0, 10.0, (count, channels, height, width))).astype(np.float32)
    samples[np.broadcast_to(footprint[:, None] == 0, samples.shape)] = np.nan
    return samples, footprint


def kappa_sigma_keep(x: np.ndarray, kappa: float = 2.0, iterations: int = 3, min_samples: int = 3) -> np.ndarray:
    keep = np.ones(x.size, dtype=bool)
    for _ in range(iterations):
        if keep.sum() < min_samples:
            break
        n = keep.sum()
        deep = (n - 1) / np.sqrt(n) > 1.15 * kappa
        centre = np.mean(x[keep]) if deep else np.median(x[keep])
        sigma = np.std(x[keep], ddof=1)
        new = keep & (np.abs(x - centre) <= kappa * sigma)
        if new.sum() in (0, keep.sum()):
            break
        keep = new
    return keep


def reference_stack(samples, weights, keep_rule=None, combine="mean") -> np.ndarray:
    """Per-pixel stack of the finite samples with positive weight (weights broadcast to samples)."""
    weights = np.broadcast_to(weights, samples.shape)
    image = np.full(samples.shape[1:], np.nan)
    for index in np.ndindex(*samples.shape[1:]):
        x = samples[(slice(None),) + index].astype(np.float64)
        w = weights[(slice(None),) + index].astype(np.float64)
        valid = np.isfinite(x) & (w > 0)
        x, w = x[valid], w[valid]
        if x.size == 0:
            continue
        keep = keep_rule(x) if keep_rule else np.ones(x.size, dtype=bool)
        image[index] = np.median(x[keep]) if combine == "median" else np.sum(w[keep] * x[keep]) / np.sum(w[keep])
    return image


def test_kappa_sigma_rejects_cosmic_rays_and_satellite_trail():
    samples, footprint = sky_samples(seed=1, full=True)
    clean = samples.copy()
    samples[2, :, 3, 4] += 5000.0  # cosmic ray
    samples[6, 1, 0, 7] += 3000.0
    samples[4, :, np.arange(8), np.arange(8)] += 800.0  # satellite trail across frame 4
    result = stack_samples(samples, footprint, StackOptions())
    assert isinstance(result, StackResult)
    expected = reference_stack(samples, footprint[:, None], kappa_sigma_keep)
    assert_allclose(result.image, expected, rtol=1e-5)
    hit = (samples != clean).any(axis=0)
    clean_mean = clean.mean(axis=0)
    assert np.all(np.abs(result.image[hit] - clean_mean[hit]) < 15.0)
    assert np.all(np.abs(samples.mean(axis=0)[hit] - clean_mean[hit]) > 80.0)


@pytest.mark.parametrize("seed", [2, 3])
def test_kappa_sigma_matches_reference_with_partial_footprints(seed):
    samples, footprint = sky_samples(seed, count=12)
    footprint *= np.random.default_rng(seed).uniform(0.2, 1.0, footprint.shape).astype(np.float32)
    samples[5, 0, 2, 2] = 9000.0
    result = stack_samples(samples, footprint, StackOptions(kappa_low=2.5, kappa_high=2.5))
    expected = reference_stack(samples, footprint[:, None], lambda x: kappa_sigma_keep(x, kappa=2.5))
    assert_allclose(result.image, expected, rtol=1e-5)
    assert_array_equal(np.isnan(result.image), np.isnan(expected))


def test_no_rejection_is_the_weighted_mean():
    samples, footprint = sky_samples(seed=4)
    footprint *= 0.5 + np.arange(footprint.shape[0], dtype=np.float32)[:, None, None] / 10
    result = stack_samples(samples, footprint, StackOptions(rejection="none"))
    with np.errstate(invalid="ignore"):
        expected = np.nansum(footprint[:, None] * samples, axis=0) / np.sum(
            np.where(np.isfinite(samples), footprint[:, None], 0), axis=0
        )
    assert_allclose(result.image, expected, rtol=1e-5)


def test_combine_median_is_the_median_of_the_survivors():
    samples, footprint = sky_samples(seed=5, count=10)
    samples[3, :, 4, 4] = -4000.0
    result = stack_samples(samples, footprint, StackOptions(combine="median"))
    expected = reference_stack(samples, footprint[:, None], kappa_sigma_keep, combine="median")
    assert_allclose(result.image, expected, rtol=1e-5)


@pytest.mark.parametrize("rejection", REJECTION_METHODS)
def test_two_samples_are_never_rejected(rejection):
    samples = np.array([10.0, 1000.0], dtype=np.float32).reshape(2, 1, 1, 1)
    footprint = np.array([1.0, 0.5], dtype=np.float32).reshape(2, 1, 1)
    options = StackOptions(rejection=rejection, kappa_low=0.5, kappa_high=0.5)
    result = stack_samples(samples, footprint, options, noise=np.ones(2, np.float32))  # noise: for noise_clip
    expected = 505.0 if rejection == "median" else (10.0 + 500.0) / 1.5
    assert_allclose(result.image[0, 0, 0], expected, rtol=1e-6)


def test_duplicates_count_once_in_coverage_but_take_part_in_the_stack():
    samples, footprint = sky_samples(seed=6, count=4)
    footprint *= np.float32(0.75)
    ids = [10, 11, 12, 13]
    order = [0, 0, 1, 2, 2, 2, 3]
    dup_samples, dup_footprint = samples[order], footprint[order]
    result = stack_samples(
        dup_samples, dup_footprint, StackOptions(rejection="none"), frame_ids=[ids[i] for i in order]
    )
    has_data = footprint > 0
    assert_allclose(result.coverage, np.sum(np.where(has_data, footprint, 0), axis=0), rtol=1e-6)
    assert_array_equal(result.n_frames, has_data.sum(axis=0))
    expected = reference_stack(dup_samples, dup_footprint[:, None])
    assert_allclose(result.image, expected, rtol=1e-5)
    plain = stack_samples(dup_samples, dup_footprint, StackOptions(rejection="none"))
    assert np.any(plain.n_frames > result.n_frames)  # without ids every sample is a frame


def test_coverage_is_the_overlap_count_for_unit_footprints_and_ignores_frame_weights():
    samples, footprint = sky_samples(seed=7, count=8, height=10, width=11)
    overlap = (footprint > 0).sum(axis=0)
    frame_weights = np.random.default_rng(7).uniform(0.1, 1.0, (8, 3)).astype(np.float32)
    result = stack_samples(samples, footprint, StackOptions(weighting="noise_variance"), frame_weights=frame_weights)
    assert_array_equal(result.coverage, overlap.astype(np.float32))
    assert_array_equal(result.n_frames, overlap)
    assert result.coverage.dtype == np.float32 and result.n_frames.dtype == np.int32
    assert result.image.dtype == np.float32 and result.image.shape == samples.shape[1:]


def test_frame_weights_enter_the_mean_and_zero_excludes_a_frame():
    samples, footprint = sky_samples(seed=8, count=6)
    frame_weights = np.linspace(0.2, 1.0, 6 * 3, dtype=np.float32).reshape(6, 3)
    frame_weights[4] = 0.0
    options = StackOptions(rejection="none", weighting="noise_variance")
    result = stack_samples(samples, footprint, options, frame_weights=frame_weights)
    weights = footprint[:, None] * frame_weights[:, :, None, None]
    assert_allclose(result.image, reference_stack(samples, weights), rtol=1e-5)
    assert_array_equal(result.n_frames, (footprint > 0).sum(axis=0))


@pytest.mark.parametrize("rejection", ["none", "kappa_sigma", "winsorized_sigma_clip", "median"])
def test_normalisation_is_applied_with_and_without_rejection(rejection):
    samples, footprint = sky_samples(seed=9, count=8)
    rng = np.random.default_rng(9)
    recorded_gain = rng.uniform(0.5, 2.0, (8, 3)).astype(np.float32)
    recorded_gain[3] = 2.0
    recorded_offset = rng.uniform(-100.0, 100.0, (8, 3)).astype(np.float32)
    recorded = samples * recorded_gain[:, :, None, None] + recorded_offset[:, :, None, None]
    gains, offsets = 1 / recorded_gain, -recorded_offset / recorded_gain
    options = StackOptions(normalisation="linear_fit", rejection=rejection)
    result = stack_samples(recorded, footprint, options, gains=gains, offsets=offsets)
    clean = stack_samples(samples, footprint, StackOptions(rejection=rejection))
    assert_allclose(result.image, clean.image, rtol=1e-4)
    if rejection == "none":
        assert_allclose(result.image, reference_stack(samples, footprint[:, None]), rtol=1e-4)
    if rejection == "kappa_sigma":
        assert_allclose(result.image, reference_stack(samples, footprint[:, None], kappa_sigma_keep), rtol=1e-4)
    unnormalised = stack_samples(recorded, footprint, StackOptions(rejection=rejection))
    assert np.nanmax(np.abs(unnormalised.image - clean.image)) > 50.0


def test_requested_normalisation_or_weighting_without_coefficients_fails():
    samples, footprint = sky_samples(seed=10, count=5)
    with pytest.raises(ConfigError, match="gains/offsets"):
        stack_samples(samples, footprint, StackOptions(normalisation="sky_mean"))
    with pytest.raises(ConfigError, match="frame_weights"):
        stack_samples(samples, footprint, StackOptions(weighting="noise_variance"))


@pytest.mark.parametrize(("rejection", "combine"), list(itertools.product(REJECTION_METHODS, COMBINE_METHODS)))
def test_every_method_gives_finite_values_where_data_exist_and_nan_elsewhere(rejection, combine):
    samples, footprint = sky_samples(seed=11, count=7, full=True)
    footprint[:, 0, 0] = 0.0  # no frame here
    samples[:, :, 0, 1] = np.nan  # no sample here
    samples[1:, 2, 7, 8] = np.nan  # one sample in one channel
    samples[0, :, 5, 5] = 50000.0
    stats = np.random.default_rng(11).uniform(0.95, 1.0, (7, 3)).astype(np.float32)
    options = StackOptions(normalisation="sky_mean", weighting="noise_variance", rejection=rejection, combine=combine)
    result = stack_samples(
        samples,
        footprint,
        options,
        frame_ids=[0, 1, 2, 3, 3, 4, 5],
        gains=stats,
        offsets=stats,
        frame_weights=stats,
        noise=np.full(7, 10.0, np.float32),  # used by noise_clip only
    )
    has_data = (np.isfinite(samples) & (footprint[:, None] > 0)).any(axis=0)
    assert np.all(np.isfinite(result.image[has_data]))
    assert np.all(np.isnan(result.image[~has_data]))
    assert result.coverage[0, 0] == 0 and result.n_frames[0, 0] == 0
    assert result.coverage[0, 1] == 0 and result.n_frames[0, 1] == 0
    assert result.n_frames[7, 8] == 6  # frames 3 and 4 are one frame
    if rejection not in ("none",) and not (rejection == "median" or combine == "median"):
        assert abs(result.image[0, 5, 5] - 1000) < 100  # the 50000 sample did not survive


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("normalisation", "flat"),
        ("weighting", "snr"),
        ("rejection", "sigma"),
        ("combine", "mode"),
        ("kappa_low", 0.0),
        ("kappa_high", float("nan")),
        ("max_iterations", 0),
        ("min_samples_for_rejection", 2.5),
    ],
)
def test_validate_names_the_field_and_the_value(field, value):
    options = StackOptions(**{field: value})
    with pytest.raises(ConfigError, match=field) as error:
        options.validate()
    assert repr(value) in str(error.value)
    with pytest.raises(ConfigError):
        stack_samples(np.zeros((3, 1, 2, 2), np.float32), np.ones((3, 2, 2), np.float32), options)


def test_validate_lists_the_accepted_methods():
    with pytest.raises(ConfigError, match="winsorized_sigma_clip"):
        StackOptions(rejection="winsorised").validate()
    StackOptions().validate()


def test_shape_mismatches_are_reported():
    with pytest.raises(ValueError, match="footprint"):
        stack_samples(np.zeros((3, 1, 2, 2), np.float32), np.ones((2, 2, 2), np.float32), StackOptions())
    with pytest.raises(ValueError, match="gains"):
        stack_samples(
            np.zeros((3, 1, 2, 2), np.float32),
            np.ones((3, 2, 2), np.float32),
            StackOptions(normalisation="linear_fit"),
            gains=np.ones((4, 1)),
        )
    with pytest.raises(ValueError, match="frame_ids"):
        stack_samples(
            np.zeros((3, 1, 2, 2), np.float32), np.ones((3, 2, 2), np.float32), StackOptions(), frame_ids=[1, 2]
        )


@pytest.mark.parametrize("rejection", REJECTION_METHODS)
@pytest.mark.parametrize(("count", "size", "with_weights"), [(6, 64, True), (12, 64, False), (30, 96, True)])
def test_peak_memory_stays_within_the_advertised_bound(rejection, count, size, with_weights):
    noise = np.full(count, 10.0, np.float32)
    assert_peak_within_bound(rejection, count, size, with_weights, noise, None)


@pytest.mark.parametrize(("count", "with_weights"), [(2, False), (3, True), (6, False)])
def test_peak_memory_of_noise_clip_with_per_pixel_noise_and_background(count, with_weights):
    noise = np.full((count, 3, 64, 64), 10.0, np.float32)
    background = np.full((count, 3, 64, 64), 990.0, np.float32)
    assert_peak_within_bound("noise_clip", count, 64, with_weights, noise, background)


def assert_peak_within_bound(rejection, count, size, with_weights, noise, background):
    samples, footprint = sky_samples(seed=12, count=count, height=size, width=size)
    samples[min(4, count - 1), :, 10:20, 10:20] += 3000.0
    coefficients = np.ones((count, 3), dtype=np.float32)
    weighting = "noise_variance" if with_weights else "none"
    options = StackOptions(normalisation="linear_fit", weighting=weighting, rejection=rejection)
    extra = dict(gains=coefficients, offsets=coefficients * 0, frame_weights=coefficients if with_weights else None)
    corner = [None if a is None or a.ndim < 4 else a[:, :, :2, :2].copy() for a in (noise, background)]
    warm = dict(noise=noise if corner[0] is None else corner[0], background=corner[1])
    stack_samples(samples[:, :, :2, :2].copy(), footprint[:, :2, :2].copy(), options, **extra, **warm)  # compile
    tracemalloc.start()
    try:
        stack_samples(samples, footprint, options, **extra, noise=noise, background=background)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_pixel = noise.ndim == 4
    bound = peak_memory_bytes(samples.shape, options, frame_weights=with_weights, per_pixel_noise=per_pixel)
    assert samples.nbytes < peak <= bound
    assert bound < (12 if per_pixel else 10) * samples.nbytes + 30 * samples[0].nbytes


def test_a_region_without_samples_is_empty():
    result = stack_samples(np.zeros((0, 3, 4, 5), np.float32), np.zeros((0, 4, 5), np.float32), StackOptions())
    assert result.image.shape == (3, 4, 5) and np.all(np.isnan(result.image))
    assert np.all(result.coverage == 0) and np.all(result.n_frames == 0)


def test_the_kept_weight_is_the_footprint_of_the_samples_the_rejection_kept():
    rng = np.random.default_rng(3)
    samples = rng.normal(100.0, 2.0, (8, 2, 6, 5)).astype(np.float32)
    footprint = rng.uniform(0.2, 1.0, (8, 6, 5)).astype(np.float32)
    samples[2, :, 1:3, :] += 500.0  # a trail in sample 2 (both channels)
    samples[5, 1, 4, :] += 500.0  # a hot row in sample 5, second channel only
    options = StackOptions(rejection="noise_clip", kappa_low=5.0, kappa_high=5.0, min_samples_for_rejection=3)
    result = stack_samples(samples, footprint, options, noise=2.0, kept_weight=True)
    plain = stack_samples(samples, footprint, StackOptions(rejection="none"), kept_weight=True)
    np.testing.assert_allclose(plain.kept_weight, footprint.sum(axis=0), rtol=1e-5)
    expected = footprint.sum(axis=0)
    expected[1:3] -= footprint[2, 1:3]
    expected[4] -= footprint[5, 4] / 2  # rejected in one channel of two
    np.testing.assert_allclose(result.kept_weight, expected, rtol=1e-5)
    np.testing.assert_allclose(result.coverage, footprint.sum(axis=0), rtol=1e-5)  # every frame still counts
    assert stack_samples(samples, footprint, options, noise=2.0).kept_weight is None


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_compiled_opening_writes_what_the_array_operations_write(fakecupy, normalised, weighted):
    """The numpy pass of ``_prepare`` against the array version (run on a non-numpy namespace), bit for bit."""
    from zemosaic_dask.tasks.stacking import _prepare

    rng = np.random.default_rng(7 + 2 * normalised + weighted)
    count, channels, height, width = 6, 3, 9, 13
    samples = rng.normal(1000.0, 30.0, (count, channels, height, width)).astype(np.float32)
    samples[rng.random(samples.shape) < 0.1] = np.nan
    samples[rng.random(samples.shape) < 0.02] = np.inf
    samples[1, :, 2, 3] = -0.0  # the sign of zero survives only without normalisation
    footprint = (rng.random((count, height, width)) * (rng.random((count, height, width)) > 0.3)).astype(np.float32)
    gain = rng.uniform(0.5, 1.5, (count, channels)).astype(np.float32)[:, :, None, None]
    offset = rng.uniform(-50, 50, (count, channels)).astype(np.float32)[:, :, None, None]
    quality = None
    if weighted:
        quality = rng.uniform(0.1, 1.0, (count, channels)).astype(np.float32)
        quality[2, 1] = 0.0  # a channel excluded
        quality[3] = 0.0  # a frame excluded: none of its samples valid, yet it has data
    host = _prepare(np, samples, footprint, gain, offset, quality, normalised)

    def dev(array):
        return None if array is None else fakecupy.asarray(array)

    device = _prepare(fakecupy, dev(samples), dev(footprint), dev(gain), dev(offset), dev(quality), normalised)
    values, valid, has_data = (fakecupy.asnumpy(array) for array in device)
    assert_array_equal(host[0].view(np.uint32), values.view(np.uint32))
    assert_array_equal(host[1], valid)
    assert_array_equal(host[2], has_data)
    assert valid.any() and not valid.all() and (has_data & ~valid.any(axis=1)).any() == weighted


def test_the_prepare_kernel_gets_writable_coefficients_whatever_the_caller_passes():
    """Read-only gains, offsets and frame weights (broadcast views, as the units pass them) reach the
    compiled kernel as writable copies: numba compiles one kernel per read-only flag, and the workers'
    warm-up (which passes none) would otherwise leave the pipeline's signature to compile in a task."""
    from zemosaic_dask.tasks import kernels_stack

    rng = np.random.default_rng(3)
    samples = rng.normal(100.0, 5.0, (3, 3, 4, 5)).astype(np.float32)
    footprint = np.ones((3, 4, 5), np.float32)
    per_frame = np.broadcast_to(np.float32(1.0), (3, 3))  # read-only
    assert not per_frame.flags.writeable
    options = StackOptions(normalisation="linear_fit", weighting="noise_variance")
    result = stack_samples(samples, footprint, options, gains=per_frame, offsets=per_frame * 0, frame_weights=per_frame)
    assert np.isfinite(result.image).all()
    signatures = kernels_stack.prepare_samples_cpu.signatures
    assert signatures
    for signature in signatures:
        gain, offset, quality = signature[2:5]
        assert gain.mutable and offset.mutable and quality.mutable, signature


@pytest.mark.parametrize("count", [1, 2, 7, 130])
def test_compiled_coverage_is_the_array_sum_bit_for_bit(count):
    """Coverage and frame count on numpy (compiled, one pass) equal the array operations'
    float32 sum over the samples in order, for shallow and deep stacks and read-only inputs."""
    from zemosaic_dask.tasks.kernels_stack import coverage_cpu
    from zemosaic_dask.tasks.stacking import _coverage

    rng = np.random.default_rng(count)
    footprint = (rng.random((count, 17, 23)) ** 3).astype(np.float32)  # many magnitudes: order matters
    footprint[rng.random(footprint.shape) < 0.2] = 0.0
    has_data = (footprint > 0) & (rng.random(footprint.shape) < 0.9)
    expected = np.sum(np.where(has_data, footprint, np.float32(0)), axis=0).astype(np.float32)
    footprint.flags.writeable = False
    coverage, n_frames = _coverage(np, footprint, has_data, None, count)
    assert_array_equal(coverage.view(np.uint32), expected.view(np.uint32))
    assert_array_equal(n_frames, has_data.sum(axis=0))
    assert n_frames.dtype == np.int32 and coverage.dtype == np.float32
    assert all(signature[0].mutable for signature in coverage_cpu.signatures)  # a writable copy was passed
