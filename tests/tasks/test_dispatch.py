"""The stacking tasks stay in their input's array namespace (fake cupy, array_api_strict, cupy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from zemosaic_dask.tasks.namespace import array_namespace, to_numpy
from zemosaic_dask.tasks.normalisation import frame_statistics
from zemosaic_dask.tasks.rejection import huber_mean, reject_kappa_sigma, reject_linear_fit, reject_winsorized_sigma
from zemosaic_dask.tasks.stacking import COMBINE_METHODS, REJECTION_METHODS, StackOptions, stack_samples
from zemosaic_dask.tasks.weighting import radial_weight

METHODS = list(itertools.product(REJECTION_METHODS, COMBINE_METHODS))
CLIP = dict(kappa_low=2.0, kappa_high=2.0, max_iterations=3, min_samples=3)


def region(seed: int = 0, count: int = 9, channels: int = 3, height: int = 12, width: int = 14):
    """Samples with missing data, outliers and a partial, radial-like footprint; host arrays."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(500.0, 8.0, (count, channels, height, width)).astype(np.float32)
    footprint = rng.uniform(0.2, 1.0, (count, height, width)).astype(np.float32)
    footprint[:, :2, :3] = 0.0
    footprint[0, :, 7:] = 0.0
    samples[0, :, :, 7:] = np.nan
    samples[rng.random(samples.shape) < 0.05] = np.nan
    samples[3, :, 5, 5] += 4000.0
    samples[5, 1, 8, :] += 600.0
    gains = rng.uniform(0.9, 1.1, (count, channels)).astype(np.float32)
    offsets = rng.uniform(-5.0, 5.0, (count, channels)).astype(np.float32)
    weights = rng.uniform(0.3, 1.0, (count, channels)).astype(np.float32)
    return samples, footprint, gains, offsets, weights


def test_fake_cupy_behaves_like_a_device_module(fakecupy):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = fakecupy.asarray(host)
    assert array_namespace(device) is fakecupy
    assert array_namespace(device, None, 2.0) is fakecupy
    with pytest.raises(TypeError):
        array_namespace(device, host)
    with pytest.raises(TypeError):
        np.asarray(device)
    with pytest.raises(TypeError):
        np.sum(device)
    with pytest.raises(TypeError):
        np.isfinite(device)
    with pytest.raises(TypeError):
        device + host
    with pytest.raises(TypeError):
        fakecupy.where(device > 1, host, device)
    total = fakecupy.sum(device * 2 + 1, axis=0)
    assert type(total) is fakecupy.ndarray and type(fakecupy.sum(device)) is fakecupy.ndarray
    assert_array_equal(fakecupy.asnumpy(total), (host * 2 + 1).sum(axis=0))
    assert_array_equal(to_numpy(device), host)
    assert not hasattr(fakecupy, "nanpercentile")  # cupy has none: tasks must not rely on it


@pytest.mark.parametrize(("rejection", "combine"), METHODS)
def test_stack_samples_on_fake_cupy_equals_numpy(fakecupy, rejection, combine):
    samples, footprint, gains, offsets, weights = region(seed=1)
    options = StackOptions(normalisation="linear_fit", weighting="noise_variance", rejection=rejection, combine=combine)
    ids = [0, 1, 2, 3, 4, 5, 5, 6, 7]
    extra = dict(frame_ids=ids, gains=gains, offsets=offsets, frame_weights=weights, noise=np.full(9, 8.0))
    expected = stack_samples(samples, footprint, options, **extra)
    result = stack_samples(fakecupy.asarray(samples), fakecupy.asarray(footprint), options, **extra)
    for name in ("image", "coverage", "n_frames"):
        value = getattr(result, name)
        assert type(value) is fakecupy.ndarray, name
        assert value.dtype == getattr(expected, name).dtype
        assert_allclose(fakecupy.asnumpy(value), getattr(expected, name), rtol=1e-6, atol=0)
    # device coefficients are accepted too
    device_extra = {**extra, "gains": fakecupy.asarray(gains), "frame_weights": fakecupy.asarray(weights)}
    again = stack_samples(fakecupy.asarray(samples), fakecupy.asarray(footprint), options, **device_extra)
    assert_allclose(fakecupy.asnumpy(again.image), expected.image, rtol=1e-6, atol=0)


