"""Bilinear sampling against scipy's independent implementation."""

import numpy as np
from scipy.ndimage import map_coordinates

from zemosaic_dask.tasks.resample import sample_bilinear


def test_matches_map_coordinates_inside_and_nan_outside():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(3, 30, 40)).astype(np.float32)
    y, x = np.meshgrid(np.linspace(-3, 33, 73), np.linspace(-2, 44, 93), indexing="ij")
    values, footprint = sample_bilinear(image, x, y)
    # The image covers its pixel area out to the outer pixel edges; over the outer half pixel the
    # edge pixel is repeated, which is map_coordinates' "nearest" mode.
    inside = (x >= -0.5) & (x <= 39.5) & (y >= -0.5) & (y <= 29.5)
    np.testing.assert_array_equal(footprint.astype(bool), inside)
    assert (inside & ((x < 0) | (x > 39) | (y < 0) | (y > 29))).sum() > 50
    for c in range(3):
        ref = map_coordinates(image[c].astype(np.float64), [y[inside], x[inside]], order=1, mode="nearest")
        np.testing.assert_allclose(values[c][inside], ref, rtol=1e-5, atol=1e-5)
    assert np.isnan(values[:, ~inside]).all()


def test_a_pixel_centre_box_still_excludes_the_half_pixel():
    """An explicit box is honoured as given (callers that want pixel centres only still get them)."""
    image = np.arange(20, dtype=np.float32).reshape(1, 4, 5)
    x = np.array([[-0.3, 0.0, 4.0, 4.3]])
    y = np.full_like(x, 2.0)
    values, footprint = sample_bilinear(image, x, y, (0.0, 3.0, 0.0, 4.0))
    np.testing.assert_array_equal(footprint[0], [0, 1, 1, 0])
    values, footprint = sample_bilinear(image, x, y)
    np.testing.assert_array_equal(footprint[0], [1, 1, 1, 1])
    np.testing.assert_array_equal(values[0, 0], [10, 10, 14, 14])


def test_nan_input_pixels_leave_no_value():
    image = np.ones((1, 10, 10), np.float32)
    image[0, 5, 5] = np.nan
    values, footprint = sample_bilinear(image, np.array([[5.5, 2.0]]), np.array([[5.5, 2.0]]))
    assert np.isnan(values[0, 0, 0]) and footprint[0, 0] == 0
    assert values[0, 0, 1] == 1 and footprint[0, 1] == 1
