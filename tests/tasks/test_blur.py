"""Separable Gaussian blur against scipy.ndimage, and the chunk-with-halo path the graph uses."""

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, gaussian_filter

from zemosaic_dask.tasks.blur import gaussian_blur, gaussian_kernel, halo_width, normalised_blur


def _positive_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random(shape) + 0.5
    image[40:60, 70:90] += 20.0  # a bright block so the blur has structure to spread
    return image.astype(np.float32)


def _reference(image, sigma):
    return gaussian_filter(image.astype(np.float64), sigma, mode="constant", cval=0.0, truncate=4.0)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 12.5, 50.0])
def test_matches_scipy_gaussian_filter_with_zero_padding(sigma):
    image = _positive_image((150, 170))
    blurred = gaussian_blur(image, sigma)
    assert blurred.dtype == np.float32 and blurred.shape == image.shape
    reference = _reference(image, sigma)
    radius = halo_width(sigma)
    interior = (slice(radius, -radius or None), slice(radius, -radius or None))
    if image.shape[0] > 2 * radius:
        np.testing.assert_allclose(blurred[interior], reference[interior], rtol=1e-5)
    # zero padding outside the array: the border darkens exactly as scipy's mode="constant"
    np.testing.assert_allclose(blurred, reference, rtol=1e-5)


def test_float64_input_stays_float64_and_matches_tightly():
    image = _positive_image((60, 50)).astype(np.float64)
    blurred = gaussian_blur(image, 4.0)
    assert blurred.dtype == np.float64
    np.testing.assert_allclose(blurred, _reference(image, 4.0), rtol=1e-12)


def test_halo_width_and_kernel_follow_scipy_radius():
    assert halo_width(50.0) == 200
    assert halo_width(2.4) == 10  # int(9.6 + 0.5)
    assert halo_width(1.0, truncate=3.0) == 3
    kernel = gaussian_kernel(2.0)
    assert kernel.size == 2 * halo_width(2.0) + 1
    assert kernel.sum() == pytest.approx(1.0)
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    # the blur of an impulse is the outer product of the kernel with itself
    np.testing.assert_allclose(gaussian_blur(impulse, 2.0)[12:29, 12:29], np.outer(kernel, kernel), atol=1e-7)


def test_zero_sigma_is_identity():
    image = _positive_image((20, 30))
    np.testing.assert_array_equal(gaussian_blur(image, 0.0), image)


def _chunks(shape, n):
    edges_y = np.linspace(0, shape[0], n + 1).astype(int)
    edges_x = np.linspace(0, shape[1], n + 1).astype(int)
    for y0, y1 in zip(edges_y[:-1], edges_y[1:], strict=True):
        for x0, x1 in zip(edges_x[:-1], edges_x[1:], strict=True):
            yield y0, y1, x0, x1


@pytest.mark.parametrize("sigma", [5.0, 50.0])
def test_chunks_with_halo_reads_equal_the_whole_image_blur(sigma):
    image = _positive_image((300, 300), seed=1)
    whole = gaussian_blur(image, sigma)
    halo = halo_width(sigma)
    assembled = np.full_like(whole, np.nan)
    for y0, y1, x0, x1 in _chunks(image.shape, 2):
        # explicit halo reads: as much halo as the image has on each side
        ey0, ey1 = max(0, y0 - halo), min(image.shape[0], y1 + halo)
        ex0, ex1 = max(0, x0 - halo), min(image.shape[1], x1 + halo)
        extended = image[ey0:ey1, ex0:ex1]
        cropped = gaussian_blur(extended, sigma)[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0]
        assembled[y0:y1, x0:x1] = cropped
        # the same chunk computed directly by dropping the halo
        direct = gaussian_blur(extended, sigma, halo=(y0 - ey0, ey1 - y1, x0 - ex0, ex1 - x1))
        np.testing.assert_allclose(direct, whole[y0:y1, x0:x1], rtol=2e-6, atol=0)
    np.testing.assert_allclose(assembled, whole, rtol=2e-6, atol=0)


def test_zero_padded_halo_like_map_overlap_equals_the_whole_image_blur():
    sigma = 6.0
    image = _positive_image((300, 300), seed=2)
    whole = gaussian_blur(image, sigma)
    halo = halo_width(sigma)
    padded = np.pad(image, halo)  # dask.array.map_overlap(boundary=0) pads the canvas with zeros
    for y0, y1, x0, x1 in _chunks(image.shape, 2):
        block = padded[y0 : y1 + 2 * halo, x0 : x1 + 2 * halo]
        np.testing.assert_allclose(gaussian_blur(block, sigma, halo=halo), whole[y0:y1, x0:x1], rtol=2e-6)


def test_normalised_blur_does_not_darken_near_the_mask_edge():
    yy, xx = np.mgrid[:120, :140]
    mask = ((yy - 60) ** 2 + (xx - 50) ** 2 < 45**2) | ((yy > 20) & (yy < 50) & (xx > 90))
    values = np.where(mask, 7.5, np.nan).astype(np.float32)  # NaN outside the mask is ignored
    blurred = normalised_blur(values, mask, 10.0)
    np.testing.assert_allclose(blurred[mask], 7.5, rtol=1e-5)
    # a plain blur of the same data darkens the edge: the normalisation is what keeps it flat
    plain = gaussian_blur(np.where(mask, 7.5, 0).astype(np.float32), 10.0)
    assert plain[mask].min() < 0.7 * 7.5
    # NaN exactly where no masked pixel lies within the (square, separable) kernel support
    side = 2 * halo_width(10.0) + 1
    reachable = binary_dilation(mask, structure=np.ones((side, side), bool))
    assert (~reachable).any()
    assert np.isnan(blurred[~reachable]).all() and np.isfinite(blurred[reachable]).all()


def test_normalised_blur_matches_independent_reference_and_is_nan_beyond_reach():
    rng = np.random.default_rng(5)
    values = rng.random((80, 200)).astype(np.float32) + 1
    mask = np.zeros((80, 200), bool)
    mask[:, :60] = True
    sigma = 4.0
    blurred = normalised_blur(values, mask, sigma)
    with np.errstate(invalid="ignore"):
        reference = _reference(values * mask, sigma) / _reference(mask.astype(np.float64), sigma)
    reach = 60 + halo_width(sigma)
    np.testing.assert_allclose(blurred[:, :reach], reference[:, :reach], rtol=1e-5)
    assert np.isnan(blurred[:, reach:]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0}, "sigma must be"),
        ({"sigma": 2.0, "halo": 30}, "leaves no pixel"),
        ({"sigma": 2.0, "halo": -1}, "halo"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_blur(np.ones((50, 50), np.float32), **kwargs)


def test_non_2d_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        gaussian_blur(np.ones((3, 10, 10), np.float32), 1.0)
