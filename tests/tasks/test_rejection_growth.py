"""The noise clip's growth around strong rejections: a satellite trail's faint wings go with its core."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_noise_rejection import (
    CLIP,
    NOISE,
    SKY,
    arrays_reference,
    footprint_stack,
    heavy_tailed,
    shot_levels,
    sparse_stack,
)

from zemosaic_dask.config import load_config
from zemosaic_dask.config.policies import stack_options
from zemosaic_dask.errors import ConfigError
from zemosaic_dask.tasks.noise_rejection import reject_noise_clip
from zemosaic_dask.tasks.signal_structure import smooth_level
from zemosaic_dask.tasks.stacking import StackOptions

GROW = dict(grow_radius=3, grow_kappa=6.0)


def trail_stack(count: int, seed: int, *, peak: float = 40.0, sigma_px: float = 1.4, trail_frame: int = 1):
    """Sky samples ``(count, 1, 64, 80)`` with a Gaussian trail of ``peak`` sigmas in one frame.

    Returns the samples, the trail's added signal and each column's distance to the trail.
    """
    rng = np.random.default_rng(seed)
    values = rng.normal(SKY, NOISE, (count, 1, 64, 80)).astype(np.float32)
    y, x = np.mgrid[0:64, 0:80].astype(np.float64)
    distance = np.abs((y - 32.0) * np.cos(0.3) - (x - 40.0) * np.sin(0.3))
    trail = (peak * NOISE * np.exp(-0.5 * (distance / sigma_px) ** 2)).astype(np.float32)
    values[trail_frame, 0] += trail
    return values, trail, distance


def stacked_excess(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Mean of the kept samples minus the sky, ``(H, W)``."""
    kept = np.where(keep, values, 0.0).sum(axis=0) / np.maximum(keep.sum(axis=0), 1)
    return kept[0] - SKY


@pytest.mark.parametrize("count", [2, 3, 4, 6])
@pytest.mark.parametrize("structure", [False, True])
def test_growth_removes_the_wings_that_clipping_leaves(count, structure):
    """Without growth the wings (2-5 px, under the clip's 3 sigma) stay as two lines either side
    of the rejected core; with growth the stack there is the other frames' sky. With the stacks'
    sensitivity settings too (``structure``), where a pair's mean counts half the trail as signal."""
    settings = dict(CLIP, noise_scale=0.3, structure_radius=4) if structure else CLIP
    wing_bias, grown_bias = [], []
    for seed in range(4):
        values, trail, distance = trail_stack(count, seed, sigma_px=1.7)
        valid = np.isfinite(values)
        plain = reject_noise_clip(values, valid, NOISE, background=SKY, **settings)
        grown = reject_noise_clip(values, valid, NOISE, background=SKY, **settings, **GROW)
        wings = (distance > 2.5) & (distance < 5.0)
        wing_bias.append(stacked_excess(values, plain.keep)[wings].mean())
        grown_bias.append(stacked_excess(values, grown.keep)[wings].mean())
        assert grown.grown_rejections > 0 and plain.grown_rejections == 0
        assert not (grown.keep & ~plain.keep)[[k for k in range(count) if k != 1]].any()  # only the trail's frame
        assert np.array_equal(grown.keep, grown.keep & plain.keep)  # growth only removes samples
    # the left-over wing is a sizeable fraction of a sample sigma without growth, and gone with it
    assert np.mean(wing_bias) > 0.25 * NOISE / count
    assert abs(np.mean(grown_bias)) < 0.05 * NOISE


def test_growth_is_seeded_by_strong_rejections_only():
    """Pure noise and a faint trail under the seed threshold grow nothing; a cosmic ray where only
    two frames overlap (the pair rule) grows around itself in its own frame."""
    rng = np.random.default_rng(5)
    noise_only = rng.normal(SKY, NOISE, (5, 1, 64, 80)).astype(np.float32)
    noisy = reject_noise_clip(noise_only, np.isfinite(noise_only), NOISE, background=SKY, **CLIP, **GROW)
    assert (~noisy.keep).any() and noisy.grown_rejections == 0  # 3-sigma rejections, none at 6
    faint, _, _ = trail_stack(4, seed=9, peak=3.5)  # rejected at its core (3 sigma), never 6
    faint_clip = reject_noise_clip(faint, np.isfinite(faint), NOISE, background=SKY, **CLIP, **GROW)
    assert (~faint_clip.keep[1]).any() and faint_clip.grown_rejections == 0
    pair = rng.normal(SKY, NOISE, (2, 1, 9, 9)).astype(np.float32)
    pair[1, 0, 4, 4] += 20 * NOISE  # a cosmic ray where only two frames overlap
    grown = reject_noise_clip(pair, np.isfinite(pair), NOISE, background=SKY, **CLIP, **GROW)
    assert grown.pair_rejections >= 1 and grown.grown_rejections > 0
    assert grown.keep.sum(axis=0).min() == 1  # the pair keeps one sample everywhere it grew
    assert not grown.keep[1, 0, 3:6, 3:6].any() and grown.keep[0].all()


