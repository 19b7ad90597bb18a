"""The combination's one-pass kernels write what their array formulations write, to the bit."""

import numpy as np

from zemosaic_dask.tasks.kernels_layers import covered_stack_cpu, layer_noise_cpu


def test_layer_noise_equals_the_array_formula():
    rng = np.random.default_rng(5)
    weights = rng.uniform(0, 6, (5, 17, 23)).astype(np.float32)
    weights[:, :3] = 0  # uncovered: the floor
    weights[1, 4, 5], weights[2, 6, 7], weights[3, 8, 9] = np.nan, 1e-5, np.inf
    frame_noise = np.array([3.3, 2.1, 4.7], dtype=np.float32)
    root = np.sqrt(np.maximum(weights, np.float32(1e-3)))
    expected = np.stack([frame_noise[c] / root for c in range(3)], axis=1)
    out = np.empty((5, 3, 17, 23), dtype=np.float32)
    layer_noise_cpu(frame_noise, weights, np.float32(1e-3), out)
    np.testing.assert_array_equal(out, expected)  # NaN where the weight is NaN, 0 where infinite
    assert np.isnan(out[1, :, 4, 5]).all() and (out[3, :, 8, 9] == 0).all()


def test_covered_stack_is_nan_where_uncovered():
    rng = np.random.default_rng(6)
    image = rng.normal(100, 5, (3, 19, 29)).astype(np.float32)
    coverage = rng.integers(0, 3, (19, 29)).astype(np.float32)
    coverage[2, 3] = np.nan  # neither > 0 nor kept
    image_out, coverage_out = np.empty_like(image), np.empty_like(coverage)
    covered_stack_cpu(image, coverage, image_out, coverage_out)
    np.testing.assert_array_equal(image_out, np.where(coverage[None] > 0, image, np.float32(np.nan)))
    np.testing.assert_array_equal(coverage_out, coverage)
    assert np.isnan(image_out[:, coverage == 0]).all() and np.isfinite(image_out[:, coverage > 0]).all()
