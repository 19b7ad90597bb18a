"""Sky cells of a frame: the compiled binning and clipping passes give the numpy formulation's values."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from zemosaic_dask.tasks.background_solve import FrameAffine
from zemosaic_dask.tasks.debayer import (
    BAYER_PATTERNS,
    bayer_colour_index,
    bayer_masks,
    binned_noise_ratio,
    colour_block_noise_ratio,
    debayer_bilinear,
)
from zemosaic_dask.tasks.kernels_raw import bayer_block_means_cpu
from zemosaic_dask.tasks.kernels_stack import bin_mean_cpu
from zemosaic_dask.tasks.sky_blocks import (
    BINS,
    CELL_BINS,
    CLIP_HIGH,
    CLIP_LOW,
    MIN_FILL,
    SkyCells,
    measure_bayer_sky_cells,
    measure_sky_cells,
)


def numpy_sky_cells(image, to_grid, cell, grid_shape, *, pixel_area=1.0, noise=None, pattern=None) -> SkyCells:
    """measure_sky_cells written with array operations only (mask indexing, bincounts, np.isin)."""
    data = np.asarray(image, dtype=np.float32)
    factor = max((f for f in BINS if cell >= CELL_BINS * f), default=1)
    if noise is not None:  # the noise of a binned pixel of the demosaiced (or plain) frame
        noise = np.asarray(noise, dtype=np.float64) * np.asarray(binned_noise_ratio(pattern, factor)[: data.shape[0]])
    if factor > 1:
        channels, height, width = data.shape
        height, width = height // factor * factor, width // factor * factor
        data = data[:, :height, :width].reshape(channels, height // factor, factor, width // factor, factor)
        data = data.mean(axis=(2, 4))
        pixel_area *= factor * factor
    channels, height, width = data.shape
    n_columns = -(-grid_shape[1] // cell)
    n_cells = -(-grid_shape[0] // cell) * n_columns
    yy, xx = np.mgrid[0:height, 0:width]
    offset = (factor - 1) / 2.0
    gx, gy = to_grid(xx.ravel() * float(factor) + offset, yy.ravel() * float(factor) + offset)
    column = np.floor((gx + 0.5) / cell).astype(np.int64)
    row = np.floor((gy + 0.5) / cell).astype(np.int64)
    inside = (column >= 0) & (column < n_columns) & (row >= 0) & (row * n_columns < n_cells)
    values = data.reshape(channels, -1)
    ids = np.where(inside & np.all(np.isfinite(values), axis=0), row * n_columns + column, n_cells)
    counts = np.bincount(ids, minlength=n_cells + 1)[:n_cells]
    filled = np.flatnonzero(counts >= MIN_FILL * cell * cell / pixel_area)
    keep = np.isin(ids, filled)
    ids, values = ids[keep], values[:, keep]
    lookup = np.searchsorted(filled, ids)
    pixels = np.bincount(lookup, minlength=filled.size)
    means, fluxes = np.empty((channels, filled.size)), np.empty((channels, filled.size))
    for c in range(channels):
        v = values[c]
        mean = np.bincount(lookup, v, filled.size) / pixels
        sigma = float(noise[c]) if noise is not None else 1.4826 * float(np.median(np.abs(v - mean[lookup])))
        for index in range(3):
            residual = v - mean[lookup]
            low = -np.inf if index == 0 else -CLIP_LOW * sigma
            weight = ((residual >= low) & (residual <= CLIP_HIGH * sigma)).astype(np.float64)
            total = np.bincount(lookup, weight, filled.size)
            mean = np.where(total > 0, np.bincount(lookup, v * weight, filled.size) / np.maximum(total, 1), np.nan)
        means[c] = mean
        fluxes[c] = np.bincount(lookup, v, filled.size) - pixels * mean
    return SkyCells(filled.astype(np.int64), means, fluxes, cell, n_columns)


def starry_frame(seed: int, shape=(3, 203, 261)) -> np.ndarray:
    """Sky with a gradient, stars, a trail, hot pixels and a NaN corner."""
    rng = np.random.default_rng(seed)
    channels, height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    image = (300.0 + 0.4 * xx - 0.2 * yy + rng.normal(0.0, 6.0, shape)).astype(np.float32)
    for _ in range(40):
        y, x = rng.integers(3, height - 3), rng.integers(3, width - 3)
        image[:, y - 2 : y + 3, x - 2 : x + 3] += rng.uniform(50.0, 20000.0)
    image[:, 70 + (xx[0] // 9), xx[0]] += 900.0  # a slanted trail
    image[rng.random(shape) < 0.002] = 60000.0
    image[:, -25:, -40:] = np.nan
    image[1, 5, 5] = np.nan  # one channel only: the pixel takes no part in any channel
    return image


@pytest.mark.parametrize("factor", [2, 4])
def test_bin_mean_sums_rows_then_their_sums(factor):
    rng = np.random.default_rng(factor)
    data = (rng.standard_cauchy((2, 37, 53)) * 1e4).astype(np.float32)  # wide range: the order shows
    data[0, 3, 5] = np.nan
    data[1, 9, 10], data[1, 9, 11] = np.inf, -np.inf
    channels, height, width = data.shape[0], data.shape[1] // factor, data.shape[2] // factor
    blocks = data[:, : height * factor, : width * factor].reshape(channels, height, factor, width, factor)
    rows = [blocks[:, :, i, :, 0] for i in range(factor)]
    with np.errstate(invalid="ignore"):  # inf - inf
        for i in range(factor):
            for j in range(1, factor):
                rows[i] = rows[i] + blocks[:, :, i, :, j]
        expected = rows[0]
        for i in range(1, factor):
            expected = expected + rows[i]
        expected = expected / np.float32(factor * factor)
        mean = blocks.mean(axis=(2, 4))
    out = np.full((channels, height, width), -1.0, dtype=np.float32)
    bin_mean_cpu(data, factor, out)
    assert_array_equal(out, expected)  # bit for bit, NaN where a block holds a NaN or +-inf
    assert np.isnan(out[0, 3 // factor, 5 // factor]) and np.isnan(out[1, 9 // factor, 10 // factor])
    assert_allclose(out, mean, rtol=1e-6)
    strided = np.asfortranarray(data)  # any memory layout
    bin_mean_cpu(strided, factor, out)
    assert_array_equal(out, expected)


@pytest.mark.parametrize("cell", [8, 16, 21, 32, 48])
@pytest.mark.parametrize(("noise", "pattern"), [(None, None), ((6.0, 5.0, 7.0), None), ((6.0, 5.0, 7.0), "GRBG")])
def test_sky_cells_equal_the_array_formulation(cell, noise, pattern):
    rotation = np.deg2rad(17.0)
    c, s = np.cos(rotation), np.sin(rotation)
    affine = FrameAffine((130.0, 101.0), (260.0, 230.0), ((1.1 * c, -1.1 * s), (1.1 * s, 1.1 * c)))
    area = abs(float(np.linalg.det(np.asarray(affine.matrix))))
    for seed in range(2):
        image = starry_frame(seed)
        cells = measure_sky_cells(
            image, affine.to_grid, cell, (470, 520), pixel_area=area, noise=noise, bayer_pattern=pattern
        )
        expected = numpy_sky_cells(
            image, affine.to_grid, cell, (470, 520), pixel_area=area, noise=noise, pattern=pattern
        )
        assert cells.ids.size > 10 and cells.n_columns == expected.n_columns
        assert_array_equal(cells.ids, expected.ids)
        assert_array_equal(cells.values, expected.values)  # to the bit
        assert_array_equal(cells.fluxes, expected.fluxes)
        assert np.nanmax(cells.fluxes) > 1000.0  # stars were clipped out of some cell means


def test_a_pixel_on_the_clipping_limit_is_kept():
    image = np.full((1, 32, 48), 100.0, dtype=np.float32)
    image[:, 2::4, :] = 110.0  # a quarter of every 8 x 8 cell: mean 102.5, residual +7.5 (and -2.5)
    identity = FrameAffine((0.0, 0.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    cells = measure_sky_cells(image, identity.to_grid, 8, (32, 48), noise=(3.0,))  # upper limit 2.5 * 3 = 7.5
    assert cells.ids.size == 4 * 6
    assert_array_equal(cells.values, 102.5)  # the 110 pixels sit exactly on the limit: kept
    assert_array_equal(cells.fluxes, 0.0)
    below = measure_sky_cells(image, identity.to_grid, 8, (32, 48), noise=(2.9,))
    assert_array_equal(below.values, 100.0)  # just inside it they are clipped


@pytest.mark.parametrize("pattern", ["GRBG", "RGGB", None])
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_binned_noise_ratio_is_the_noise_of_binned_demosaiced_white_noise(pattern, factor):
    rng = np.random.default_rng(factor)
    raw = rng.normal(0.0, 10.0, (2, 512, 512)).astype(np.float32)
    planes = [debayer_bilinear(r, pattern) if pattern else np.stack([r] * 3) for r in raw]
    inner = np.stack(planes)[:, :, 8:-8, 8:-8]  # leave the borders, where fewer neighbours are averaged
    n, channels, height, width = inner.shape
    blocks = inner.reshape(n, channels, height // factor, factor, width // factor, factor).mean(axis=(3, 5))
    measured = blocks.transpose(1, 0, 2, 3).reshape(channels, -1).std(axis=1) / 10.0
    assert_allclose(measured, binned_noise_ratio(pattern, factor), rtol=0.03)
    if pattern and factor > 1:  # neighbouring demosaiced pixels share samples: well above 1 / factor
        assert min(binned_noise_ratio(pattern, factor)) > 1.08 / factor


@pytest.mark.parametrize("layout", ["bayer", "bayer-raw", "mono"])
def test_cell_sky_of_a_demosaiced_frame_is_unbiased_at_every_sky_level(layout):
    """The cell values are the sky, not the sky minus a clipping bias that grows with it.

    ``bayer-raw``: the same raw frame binned by colour (:func:`measure_bayer_sky_cells`),
    whose clipping unit is the noise of a colour block mean.

    A frame brighter or darker than the session's typical one (the clipping unit) must
    still give its own sky level: a bias that follows the level is read by the background
    model as a bend. Before the clipping window was symmetric and measured in the noise of
    the demosaiced, binned pixels, red and blue were low by 0.7 to 1.5 ADU here.
    """
    rng = np.random.default_rng(7)
    size = 1024
    typical = np.array([300.0, 400.0, 250.0])
    colour = np.zeros((size, size), dtype=np.int64)  # GRBG
    colour[0::2, 0::2], colour[0::2, 1::2], colour[1::2, 0::2], colour[1::2, 1::2] = 1, 0, 2, 1
    identity = FrameAffine((0.0, 0.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    noise = np.sqrt(typical + 9.0)  # Poisson (1 e-/ADU) and 3 ADU of read noise
    for level in (0.8, 1.0, 1.2):
        sky = typical * level
        expected = sky[colour] if layout != "mono" else np.full((size, size), sky[1])
        raw = (rng.poisson(expected) + rng.normal(0.0, 3.0, expected.shape)).astype(np.float32)
        if layout == "bayer-raw":  # binned by colour from the raw pixels, no demosaicing
            cells = measure_bayer_sky_cells(
                raw[2:-2, 2:-2], "GRBG", identity.to_grid, 32, (size - 4, size - 4), noise=noise
            )
            truth = sky
        else:
            if layout == "bayer":
                image, pattern, truth, unit = debayer_bilinear(raw, "GRBG"), "GRBG", sky, noise
            else:
                image, pattern, truth, unit = raw[None], None, sky[1:2], noise[1:2]
            cells = measure_sky_cells(
                image[:, 2:-2, 2:-2], identity.to_grid, 32, (size - 4, size - 4), noise=unit, bayer_pattern=pattern
            )
        assert cells.ids.size > 900
        bias = cells.values.mean(axis=1) - truth
        # A cell's value has about 0.9 ADU of noise: the mean over 900+ cells 0.03 ADU.
        assert np.all(np.abs(bias) < 0.12), f"level x{level}: bias {bias} ADU"


def colour_block_means(raw: np.ndarray, pattern: str, factor: int) -> np.ndarray:
    """Each colour's mean in every ``factor x factor`` block, from the Bayer masks (array operations only)."""
    height, width = raw.shape[0] // factor * factor, raw.shape[1] // factor * factor
    masks = bayer_masks(pattern, (height, width), np).astype(np.float64)
    data = raw[:height, :width].astype(np.float64)
    shape = (3, height // factor, factor, width // factor, factor)
    sums = (masks * np.where(masks > 0, data, 0.0)).reshape(shape).sum(axis=(2, 4))
    bad = (masks * ~np.isfinite(data)).reshape(shape).sum(axis=(2, 4)) > 0
    means = sums / masks.reshape(shape).sum(axis=(2, 4))
    return np.where(bad, np.nan, means).astype(np.float32)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("factor", [2, 4, 6])
def test_colour_block_means_are_each_colours_mean_in_its_block(pattern, factor):
    rng = np.random.default_rng(factor)
    raw = rng.normal(300.0, 20.0, (51, 77)).astype(np.float32)  # odd sides: the last partial blocks are left
    raw[10, 13] = np.nan  # one sample: only its colour's block mean becomes NaN
    out = np.full((3, 51 // factor, 77 // factor), -1.0, dtype=np.float32)
    bayer_block_means_cpu(raw, bayer_colour_index(pattern), factor, out)
    expected = colour_block_means(raw, pattern, factor)
    assert_allclose(out, expected, rtol=1e-6)
    assert np.isnan(out).sum() == 1 and np.isnan(out[:, 10 // factor, 13 // factor]).sum() == 1
    # Not the plain block mean: red and blue come from their own sites only.
    assert not np.allclose(
        out[0],
        raw[: out.shape[1] * factor, : out.shape[2] * factor]
        .reshape(out.shape[1], factor, out.shape[2], factor)
        .mean(axis=(1, 3)),
        equal_nan=True,
    )


@pytest.mark.parametrize("factor", [2, 4])
def test_colour_block_noise_ratio_is_the_noise_of_colour_block_means_of_white_noise(factor):
    rng = np.random.default_rng(factor)
    raw = rng.normal(0.0, 10.0, (1024, 1024)).astype(np.float32)
    out = np.empty((3, 1024 // factor, 1024 // factor), dtype=np.float32)
    bayer_block_means_cpu(raw, bayer_colour_index("RGGB"), factor, out)
    assert_allclose(out.reshape(3, -1).std(axis=1) / 10.0, colour_block_noise_ratio(factor), rtol=0.03)
    with pytest.raises(ValueError, match="even side"):
        colour_block_noise_ratio(3)


@pytest.mark.parametrize("cell", [16, 32, 48])
def test_bayer_sky_cells_are_the_cells_of_the_colour_block_means(cell):
    """The raw road places and clips the colour block means exactly as the demosaiced road places its block means."""
    rotation = np.deg2rad(17.0)
    c, s = np.cos(rotation), np.sin(rotation)
    affine = FrameAffine((130.0, 101.0), (260.0, 230.0), ((1.1 * c, -1.1 * s), (1.1 * s, 1.1 * c)))
    area = abs(float(np.linalg.det(np.asarray(affine.matrix))))
    factor = max(f for f in BINS if cell >= CELL_BINS * f)
    noise = np.array([6.0, 5.0, 7.0])
    for seed in range(2):
        raw = starry_frame(seed, shape=(3, 204, 262))[0]
        cells = measure_bayer_sky_cells(raw, "GRBG", affine.to_grid, cell, (470, 520), pixel_area=area, noise=noise)
        # The same block values, each spread over its block: the plain road bins them back.
        blocks = colour_block_means(raw, "GRBG", factor)
        spread = np.repeat(np.repeat(blocks, factor, axis=1), factor, axis=2)
        plain_noise = noise * np.asarray(colour_block_noise_ratio(factor)) * factor  # the plain road divides by factor
        expected = numpy_sky_cells(spread, affine.to_grid, cell, (470, 520), pixel_area=area, noise=plain_noise)
        assert cells.ids.size > 10
        assert_array_equal(cells.ids, expected.ids)
        assert_allclose(cells.values, expected.values, rtol=1e-6)
        assert np.nanmax(cells.fluxes) > 1000.0  # stars were clipped out of some cell means


def test_bayer_sky_cells_need_an_even_binning():
    raw = np.full((64, 64), 100.0, dtype=np.float32)
    identity = FrameAffine((0.0, 0.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    with pytest.raises(ValueError, match="even factor"):
        measure_bayer_sky_cells(raw, "GRBG", identity.to_grid, 8, (64, 64))  # cells of 8 px: not binned
    with pytest.raises(ValueError, match="block-px"):
        measure_bayer_sky_cells(raw, "GRBG", identity.to_grid, 1, (64, 64))
