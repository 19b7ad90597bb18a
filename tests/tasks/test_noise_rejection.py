"""Noise clipping (rejection against each sample's expected noise) on stacks of 2-6 samples."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from zemosaic_dask.errors import ConfigError
from zemosaic_dask.tasks.namespace import array_namespace
from zemosaic_dask.tasks.noise_rejection import (
    NoiseClipResult,
    _broadcastable,
    _reject_noise_clip_arrays,
    reject_noise_clip,
)
from zemosaic_dask.tasks.signal_structure import smooth_level
from zemosaic_dask.tasks.stacking import StackOptions, stack_samples

SKY, NOISE = 1000.0, 20.0
CLIP = dict(kappa_low=3.0, kappa_high=3.0, max_iterations=3, min_samples=2, noise_scale=0.1)


def sky_stack(count: int, height: int = 60, width: int = 70, seed: int = 0) -> np.ndarray:
    """Pure Gaussian sky samples ``(count, 1, height, width)`` of sigma ``NOISE`` about ``SKY``."""
    rng = np.random.default_rng(seed)
    return rng.normal(SKY, NOISE, (count, 1, height, width)).astype(np.float32)


def clip(values: np.ndarray, noise=NOISE, background=SKY, valid=None, **options) -> NoiseClipResult:
    valid = np.isfinite(values) if valid is None else valid
    return reject_noise_clip(values, valid, noise, background=background, **{**CLIP, **options})


def arrays_reference(values, valid, noise, background, shot=0.0, reference=None, **options) -> NoiseClipResult:
    """The array version on numpy, with the argument preparation of reject_noise_clip."""
    shape = values.shape
    noise, background = _broadcastable(np, noise, shape, "noise"), _broadcastable(np, background, shape, "background")
    shot = _broadcastable(np, shot, shape, "shot_level")
    reference = background if reference is None else _broadcastable(np, reference, shape, "reference")
    return _reject_noise_clip_arrays(values, valid, noise, background, shot, reference, **options)


def shot_levels(values: np.ndarray, seed: int) -> np.ndarray:
    """Per-frame shot levels, one zero and one unknown (neither gives a shot term)."""
    rng = np.random.default_rng(seed)
    depth, channels = values.shape[:2]
    shot = rng.uniform(300.0, 1200.0, (depth, channels, 1, 1)).astype(np.float32)
    shot[0, 0] = 0.0  # no shot term
    shot[-1, -1] = np.nan  # unknown: no shot term either
    return shot


@pytest.mark.parametrize("count", [3, 4, 5, 6])
@pytest.mark.parametrize("trail_index", [0, 2])
def test_a_trail_in_one_sample_is_rejected(count, trail_index):
    values = sky_stack(count, seed=count)
    values[trail_index] += 30 * NOISE
    result = clip(values)
    assert not result.keep[trail_index].any()  # the trail is gone at every pixel
    others = np.delete(result.keep, trail_index, axis=0)
    assert others.mean() > 0.99  # and almost no sky sample went with it
    assert result.pair_rejections == 0


def test_with_two_samples_the_lower_is_kept_and_counted():
    values = sky_stack(2, seed=9)
    values[1, :, :20] += 30 * NOISE  # a trail over 20 rows of the second frame
    values[0, :, 40:] += 30 * NOISE  # and over the first frame elsewhere
    result = clip(values)
    assert not result.keep[1, :, :20].any() and result.keep[0, :, :20].all()
    assert not result.keep[0, :, 40:].any() and result.keep[1, :, 40:].all()
    agree = result.keep[:, :, 20:40].all(axis=0)
    assert agree.mean() > 0.99  # two sky samples agree within sqrt(2) sigma nearly always
    assert result.pair_rejections == 20 * 70 + 20 * 70 + int((~agree).sum())
    off = clip(values, min_samples=3)  # the pair rule needs min_samples <= 2
    assert off.keep.all() and off.pair_rejections == 0


def test_a_single_sample_is_kept():
    values = sky_stack(3, seed=2)
    valid = np.zeros(values.shape, dtype=bool)
    valid[1] = True
    values[1] += 100 * NOISE
    result = clip(values, valid=valid, min_samples=1)
    assert_array_equal(result.keep, valid)


@pytest.mark.parametrize("count", [3, 4, 6])
def test_false_rejection_rate_on_gaussian_noise_is_below_one_percent(count):
    values = sky_stack(count, height=400, width=500, seed=100 + count)  # 200k pixels
    result = clip(values)
    rate = 1.0 - result.keep.mean()
    # measured: 0.080 % (3 samples), 0.074 % (4), 0.107 % (6); 0 would mean it never clips
    assert 0.0003 < rate < 0.01, rate


def test_the_brightest_of_four_within_the_noise_is_kept():
    brightest = np.linspace(0.5, 3.2, 28, dtype=np.float32)
    values = np.empty((4, 1, 1, brightest.size), dtype=np.float32)
    values[:3, 0, 0] = (SKY + NOISE * np.array([-0.5, 0.0, 0.5], dtype=np.float32))[:, None]
    values[3, 0, 0] = SKY + NOISE * brightest  # the median of the four is SKY + NOISE / 4 at most
    result = clip(values)
    assert result.keep.all()
    values[3, 0, 0, -1] = SKY + NOISE * 5.0  # a real outlier
    assert not clip(values).keep[3, 0, 0, -1]


@pytest.mark.parametrize("count", [2, 4, 6])
def test_star_cores_varying_with_seeing_are_kept_with_a_signal_term(count):
    rng = np.random.default_rng(count)
    star = rng.uniform(2000.0, 20000.0, (1, 1, 30, 40)).astype(np.float32)
    factors = np.array([1.0, 1.2, 1.0, 0.85, 1.0, 1.1], dtype=np.float32)[:count]  # PSF variation up to 20 %
    values = (SKY + star * factors[:, None, None, None] + rng.normal(0, NOISE, (count, 1, 30, 40))).astype(np.float32)
    kept = clip(values)
    assert kept.keep.all() and kept.pair_rejections == 0  # the flux is the mean of all frames: unbiased
    hard = clip(values, noise_scale=0.0)  # the noise alone cannot explain the differences
    assert (~hard.keep).mean() > 0.25
    flux = (values * hard.keep).sum(axis=0) / hard.keep.sum(axis=0) - SKY
    assert np.abs(flux / (values.mean(axis=0) - SKY) - 1).max() > 0.003  # a clipped star loses flux


def test_without_a_background_the_sky_counts_as_signal():
    values = sky_stack(4, seed=3)
    values[1, :, :10] += 10 * NOISE  # 10 sigma: kept if the 1000 ADU sky widens the window to 100 ADU
    assert not clip(values).keep[1, :, :10].any()
    assert clip(values, background=0.0).keep[1, :, :10].mean() > 0.95
    subtracted = values - np.float32(SKY)
    assert not clip(subtracted, background=0.0).keep[1, :, :10].any()


def test_per_pixel_noise_broadcasts():
    values = sky_stack(4, seed=4)
    values[2] += 12 * NOISE
    noise = np.full(values.shape, NOISE, dtype=np.float32)
    noise[:, :, :, 35:] = 10 * NOISE  # a noisier half: 12 sigma of the sky is within its noise
    result = clip(values, noise=noise)
    assert not result.keep[2, :, :, :35].any()
    assert result.keep[:, :, :, 35:].all()
    per_frame = clip(values, noise=np.full((4, 1, 1, 1), NOISE, np.float32))
    assert_array_equal(per_frame.keep[..., :35], result.keep[..., :35])
    per_row = clip(values, noise=np.full((1, 1, values.shape[2], 1), NOISE, np.float32))
    assert_array_equal(per_row.keep, per_frame.keep)


def test_missing_and_invalid_samples_take_no_part():
    values = sky_stack(5, seed=5)
    values[0] += 30 * NOISE
    valid = np.ones(values.shape, dtype=bool)
    valid[3, :, :30] = False  # excluded by the mask...
    values[3, :, :30] = -1e6  # ...however extreme
    values[4, :, 50:] = np.nan  # NaN is never valid, even where the mask says so
    result = clip(values, valid=valid)
    assert not result.keep[3, :, :30].any() and not result.keep[4, :, 50:].any()
    assert not result.keep[0].any()
    assert result.keep[1:3].mean() > 0.99
    noise = np.full((5, 1, 1, 1), NOISE, np.float32)
    noise[0] = np.nan  # a sample whose noise is unknown is never rejected
    assert clip(values, valid=valid, noise=noise).keep[0].all()


def test_shapes_and_values_are_checked():
    values = sky_stack(3)
    valid = np.isfinite(values)
    with pytest.raises(ValueError, match="noise must be a scalar or a 4-D array"):
        reject_noise_clip(values, valid, np.full(3, NOISE), **CLIP)  # (K,) would broadcast against W
    with pytest.raises(ValueError, match=r"background.*got shape \(3, 2, 1, 1\)"):
        reject_noise_clip(values, valid, NOISE, background=np.zeros((3, 2, 1, 1)), **CLIP)
    with pytest.raises(ValueError, match=">= 0"):
        reject_noise_clip(values, valid, -1.0, **CLIP)
    with pytest.raises(ValueError, match="valid"):
        reject_noise_clip(values[0], valid[0], NOISE, **CLIP)


def heavy_tailed(depth: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Student-t samples over a star field, missing samples and corner cases; noise and sky per pixel."""
    rng = np.random.default_rng(seed)
    shape = (depth, 2, 13, 17)
    star = np.zeros(shape[1:], dtype=np.float32)
    star[:, 3:7, 4:9] = 5000.0
    spread = rng.uniform(0.8, 1.2, (depth, 1, 1, 1)).astype(np.float32)
    values = (SKY + star * spread + rng.standard_t(3, shape) * NOISE).astype(np.float32)
    values[rng.random(shape) < 0.15] = np.nan
    values[:, 0, 0, 0] = 7.0  # identical samples
    values[: depth // 2, 1, 0, 0] = 1.0  # two clusters: a pass could empty the pixel
    values[depth // 2 :, 1, 0, 0] = 5000.0
    valid = np.isfinite(values)
    valid[:, 1, 1, 1] = False  # no sample
    noise = rng.uniform(10.0, 30.0, (depth, 2, 1, 1)).astype(np.float32) * np.ones((1, 1, 13, 1), np.float32)
    noise[0, 0, 2, :] = 0.0  # zero noise: any deviation rejects
    noise[-1, 1, 3, :] = np.nan  # unknown noise: never rejected
    background = rng.uniform(900.0, 1100.0, (depth, 2, 1, 1)).astype(np.float32)
    return values, valid, noise, background


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6, 12, 47, 130])
@pytest.mark.parametrize(
    ("kappa_low", "kappa_high", "min_samples", "noise_scale", "max_iterations"),
    [(3.0, 3.0, 2, 0.1, 3), (2.0, 3.5, 1, 0.0, 5), (1.5, 1.2, 3, 0.3, 1), (3.0, 2.5, 4, 0.1, 2)],
)
@pytest.mark.parametrize("model", ["sky", "shot", "shot and structure"])
def test_compiled_kernel_equals_the_array_version(
    depth, kappa_low, kappa_high, min_samples, noise_scale, max_iterations, model
):
    values, valid, noise, background = heavy_tailed(depth, seed=depth)
    options = dict(
        kappa_low=kappa_low,
        kappa_high=kappa_high,
        max_iterations=max_iterations,
        min_samples=min_samples,
        noise_scale=noise_scale,
    )
    levels, floor = {}, None
    if model != "sky":
        levels = {"shot_level": shot_levels(values, seed=depth)}
    if model == "shot and structure":  # the kernel computes each row's smooth level as it clips
        levels["structure_radius"] = 4
        floor = smooth_level(values, valid, 4)
    compiled = reject_noise_clip(values, valid, noise, background=background, **levels, **options)
    reference = arrays_reference(values, valid, noise, background, levels.get("shot_level", 0.0), floor, **options)
    assert_array_equal(compiled.keep, reference.keep)
    assert compiled.pair_rejections == reference.pair_rejections
    assert not (compiled.keep & ~valid).any()
    if depth >= 3 and min_samples <= 3:
        assert (valid & ~compiled.keep).any()  # heavy tails: something was rejected
    if depth == 2 and min_samples <= 2:
        assert compiled.pair_rejections > 0


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_array_api_strict_equals_numpy(depth):
    xps = pytest.importorskip("array_api_strict")
    values, valid, noise, background = heavy_tailed(depth, seed=20 + depth)
    model = dict(shot_level=np.float32(SKY), structure_radius=4)  # the generic smooth level, the compiled one
    expected = reject_noise_clip(values, valid, noise, background=background, **model, **CLIP)
    result = reject_noise_clip(
        xps.asarray(values),
        xps.asarray(valid),
        xps.asarray(noise),
        background=xps.asarray(background),
        **model,
        **CLIP,
    )
    assert array_namespace(result.keep) is xps
    assert_array_equal(np.asarray(result.keep), expected.keep)
    assert result.pair_rejections == expected.pair_rejections


