"""Compiled CPU kernels (numba) that prepare raw sensor windows: hot pixels, demosaicing, colour block means.

The hot-pixel and demosaicing kernels follow the array-operation references in
:mod:`zemosaic_dask.tasks.debayer` to the bit: the same float32 operations in the same
order, the same treatment of NaN and infinite samples, the same border rules. They only
avoid the references' temporaries and the per-pixel generality: interior pixels take a
branch-light path specialised to the Bayer parity, and a pixel whose fast result is not
finite (a NaN or infinite neighbour) or that lies on the window border is recomputed by
the general rule. The colour block means (:func:`bayer_block_means_cpu`, for the sky
cells) sum in float64 and are checked against a mask-based formulation to float32
precision.

Kernels are compiled with ``nogil=True`` and without ``fastmath`` (see
:mod:`zemosaic_dask.tasks.kernels_cpu`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["DEBAYER_WEIGHTS", "bayer_block_means_cpu", "correct_hot_pixels_cpu", "debayer_bilinear_cpu"]

_OPTIONS = {"cache": True, "nogil": True, "fastmath": False}

#: Bilinear demosaicing weights (3x3, row-major): red/blue, then green.
DEBAYER_WEIGHTS = np.array(
    [
        [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]],
        [[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]],
    ],
    dtype=np.float32,
)


@njit(inline="always", **_OPTIONS)
def _reflect(index, size):
    """Index into an axis of ``size`` under numpy's ``reflect`` padding (edge not repeated)."""
    if index < 0:
        return -index
    if index >= size:
        return 2 * (size - 1) - index
    return index


@njit(**_OPTIONS)
def _debayer_general(raw, colour_of, weights, y, x, channel):
    """The normalised convolution at one pixel and channel, every rule checked (borders, gaps)."""
    height, width = raw.shape
    zero = np.float32(0.0)
    kernel = 1 if channel == 1 else 0
    num = zero
    den = zero
    for i in range(3):
        yy = y + i - 1
        if yy < 0 or yy >= height:
            continue
        for j in range(3):
            weight = weights[kernel, i, j]
            xx = x + j - 1
            if weight == zero or xx < 0 or xx >= width:
                continue
            if colour_of[yy & 1, xx & 1] != channel:
                continue
            value = raw[yy, xx]
            if not math.isfinite(value):
                continue
            num += weight * value
            den += weight
    return num / den if den > zero else np.float32(np.nan)


@njit(inline="always", **_OPTIONS)
def _interpolate(raw, y, x, shape, zero, quarter, half):
    """Value of the channel of ``shape`` at an interior pixel (1 own, 2 cross, 3 row pair, 4 column pair, 5 diagonals).

    Terms are summed in the reference's order (kernel rows, then columns), starting from 0.
    """
    if shape == 1:
        return zero + raw[y, x]
    if shape == 2:
        return (((zero + quarter * raw[y - 1, x]) + quarter * raw[y, x - 1]) + quarter * raw[y, x + 1]) + quarter * raw[
            y + 1, x
        ]
    if shape == 3:
        return (zero + half * raw[y, x - 1]) + half * raw[y, x + 1]
    if shape == 4:
        return (zero + half * raw[y - 1, x]) + half * raw[y + 1, x]
    return (((zero + quarter * raw[y - 1, x - 1]) + quarter * raw[y - 1, x + 1]) + quarter * raw[y + 1, x - 1]) + (
        quarter * raw[y + 1, x + 1]
    )


@njit(**_OPTIONS)
def _neighbourhood_shapes(colour_of):
    """``shapes[py, px, channel]``: which interior rule applies (see :func:`_interpolate`)."""
    shapes = np.empty((2, 2, 3), dtype=np.int64)
    for py in range(2):
        for px in range(2):
            own = colour_of[py, px]
            for channel in range(3):
                if channel == own:
                    shapes[py, px, channel] = 1
                elif channel == 1:
                    shapes[py, px, channel] = 2
                elif colour_of[py, 1 - px] == channel:
                    shapes[py, px, channel] = 3
                elif colour_of[1 - py, px] == channel:
                    shapes[py, px, channel] = 4
                else:
                    shapes[py, px, channel] = 5
    return shapes


