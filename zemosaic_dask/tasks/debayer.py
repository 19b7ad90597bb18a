"""Bayer demosaicing and hot-pixel correction on raw sensor windows.

Both work on the input's array namespace. A window passed here must start on an even
row and column of the sensor so that the Bayer phase of the full frame applies.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .namespace import array_namespace, is_numpy_namespace

__all__ = [
    "BAYER_PATTERNS",
    "bayer_colour_index",
    "bayer_masks",
    "binned_noise_ratio",
    "colour_block_noise_ratio",
    "correct_hot_pixels",
    "correct_hot_pixels_reference",
    "debayer_bilinear",
    "debayer_bilinear_reference",
]

BAYER_PATTERNS = ("GRBG", "RGGB", "BGGR", "GBRG")
_CHANNEL_INDEX = {"R": 0, "G": 1, "B": 2}

# Same-colour neighbours for every Bayer colour (distance 2 in rows and/or columns).
_RING2 = ((-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2))
_RING1 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def bayer_masks(pattern: str, shape: tuple[int, int], xp: Any) -> Any:
    """Return a ``(3, H, W)`` float32 array of 0/1 masks of the R, G and B sites.

    Parameters
    ----------
    pattern : str
        One of ``GRBG``, ``RGGB``, ``BGGR``, ``GBRG``: the colours of the 2x2 cell read
        row by row from the window's top-left pixel.
    shape : tuple of int
        ``(height, width)`` of the raw window.
    xp : module
        Array namespace to allocate in.
    """
    colour_of = bayer_colour_index(pattern)
    height, width = shape
    masks = xp.zeros((3, height, width), dtype=xp.float32)
    for dy in range(2):
        for dx in range(2):
            masks[int(colour_of[dy, dx]), dy::2, dx::2] = 1.0
    return masks


def _shifted_sum(image: Any, kernel: tuple[tuple[float, ...], ...], xp: Any) -> Any:
    """Correlate a (..., H, W) image with a small odd kernel, zero padding."""
    size = len(kernel)
    half = size // 2
    height, width = image.shape[-2:]
    pad = [(0, 0)] * (image.ndim - 2) + [(half, half), (half, half)]
    padded = xp.pad(image, pad)
    out = xp.zeros_like(image)
    for i, row in enumerate(kernel):
        for j, weight in enumerate(row):
            if weight:
                out += weight * padded[..., i : i + height, j : j + width]
    return out


_KERNEL_RB = ((0.25, 0.5, 0.25), (0.5, 1.0, 0.5), (0.25, 0.5, 0.25))
_KERNEL_G = ((0.0, 0.25, 0.0), (0.25, 1.0, 0.25), (0.0, 0.25, 0.0))


def debayer_bilinear(raw: Any, pattern: str) -> Any:
    """Demosaic a raw Bayer window into ``(3, H, W)`` float32 R, G, B planes.

    Bilinear interpolation as a normalised convolution: measured samples are kept
    unchanged, missing ones are the mean of their nearest same-colour neighbours, and
    window borders use only the neighbours that exist. The sum of every interpolated
    plane equals four times (two times for green) the sum of its samples, so fluxes are
    conserved.

    Parameters
    ----------
    raw : array
        ``(H, W)`` raw values; NaN marks pixels to ignore.
    pattern : str
        Bayer pattern of the window's top-left 2x2 cell.
    """
    xp = array_namespace(raw)
    raw = xp.asarray(raw, dtype=xp.float32)
    if is_numpy_namespace(xp):
        return _debayer_numba(raw, pattern)
    return debayer_bilinear_reference(raw, pattern)


def _debayer_numba(raw: np.ndarray, pattern: str) -> np.ndarray:
    from .kernels_raw import DEBAYER_WEIGHTS, debayer_bilinear_cpu

    out = np.empty((3,) + raw.shape, dtype=np.float32)
    debayer_bilinear_cpu(np.ascontiguousarray(raw), bayer_colour_index(pattern), DEBAYER_WEIGHTS, out)
    return out


def bayer_colour_index(pattern: str) -> np.ndarray:
    """``(2, 2)`` int64 channel (0 R, 1 G, 2 B) of each site of a Bayer pattern's top-left cell.

    Raises
    ------
    ValueError
        ``pattern`` is not one of :data:`BAYER_PATTERNS`.
    """
    pattern = pattern.upper()
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; expected one of {', '.join(BAYER_PATTERNS)}")
    return np.array(
        [[_CHANNEL_INDEX[c] for c in pattern[:2]], [_CHANNEL_INDEX[c] for c in pattern[2:]]], dtype=np.int64
    )


def colour_block_noise_ratio(factor: int) -> tuple[float, float, float]:
    """Noise of the per-colour means of a raw Bayer block ``factor`` a side, per unit raw noise.

    The block holds ``factor**2 / 4`` independent red and blue samples and twice as many
    green: R, G, B ratios ``2 / factor``, ``sqrt(2) / factor``, ``2 / factor`` (the
    :func:`~.kernels_raw.bayer_block_means_cpu` means; compare :func:`binned_noise_ratio`).

    Raises
    ------
    ValueError
        ``factor`` is not a positive even number.
    """
    factor = int(factor)
    if factor < 2 or factor % 2:
        raise ValueError(f"a colour block needs an even side, got {factor}")
    return (2.0 / factor, float(np.sqrt(2.0)) / factor, 2.0 / factor)


@functools.lru_cache(maxsize=32)
def binned_noise_ratio(pattern: str | None, factor: int) -> tuple[float, float, float]:
    """Noise of ``factor x factor`` means of a demosaiced frame, per unit noise of its raw pixels.

    Demosaicing interpolates every colour from its sparse sites, so neighbouring output
    pixels share raw samples and a block mean of red or blue is far noisier than
    ``noise / factor``, the ratio of independent pixels. Computed exactly for white raw
    noise, through :func:`debayer_bilinear` itself, for blocks that start on the sensor's
    Bayer phase (an even ``factor``, or the root mean square over the phases otherwise).

    Parameters
    ----------
    pattern : str or None
        Bayer pattern of the frame; None for a frame that is not demosaiced (mono or
        colour planes), whose pixels are independent: ``1 / factor`` for every channel.
    factor : int
        Side of the block in pixels (>= 1).

    Returns
    -------
    tuple of float
        R, G, B ratios.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if pattern is None:
        return (1.0 / factor,) * 3
    period = factor if factor % 2 == 0 else 2 * factor
    margin = 4
    size = 2 * margin + period
    variances = np.zeros(3)
    phases = [(y, x) for y in range(0, period, factor) for x in range(0, period, factor)]
    for sy in range(size):
        for sx in range(size):
            impulse = np.zeros((size, size), dtype=np.float32)
            impulse[sy, sx] = 1.0
            response = np.asarray(debayer_bilinear(impulse, pattern), dtype=np.float64)
            for y, x in phases:
                block = response[:, margin + y : margin + y + factor, margin + x : margin + x + factor]
                variances += block.mean(axis=(1, 2)) ** 2
    return tuple(float(v) for v in np.sqrt(variances / len(phases)))


