"""The large-scale sky of one frame, measured on cells of the global grid.

A frame's sky (sky glow, light-pollution gradient, the smooth part of any extended
emission) is measured on square cells of the *global* output grid: each cell's value is
the clipped mean of the frame pixels that fall in it (stars, satellite trails and hot
pixels clipped). Two overlapping frames are thus measured over the very same patches of
sky, so everything fixed to the sky (faint stars, nebulosity, a galaxy) cancels exactly
in their difference, and only what belongs to each frame (its sky level and gradient)
remains. The background model of the mosaic (:mod:`.background_solve`) compares these
values where frames overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .debayer import binned_noise_ratio, colour_block_noise_ratio
from .namespace import array_namespace, to_numpy

__all__ = [
    "CLIP_HIGH",
    "CLIP_LOW",
    "SkyCells",
    "measure_bayer_sky_cells",
    "measure_sky_cells",
    "sky_bin_factor",
    "subtract_background_plane",
]

#: A cell counts only when the frame fills at least this fraction of it.
MIN_FILL = 0.9
#: Clipping limits of the cell means, in sigmas of the (binned) pixels. Symmetric: a clipped
#: mean of symmetric noise is then unbiased, while an asymmetric window biases it by a fixed
#: fraction of the noise, which grows with the sky level and so bends the background model.
CLIP_LOW, CLIP_HIGH = 2.5, 2.5
_CLIP_PASSES = 3
#: Frames are binned by the largest of these factors that leaves a cell :data:`CELL_BINS` binned pixels a side.
BINS = (2, 4)
CELL_BINS = 8


@dataclass(frozen=True)
class SkyCells:
    """Clipped means of one frame on the global grid's cells.

    Attributes
    ----------
    ids : numpy.ndarray
        ``(N,)`` int64 cell index ``row * n_columns + column`` of the cells the frame fills.
    values : numpy.ndarray
        ``(C, N)`` float64 clipped means.
    fluxes : numpy.ndarray
        ``(C, N)`` float64 light above the clipped mean summed over the cell (stars and
        anything else the clipping set aside), for the frames' relative gains.
    cell : int
        Cell side in grid pixels.
    n_columns : int
        Cells per grid row.
    """

    ids: np.ndarray
    values: np.ndarray
    fluxes: np.ndarray
    cell: int
    n_columns: int

    def centres(self, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Grid pixel ``(X, Y)`` of the centres of the given cells (default: the frame's)."""
        ids = self.ids if ids is None else ids
        row, column = np.divmod(ids, self.n_columns)
        return (column + 0.5) * self.cell - 0.5, (row + 0.5) * self.cell - 0.5


