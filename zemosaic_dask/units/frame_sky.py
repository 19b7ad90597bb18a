"""Measure one frame's large-scale sky on a worker: read, bin, clipped means on grid cells.

A Bayer frame is binned by colour straight from its raw pixels
(:func:`~zemosaic_dask.tasks.sky_blocks.measure_bayer_sky_cells`); any other frame is
prepared as for stacking (hot pixels fixed) and binned.
"""

from __future__ import annotations

import numpy as np
from astropy.wcs import WCS

from ..io.frames import read_frame_window
from ..plans.frames import FrameInfo
from ..tasks.background_solve import FrameAffine
from ..tasks.sky_blocks import SkyCells, measure_bayer_sky_cells, measure_sky_cells, sky_bin_factor
from .frame_window import FrameWindowOptions, frame_centre, prepare_window, thread_wcs

__all__ = ["frame_affine", "frame_centre", "measure_frame_sky"]


def frame_affine(frame: FrameInfo, grid_wcs: WCS) -> FrameAffine:
    """Affine fit of a frame's pixel -> grid pixel mapping from five points about its centre."""
    height, width = frame.shape
    xc, yc = frame_centre(frame)
    dx = np.array([0.0, width / 4.0, 0.0, -width / 4.0, 0.0])
    dy = np.array([0.0, 0.0, height / 4.0, 0.0, -height / 4.0])
    ra, dec = thread_wcs(frame.wcs_header).all_pix2world(xc + dx, yc + dy, 0)
    gx, gy = grid_wcs.all_world2pix(ra, dec, 0)
    design = np.column_stack([dx, dy, np.ones(5)])
    (mx0, mx1, x0), *_ = np.linalg.lstsq(design, gx, rcond=None)
    (my0, my1, y0), *_ = np.linalg.lstsq(design, gy, rcond=None)
    return FrameAffine((xc, yc), (float(x0), float(y0)), ((float(mx0), float(mx1)), (float(my0), float(my1))))


def measure_frame_sky(
    frame: FrameInfo,
    options: FrameWindowOptions,
    grid_header: str,
    grid_shape: tuple[int, int],
    cell: int,
    noise: tuple[float, ...] | None = None,
) -> tuple[SkyCells, FrameAffine]:
    """A whole frame's sky on the grid's cells.

    A Bayer frame whose cells bin it by an even factor (``cell`` >= 16) is binned by colour
    from its raw pixels, as the stacking units would see it demosaiced but without building
    the demosaiced frame; any other frame is prepared as for stacking (hot pixels fixed,
    demosaiced when it has to be) and then binned.

    Parameters
    ----------
    frame : FrameInfo
        The frame.
    options : FrameWindowOptions
        Frame preparation options (the same as the stacking units use).
    grid_header : str
        The global grid's WCS as a header string.
    grid_shape : tuple of int
        ``(height, width)`` of the grid.
    cell : int
        Cell side in grid pixels.
    noise : tuple of float, optional
        The session's typical raw pixel noise per channel, the unit of the clipping limits
        (see :func:`~zemosaic_dask.tasks.sky_blocks.measure_sky_cells`, which converts it to
        the noise of the demosaiced, binned pixels it clips).

    Returns
    -------
    tuple
        The frame's :class:`~zemosaic_dask.tasks.sky_blocks.SkyCells` and its
        :class:`~zemosaic_dask.tasks.background_solve.FrameAffine` onto the grid.
    """
    affine = frame_affine(frame, thread_wcs(grid_header))
    height, width = frame.shape
    raw = read_frame_window(frame, 0, height, 0, width)
    area = abs(float(np.linalg.det(np.asarray(affine.matrix))))
    if frame.layout == "bayer" and options.n_channels == 3 and sky_bin_factor(cell) % 2 == 0:
        cells = measure_bayer_sky_cells(
            raw, frame.bayer_pattern, affine.to_grid, cell, grid_shape, pixel_area=area, noise=noise
        )
        return cells, affine
    image, _ = prepare_window(raw, frame, options)
    pattern = frame.bayer_pattern if frame.layout == "bayer" else None
    cells = measure_sky_cells(
        image, affine.to_grid, cell, grid_shape, pixel_area=area, noise=noise, bayer_pattern=pattern
    )
    return cells, affine
