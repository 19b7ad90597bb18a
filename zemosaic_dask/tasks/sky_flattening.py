"""Cosmetic finishing of a linear mosaic: a smooth sky model removed, colours balanced, small holes filled.

These make the aesthetic product (``mosaic_aesthetic.*``), never ``mosaic.fits``:

- :func:`fit_sky_background`: per channel, the sigma-clipped median of each ``block_px``
  square block of a regular lattice sample of the mosaic (stars and compact bright objects
  are clipped), blocks with too few sky samples taken from their nearest neighbour, then
  a 3x3 median and a Gaussian of one block over the block grid (on the residuals from a
  fitted plane, so a gradient is kept to the edges); :meth:`SkyBackground.evaluate`
  interpolates it bilinearly between block centres to any band of rows.
- :func:`flatten_sky`: ``pedestal + gain * (value - background)``: the sky of every channel
  becomes one common pedestal (so the sky is neutral) and a star keeps its flux above the
  sky, times its channel's gain.
- :func:`fit_colour_gains`: gains that make the median colour of the brightest unsaturated
  sources (the top 0.5 % of the flattened luminance) neutral: ``gain_c = mean(m) / m_c``.
- :func:`fill_small_holes`: NaN pixels enclosed by data within ``radius`` pixels (the
  footprint's morphological closing) get the mean of their finite neighbours; the empty
  outside of the footprint stays NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["SkyBackground", "fill_small_holes", "fit_colour_gains", "fit_sky_background", "flatten_sky"]

_CLIP_SIGMA = 3.0
_CLIP_ROUNDS = 3
_MIN_SKY_FRACTION = 0.25


@dataclass(frozen=True)
class SkyBackground:
    """A smooth sky per channel: levels at the centres of ``block_px`` blocks of the mosaic.

    Attributes
    ----------
    block_px : int
        Side of a block, in mosaic pixels.
    levels : ndarray
        ``(C, ny, nx)`` float32 sky level of each block.
    pedestal : float
        The common sky level the flattened image is given.
    """

    block_px: int
    levels: np.ndarray
    pedestal: float

    def evaluate(self, y0: int, y1: int, width: int) -> np.ndarray:
        """``(C, y1 - y0, width)`` float32 sky of mosaic rows ``y0:y1`` (bilinear between block centres)."""
        return self.evaluate_lattice(np.arange(y0, y1), np.arange(width))

    def evaluate_lattice(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``(C, len(rows), len(columns))`` float32 sky at the crossings of mosaic ``rows`` and ``columns``."""
        ys = _block_coordinates(np.asarray(rows), self.block_px, self.levels.shape[1])
        xs = _block_coordinates(np.asarray(columns), self.block_px, self.levels.shape[2])
        return _interpolate(_interpolate(self.levels, ys, axis=1), xs, axis=2).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        """Summary for ``report.json``: block size, model size, pedestal and the range of each channel's sky."""
        return {
            "block_px": self.block_px,
            "shape": list(self.levels.shape[1:]),
            "pedestal": self.pedestal,
            "sky_range": [[float(c.min()), float(c.max())] for c in self.levels],
        }


