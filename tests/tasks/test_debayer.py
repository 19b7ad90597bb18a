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


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (6, 4), (41, 58)])
@pytest.mark.parametrize("pattern", ["GRBG", "BGGR"])
def test_compiled_debayer_matches_reference_with_gaps_infinities_and_small_windows(pattern, shape):
    from zemosaic_dask.tasks.debayer import debayer_bilinear_reference

    rng = np.random.default_rng(sum(shape))
    raw = rng.normal(300, 40, size=shape).astype(np.float32)
    holes = rng.random(shape)
    raw[holes < 0.08] = np.nan
    raw[(holes >= 0.08) & (holes < 0.12)] = np.inf
    raw[(holes >= 0.12) & (holes < 0.14)] = -np.inf
    raw[(holes >= 0.14) & (holes < 0.16)] = -0.0
    compiled = debayer_bilinear(raw, pattern)
    reference = debayer_bilinear_reference(raw, pattern)
    np.testing.assert_array_equal(compiled, reference)
    np.testing.assert_array_equal(np.signbit(compiled), np.signbit(reference))


def _hot_field(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.normal(300, 10, size=shape).astype(np.float32)
    hot = rng.random(shape) < 0.01
    raw[hot] += rng.uniform(100, 20000, size=int(hot.sum())).astype(np.float32)
    raw[rng.random(shape) < 0.01] = np.nan
    raw[:3, :3] = 300.0 + np.arange(9, dtype=np.float32).reshape(3, 3)  # a clean corner
    # Hot pixels on every border and corner, and one next to a NaN.
    for y, x in ((0, 0), (0, shape[1] - 1), (shape[0] - 1, 0), (shape[0] - 1, shape[1] - 1), (1, 3), (3, 1)):
        raw[y, x] = 9000.0
    middle = (shape[0] // 2, shape[1] // 2)
    raw[middle] = 9000.0
    raw[middle[0], middle[1] + 1] = np.nan
    return raw


@pytest.mark.parametrize("shape", [(5, 5), (7, 12), (64, 81)])
def test_compiled_hot_pixels_equal_the_array_reference_to_the_bit(shape):
    from zemosaic_dask.tasks.debayer import correct_hot_pixels_reference

    raw = _hot_field(sum(shape), shape)
    before = raw.copy()
    fixed, count = correct_hot_pixels(raw, 10.0, 8.0)
    reference, reference_count = correct_hot_pixels_reference(raw, np.float32(80.0))
    np.testing.assert_array_equal(raw, before)  # input untouched
    assert count == reference_count and count > 0
    np.testing.assert_array_equal(fixed, reference)
    middle = (shape[0] // 2, shape[1] // 2)
    assert fixed[middle] == 9000.0
    if min(shape) > 5:  # in a 5x5 window the reflected ring of a corner holds the hot middle pixel
        assert fixed[0, 0] < 1000  # a corner fixed; a pixel beside a NaN is not judged
