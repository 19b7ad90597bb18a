"""The large-scale sky of one frame, as robust block medians.

A frame's sky (sky glow, light-pollution gradient, the smooth part of any extended
emission) is measured on a coarse grid of square blocks: each block's value is the median
of its pixels, which a few stars, a satellite trail or hot pixels barely move. The
background model of the mosaic (:mod:`.background_solve`) compares these block values
where frames overlap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .namespace import array_namespace, to_numpy

__all__ = ["SkyBlocks", "measure_sky_blocks"]

#: A block with fewer finite pixels than this fraction has no value (NaN).
MIN_FINITE_FRACTION = 0.5


@dataclass(frozen=True)
class SkyBlocks:
    """Block medians of one frame, in the frame's own pixel coordinates.

    Attributes
    ----------
    values : numpy.ndarray
        ``(C, ny, nx)`` float32 block medians, NaN where a block has too few finite pixels.
    block : int
        Side of a block in frame pixels.
    y, x : numpy.ndarray
        ``(ny,)`` and ``(nx,)`` frame pixel coordinates of the block centres (0-based).
    """

    values: np.ndarray
    block: int
    y: np.ndarray
    x: np.ndarray

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of the block values at frame pixel positions.

        Parameters
        ----------
        x, y : numpy.ndarray
            ``(N,)`` frame pixel coordinates.

        Returns
        -------
        numpy.ndarray
            ``(C, N)`` float64; NaN outside the span of the block centres or where one of
            the four surrounding blocks has no value.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        fx = (x - self.x[0]) / self.block
        fy = (y - self.y[0]) / self.block
        nx, ny = self.x.size, self.y.size
        inside = (fx >= 0) & (fy >= 0) & (fx <= nx - 1) & (fy <= ny - 1)
        ix = np.clip(np.floor(fx).astype(np.int64), 0, max(nx - 2, 0))
        iy = np.clip(np.floor(fy).astype(np.int64), 0, max(ny - 2, 0))
        tx = np.clip(fx - ix, 0.0, 1.0)
        ty = np.clip(fy - iy, 0.0, 1.0)
        ix1 = np.minimum(ix + 1, nx - 1)
        iy1 = np.minimum(iy + 1, ny - 1)
        v = self.values.astype(np.float64)
        top = v[:, iy, ix] * (1 - tx) + v[:, iy, ix1] * tx
        bottom = v[:, iy1, ix] * (1 - tx) + v[:, iy1, ix1] * tx
        out = top * (1 - ty) + bottom * ty
        out[:, ~inside] = np.nan
        return out


def measure_sky_blocks(image: Any, block: int) -> SkyBlocks:
    """Median of every ``block x block`` square of a ``(C, H, W)`` frame.

    The frame is cut into whole blocks from its top-left corner; the rows and columns
    left over at the bottom and right (less than one block) are not used.

    Parameters
    ----------
    image : array
        ``(C, H, W)`` frame (numpy or cupy), NaN where a pixel has no data.
    block : int
        Block side in pixels (>= 2).

    Returns
    -------
    SkyBlocks
        Host arrays.

    Raises
    ------
    ValueError
        When the frame is smaller than one block or ``block`` < 2.
    """
    if int(block) < 2:
        raise ValueError(f"block must be >= 2 pixels, got {block} (set zemosaic.background.block-px)")
    block = int(block)
    xp = array_namespace(image)
    channels, height, width = image.shape
    ny, nx = height // block, width // block
    if ny < 1 or nx < 1:
        raise ValueError(f"a {height}x{width} frame holds no {block}x{block} block; lower zemosaic.background.block-px")
    cut = image[:, : ny * block, : nx * block].reshape(channels, ny, block, nx, block)
    cut = xp.moveaxis(cut, 3, 2).reshape(channels, ny, nx, block * block)
    finite = xp.sum(xp.isfinite(cut), axis=-1)
    if bool(xp.any(finite < block * block)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: NaN, as intended
            values = xp.nanmedian(cut, axis=-1)
    else:
        values = xp.median(cut, axis=-1)
    values = xp.where(finite >= MIN_FINITE_FRACTION * block * block, values, xp.nan)
    centres = (np.arange(ny) * block + (block - 1) / 2.0, np.arange(nx) * block + (block - 1) / 2.0)
    return SkyBlocks(to_numpy(values).astype(np.float32), block, centres[0], centres[1])


def subtract_background_plane(image: Any, origin: tuple[int, int], centre: tuple[float, float], plane: Any) -> Any:
    """Remove a frame's background model from a window of it, in place.

    Parameters
    ----------
    image : array
        ``(C, h, w)`` float32 window (numpy or cupy), modified in place.
    origin : tuple of int
        ``(y0, x0)`` of the window in its frame.
    centre : tuple of float
        ``(xc, yc)``: the frame pixel the plane is written about.
    plane : array-like
        ``(C, 3)`` offset, d/dx, d/dy per channel (frame pixels), as
        :func:`~.background_solve.planes_in_frame_pixels` gives.

    Returns
    -------
    array
        ``image``, with ``offset + gx (x - xc) + gy (y - yc)`` subtracted from every channel.
    """
    xp = array_namespace(image)
    channels, height, width = image.shape
    coefficients = np.asarray(plane, dtype=np.float64).reshape(-1, 3)
    if coefficients.shape[0] == 1 and channels > 1:
        coefficients = np.repeat(coefficients, channels, axis=0)
    if coefficients.shape[0] != channels:
        raise ValueError(f"the background plane holds {coefficients.shape[0]} channel(s), the window {channels}")
    dx = xp.asarray(np.arange(origin[1], origin[1] + width, dtype=np.float64) - centre[0], dtype=xp.float32)
    dy = xp.asarray(np.arange(origin[0], origin[0] + height, dtype=np.float64) - centre[1], dtype=xp.float32)
    for c in range(channels):
        a, gx, gy = (np.float32(v) for v in coefficients[c])
        image[c] -= (gy * dy)[:, None] + (gx * dx + a)[None, :]
    return image
