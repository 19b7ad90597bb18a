"""Fused map-sample-accumulate kernels (numba, CUDA) against the array-namespace references."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest
from astropy.wcs import WCS
from numpy.testing import assert_array_equal

from zemosaic_dask.errors import GpuUnavailableError
from zemosaic_dask.tasks.accumulate import (
    FrameCoefficients,
    MeanSums,
    WindowMapping,
    accumulate_window,
    accumulate_window_reference,
    sample_window,
    sample_window_reference,
)
from zemosaic_dask.tasks.mapping import coarse_pixel_map, exact_pixel_map, interpolate_pixel_map
from zemosaic_dask.tasks.resample import sample, sample_bicubic, sample_bilinear, sample_lanczos3
from zemosaic_dask.tasks.stacking import StackOptions, stack_samples

METHODS = ("bilinear", "bicubic", "lanczos3")
REGION = (75, 90)  # neither side a multiple of the node step: the last node row/column is irregular


def _tan(crval, crpix, scale_arcsec, rotation_deg):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = crval
    wcs.wcs.crpix = crpix
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    wcs.wcs.cd = scale_arcsec / 3600.0 * np.array([[-c, s], [s, c]])
    return wcs


OUT_WCS = _tan([150.0, 35.0], [60.0, 50.0], 2.4, 0.0)
IN_WCS = _tan([150.01, 35.005], [40.0, 35.0], 2.39, 8.0)
FRAME_SHAPE = (70, 95)


def _window(rng, origin=(6, 4), nan_at=None):
    """A frame's prepared window: random sky from ``origin`` to the frame's end.

    The box is the frame's whole pixel area (to its outer pixel edges) in window coordinates.
    """
    y0, x0 = origin
    image = rng.normal(300.0, 25.0, (3, FRAME_SHAPE[0] - y0, FRAME_SHAPE[1] - x0)).astype(np.float32)
    if nan_at is not None:
        image[(1, *nan_at)] = np.nan  # one channel: the footprint drops, the other channels keep values
    box = (-0.5 - y0, FRAME_SHAPE[0] - 0.5 - y0, -0.5 - x0, FRAME_SHAPE[1] - 0.5 - x0)
    return image, box


def _mapping(method="bilinear", origin=(6, 4), box=None, shape=REGION, step=16):
    coarse = coarse_pixel_map(OUT_WCS, IN_WCS, (3, 5), shape, max_error_px=0.01, initial_step=step)
    return coarse, WindowMapping.from_coarse(coarse, origin, box, method)


def _dense(coarse, origin):
    map_x, map_y = interpolate_pixel_map(coarse, np)
    return map_x - origin[1], map_y - origin[0]


def test_bilinear_kernel_equals_sample_bilinear():
    rng = np.random.default_rng(1)
    image, box = _window(rng, nan_at=(20, 30))
    coarse, mapping = _mapping("bilinear", box=box)
    values, footprint = np.empty((3, *REGION), np.float32), np.empty(REGION, np.float32)
    reached = sample_window(image, mapping, values, footprint)
    ref_values, ref_footprint = sample_bilinear(image, *_dense(coarse, (6, 4)), box)
    assert 0 < reached == int(ref_footprint.sum()) < REGION[0] * REGION[1]  # partly outside the frame
    np.testing.assert_array_equal(footprint, ref_footprint)
    np.testing.assert_array_equal(np.isnan(values), np.isnan(ref_values))
    np.testing.assert_allclose(values, ref_values, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert (footprint == 0).sum() > np.isnan(values).all(axis=0).sum()  # NaN pixel: no footprint, values kept


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", [1, 8, 64])
@pytest.mark.parametrize("origin", [(6, 4), (0, 0)])
def test_sample_kernel_equals_reference(method, step, origin):
    rng = np.random.default_rng(2)
    image, box = _window(rng, origin, nan_at=(30, 50))
    coarse, mapping = _mapping(method, origin, box=box, step=step)
    values, footprint = np.empty((3, *REGION), np.float32), np.empty(REGION, np.float32)
    sample_window(image, mapping, values, footprint)
    ref_values, ref_footprint = np.empty_like(values), np.empty_like(footprint)
    sample_window_reference(image, mapping, ref_values, ref_footprint)
    direct_values, direct_footprint = sample(image, *_dense(coarse, origin), box, method)
    if origin == (0, 0):  # the window starts at the frame's edge: some samples lie in its outer half pixel
        map_x, map_y = _dense(coarse, origin)
        assert (footprint[(map_x < 0) | (map_y < 0)] == 1).sum() > 10
    np.testing.assert_array_equal(ref_footprint, direct_footprint)
    np.testing.assert_array_equal(footprint, ref_footprint)
    np.testing.assert_allclose(values, ref_values, rtol=1e-5, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(ref_values, direct_values, rtol=0, atol=0, equal_nan=True)


def test_sample_kernel_writes_into_stack_slices():
    rng = np.random.default_rng(3)
    image, box = _window(rng)
    _, mapping = _mapping(box=box)
    stack = np.full((3, 3, *REGION), -1.0, np.float32)
    footprints = np.full((3, *REGION), -1.0, np.float32)
    sample_window(image, mapping, stack[1], footprints[1])
    assert (stack[[0, 2]] == -1).all() and (footprints[[0, 2]] == -1).all()
    assert set(np.unique(footprints[1])) == {0.0, 1.0}
    with pytest.raises(ValueError, match="C-contiguous float32"):
        sample_window(image, mapping, stack[:, 1], footprints[1])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("origin", [(6, 4), (0, 0)])
def test_accumulate_kernel_equals_reference(method, origin):
    rng = np.random.default_rng(4)
    image, box = _window(rng, origin, nan_at=(10, 12))
    _, mapping = _mapping(method, origin, box=box)
    coefficients = FrameCoefficients(gains=(1.2, 0.9, 1.0), offsets=(5.0, -3.0, 0.0), weights=(0.5, 1.0, 0.0))
    for dtype in (np.float32, np.float64):
        fast, slow = MeanSums.zeros(3, REGION, np, dtype), MeanSums.zeros(3, REGION, np, dtype)
        for coverage_max in (False, True, True):
            assert accumulate_window(image, mapping, fast, coefficients, coverage_max=coverage_max) == (
                accumulate_window_reference(image, mapping, slow, coefficients, coverage_max=coverage_max)
            )
        np.testing.assert_allclose(fast.sum_wv, slow.sum_wv, rtol=1e-6, atol=1e-3)
        np.testing.assert_array_equal(fast.sum_w, slow.sum_w)
        np.testing.assert_array_equal(fast.coverage, slow.coverage)
        assert set(np.unique(fast.coverage)) == {0.0, 1.0}  # added once, then maximised
        assert not fast.sum_w[2].any() and fast.sum_w[0].max() == pytest.approx(0.5 * 3)


def test_accumulated_mean_equals_stack_without_rejection():
    rng = np.random.default_rng(5)
    count = 5
    sums = MeanSums.zeros(3, REGION)
    samples = np.empty((count, 3, *REGION), np.float32)
    footprints = np.empty((count, *REGION), np.float32)
    gains, offsets = rng.uniform(0.8, 1.2, (count, 3)), rng.uniform(-10, 10, (count, 3))
    weights = rng.uniform(0.1, 1.0, (count, 3))
    for k in range(count):
        origin = (int(rng.integers(0, 8)), int(rng.integers(0, 8)))
        image, box = _window(rng, origin, nan_at=(int(rng.integers(0, 40)), int(rng.integers(0, 60))))
        _, mapping = _mapping("bilinear", origin, box)
        coefficients = FrameCoefficients(tuple(gains[k]), tuple(offsets[k]), tuple(weights[k]))
        accumulate_window(image, mapping, sums, coefficients)
        sample_window(image, mapping, samples[k], footprints[k])
    image, coverage = sums.mean()
    result = stack_samples(
        samples,
        footprints,
        StackOptions(rejection="none", normalisation="linear_fit", weighting="noise_variance"),
        gains=gains,
        offsets=offsets,
        frame_weights=weights,
    )
    np.testing.assert_array_equal(coverage, result.coverage)
    np.testing.assert_allclose(image, result.image, rtol=2e-6, atol=1e-4, equal_nan=True)
    assert np.isfinite(image).sum() > 0.5 * image.size


def test_in_kernel_mapping_error_is_bounded():
    """A window holding the x and y pixel coordinates samples back the mapped position itself."""
    coarse = coarse_pixel_map(OUT_WCS, IN_WCS, (3, 5), REGION, max_error_px=0.01)
    assert coarse.step > 1
    ys, xs = np.mgrid[-40:120, -40:160].astype(np.float32)
    image = np.stack([xs, ys, xs])
    mapping = WindowMapping.from_coarse(coarse, origin=(-40, -40))
    values, footprint = np.empty((3, *REGION), np.float32), np.empty(REGION, np.float32)
    assert sample_window(image, mapping, values, footprint) == REGION[0] * REGION[1]
    gy, gx = np.mgrid[3 : 3 + REGION[0], 5 : 5 + REGION[1]].astype(np.float64)
    true_x, true_y = exact_pixel_map(OUT_WCS, IN_WCS, gy, gx)
    error = np.hypot(values[0] - true_x, values[1] - true_y)
    assert error.max() <= 0.01
    assert error.max() > 1e-6  # the map really is interpolated


def test_reference_runs_in_the_input_namespace(fakecupy):
    rng = np.random.default_rng(6)
    image, box = _window(rng)
    _, mapping = _mapping("bicubic", box=box)
    host = MeanSums.zeros(3, REGION)
    device = MeanSums.zeros(3, REGION, fakecupy)
    coefficients = FrameCoefficients(weights=(1.0, 0.5, 2.0))
    reached = accumulate_window(fakecupy.asarray(image), mapping, device, coefficients)
    assert reached == accumulate_window(image, mapping, host, coefficients)
    mean, coverage = device.mean()
    assert type(mean).__module__ == "fakecupy" and type(coverage).__module__ == "fakecupy"
    np.testing.assert_allclose(fakecupy.asnumpy(mean), host.mean()[0], rtol=1e-6, atol=1e-4, equal_nan=True)
    values = fakecupy.zeros((3, *REGION), dtype=np.float32)
    footprint = fakecupy.zeros(REGION, dtype=np.float32)
    assert sample_window(fakecupy.asarray(image), mapping, values, footprint) == reached


def test_shapes_and_methods_are_checked():
    rng = np.random.default_rng(7)
    image, box = _window(rng)
    _, mapping = _mapping(box=box)
    with pytest.raises(ValueError, match="sum_w must have shape"):
        accumulate_window(image, mapping, MeanSums(np.zeros((3, *REGION)), np.zeros(REGION), np.zeros(REGION)))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        sample_window(
            image,
            WindowMapping(mapping.node_x, mapping.node_y, mapping.step, REGION, method="nearest"),
            np.empty((3, *REGION), np.float32),
            np.empty(REGION, np.float32),
        )
    with pytest.raises(ValueError, match="node_x must have shape"):
        accumulate_window(
            image, WindowMapping(mapping.node_x[:-1], mapping.node_y, mapping.step, REGION), MeanSums.zeros(3, REGION)
        )
    with pytest.raises(ValueError, match="weights must hold 1 or 3"):
        accumulate_window(image, mapping, MeanSums.zeros(3, REGION), FrameCoefficients(weights=(1.0, 2.0)))


def test_gpu_module_imports_without_cupy(monkeypatch):
    from zemosaic_dask.tasks import kernels_gpu

    assert "accumulate_window" in kernels_gpu.KERNEL_SOURCE["accumulate_window"]
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(GpuUnavailableError, match="need cupy"):
        kernels_gpu.compiled_kernel("accumulate_window")
    with pytest.raises(GpuUnavailableError, match="need cupy arrays, got the namespace 'numpy'"):
        kernels_gpu.accumulate_window_gpu(
            np.zeros((3, 4, 4), np.float32), None, None, (None, None, None), coverage_max=False
        )


# --- interpolation kernels against independent per-pixel formulas -------------------------------------------------


def _keys(d):
    d = abs(d)
    if d <= 1:
        return 1.5 * d**3 - 2.5 * d**2 + 1
    if d < 2:
        return -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2
    return 0.0


def _lanczos(d):
    return 1.0 if d == 0 else (float(np.sinc(d) * np.sinc(d / 3)) if abs(d) < 3 else 0.0)


def _loop_sample(image, x, y, kernel, radius, normalise):
    channels, height, width = image.shape
    out = np.empty((channels, len(x)))
    for n, (px, py) in enumerate(zip(x, y, strict=True)):
        fx, fy = math.floor(px), math.floor(py)
        taps = range(-radius + 1, radius + 1)
        wx = np.array([kernel(px - fx - j) for j in taps])
        wy = np.array([kernel(py - fy - i) for i in taps])
        if normalise:
            wx, wy = wx / wx.sum(), wy / wy.sum()
        rows = np.clip([fy + i for i in taps], 0, height - 1)
        cols = np.clip([fx + j for j in taps], 0, width - 1)
        out[:, n] = np.einsum("i,j,cij->c", wy, wx, image[:, rows][:, :, cols].astype(np.float64))
    return out


@pytest.mark.parametrize(
    ("sampler", "kernel", "radius", "normalise"),
    [
        (sample_bicubic, _keys, 2, False),
        (sample_lanczos3, _lanczos, 3, True),
    ],
)
def test_interpolators_match_per_pixel_formulas(sampler, kernel, radius, normalise):
    rng = np.random.default_rng(8)
    image = rng.normal(size=(2, 12, 15)).astype(np.float32)
    x = rng.uniform(-1.0, 15.0, 300)
    y = rng.uniform(-1.0, 12.0, 300)
    values, footprint = sampler(image, x[None], y[None])
    # The image covers its pixel area, out to the outer pixel edges.
    inside = (x >= -0.5) & (x <= 14.5) & (y >= -0.5) & (y <= 11.5)
    np.testing.assert_array_equal(footprint[0].astype(bool), inside)
    assert (inside & ((x < 0) | (x > 14) | (y < 0) | (y > 11))).sum() > 10  # the outer half pixel is tested
    # Over the outer half pixel the value is the one at the outer pixel centre (constant extrapolation).
    cx, cy = np.clip(x[inside], 0, 14), np.clip(y[inside], 0, 11)
    expected = _loop_sample(image, cx, cy, kernel, radius, normalise)
    np.testing.assert_allclose(values[:, 0, inside], expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(values[:, 0, ~inside]).all()


@pytest.mark.parametrize("method", METHODS)
def test_interpolators_keep_pixels_constants_and_ramps(method):
    rng = np.random.default_rng(9)
    image = rng.normal(size=(1, 10, 10)).astype(np.float32)
    iy, ix = np.mgrid[0:10, 0:10].astype(np.float64)
    values, _ = sample(image, ix, iy, method=method)
    np.testing.assert_allclose(values, image, atol=1e-6)  # integer positions give the pixels back
    y, x = rng.uniform(3, 6, (2, 50))
    constant, _ = sample(np.full((1, 10, 10), 7.0, np.float32), x[None], y[None], method=method)
    np.testing.assert_allclose(constant, 7.0, rtol=1e-6)
    ramp = (2.0 * iy + 3.0 * ix)[None].astype(np.float32)
    linear, _ = sample(ramp, x[None], y[None], method=method)
    # Bilinear and Keys' cubic reproduce ramps exactly; normalised Lanczos-3 moves a sample by up to 0.02 px
    # (the first moment of its weights), so a ramp of slopes (2, 3) is off by up to 0.02 * (2 + 3).
    tolerance = 0.02 * 5 + 1e-4 if method == "lanczos3" else 1e-4
    np.testing.assert_allclose(linear[0, 0], 2.0 * y + 3.0 * x, atol=tolerance)


def test_nan_tap_poisons_wider_kernels_only_within_reach():
    image = np.ones((1, 20, 20), np.float32)
    image[0, 10, 10] = np.nan
    x = np.array([[10.5, 11.5, 12.5, 13.5]])
    y = np.full_like(x, 10.0)
    for method, poisoned in (
        ("bilinear", [True, False, False, False]),
        ("bicubic", [True, True, False, False]),
        ("lanczos3", [True, True, True, False]),
    ):
        _, footprint = sample(image, x, y, method=method)
        np.testing.assert_array_equal(footprint[0] == 0, poisoned, err_msg=method)


def _edge_mapping(shape, step):
    """A mapping whose positions sweep a 12x15 image from beyond one edge to beyond the other, sheared."""
    rows, cols = (np.unique(np.minimum(np.arange(0, n + step - 1, step), n - 1)) for n in shape)
    gy, gx = np.meshgrid(rows, cols, indexing="ij")
    node_x = -1.2 + gx * (16.4 / (shape[1] - 1)) + 0.01 * gy
    node_y = -1.1 + gy * (13.3 / (shape[0] - 1)) - 0.005 * gx
    return WindowMapping(node_x, node_y, step, shape)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("step", [1, 7])
def test_kernels_give_the_edge_pixel_over_the_outer_half_pixel(method, step):
    rng = np.random.default_rng(12)
    image = rng.normal(100.0, 10.0, (2, 12, 15)).astype(np.float32)
    shape = (57, 61)
    mapping = dataclasses.replace(_edge_mapping(shape, step), method=method)  # default box: the whole pixel area
    values, footprint = np.empty((2, *shape), np.float32), np.empty(shape, np.float32)
    ref_values, ref_footprint = np.empty_like(values), np.empty_like(footprint)
    reached = sample_window(image, mapping, values, footprint)
    assert reached == sample_window_reference(image, mapping, ref_values, ref_footprint)
    np.testing.assert_array_equal(footprint, ref_footprint)
    np.testing.assert_allclose(values, ref_values, rtol=1e-5, atol=1e-4, equal_nan=True)

    map_x, map_y = interpolate_pixel_map(mapping.coarse(), np)
    inside = (map_x >= -0.5) & (map_x <= 14.5) & (map_y >= -0.5) & (map_y <= 11.5)
    np.testing.assert_array_equal(footprint == 1, inside)
    # In the outer half pixel the sample is the one at the nearest outer pixel centre.
    half = inside & ((map_x < 0) | (map_x > 14) | (map_y < 0) | (map_y > 11))
    assert half.sum() > 20
    clamped, _ = sample(image, np.clip(map_x, 0, 14)[half][None], np.clip(map_y, 0, 11)[half][None], method=method)
    np.testing.assert_allclose(values[:, half], clamped[:, 0], rtol=1e-6, atol=1e-4)

    sums, ref_sums = MeanSums.zeros(2, shape), MeanSums.zeros(2, shape)
    assert accumulate_window(image, mapping, sums) == accumulate_window_reference(image, mapping, ref_sums) == reached
    np.testing.assert_allclose(sums.sum_wv, ref_sums.sum_wv, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(sums.coverage, inside)


@pytest.mark.parametrize("method", METHODS)
def test_outer_half_pixel_of_a_row_is_its_edge_pixel(method):
    rng = np.random.default_rng(13)
    image = rng.normal(size=(1, 12, 15)).astype(np.float32)
    rows = np.arange(12, dtype=np.float64)
    for x, edge in ((-0.5, 0), (-0.2, 0), (14.3, 14), (14.5, 14)):
        values, footprint = sample(image, np.full((1, 12), x), rows[None], method=method)
        assert footprint.all()
        np.testing.assert_allclose(values[0, 0], image[0, :, edge], rtol=1e-6, atol=1e-6, err_msg=f"x={x}")
    values, footprint = sample(image, np.array([[-0.51, 14.51]]), np.array([[5.0, 5.0]]), method=method)
    assert not footprint.any() and np.isnan(values).all()


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="interpolation must be one of bilinear, bicubic, lanczos3"):
        sample(np.ones((1, 4, 4), np.float32), np.zeros((1, 1)), np.zeros((1, 1)), method="cubic")


# --- GPU: the CUDA kernels against the numpy path ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_gpu_sample_kernel_equals_numpy(method):
    import cupy

    rng = np.random.default_rng(10)
    image, box = _window(rng, nan_at=(20, 30))
    _, mapping = _mapping(method, box=box)
    values, footprint = np.empty((3, *REGION), np.float32), np.empty(REGION, np.float32)
    reached = sample_window(image, mapping, values, footprint)
    stack = cupy.zeros((2, 3, *REGION), dtype=cupy.float32)
    footprints = cupy.zeros((2, *REGION), dtype=cupy.float32)
    assert sample_window(cupy.asarray(image), mapping, stack[1], footprints[1]) == reached
    np.testing.assert_array_equal(footprints[1].get(), footprint)
    np.testing.assert_allclose(stack[1].get(), values, rtol=1e-6, atol=1e-4, equal_nan=True)
    assert not stack[0].any().get()


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_accumulate_kernel_equals_numpy(method, dtype):
    import cupy

    rng = np.random.default_rng(11)
    image, box = _window(rng, nan_at=(10, 12))
    _, mapping = _mapping(method, box=box)
    coefficients = FrameCoefficients(gains=(1.2, 0.9, 1.0), offsets=(5.0, -3.0, 0.0), weights=(0.5, 1.0, 0.0))
    host = MeanSums.zeros(3, REGION, np, dtype)
    device = MeanSums.zeros(3, REGION, cupy, dtype)
    for coverage_max in (False, True, False):
        expected = accumulate_window(image, mapping, host, coefficients, coverage_max=coverage_max)
        assert accumulate_window(cupy.asarray(image), mapping, device, coefficients, coverage_max=coverage_max) == (
            expected
        )
    np.testing.assert_allclose(device.sum_wv.get(), host.sum_wv, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(device.sum_w.get(), host.sum_w, rtol=1e-7)
    np.testing.assert_array_equal(device.coverage.get(), host.coverage)
    np.testing.assert_allclose(device.mean()[0].get(), host.mean()[0], rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 16, 47, 48, 49, 50, 64, 127, 400])
def test_stack_median_equals_the_sorted_middle_values_with_ties(n):
    from zemosaic_dask.tasks.kernels_stack import (
        INSERTION_MEDIAN_MAX,
        _insertion_median,
        _median,
        _select_median,
    )

    rng = np.random.default_rng(n)
    for trial in range(20):
        buffer = rng.normal(1000.0, 30.0, n).astype(np.float32)
        if trial % 3 == 0:
            buffer = np.round(buffer / 20.0).astype(np.float32) * 20  # many ties
        if trial % 5 == 0:
            buffer = np.sort(buffer)[:: 1 if trial % 2 else -1].copy()  # sorted and reversed input
        ordered = np.sort(buffer)
        expected = (ordered[(n - 1) // 2] + ordered[n // 2]) * np.float32(0.5)
        before = buffer.copy()
        assert _select_median(buffer, n, np.empty(n + 2, np.float32)) == expected
        assert _insertion_median(buffer, n, np.empty(n, np.float32)) == expected
        assert_array_equal(buffer, before)  # the samples keep their order
        keep = rng.random(n) < 0.7
        if keep.any():
            kept = np.sort(buffer[keep])
            m = kept.size
            scratch = np.empty(2 * n + 2, np.float32)
            assert _median(buffer, keep, n, scratch) == (kept[(m - 1) // 2] + kept[m // 2]) * np.float32(0.5)
    assert 5 < INSERTION_MEDIAN_MAX < 49 < 400  # kappa-sigma's median takes both ways in these sizes


@pytest.mark.parametrize("size", [*range(1, 19), 40])
def test_the_sorting_network_sorts_every_input_and_any_prefix_of_it(size):
    """The 0-1 principle: a comparator network that sorts every 0/1 input sorts every input.

    The noise clip sorts only the first ``count`` rows of a network built for ``K`` (the
    pairs reaching beyond them skipped), so every prefix of the network must sort too.
    """
    from zemosaic_dask.tasks.kernels_noise_clip import sorting_network

    network = sorting_network(size)
    assert len(network) <= max(size * (size - 1) // 2, 0)  # never more than odd-even transposition
    if size == 16:
        assert len(network) == 63
    rng = np.random.default_rng(size)
    for count in {size, max(size - 1, 0), (size + 1) // 2}:
        bits = min(count, 14)
        inputs = ((np.arange(2**bits)[:, None] >> np.arange(bits)[None, :]) & 1).astype(np.float32)
        if count > bits:  # larger sizes: random values with ties
            inputs = np.round(rng.normal(0.0, 2.0, (4000, count))).astype(np.float32)
        values = inputs.copy()
        for i, j in network:
            if j >= count:
                continue
            low, high = np.minimum(values[:, i], values[:, j]), np.maximum(values[:, i], values[:, j])
            values[:, i], values[:, j] = low, high
        assert_array_equal(values, np.sort(inputs, axis=1))