@njit(**_OPTIONS)
def debayer_bilinear_cpu(raw, colour_of, weights, out):
    """Bilinear demosaicing as a normalised convolution, float32, bit-identical to the reference.

    ``colour_of[y % 2, x % 2]`` is the channel (0 R, 1 G, 2 B) of a raw pixel of a valid
    Bayer pattern; ``weights`` is :data:`DEBAYER_WEIGHTS`; ``out`` is the ``(3, H, W)``
    float32 result. In the interior of the window every interpolated value has weights
    summing to exactly 1, so the normalised sum is the weighted sum itself; pixels whose
    sum is not finite and border pixels take the general rule.
    """
    height, width = raw.shape
    zero = np.float32(0.0)
    quarter = np.float32(0.25)
    half = np.float32(0.5)
    shapes = _neighbourhood_shapes(colour_of)
    for y in range(height):
        interior_row = 0 < y < height - 1
        py = y & 1
        for x in range(width):
            px = x & 1
            interior = interior_row and 0 < x < width - 1
            for channel in range(3):
                value = np.float32(np.nan)
                if interior:
                    value = _interpolate(raw, y, x, shapes[py, px, channel], zero, quarter, half)
                if not math.isfinite(value):
                    value = _debayer_general(raw, colour_of, weights, y, x, channel)
                out[channel, y, x] = value


@njit(**_OPTIONS)
def _ring_median(raw, y, x):
    """Median of the 8 same-colour neighbours (distance 2) under reflect padding, numpy's float32 rule."""
    height, width = raw.shape
    ring = np.empty(8, dtype=np.float32)
    k = 0
    for dy in (-2, 0, 2):
        for dx in (-2, 0, 2):
            if dy == 0 and dx == 0:
                continue
            value = raw[_reflect(y + dy, height), _reflect(x + dx, width)]
            if value != value:
                return np.float32(np.nan)
            ring[k] = value
            k += 1
    ring.sort()
    return (ring[3] + ring[4]) / np.float32(2.0)


@njit(**_OPTIONS)
def correct_hot_pixels_cpu(raw, threshold, out):
    """Copy ``raw`` into ``out`` with its isolated hot pixels replaced; return how many.

    Same rule as :func:`~zemosaic_dask.tasks.debayer.correct_hot_pixels` (``threshold`` is
    ``threshold_sigma * noise_sigma`` as float32): a pixel is hot when it exceeds the
    brightest of its 8 neighbours (reflect padding at the border) by more than
    ``threshold`` and that excess is at least 0.9 of its excess over the faintest one; a
    NaN anywhere in the neighbourhood makes it not hot. Detection reads ``raw`` only.
    """
    height, width = raw.shape
    ratio = np.float32(0.9)
    count = 0
    for y in range(height):
        ym = _reflect(y - 1, height)
        yp = _reflect(y + 1, height)
        for x in range(width):
            value = raw[y, x]
            out[y, x] = value
            xm = _reflect(x - 1, width)
            xq = _reflect(x + 1, width)
            a = raw[ym, xm]
            b = raw[ym, x]
            c = raw[ym, xq]
            d = raw[y, xm]
            e = raw[y, xq]
            f = raw[yp, xm]
            g = raw[yp, x]
            h = raw[yp, xq]
            high = max(max(max(a, b), max(c, d)), max(max(e, f), max(g, h)))
            # A NaN pixel fails this test; a NaN neighbour may not (max is not NaN-aware) and
            # is ruled out just below, as the reference's NaN maximum rules it out.
            if not value - high > threshold:
                continue
            if a != a or b != b or c != c or d != d or e != e or f != f or g != g or h != h:
                continue
            low = min(min(min(a, b), min(c, d)), min(min(e, f), min(g, h)))
            if value - high >= ratio * (value - low):
                out[y, x] = _ring_median(raw, y, x)
                count += 1
    return count


@njit(**_OPTIONS)
def bayer_block_means_cpu(raw, colour_of, factor, out):
    """Write into ``out`` the mean of each colour's raw samples in every ``factor x factor`` block.

    ``raw`` is a ``(H, W)`` Bayer mosaic starting on the pattern's phase, ``colour_of`` the
    ``(2, 2)`` channel index (0 R, 1 G, 2 B) of its top-left cell and ``factor`` even, so
    that every block holds ``factor**2 / 4`` red, as many blue and twice as many green
    samples. ``out`` is ``(3, H // factor, W // factor)`` float32 (rows and columns beyond
    the last whole block are ignored). A block with a NaN sample gets NaN in that channel.
    One pass over the raw pixels, summed in float64: no demosaiced frame is built.
    """
    height, width = out.shape[1], out.shape[2]
    sums = np.zeros((3, width), dtype=np.float64)
    counts = np.zeros(3, dtype=np.float64)
    for i in range(2):
        for j in range(2):
            counts[colour_of[i, j]] += factor * factor // 4
    for y in range(height):
        sums[:, :] = 0.0
        for i in range(factor):
            row = raw[y * factor + i]
            even, odd = colour_of[i & 1, 0], colour_of[i & 1, 1]
            for x in range(width):
                first = x * factor
                for j in range(0, factor, 2):
                    sums[even, x] += row[first + j]
                    sums[odd, x] += row[first + j + 1]
        for c in range(3):
            for x in range(width):
                out[c, y, x] = sums[c, x] / counts[c]