def measure_sky_cells(
    image: Any,
    to_grid: Any,
    cell: int,
    grid_shape: tuple[int, int],
    *,
    pixel_area: float = 1.0,
    noise: Any = None,
    bayer_pattern: str | None = None,
) -> SkyCells:
    """Clipped mean of a ``(C, H, W)`` frame in every global-grid cell it fills.

    Parameters
    ----------
    image : array
        ``(C, H, W)`` frame (numpy or cupy), NaN where a pixel has no data.
    to_grid : callable
        ``to_grid(x, y) -> (X, Y)``: frame pixel coordinates to grid pixel coordinates
        (:meth:`~.background_solve.FrameAffine.to_grid`), element by element on
        broadcastable arrays (it is given a row of ``x`` and a column of ``y``).
    cell : int
        Cell side in grid pixels (>= 2).
    grid_shape : tuple of int
        ``(height, width)`` of the grid.
    pixel_area : float
        Area of one frame pixel in grid pixels (``|det|`` of the mapping), to tell
        which cells the frame fills.
    noise : sequence of float, optional
        Per channel, the pixel noise the clipping limits are measured in. Give every
        frame of a session the same value (the session's typical noise): the limits then
        sit at the same height above the local sky in every frame, so the faint wings of
        stars and a galaxy's core are clipped alike in overlapping frames and cancel in
        their difference. Default: each frame's own robust noise.
    bayer_pattern : str, optional
        The Bayer pattern ``image`` was demosaiced from (bilinearly), when ``noise`` is
        that of the raw pixels: the noise of a binned pixel is then
        :func:`~.debayer.binned_noise_ratio` times it, not ``noise / factor``.

    Returns
    -------
    SkyCells
        Host arrays.

    Notes
    -----
    The frame is first binned 2x2 (cells of 16 to 31 grid pixels) or 4x4 (32 or more,
    :func:`sky_bin_factor`), so that a cell still holds 8 x 8 binned pixels or more. Each
    (binned) pixel is assigned to the cell holding its centre. The mean is clipped three
    times to ``[mean - 2.5 sigma, mean + 2.5 sigma]`` (the first time upwards only), with
    sigma the noise of a binned pixel (``noise`` times
    :func:`~.debayer.binned_noise_ratio`) or the frame's robust pixel noise per
    channel (1.4826 x the median absolute deviation from the cell means).
    """
    factor = sky_bin_factor(cell)
    data = to_numpy(image).astype(np.float32, copy=False)
    if factor > 1:  # factor x factor means: factor**2 fewer pixels to place (the clip limits follow their noise)
        from .kernels_stack import bin_mean_cpu

        channels, height, width = data.shape
        binned = np.empty((channels, height // factor, width // factor), dtype=np.float32)
        bin_mean_cpu(data, factor, binned)  # = data.reshape(C, h, factor, w, factor).mean(axis=(2, 4))
        data = binned
    if noise is not None:
        ratio = binned_noise_ratio(bayer_pattern if data.shape[0] == 3 else None, factor)
        noise = np.resize(np.asarray(noise, dtype=np.float64), data.shape[0]) * np.asarray(ratio[: data.shape[0]])
    return _cells_of_binned(data, factor, noise, to_grid, cell, grid_shape, pixel_area)


def measure_bayer_sky_cells(
    raw: np.ndarray,
    pattern: str,
    to_grid: Any,
    cell: int,
    grid_shape: tuple[int, int],
    *,
    pixel_area: float = 1.0,
    noise: Any = None,
) -> SkyCells:
    """:func:`measure_sky_cells` of a raw Bayer frame, binned by colour instead of demosaiced first.

    Each binned pixel holds, per channel, the mean of that colour's raw samples in its
    block (:func:`sky_bin_factor` a side, which must be even): the large-scale sky the
    demosaiced frame's block means give (bilinear demosaicing conserves each colour's
    local mean; measured on a 160-frame GRBG session: median difference of the block
    means -0.02 ADU for a sky of 280-450 ADU), from one pass over the raw pixels instead
    of a hot-pixel pass, a demosaicing and a binning of three full planes (2.4 ms against
    23 ms for a 1080x1920 frame). Hot pixels are not corrected: the cells' clipping sets
    them aside with the stars.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(H, W)`` raw mosaic, starting on the pattern's phase; NaN marks pixels to ignore.
    pattern : str
        Bayer pattern of its top-left 2x2 cell.
    to_grid, cell, grid_shape, pixel_area, noise
        As in :func:`measure_sky_cells` (``noise``: of the raw pixels).

    Returns
    -------
    SkyCells
    """
    factor = sky_bin_factor(cell)
    if factor % 2:
        raise ValueError(f"cells of {cell} px bin the frame by {factor}: colour blocks need an even factor")
    from .debayer import bayer_colour_index
    from .kernels_raw import bayer_block_means_cpu

    data = np.ascontiguousarray(raw, dtype=np.float32)  # one compiled specialisation
    binned = np.empty((3, data.shape[0] // factor, data.shape[1] // factor), dtype=np.float32)
    bayer_block_means_cpu(data, bayer_colour_index(pattern), factor, binned)
    if noise is not None:
        noise = np.resize(np.asarray(noise, dtype=np.float64), 3) * np.asarray(colour_block_noise_ratio(factor))
    return _cells_of_binned(binned, factor, noise, to_grid, cell, grid_shape, pixel_area)


def sky_bin_factor(cell: int) -> int:
    """Side of the blocks a frame is binned by before its cells of ``cell`` grid pixels are measured.

    The largest of :data:`BINS` that leaves a cell :data:`CELL_BINS` binned pixels a side, else 1.

    Raises
    ------
    ValueError
        ``cell`` is under 2 pixels.
    """
    if int(cell) < 2:
        raise ValueError(f"cell must be >= 2 pixels, got {cell} (set zemosaic.background.block-px)")
    return max((f for f in BINS if int(cell) >= CELL_BINS * f), default=1)


def _cells_of_binned(
    data: np.ndarray,
    factor: int,
    noise: np.ndarray | None,
    to_grid: Any,
    cell: int,
    grid_shape: tuple[int, int],
    pixel_area: float,
) -> SkyCells:
    """The clipped cell means of a ``(C, h, w)`` frame binned by ``factor`` (``noise``: of its binned pixels)."""
    from .kernels_stack import cell_clip_pass_cpu

    cell = int(cell)
    pixel_area *= factor * factor
    channels, height, width = data.shape
    grid_height, grid_width = grid_shape
    n_columns = -(-grid_width // cell)
    n_cells = -(-grid_height // cell) * n_columns
    offset = (factor - 1) / 2.0  # the centre of a binned pixel in frame pixels
    xs = np.arange(width) * float(factor) + offset
    ys = np.arange(height) * float(factor) + offset
    gx, gy = np.broadcast_arrays(*to_grid(xs[None, :], ys[:, None]))  # every (y, x), row-major
    gx, gy = np.broadcast_to(gx, (height, width)).ravel(), np.broadcast_to(gy, (height, width)).ravel()
    column = np.floor((gx + 0.5) / cell).astype(np.int64)
    row = np.floor((gy + 0.5) / cell).astype(np.int64)
    inside = (column >= 0) & (column < n_columns) & (row >= 0) & (row * n_columns < n_cells)
    ids = np.where(inside, row * n_columns + column, n_cells)
    values = data.reshape(channels, -1)
    finite = np.all(np.isfinite(values), axis=0) & inside
    ids = np.where(finite, ids, n_cells)
    counts = np.bincount(ids, minlength=n_cells + 1)[:n_cells]
    filled = np.flatnonzero(counts >= MIN_FILL * cell * cell / max(pixel_area, 1e-12))
    if filled.size == 0:
        return SkyCells(np.zeros(0, np.int64), np.zeros((channels, 0)), np.zeros((channels, 0)), cell, n_columns)
    rank = np.full(n_cells + 1, -1, dtype=np.intp)  # position of each filled cell in ``filled``, -1 elsewhere
    rank[filled] = np.arange(filled.size)
    lookup = rank[ids]
    keep = lookup >= 0
    lookup, values = lookup.compress(keep), values.compress(keep, axis=1)  # compress: faster than a mask index
    means = np.empty((channels, filled.size))
    fluxes = np.empty((channels, filled.size))
    pixels = np.bincount(lookup, minlength=filled.size)
    totals, sums = np.empty(filled.size), np.empty(filled.size)
    for c in range(channels):
        v = values[c]
        plain = np.bincount(lookup, v, filled.size)
        mean = plain / pixels
        if noise is not None:
            sigma = float(noise[c])
        else:
            sigma = 1.4826 * float(np.median(np.abs(v - mean[lookup])))
        for index in range(_CLIP_PASSES):
            # The plain mean sits above the sky where a star is bright: the first pass clips
            # only upwards, so that the sky pixels of such a cell survive it.
            low = -np.inf if index == 0 else -CLIP_LOW * sigma
            cell_clip_pass_cpu(v, lookup, mean, low, CLIP_HIGH * sigma, totals, sums)
        means[c] = mean
        fluxes[c] = plain - pixels * mean
    return SkyCells(filled.astype(np.int64), means, fluxes, cell, n_columns)


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
        :func:`~.background_solve.planes_in_frame_pixels` gives, or ``(C, 4)`` with the
        frame's gain last.

    Returns
    -------
    array
        ``image``, each channel ``gain * v - (offset + gx (x - xc) + gy (y - yc))`` (gain 1
        for a 3-term plane).
    """
    xp = array_namespace(image)
    channels, height, width = image.shape
    coefficients = np.asarray(plane, dtype=np.float64)
    coefficients = coefficients.reshape(-1, coefficients.shape[-1])
    if coefficients.shape[1] == 3:
        coefficients = np.concatenate([coefficients, np.ones((coefficients.shape[0], 1))], axis=1)
    if coefficients.shape[0] == 1 and channels > 1:
        coefficients = np.repeat(coefficients, channels, axis=0)
    if coefficients.shape[0] != channels:
        raise ValueError(f"the background plane holds {coefficients.shape[0]} channel(s), the window {channels}")
    dx = xp.asarray(np.arange(origin[1], origin[1] + width, dtype=np.float64) - centre[0], dtype=xp.float32)
    dy = xp.asarray(np.arange(origin[0], origin[0] + height, dtype=np.float64) - centre[1], dtype=xp.float32)
    for c in range(channels):
        # Python floats holding the float32 values: on a device array they stay scalars of its
        # namespace (a numpy scalar would hand the product to numpy), with float32 results.
        a, gx, gy, gain = (float(np.float32(v)) for v in coefficients[c])
        if gain != 1:
            image[c] *= gain
        image[c] -= (gy * dy)[:, None] + (gx * dx + a)[None, :]
    return image
