"""Demosaicing and hot-pixel correction against independent references."""

import numpy as np
import pytest

from zemosaic_dask.tasks.debayer import bayer_masks, correct_hot_pixels, debayer_bilinear


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an (3,H,W) RGB image through a Bayer filter (reference, written independently)."""
    colour_of = {"R": 0, "G": 1, "B": 2}
    raw = np.zeros(rgb.shape[1:], dtype=np.float32)
    for y in range(raw.shape[0]):
        for x in range(raw.shape[1]):
            raw[y, x] = rgb[colour_of[pattern[(y % 2) * 2 + (x % 2)]], y, x]
    return raw


@pytest.mark.parametrize("pattern", ["GRBG", "RGGB", "BGGR", "GBRG"])
def test_red_source_comes_out_red(pattern):
    yy, xx = np.mgrid[0:32, 0:32]
    blob = np.exp(-((yy - 16.3) ** 2 + (xx - 15.7) ** 2) / (2 * 2.0**2)).astype(np.float32)
    rgb = np.stack([1000 * blob + 10, 50 * blob + 10, 20 * blob + 10])
    out = debayer_bilinear(_mosaic(rgb, pattern), pattern)
    peak = out[:, 14:19, 14:19].sum(axis=(1, 2))
    assert peak[0] > 5 * peak[1] and peak[0] > 10 * peak[2]
    # Wrong pattern must give the wrong colour: the test can tell patterns apart.
    other = {"GRBG": "GBRG", "RGGB": "BGGR", "BGGR": "RGGB", "GBRG": "GRBG"}[pattern]
    wrong = debayer_bilinear(_mosaic(rgb, pattern), other)[:, 14:19, 14:19].sum(axis=(1, 2))
    assert wrong[2] > wrong[0]


def test_samples_kept_and_flux_conserved():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(100, 200, size=(3, 40, 40)).astype(np.float32)
    raw = _mosaic(rgb, "GRBG")
    out = debayer_bilinear(raw, "GRBG")
    masks = bayer_masks("GRBG", raw.shape, np).astype(bool)
    for c in range(3):
        np.testing.assert_array_equal(out[c][masks[c]], raw[masks[c]])
    # A smooth field is reproduced away from the border.
    smooth = np.broadcast_to(np.array([100.0, 200.0, 300.0], np.float32)[:, None, None], (3, 20, 20))
    flat = debayer_bilinear(_mosaic(np.ascontiguousarray(smooth), "GRBG"), "GRBG")
    np.testing.assert_allclose(flat, smooth, rtol=1e-6)
    # Flux: a point source's interpolated red plane integrates to 4x its single sample.
    point = np.zeros((16, 16), np.float32)
    point[8, 9] = 100.0  # an R site in GRBG (even row, odd column)
    assert debayer_bilinear(point, "GRBG")[0].sum() == pytest.approx(400.0)


def test_hot_pixels_removed_stars_kept():
    rng = np.random.default_rng(2)
    raw = rng.normal(300, 10, size=(64, 64)).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    star = 3000 * np.exp(-((yy - 20.2) ** 2 + (xx - 40.6) ** 2) / (2 * (3.0 / 2.355) ** 2))
    raw += star.astype(np.float32)
    raw[50, 10] += 5000
    raw[5, 5] += 20000
    fixed, count = correct_hot_pixels(raw, 10.0, 8.0)
    assert count == 2
    assert abs(fixed[50, 10] - 300) < 60 and abs(fixed[5, 5] - 300) < 60
    np.testing.assert_array_equal(fixed[15:26, 35:46], raw[15:26, 35:46])
    assert raw[50, 10] > 4000  # the input was not modified


@pytest.mark.parametrize("pattern", ["GRBG", "RGGB", "BGGR", "GBRG"])
def test_compiled_debayer_equals_the_array_reference_to_the_bit(pattern):
    from zemosaic_dask.tasks.debayer import debayer_bilinear_reference

    rng = np.random.default_rng(5)
    raw = rng.normal(300, 40, size=(37, 52)).astype(np.float32)
    raw[rng.random(raw.shape) < 0.05] = np.nan
    raw[3:6] -= 500  # negative values too
    compiled = debayer_bilinear(raw, pattern)
    reference = debayer_bilinear_reference(raw, pattern)
    np.testing.assert_array_equal(compiled, reference)