def _block_coordinates(pixels: np.ndarray, block_px: int, n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower block index, upper block index and weight of the upper one for each pixel coordinate.

    Beyond the outermost block centres the weight leaves ``[0, 1]``: the edge blocks' slope
    is extrapolated (half a block at most), so a gradient does not flatten out at the edges.
    """
    position = (pixels + 0.5) / block_px - 0.5
    if n_blocks == 1:
        zeros = np.zeros(pixels.shape, dtype=np.intp)
        return zeros, zeros, np.zeros(pixels.shape, dtype=np.float32)
    low = np.clip(np.floor(position), 0, n_blocks - 2).astype(np.intp)
    return low, low + 1, (position - low).astype(np.float32)


def _interpolate(values: np.ndarray, coords: tuple[np.ndarray, np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    low, high, weight = coords
    shape = [1] * values.ndim
    shape[axis] = weight.size
    weight = weight.reshape(shape)
    return np.take(values, low, axis=axis) * (1 - weight) + np.take(values, high, axis=axis) * weight


def _clipped_medians(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median of the last axis (NaN ignored) and the fraction of values kept."""
    values = blocks.copy()
    total = np.maximum(np.isfinite(blocks).sum(axis=-1), 1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: outside the footprint
        for _ in range(_CLIP_ROUNDS):
            median = np.nanmedian(values, axis=-1, keepdims=True)
            sigma = 1.4826 * np.nanmedian(np.abs(values - median), axis=-1, keepdims=True)
            values[np.abs(values - median) > _CLIP_SIGMA * np.maximum(sigma, 1e-12)] = np.nan
        median = np.nanmedian(values, axis=-1)
    return median, np.isfinite(values).sum(axis=-1) / total


def fit_sky_background(sample: np.ndarray, stride: int, block_px: int) -> SkyBackground:
    """The smooth sky of a mosaic from a lattice sample of its pixels.

    Parameters
    ----------
    sample : ndarray
        ``(C, sy, sx)`` float32: ``sample[:, i, j]`` is mosaic pixel ``(i * stride, j * stride)``,
        NaN where there is no data.
    stride : int
        Lattice step; must divide ``block_px``.
    block_px : int
        Side of the background blocks, in mosaic pixels.

    Returns
    -------
    SkyBackground
        Its pedestal is the median sky level of all channels.
    """
    if block_px % stride:
        raise ValueError(f"the lattice stride {stride} must divide the background block size {block_px}")
    k = block_px // stride
    channels, sy, sx = sample.shape
    ny, nx = -(-sy // k), -(-sx // k)
    padded = np.full((channels, ny * k, nx * k), np.nan, dtype=np.float32)
    padded[:, :sy, :sx] = sample
    blocks = padded.reshape(channels, ny, k, nx, k).transpose(0, 1, 3, 2, 4).reshape(channels, ny, nx, k * k)
    counts = np.isfinite(blocks).sum(axis=-1)
    levels, kept = _clipped_medians(blocks)
    usable = (counts >= max(4, _MIN_SKY_FRACTION * k * k)) & (kept >= 0.5) & np.isfinite(levels)
    for channel in range(channels):
        levels[channel] = _smooth_blocks(levels[channel], usable[channel])
    finite = levels[np.isfinite(levels)]
    pedestal = float(np.median(finite)) if finite.size else 0.0
    return SkyBackground(block_px, np.nan_to_num(levels, nan=pedestal).astype(np.float32), pedestal)


def _smooth_blocks(levels: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Smooth a channel's block levels, keeping a plane through them intact.

    A plane is fitted to the usable blocks; the residuals of unusable blocks are taken from
    their nearest usable block, then smoothed by a 3x3 median and a Gaussian of one block,
    and the plane is added back (so a linear gradient is kept exactly up to the edges).
    """
    if not usable.any():
        return np.full(levels.shape, np.nan, dtype=np.float32)
    yy, xx = np.indices(levels.shape, dtype=np.float64)
    design = np.column_stack([np.ones(usable.sum()), yy[usable], xx[usable]])
    coefficients = np.linalg.lstsq(design, levels[usable].astype(np.float64), rcond=None)[0]
    plane = coefficients[0] + coefficients[1] * yy + coefficients[2] * xx
    _, (iy, ix) = ndimage.distance_transform_edt(~usable, return_indices=True)
    residual = (levels - plane)[iy, ix]
    residual = ndimage.median_filter(residual, size=3, mode="nearest")
    residual = ndimage.gaussian_filter(residual, sigma=1.0, mode="nearest")
    return (plane + residual).astype(np.float32)


def flatten_sky(image: np.ndarray, sky: np.ndarray, pedestal: float, gains: tuple[float, ...]) -> np.ndarray:
    """``pedestal + gain_c * (image_c - sky_c)`` as float32 (NaN stays NaN)."""
    out = np.subtract(image, sky, dtype=np.float32)
    out *= np.asarray(gains, dtype=np.float32).reshape(-1, 1, 1)
    out += np.float32(pedestal)
    return out


def fit_colour_gains(flat_sample: np.ndarray, pedestal: float, *, top_fraction: float = 0.005) -> tuple[float, ...]:
    """Per-channel gains that make the median colour of the brightest sources neutral.

    Parameters
    ----------
    flat_sample : ndarray
        ``(C, ...)`` sample of the sky-flattened mosaic (gains 1), NaN where no data.
    pedestal : float
        Its sky level.
    top_fraction : float
        The fraction of pixels, brightest in luminance (mean of the channels above the
        pedestal), whose per-channel medians are balanced; pixels above the 99.99th
        percentile of any channel (saturated cores) are left out.

    Returns
    -------
    tuple of float
        ``mean(m) / m_c`` with ``m_c`` the channel medians, clipped to ``[0.25, 4]``; all 1 for
        a mono image or when fewer than 50 such pixels have positive signal in every channel.
    """
    channels = flat_sample.shape[0]
    signal = flat_sample.reshape(channels, -1) - np.float32(pedestal)
    signal = signal[:, np.isfinite(signal).all(axis=0)]
    if channels == 1 or signal.shape[1] < 50:
        return (1.0,) * channels
    ceiling = np.percentile(signal, 99.99, axis=1, keepdims=True)
    signal = signal[:, (signal < ceiling).all(axis=0)]
    luminance = signal.mean(axis=0)
    bright = signal[:, luminance >= np.percentile(luminance, 100.0 * (1.0 - top_fraction))]
    bright = bright[:, (bright > 0).all(axis=0)]
    if bright.shape[1] < 50:
        return (1.0,) * channels
    medians = np.median(bright, axis=1)
    gains = np.clip(medians.mean() / medians, 0.25, 4.0)
    return tuple(float(g) for g in gains)


def fill_small_holes(image: np.ndarray, radius: int) -> np.ndarray:
    """Fill NaN pixels that lie within ``radius`` pixels of data on every side; a copy.

    A pixel is a hole when it is NaN in a channel but inside the closing (dilation then
    erosion by a ``2 radius + 1`` square) of that channel's finite pixels. Holes are filled
    from the mean of their finite 3x3 neighbours, growing inwards, ``radius + 1`` rounds.
    Results within ``2 radius + 2`` rows of the array's top and bottom are exact only when
    those rows are the mosaic's own edges (pass bands with that many rows of halo).
    """
    out = np.array(image, dtype=np.float32, copy=True)
    if radius <= 0:
        return out
    square = np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)
    for channel in out:
        finite = np.isfinite(channel)
        if finite.all() or not finite.any():
            continue
        holes = ndimage.binary_closing(finite, structure=square) & ~finite
        for _ in range(radius + 1):
            if not holes.any():
                break
            known = np.isfinite(channel)
            sums = ndimage.uniform_filter(np.where(known, channel, 0.0), size=3, mode="constant")
            counts = ndimage.uniform_filter(known.astype(np.float32), size=3, mode="constant")
            ready = holes & (counts > 0)
            channel[ready] = sums[ready] / counts[ready]
            holes &= ~ready
    return out