@pytest.mark.parametrize("clipper", [reject_kappa_sigma, reject_winsorized_sigma, reject_linear_fit])
def test_rejection_masks_stay_on_the_device(fakecupy, clipper):
    samples, *_ = region(seed=2)
    expected = clipper(samples, np.isfinite(samples), **CLIP)
    device = fakecupy.asarray(samples)
    keep = clipper(device, fakecupy.isfinite(device), **CLIP)
    assert type(keep) is fakecupy.ndarray
    assert_array_equal(fakecupy.asnumpy(keep), expected)


def test_huber_mean_stays_on_the_device(fakecupy):
    samples, footprint, *_ = region(seed=3)
    expected = huber_mean(samples, footprint[:, None], np.isfinite(samples), min_samples=3)
    device = fakecupy.asarray(samples)
    result = huber_mean(device, fakecupy.asarray(footprint)[:, None], fakecupy.isfinite(device), min_samples=3)
    assert type(result) is fakecupy.ndarray
    assert_allclose(fakecupy.asnumpy(result), expected, rtol=1e-6)


def test_frame_statistics_and_radial_weight_on_fake_cupy(fakecupy):
    samples, *_ = region(seed=4, height=40, width=50)
    assert frame_statistics(fakecupy.asarray(samples[0])) == frame_statistics(samples[0])
    y, x = np.mgrid[0:40, 0:50].astype(np.float32)
    expected = radial_weight(x, y, 50, 40, 2.0, 0.1)
    result = radial_weight(fakecupy.asarray(x), fakecupy.asarray(y), 50, 40, 2.0, 0.1)
    assert type(result) is fakecupy.ndarray
    assert_array_equal(fakecupy.asnumpy(result), expected)


def test_radial_weight_on_array_api_strict():
    import array_api_strict as xps

    y, x = np.mgrid[0:20, 0:30].astype(np.float32)
    result = radial_weight(xps.asarray(x), xps.asarray(y), 30, 20, 1.5, 0.05)
    assert array_namespace(result) is xps
    assert_allclose(np.asarray(result), radial_weight(x, y, 30, 20, 1.5, 0.05), rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize(("rejection", "combine"), METHODS)
def test_stack_samples_on_cupy_equals_numpy(rejection, combine):
    import cupy

    samples, footprint, gains, offsets, weights = region(seed=5, height=64, width=64)
    options = StackOptions(normalisation="linear_fit", weighting="noise_variance", rejection=rejection, combine=combine)
    ids = [0, 1, 2, 3, 4, 5, 5, 6, 7]
    extra = dict(frame_ids=ids, gains=gains, offsets=offsets, frame_weights=weights, noise=np.full(9, 8.0))
    expected = stack_samples(samples, footprint, options, **extra)
    result = stack_samples(cupy.asarray(samples), cupy.asarray(footprint), options, **extra)
    assert isinstance(result.image, cupy.ndarray) and isinstance(result.coverage, cupy.ndarray)
    image = cupy.asnumpy(result.image)
    assert_array_equal(np.isnan(image), np.isnan(expected.image))
    # Sums run in another order on the GPU, so a sample lying within float32 rounding of a
    # rejection threshold may flip; anything systematic would differ at many pixels.
    differs = ~np.isclose(image, expected.image, rtol=2e-6, atol=0, equal_nan=True)
    assert differs.mean() <= 1e-3, f"{differs.sum()} of {differs.size} pixels differ"
    assert_allclose(cupy.asnumpy(result.coverage), expected.coverage, rtol=1e-6)
    assert_array_equal(cupy.asnumpy(result.n_frames), expected.n_frames)


@pytest.mark.gpu
def test_statistics_and_radial_weight_on_cupy_equal_numpy():
    import cupy

    samples, *_ = region(seed=6, height=200, width=300)
    host = frame_statistics(samples[1])
    device = frame_statistics(cupy.asarray(samples[1]))
    for field in ("p25", "p90", "sky", "sigma"):
        assert_allclose(getattr(device, field), getattr(host, field), rtol=1e-5)
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    result = radial_weight(cupy.asarray(x), cupy.asarray(y), 300, 200, 2.0, 0.1)
    assert_allclose(cupy.asnumpy(result), radial_weight(x, y, 300, 200, 2.0, 0.1), rtol=1e-6, atol=1e-7)