def test_fake_cupy_stays_on_the_device_and_equals_numpy(fakecupy):
    values, valid, noise, background = heavy_tailed(4, seed=30)
    expected = reject_noise_clip(values, valid, noise, background=background, **CLIP)
    device = fakecupy.asarray(values)
    result = reject_noise_clip(
        device, fakecupy.asarray(valid), fakecupy.asarray(noise), background=fakecupy.asarray(background), **CLIP
    )
    assert type(result.keep) is fakecupy.ndarray
    assert_array_equal(fakecupy.asnumpy(result.keep), expected.keep)


def frames(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = rng.normal(SKY, NOISE, (count, 3, 10, 12)).astype(np.float32)
    return samples, np.ones((count, 10, 12), dtype=np.float32)


def test_stack_samples_requires_noise_for_noise_clip():
    samples, footprint = frames(4)
    with pytest.raises(ConfigError, match="noise_clip needs the expected noise.*pass noise="):
        stack_samples(samples, footprint, StackOptions(rejection="noise_clip"))
    with pytest.raises(ValueError, match=r"noise must have shape \(4,\), \(4, 3\)"):
        stack_samples(samples, footprint, StackOptions(rejection="noise_clip"), noise=np.ones(3))


@pytest.mark.parametrize("noise", [np.full(4, NOISE), np.full((4, 3), NOISE), np.full((4, 1, 1, 1), NOISE), NOISE])
def test_stack_samples_removes_a_trail_among_four_frames(noise):
    samples, footprint = frames(4, seed=1)
    clean = samples.mean(axis=0)
    samples[1, :, 4:6] += 30 * NOISE
    options = StackOptions(rejection="noise_clip", kappa_low=3.0, kappa_high=3.0)
    result = stack_samples(samples, footprint, options, noise=noise, background=SKY)
    trail = np.delete(samples, 1, axis=0)[:, :, 4:6].mean(axis=0)
    assert_allclose(result.image[:, 4:6], trail, rtol=1e-6)
    assert np.abs(result.image - clean).max() < 2 * NOISE
    kappa = stack_samples(samples, footprint, StackOptions(kappa_low=2.0, kappa_high=2.0))
    assert np.abs(kappa.image[:, 4:6] - trail).min() > 4 * NOISE  # what kappa-sigma leaves of it


def test_stack_samples_reports_pair_rejections():
    samples, footprint = frames(2, seed=2)
    samples[0, 1, 3, :] += 30 * NOISE
    options = StackOptions(rejection="noise_clip", kappa_low=3.0, kappa_high=3.0, min_samples_for_rejection=2)
    result = stack_samples(samples, footprint, options, noise=NOISE, background=SKY)
    assert result.pair_rejections >= 12
    assert_allclose(result.image[1, 3], samples[1, 1, 3])
    assert stack_samples(samples, footprint, StackOptions(), noise=NOISE).pair_rejections == 0


def test_stack_samples_carries_noise_background_and_shot_level_through_the_normalisation():
    """On a bright smooth plateau the window is the shot noise of the emission, at any gain.

    Raw: sky 1000 (noise 20 measured on it: shot level 1000), emission 4000 above it, so a
    sample's expected variance is ``400 * (1 + 4000 / 1000)``. Three samples on the plateau
    and one 150 ADU above it: normalised by a gain of 0.5, 75 above, within the right
    model's 3-sigma window of 79.2 (the median's own variance included). Each wrong model
    narrows the window below 75: the shot level not scaled by the gain (61.3), the
    background not mapped (70.8), no shot term (35.4). The plateau is smooth, so no
    sensitivity term widens any of them.
    """
    samples = np.full((4, 1, 12, 14), SKY + 4000.0, dtype=np.float32)
    samples[3] += 150.0
    footprint = np.ones((4, 12, 14), dtype=np.float32)
    options = StackOptions(normalisation="linear_fit", rejection="noise_clip", kappa_low=3.0, kappa_high=3.0)
    gains = np.full(4, 0.5, dtype=np.float32)
    offsets = np.zeros(4, dtype=np.float32)
    model = dict(noise=NOISE, background=SKY, shot_level=SKY)
    for gain in (0.5, 10.0):
        result = stack_samples(samples, footprint, options, gains=gains * gain / 0.5, offsets=offsets, **model)
        assert_allclose(result.image, gain * samples.mean(axis=0), rtol=1e-6)  # nothing rejected
    normalised = samples * np.float32(0.5)
    plain = StackOptions(rejection="noise_clip", kappa_low=3.0, kappa_high=3.0)
    right = stack_samples(normalised, footprint, plain, noise=10.0, background=500.0, shot_level=500.0)
    assert_allclose(right.image, normalised.mean(axis=0), rtol=1e-6)
    for wrong in (
        dict(noise=10.0, background=500.0, shot_level=1000.0),  # shot level not scaled
        dict(noise=10.0, background=1000.0, shot_level=500.0),  # background not mapped
        dict(noise=10.0, background=500.0),  # no shot term
    ):
        clipped = stack_samples(normalised, footprint, plain, **wrong)
        assert_allclose(clipped.image, normalised[:3].mean(axis=0), rtol=1e-6)  # the bright sample went


def sparse_stack(depth: int, seed: int, noise_shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deep stacks where each pixel has 0-6 usable samples, with trails, cosmic rays and ties."""
    rng = np.random.default_rng(seed)
    shape = (depth, 3, 11, 23)
    values = rng.normal(SKY, NOISE, shape).astype(np.float32)
    usable = rng.integers(0, 7, shape[1:])  # usable samples per channel-pixel, at random frames
    rank = np.argsort(rng.random(shape), axis=0).argsort(axis=0)
    chosen = rank < usable[None]
    valid = chosen | (rng.random(shape) < 0.05)  # a few valid-but-NaN samples below
    values[~chosen & (rng.random(shape) < 0.5)] = np.nan
    values[valid & ~chosen] = np.nan
    values[~valid & (rng.random(shape) < 0.3)] = -1e6  # invalid: however extreme, takes no part
    values[rng.integers(depth), :, :, 5:8] += 40 * NOISE  # a satellite trail in one frame
    values[rng.integers(depth), 1, 6, :] += 25 * NOISE  # and one in another, one channel
    cosmic = rng.random(shape) < 0.03
    values[cosmic] += rng.uniform(5, 200, int(cosmic.sum())).astype(np.float32) * NOISE
    values[:, 2, 0, :] = np.round(values[:, 2, 0, :] / 50) * 50  # ties within a pixel
    if noise_shape == "per frame":
        noise = rng.uniform(10.0, 30.0, (depth, 3, 1, 1)).astype(np.float32)
    elif noise_shape == "per row":
        noise = rng.uniform(10.0, 30.0, (1, 1, shape[2], 1)).astype(np.float32)
    else:  # per pixel, a strided (non-contiguous) view, with a zero and an unknown noise
        noise = rng.uniform(10.0, 30.0, (depth, 3, shape[2], 2 * shape[3])).astype(np.float32)[..., ::2]
        noise[0, 0, 3] = 0.0
        noise[-1, 1, 4] = np.nan
    background = rng.uniform(900.0, 1100.0, (depth, 1, 1, 1)).astype(np.float32)
    return values, valid, noise, background


@pytest.mark.parametrize("depth", [5, 9, 16])
@pytest.mark.parametrize("noise_shape", ["per frame", "per row", "per pixel"])
@pytest.mark.parametrize(
    ("kappa_low", "kappa_high", "min_samples", "noise_scale", "max_iterations"),
    [(3.0, 3.0, 2, 0.1, 3), (1.5, 2.0, 1, 0.0, 6), (2.5, 2.5, 3, 0.3, 2)],
)
def test_compiled_kernel_equals_the_array_version_on_sparse_deep_stacks(
    depth, noise_shape, kappa_low, kappa_high, min_samples, noise_scale, max_iterations
):
    options = dict(
        kappa_low=kappa_low,
        kappa_high=kappa_high,
        max_iterations=max_iterations,
        min_samples=min_samples,
        noise_scale=noise_scale,
    )
    for seed in range(4):
        values, valid, noise, background = sparse_stack(depth, 1000 * depth + seed, noise_shape)
        shot, radius = (shot_levels(values, seed), 4) if seed % 2 else (0.0, None)
        floor = None if radius is None else smooth_level(values, valid, radius)
        compiled = reject_noise_clip(
            values, valid, noise, background=background, shot_level=shot, structure_radius=radius, **options
        )
        reference = arrays_reference(values, valid, noise, background, shot, floor, **options)
        assert_array_equal(compiled.keep, reference.keep)
        assert compiled.pair_rejections == reference.pair_rejections
        usable = valid & np.isfinite(values)
        assert not (compiled.keep & ~usable).any()
        assert (usable & ~compiled.keep).sum() > 20  # trails and cosmic rays were rejected
        if min_samples <= 2:
            assert compiled.pair_rejections > 0


def footprint_stack(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four frames each covering a run of columns per row, as in a batch region: two or more
    samples only where the runs overlap, with emission that changes across the runs' ends."""
    rng = np.random.default_rng(seed)
    depth, channels, height, width = 4, 2, 18, 96
    values = rng.normal(SKY, NOISE, (depth, channels, height, width)).astype(np.float32)
    x = np.arange(width, dtype=np.float32)
    for _ in range(6):  # stars and knots of emission, some at the ends of the overlaps
        centre, size, peak = rng.uniform(0, width), rng.uniform(1.5, 6.0), rng.uniform(5, 80) * NOISE
        values += (peak * np.exp(-0.5 * ((x - centre) / size) ** 2)).astype(np.float32)
    valid = np.zeros(values.shape, dtype=bool)
    for k in range(depth):
        for y in range(height):
            start = int(rng.integers(0, width - 20))
            valid[k, :, y, start : start + int(rng.integers(12, width - start + 1))] = True
    values[rng.integers(depth), :, 4:7, :] += 30 * NOISE  # a trail
    cosmic = rng.random(values.shape) < 0.02
    values[cosmic] += rng.uniform(5, 100, int(cosmic.sum())).astype(np.float32) * NOISE
    values[~valid & (rng.random(values.shape) < 0.5)] = np.nan
    return values, valid


@pytest.mark.parametrize("radius", [1, 4, 9])
def test_compiled_kernel_equals_the_array_version_where_frames_cover_runs_of_a_row(radius):
    """Rows whose judged pixels are a part of the row, emission across the parts' ends: the
    kernel's opening, sums and passes along the row are the array version's."""
    options = dict(kappa_low=3.0, kappa_high=3.0, max_iterations=3, min_samples=2, noise_scale=0.3)
    spans = []
    for seed in range(6):
        values, valid = footprint_stack(seed)
        usable = valid & np.isfinite(values)
        judged = usable.sum(axis=0) >= 2
        rows = judged.any(axis=-1)
        first, last = judged.argmax(axis=-1), judged.shape[-1] - judged[..., ::-1].argmax(axis=-1)
        spans.append(((last - first)[rows] / judged.shape[-1]).mean())
        noise = np.full((4, 1, 1, 1), NOISE, dtype=np.float32)
        shot = shot_levels(values, seed)
        floor = smooth_level(values, valid, radius)
        compiled = reject_noise_clip(
            values, valid, noise, background=SKY, shot_level=shot, structure_radius=radius, **options
        )
        reference = arrays_reference(values, valid, noise, SKY, shot, floor, **options)
        assert_array_equal(compiled.keep, reference.keep)
        assert compiled.pair_rejections == reference.pair_rejections
        assert (usable & ~compiled.keep).sum() > 10
    assert 0.2 < np.mean(spans) < 0.9  # rows whose judged span leaves parts of the row out