def test_an_outlier_on_a_star_flank_does_not_seed():
    """A strong outlier five pixels from a bright star's core (a Bayer channel's interpolation
    leaves such) seeds no growth; the same outlier on the sky does."""
    rng = np.random.default_rng(8)
    values = rng.normal(SKY, NOISE, (4, 1, 40, 60)).astype(np.float32)
    y, x = np.mgrid[0:40, 0:60]
    values[:, 0] += (300 * NOISE * np.exp(-((y - 20) ** 2 + (x - 15) ** 2) / (2 * 1.5**2))).astype(np.float32)
    values[2, 0, 20, 20] += 25 * NOISE  # on the star's flank, 5 px out (its own contrast is low)
    values[2, 0, 20, 45] += 25 * NOISE  # on the sky
    settings = dict(CLIP, noise_scale=0.3, structure_radius=4)
    valid = np.isfinite(values)
    floor = smooth_level(values, valid, 4)
    plain = reject_noise_clip(values, valid, NOISE, background=SKY, **settings)
    compiled = reject_noise_clip(values, valid, NOISE, background=SKY, **settings, **GROW)
    reference = arrays_reference(values, valid, NOISE, SKY, 0.0, floor, **dict(CLIP, noise_scale=0.3), **GROW)
    assert_array_equal(compiled.keep, reference.keep)
    assert not compiled.keep[2, 0, 20, 20] and not compiled.keep[2, 0, 20, 45]  # both clipped
    grown = plain.keep & ~compiled.keep
    assert grown[2, 0][np.hypot(y - 20, x - 45) <= 3].sum() > 20  # the sky outlier took its frame's disc with it
    assert not grown[:, 0][:, np.hypot(y - 20, x - 15) <= 9].any()  # nothing grown about the star


def test_growth_keeps_star_fluxes_when_the_seeing_changes():
    """Stars of one flux seen with 2.8-3.8 px FWHM in five frames (the sharp frames' cores
    stand out): the growth, with the stacks' sensitivity settings, changes no aperture flux by
    more than 0.3 % and rejects few samples."""
    y, x = np.mgrid[0:64, 0:80]
    stars = ((15, 20), (40, 60), (50, 15), (20, 60))
    flux = 2 * np.pi * 1.4**2 * 200 * NOISE
    settings = dict(CLIP, noise_scale=0.3, structure_radius=4)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = rng.normal(SKY, NOISE, (5, 1, 64, 80)).astype(np.float32)
        for cy, cx in stars:
            for k in range(5):
                width = 1.2 + 0.1 * k
                profile = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2)) / (2 * np.pi * width**2)
                values[k, 0] += (flux * profile).astype(np.float32)
        valid = np.isfinite(values)
        plain = reject_noise_clip(values, valid, NOISE, background=SKY, **settings)
        grown = reject_noise_clip(values, valid, NOISE, background=SKY, **settings, **GROW)
        assert grown.grown_rejections < 0.01 * 5 * len(stars) * 201  # samples within 8 px of the stars
        for cy, cx in stars:
            aperture = (y - cy) ** 2 + (x - cx) ** 2 <= 64
            before = stacked_excess(values, plain.keep)[aperture].sum()
            after = stacked_excess(values, grown.keep)[aperture].sum()
            assert abs(after - before) < 0.003 * flux


def test_growth_never_empties_a_pixel():
    """Two frames, a cosmic ray in each 4 px apart (the pair rule rejects both): between them every
    sample lies near a strong rejection of its own frame, so those pixels keep both; beside one ray
    only its frame is grown."""
    rng = np.random.default_rng(4)
    values = rng.normal(SKY, NOISE, (2, 1, 9, 15)).astype(np.float32)
    values[0, 0, 4, 5] += 40 * NOISE
    values[1, 0, 4, 9] += 40 * NOISE
    valid = np.isfinite(values)
    compiled = reject_noise_clip(values, valid, NOISE, background=SKY, **CLIP, **GROW)
    reference = arrays_reference(values, valid, NOISE, SKY, **CLIP, **GROW)
    for result in (compiled, reference):
        assert not result.keep[0, 0, 4, 5] and not result.keep[1, 0, 4, 9]  # the rays
        assert result.keep[:, 0, 4, 6:9].all()  # within 3 px of both rays: both samples stay
        assert not result.keep[0, 0, 4, 2:5].any() and result.keep[1, 0, 4, 2:5].all()  # beside ray 0 only
        assert result.keep.sum(axis=0).min() == 1
    assert_array_equal(compiled.keep, reference.keep)