def debayer_bilinear_reference(raw: Any, pattern: str) -> Any:
    """:func:`debayer_bilinear` written with array operations only (any namespace; the semantic reference)."""
    xp = array_namespace(raw)
    raw = xp.asarray(raw, dtype=xp.float32)
    masks = bayer_masks(pattern, raw.shape, xp)
    finite = xp.isfinite(raw)
    masks = masks * finite[None].astype(xp.float32)
    values = xp.where(finite, raw, xp.float32(0.0))[None] * masks
    out = xp.empty_like(masks)
    for channel, kernel in ((0, _KERNEL_RB), (1, _KERNEL_G), (2, _KERNEL_RB)):
        num = _shifted_sum(values[channel], kernel, xp)
        den = _shifted_sum(masks[channel], kernel, xp)
        with_data = den > 0
        out[channel] = xp.where(with_data, num / xp.where(with_data, den, xp.float32(1.0)), xp.float32(xp.nan))
    return out


def correct_hot_pixels(raw: Any, noise_sigma: float, threshold_sigma: float = 8.0) -> tuple[Any, int]:
    """Replace isolated hot pixels of a raw (Bayer or mono) window.

    A pixel is hot when it exceeds the brightest of its 8 immediate neighbours by more
    than ``threshold_sigma * noise_sigma`` and that excess is at least 90 % of its excess
    over the faintest neighbour: a star core shares its light with its neighbours, a hot
    pixel does not. A hot pixel becomes the median of its 8 same-colour neighbours.

    Parameters
    ----------
    raw : array
        ``(H, W)`` float32 window.
    noise_sigma : float
        Robust per-pixel noise of the frame in ADU.
    threshold_sigma : float
        Detection threshold in units of ``noise_sigma``.

    Returns
    -------
    corrected : array
        A new array; the input is not modified.
    count : int
        Number of pixels replaced.
    """
    xp = array_namespace(raw)
    raw = xp.asarray(raw, dtype=xp.float32)
    if min(raw.shape) < 5:
        return raw.copy(), 0
    threshold = np.float32(threshold_sigma * max(float(noise_sigma), 1e-3))
    if is_numpy_namespace(xp):
        from .kernels_raw import correct_hot_pixels_cpu

        fixed = np.empty_like(raw)
        return fixed, int(correct_hot_pixels_cpu(np.ascontiguousarray(raw), threshold, fixed))
    return correct_hot_pixels_reference(raw, threshold)


def correct_hot_pixels_reference(raw: Any, threshold: Any) -> tuple[Any, int]:
    """:func:`correct_hot_pixels` with array operations only (any namespace; the semantic reference).

    ``raw`` is a float32 ``(H, W)`` window of at least 5x5 pixels and ``threshold`` the
    float32 detection threshold in ADU (``threshold_sigma * noise_sigma``).
    """
    xp = array_namespace(raw)
    height, width = raw.shape
    padded = xp.pad(raw, 2, mode="reflect")
    near_max = near_min = None
    for dy, dx in _RING1:
        view = padded[2 + dy : 2 + dy + height, 2 + dx : 2 + dx + width]
        near_max = view if near_max is None else xp.maximum(near_max, view)
        near_min = view if near_min is None else xp.minimum(near_min, view)
    excess = raw - near_max
    hot = (excess > threshold) & (excess >= 0.9 * (raw - near_min))
    ys, xs = xp.nonzero(hot)
    count = int(ys.shape[0])
    if count == 0:
        return raw.copy(), 0
    # The median of the same-colour ring is needed at the hot pixels only.
    ring = xp.stack([padded[ys + 2 + dy, xs + 2 + dx] for dy, dx in _RING2])
    fixed = raw.copy()
    fixed[ys, xs] = xp.median(ring, axis=0)
    return fixed, count
