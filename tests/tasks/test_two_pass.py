"""Two-pass coverage renormalisation numerics: scale map, layer gains, pass merge, colour ratios."""

import dask.array as da
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from zemosaic_dask.tasks.blur import gaussian_blur, halo_width
from zemosaic_dask.tasks.two_pass import (
    coverage_scale_map,
    gain_from_values,
    layer_gain,
    merge_passes,
    well_covered_scale_values,
)


def _scale_reference(coverage, sigma, clip=(0.5, 2.0)):
    """clip(blur(cov) / blur(cov > 0) / cov) from scipy, NaN where the coverage is 0."""
    mask = (coverage > 0).astype(np.float64)
    blur = gaussian_filter(coverage.astype(np.float64), sigma, mode="constant", truncate=4.0)
    weight = gaussian_filter(mask, sigma, mode="constant", truncate=4.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.clip(blur / weight / coverage, *clip)
    return np.where(coverage > 0, scale, np.nan)


def _scale_chunked(coverage, sigma, chunk):
    """The scale map computed chunk by chunk with explicit halo reads (clipped at the canvas border)."""
    halo = halo_width(sigma)
    height, width = coverage.shape
    out = np.full(coverage.shape, -1.0, np.float32)
    for y0 in range(0, height, chunk[0]):
        for x0 in range(0, width, chunk[1]):
            y1, x1 = min(y0 + chunk[0], height), min(x0 + chunk[1], width)
            ey0, ey1 = max(0, y0 - halo), min(height, y1 + halo)
            ex0, ex1 = max(0, x0 - halo), min(width, x1 + halo)
            sides = (y0 - ey0, ey1 - y1, x0 - ex0, ex1 - x1)
            out[y0:y1, x0:x1] = coverage_scale_map(coverage[ey0:ey1, ex0:ex1], sides, sigma)
    return out


def _step_coverage():
    coverage = np.zeros((90, 160), np.float32)
    coverage[10:80, 10:80] = 2.0
    coverage[10:80, 80:150] = 6.0
    return coverage


def test_uniform_coverage_gives_one_everywhere_even_at_the_footprint_edge():
    yy, xx = np.mgrid[:100, :120]
    coverage = np.where((yy - 50) ** 2 + (xx - 55) ** 2 < 40**2, 5.0, 0.0).astype(np.float32)
    halo = halo_width(12.0)
    scale = coverage_scale_map(np.pad(coverage, halo), halo, 12.0)
    assert scale.shape == coverage.shape and scale.dtype == np.float32
    np.testing.assert_allclose(scale[coverage > 0], 1.0, rtol=1e-5)
    assert np.isnan(scale[coverage == 0]).all()


def test_coverage_step_raises_the_low_side_and_lowers_the_high_side():
    coverage = _step_coverage()
    sigma = 6.0
    halo = halo_width(sigma)
    scale = coverage_scale_map(np.pad(coverage, halo), halo, sigma)
    row = 45
    assert scale[row, 79] > 1.2 and scale[row, 80] < 0.8  # right at the step
    assert (scale[row, 60:80] > 1).all() and (scale[row, 80:100] < 1).all()
    np.testing.assert_allclose(scale[row, 30:55], 1.0, rtol=1e-5)  # beyond the kernel's reach
    np.testing.assert_allclose(scale, _scale_reference(coverage, sigma), rtol=1e-5)


def test_scale_is_clipped_to_its_bounds():
    coverage = np.ones((80, 80), np.float32)
    coverage[38:41, 38:41] = 1000.0  # a tiny, very deep island: blurred far below its coverage
    coverage[5:8, 5:8] = 0.001  # a nearly empty hole: blurred far above its coverage
    scale = coverage_scale_map(coverage, 0, 5.0)
    assert scale[39, 39] == pytest.approx(0.5) and scale[6, 6] == pytest.approx(2.0)
    assert np.nanmin(scale) >= 0.5 and np.nanmax(scale) <= 2.0
    wide = coverage_scale_map(coverage, 0, 5.0, clip=(0.25, 8.0))
    assert wide[39, 39] < 0.5 and wide[6, 6] > 2.0


def test_chunked_scale_map_with_halos_equals_the_whole_canvas():
    coverage = _step_coverage()
    coverage[30:50, 20:120] += 3.0
    sigma = 7.0
    whole = coverage_scale_map(coverage, 0, sigma)
    np.testing.assert_allclose(whole, _scale_reference(coverage, sigma), rtol=1e-5)
    np.testing.assert_allclose(_scale_chunked(coverage, sigma, (32, 48)), whole, rtol=2e-6)


def test_scale_map_through_dask_map_overlap_equals_the_whole_canvas():
    coverage = _step_coverage()
    sigma = 4.0
    halo = halo_width(sigma)
    lazy = da.from_array(coverage, chunks=(45, 40)).map_overlap(
        coverage_scale_map, depth=halo, boundary=0, trim=False, halo=halo, sigma=sigma, dtype=np.float32
    )
    result = lazy.compute(scheduler="sync")
    np.testing.assert_allclose(result, coverage_scale_map(coverage, 0, sigma), rtol=2e-6)


def test_layer_gain_is_the_median_over_the_well_covered_footprint():
    rng = np.random.default_rng(11)
    scale = rng.uniform(0.9, 1.1, size=(40, 50)).astype(np.float32)
    coverage = np.full((40, 50), 10.0, np.float32)
    coverage[:, :15] = 4.0  # rim below half the maximum: not well covered
    scale[:, :15] = 2.0
    scale[0, 20] = np.nan  # no mosaic coverage there
    coverage[39, :] = 0.0
    expected = np.median(scale[:39, 15:][np.isfinite(scale[:39, 15:])])
    assert layer_gain(scale, coverage) == pytest.approx(expected)
    # with a lower threshold the rim counts and pulls the median up
    assert layer_gain(scale, coverage, well_covered_fraction=0.3) > expected


def test_layer_gain_split_over_chunks_equals_the_whole_layer():
    rng = np.random.default_rng(12)
    scale = rng.uniform(0.8, 1.3, size=(60, 60)).astype(np.float32)
    coverage = rng.uniform(0.0, 8.0, size=(60, 60)).astype(np.float32)
    top_max = float(coverage.max())
    parts = [
        well_covered_scale_values(scale[rows], coverage[rows], coverage_max=top_max)
        for rows in (slice(0, 25), slice(25, 60))
    ]
    assert gain_from_values(np.concatenate(parts)) == layer_gain(scale, coverage)


def test_layer_gain_is_clipped_and_defaults_to_one():
    coverage = np.ones((10, 10), np.float32)
    assert layer_gain(np.full((10, 10), 1.5, np.float32), coverage) == pytest.approx(1.18)
    assert layer_gain(np.full((10, 10), 0.6, np.float32), coverage) == pytest.approx(0.85)
    assert layer_gain(np.full((10, 10), 1.05, np.float32), coverage) == pytest.approx(1.05)
    assert layer_gain(np.full((10, 10), 1.5, np.float32), np.zeros((10, 10), np.float32)) == 1.0
    assert layer_gain(np.full((10, 10), np.nan, np.float32), coverage) == 1.0


def test_merge_keeps_pass_one_where_pass_two_is_untrusted():
    image_p1 = np.full((3, 1, 6), 10.0, np.float32)
    image_p1[:, 0, 5] = [-1.0, -2.0, -3.0]  # non-positive pass-1 luminance: ratio undefined
    image_p2 = np.stack([np.array([[3.0, 5.0, 12.0, 12.0, 12.0, 12.0]], np.float32)] * 3)
    image_p2[1, 0, 1] = 2.0  # luminance mean(5, 2, 5) = 4.0: ratio 0.4 exactly, kept
    cov_p1 = np.array([[2.0, 2.0, 2.0, 0.0, 2.0, 2.0]], np.float32)
    cov_p2 = np.array([[3.0, 3.0, 3.0, 3.0, 0.0, 3.0]], np.float32)
    image, coverage = merge_passes(image_p1, cov_p1, image_p2, cov_p2)
    from_p2 = np.array([False, True, True, False, False, False])  # ratio 0.3, 0.4, 1.2, cov1=0, cov2=0, lum1<0
    np.testing.assert_array_equal(image[:, 0, from_p2], image_p2[:, 0, from_p2])
    np.testing.assert_array_equal(image[:, 0, ~from_p2], image_p1[:, 0, ~from_p2])
    np.testing.assert_array_equal(coverage[0], np.where(from_p2, cov_p2[0], cov_p1[0]))
    _, strict = merge_passes(image_p1, cov_p1, image_p2, cov_p2, min_luminance_ratio=0.5)
    assert strict[0, 1] == cov_p1[0, 1]


def _grey_sky(shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    grey = 20.0 + 8.0 * xx / shape[1] + 4.0 * yy / shape[0]
    for cy, cx, amp in ((30, 40, 300.0), (100, 150, 500.0), (70, 90, 200.0), (130, 30, 400.0)):
        grey += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
    return grey


# (y0, x0, height, width, weight, transparency): the transparency is a per-layer level
# mismatch, identical in every channel
_LAYERS = ((0, 0, 100, 120, 12.0, 1.0), (40, 70, 120, 130, 3.0, 0.92), (60, 20, 80, 90, 6.0, 1.07))


def _assemble(layers, gains, shape):
    numerator = np.zeros((3,) + shape)
    coverage = np.zeros(shape)
    for (y0, x0, values, weight), gain in zip(layers, gains, strict=True):
        box = (slice(y0, y0 + weight.shape[0]), slice(x0, x0 + weight.shape[1]))
        numerator[(slice(None),) + box] += weight * gain * values
        coverage[box] += weight
    with np.errstate(invalid="ignore"):
        image = np.where(coverage > 0, numerator / coverage, np.nan)
    return image.astype(np.float32), coverage.astype(np.float32)


def test_two_pass_keeps_colour_ratios_of_a_neutral_field():
    shape = (160, 200)
    factors = np.array([1.3, 1.0, 0.75])  # the field's colour: R=G=B grey times a per-channel factor
    sky = factors[:, None, None] * _grey_sky(shape)[None]
    layers = []
    for y0, x0, height, width, weight, transparency in _LAYERS:
        values = transparency * sky[:, y0 : y0 + height, x0 : x0 + width]
        layers.append((y0, x0, values, np.full((height, width), weight)))
    image_p1, cov_p1 = _assemble(layers, [1.0] * len(layers), shape)
    sigma = 25.0
    scale = _scale_chunked(cov_p1, sigma, (80, 100))
    gains = [
        layer_gain(scale[y0 : y0 + w.shape[0], x0 : x0 + w.shape[1]], w.astype(np.float32)) for y0, x0, _, w in layers
    ]
    assert max(abs(g - 1.0) for g in gains) > 0.01, f"the layers' gains {gains} should not all be 1"
    image_p2, cov_p2 = _assemble(layers, gains, shape)
    image, coverage = merge_passes(image_p1, cov_p1, image_p2, cov_p2)
    covered = coverage > 0
    assert not np.allclose(image[:, covered], image_p1[:, covered])  # the renormalisation changed levels
    for channel in (0, 2):
        before = image_p1[channel][covered] / image_p1[1][covered]
        after = image[channel][covered] / image[1][covered]
        np.testing.assert_allclose(after, before, rtol=0.01)
        total_before = image_p1[channel][covered].sum() / image_p1[1][covered].sum()
        total_after = image[channel][covered].sum() / image[1][covered].sum()
        assert total_after == pytest.approx(total_before, rel=0.01)


@pytest.mark.gpu
def test_cupy_and_numpy_give_the_same_blur_scale_gain_and_merge():
    import cupy as cp

    rng = np.random.default_rng(21)
    image = (rng.random((300, 260)) + 0.5).astype(np.float32)
    for sigma in (3.0, 50.0):
        on_gpu = gaussian_blur(cp.asarray(image), sigma)
        assert isinstance(on_gpu, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(on_gpu), gaussian_blur(image, sigma), rtol=1e-5)
    coverage = _step_coverage()
    coverage[30:50, 20:120] += 3.0
    sigma = 7.0
    halo = halo_width(sigma)
    padded = np.pad(coverage, halo)
    scale_gpu = coverage_scale_map(cp.asarray(padded), halo, sigma)
    assert isinstance(scale_gpu, cp.ndarray)
    scale_cpu = coverage_scale_map(padded, halo, sigma)
    np.testing.assert_allclose(cp.asnumpy(scale_gpu), scale_cpu, rtol=1e-5)
    gain_gpu = layer_gain(scale_gpu, cp.asarray(coverage))
    assert gain_gpu == pytest.approx(layer_gain(scale_cpu, coverage), rel=1e-5)
    p1 = (rng.random((3,) + coverage.shape) + 0.1).astype(np.float32)
    p2 = (p1 * rng.uniform(0.2, 1.5, size=coverage.shape)).astype(np.float32)
    merged_gpu = merge_passes(cp.asarray(p1), cp.asarray(coverage), cp.asarray(p2), cp.asarray(coverage))
    merged_cpu = merge_passes(p1, coverage, p2, coverage)
    for got, want in zip(merged_gpu, merged_cpu, strict=True):
        np.testing.assert_array_equal(cp.asnumpy(got), want)


def test_every_function_stays_in_the_device_namespace(fakecupy):
    coverage = _step_coverage()
    sigma = 5.0
    halo = halo_width(sigma)
    padded = np.pad(coverage, halo)
    device = fakecupy.asarray(padded)
    blurred = gaussian_blur(device, sigma, halo=halo)
    assert isinstance(blurred, fakecupy.FakeArray)
    np.testing.assert_array_equal(blurred.get(), gaussian_blur(padded, sigma, halo=halo))
    scale = coverage_scale_map(device, halo, sigma)
    assert isinstance(scale, fakecupy.FakeArray)
    np.testing.assert_array_equal(scale.get(), coverage_scale_map(padded, halo, sigma))
    gain = layer_gain(scale, fakecupy.asarray(coverage))
    assert isinstance(gain, float) and gain == layer_gain(coverage_scale_map(padded, halo, sigma), coverage)
    rng = np.random.default_rng(3)
    p1 = (rng.random((3,) + coverage.shape) + 0.1).astype(np.float32)
    p2 = (p1 * rng.uniform(0.2, 1.5, size=coverage.shape)).astype(np.float32)
    merged = merge_passes(*(fakecupy.asarray(a) for a in (p1, coverage, p2, coverage)))
    for got, want in zip(merged, merge_passes(p1, coverage, p2, coverage), strict=True):
        assert isinstance(got, fakecupy.FakeArray)
        np.testing.assert_array_equal(got.get(), want)