def test_growth_leaves_pixels_the_rules_do_not_judge():
    """With min_samples 3, pixels of two samples are never clipped, so the growth from a trail's
    seeds where three frames overlap stops at the edge of the third frame."""
    values, _, _ = trail_stack(3, seed=6)
    values[2, :, :, 40:] = np.nan  # right of column 40 only two frames: not judged
    valid = np.isfinite(values)
    three = dict(CLIP, min_samples=3)
    for result in (
        reject_noise_clip(values, valid, NOISE, background=SKY, **three, **GROW),
        arrays_reference(values, valid, NOISE, SKY, **three, **GROW),
    ):
        assert result.grown_rejections > 0  # it grew where three frames overlap ...
        assert result.keep[:, :, :, 40:][valid[:, :, :, 40:]].all()  # ... and nowhere else


@pytest.mark.parametrize("radius", [1, 3, 5])
@pytest.mark.parametrize("kappa", [2.0, 6.0])
def test_compiled_growth_equals_the_array_version(radius, kappa):
    """The compiled kernel's seeds and growth are the array version's, on stars with missing
    samples, sparse deep stacks with trails and cosmic rays, and runs of a row."""
    grow = dict(grow_radius=radius, grow_kappa=kappa)
    grown_total = 0
    for depth in (2, 3, 4, 12):
        values, valid, noise, background = heavy_tailed(depth, seed=depth + radius)
        shot = shot_levels(values, seed=depth)
        floor = smooth_level(values, valid, 4)
        compiled = reject_noise_clip(
            values, valid, noise, background=background, shot_level=shot, structure_radius=4, **CLIP, **grow
        )
        reference = arrays_reference(values, valid, noise, background, shot, floor, **CLIP, **grow)
        assert_array_equal(compiled.keep, reference.keep)
        assert compiled.grown_rejections == reference.grown_rejections
        grown_total += compiled.grown_rejections
    for depth, noise_shape in ((5, "per frame"), (9, "per row"), (16, "per pixel")):
        values, valid, noise, background = sparse_stack(depth, 77 * depth + radius, noise_shape)
        options = dict(CLIP, noise_scale=0.3, max_iterations=1 + depth % 3)
        compiled = reject_noise_clip(values, valid, noise, background=background, **options, **grow)
        reference = arrays_reference(values, valid, noise, background, **options, **grow)
        assert_array_equal(compiled.keep, reference.keep)
        assert compiled.pair_rejections == reference.pair_rejections
        assert compiled.grown_rejections == reference.grown_rejections
        grown_total += compiled.grown_rejections
    values, valid = footprint_stack(radius)
    noise = np.full((4, 1, 1, 1), NOISE, dtype=np.float32)
    compiled = reject_noise_clip(values, valid, noise, background=SKY, **CLIP, **grow)
    reference = arrays_reference(values, valid, noise, SKY, **CLIP, **grow)
    assert_array_equal(compiled.keep, reference.keep)
    assert grown_total > 0


def test_array_api_strict_growth_equals_numpy():
    xps = pytest.importorskip("array_api_strict")
    values, _, _ = trail_stack(4, seed=11)
    valid = np.isfinite(values)
    expected = reject_noise_clip(values, valid, NOISE, background=SKY, **CLIP, **GROW)
    result = reject_noise_clip(xps.asarray(values), xps.asarray(valid), NOISE, background=SKY, **CLIP, **GROW)
    assert_array_equal(np.asarray(result.keep), expected.keep)
    assert result.grown_rejections == expected.grown_rejections > 0


def test_growth_is_a_configuration_key_checked_by_name():
    options = stack_options(load_config())
    assert options.rejection == "noise_clip" and options.grow_radius == 3 and options.grow_kappa == 6.0
    off = stack_options(load_config(overrides={"stack.grow-radius": 0}))
    assert off.grow_radius == 0
    with pytest.raises(ConfigError, match="zemosaic.stack.grow-radius"):
        StackOptions(rejection="noise_clip", grow_radius=-1).validate()
    with pytest.raises(ConfigError, match="zemosaic.stack.grow-kappa"):
        StackOptions(rejection="noise_clip", grow_kappa=0.0).validate()
    with pytest.raises(ConfigError, match="grow-radius"):
        load_config(overrides={"stack.grow-radius": -2})


def test_fake_cupy_growth_stays_on_the_device_and_equals_numpy(fakecupy):
    """The array version, which GPUs run, grows on the device what the compiled kernel grows."""
    values, _, _ = trail_stack(4, seed=12)
    valid = np.isfinite(values)
    settings = dict(CLIP, noise_scale=0.3, structure_radius=4)
    expected = reject_noise_clip(values, valid, NOISE, background=SKY, **settings, **GROW)
    result = reject_noise_clip(
        fakecupy.asarray(values), fakecupy.asarray(valid), NOISE, background=SKY, **settings, **GROW
    )
    assert type(result.keep) is fakecupy.ndarray
    assert_array_equal(fakecupy.asnumpy(result.keep), expected.keep)
    assert result.grown_rejections == expected.grown_rejections > 0
