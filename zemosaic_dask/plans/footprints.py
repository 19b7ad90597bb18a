"""Frame footprints on the output grid: polygons, boxes and a coarse coverage raster.

The coarse raster (at most 512 x 512 cells over the global grid) is what the SDS planner
uses to measure how much of the field a batch covers. Footprints are the frames' border
polygons (:meth:`FrameInfo.footprint_world`) projected with the grid's WCS; numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS, NoConvergence

from ..errors import PlanError
from .frames import FrameInfo
from .grid import OutputGrid

__all__ = [
    "CoverageCells",
    "batch_bboxes",
    "coverage_cells_for_grid",
    "frame_footprint_pixels",
    "frame_footprints_pixels",
    "rasterize_polygon",
    "rasterize_polygon_spans",
    "spans_to_cells",
]

#: Largest coverage raster side, in cells.
MAX_COVERAGE_CELLS = 512


@dataclass(frozen=True)
class CoverageCells:
    """A coarse raster of square cells over the output grid.

    Attributes
    ----------
    shape : tuple of int
        ``(ny, nx)`` cells.
    cell_size : int
        Side of a cell in grid pixels.
    """

    shape: tuple[int, int]
    cell_size: int

    @property
    def size(self) -> int:
        """Number of cells."""
        return self.shape[0] * self.shape[1]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {"shape": list(self.shape), "cell_size": self.cell_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CoverageCells:
        """Build a raster description from :meth:`to_dict` output."""
        return cls((int(data["shape"][0]), int(data["shape"][1])), int(data["cell_size"]))


def coverage_cells_for_grid(grid: OutputGrid, max_cells: int = MAX_COVERAGE_CELLS) -> CoverageCells:
    """Return the coarse raster (square cells, at most ``max_cells`` per side) covering ``grid``.

    Raises
    ------
    PlanError
        ``coverage grid invalid`` when the grid has no pixels or a non-finite WCS.
    """
    height, width = (int(v) for v in grid.shape)
    if height <= 0 or width <= 0 or max_cells < 1:
        raise PlanError(
            f"coverage grid invalid: output grid shape {grid.shape} has no pixels", reason="coverage grid invalid"
        )
    numbers = (*grid.crval, *grid.crpix, grid.pixel_scale)
    if not (all(math.isfinite(v) for v in numbers) and grid.pixel_scale > 0):
        raise PlanError(
            f"coverage grid invalid: crval={grid.crval}, crpix={grid.crpix}, pixel_scale={grid.pixel_scale}; "
            "the output grid needs finite values and a positive scale",
            reason="coverage grid invalid",
        )
    cell = max(1, math.ceil(max(height, width) / max_cells))
    return CoverageCells((math.ceil(height / cell), math.ceil(width / cell)), cell)


def frame_footprint_pixels(frame: FrameInfo, grid: OutputGrid, wcs: WCS | None = None) -> np.ndarray | None:
    """Return the frame's border polygon as ``(N, 2)`` 0-based ``(x, y)`` grid pixels, or None.

    Parameters
    ----------
    frame : FrameInfo
        The frame.
    grid : OutputGrid
        The output grid.
    wcs : astropy.wcs.WCS, optional
        ``grid.wcs`` computed once by the caller (saves rebuilding it per frame).

    Returns
    -------
    numpy.ndarray or None
        None when the frame's WCS cannot be parsed, is not celestial or does not project finitely.
    """
    try:
        if not frame.sky_border and not frame.wcs.has_celestial:
            return None
        world = frame.footprint_world()
        target = wcs if wcs is not None else grid.wcs
        x, y = target.all_world2pix(world[:, 0], world[:, 1], 0)
    except (ValueError, KeyError, NoConvergence):
        return None
    polygon = np.column_stack([x, y])
    if not np.all(np.isfinite(polygon)):
        return None
    return polygon


def frame_footprints_pixels(frames: Sequence[FrameInfo], grid: OutputGrid) -> list[np.ndarray | None]:
    """:func:`frame_footprint_pixels` of every frame, projecting all stored borders in one call.

    Frames whose sky border was stored by ingest are projected together (one
    ``all_world2pix`` on the stacked points, which gives the same numbers point by point);
    any other frame goes through :func:`frame_footprint_pixels` alone.
    """
    polygons: list[np.ndarray | None] = [None] * len(frames)
    stored = [k for k, f in enumerate(frames) if f.sky_border]
    if stored:
        borders = [np.asarray(frames[k].sky_border, dtype=float).reshape(-1, 2) for k in stored]
        world = np.concatenate(borders)
        try:
            x, y = grid.projection().all_world2pix(world[:, 0], world[:, 1], 0)
        except (ValueError, KeyError, NoConvergence):  # some frame fails: project each alone
            return [frame_footprint_pixels(f, grid, grid.projection()) for f in frames]
        points = np.column_stack([x, y])
        bounds = np.cumsum([0] + [len(b) for b in borders])
        for k, start, stop in zip(stored, bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            polygon = points[start:stop]
            polygons[k] = polygon if np.all(np.isfinite(polygon)) else None
    wcs = grid.projection()
    for k, frame in enumerate(frames):
        if not frame.sky_border:
            polygons[k] = frame_footprint_pixels(frame, grid, wcs)
    return polygons


def rasterize_polygon_spans(polygon_xy: np.ndarray, cells: CoverageCells) -> np.ndarray:
    """Return the runs of cells whose centre lies inside the polygon (even-odd rule).

    A polygon that contains no cell centre but whose vertex mean falls on the raster marks
    that one cell, so a small frame never vanishes.

    Parameters
    ----------
    polygon_xy : numpy.ndarray
        ``(N, 2)`` vertices in 0-based grid pixels.
    cells : CoverageCells
        The raster.

    Returns
    -------
    numpy.ndarray
        ``(K, 3)`` ``int64`` rows of ``(row, start, stop)``: cells ``start <= i < stop`` of
        that row, ordered by row then column.
    """
    # In cell units a cell (j, i) spans [i, i + 1) x [j, j + 1); its centre is (i + 0.5, j + 0.5).
    poly = (np.asarray(polygon_xy, dtype=float) + 0.5) / cells.cell_size
    ny, nx = cells.shape
    j0, j1 = max(0, math.floor(poly[:, 1].min())), min(ny - 1, math.ceil(poly[:, 1].max()))
    spans = np.zeros((0, 3), dtype=np.int64)
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    sloped = ya != yb
    xa, ya, xb, yb = xa[sloped], ya[sloped], xb[sloped], yb[sloped]
    if j0 <= j1 and xa.size >= 2:
        rows = np.arange(j0, j1 + 1)
        py = rows[:, None] + 0.5
        crosses = (ya > py) != (yb > py)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            along = (py - ya) / (yb - ya)  # in [0, 1] wherever the edge crosses the row
            x_cross = np.where(crosses, xa + along * (xb - xa), np.inf)
        x_cross.sort(axis=1)
        pairs = x_cross.shape[1] // 2
        # A centre is inside between the 2k-th and (2k+1)-th crossing: i + 0.5 in [c0, c1).
        starts = np.ceil(x_cross[:, 0 : 2 * pairs : 2] - 0.5)
        stops = np.ceil(x_cross[:, 1 : 2 * pairs : 2] - 0.5)
        valid = np.arange(pairs)[None, :] < (crosses.sum(axis=1) // 2)[:, None]
        starts, stops = np.clip(starts, 0, nx), np.clip(stops, 0, nx)
        valid &= stops > starts
        row_index = np.broadcast_to(rows[:, None], starts.shape)
        spans = np.column_stack([row_index[valid], starts[valid], stops[valid]]).astype(np.int64)
    if spans.size == 0:
        cx, cy = poly.mean(axis=0)
        ci, cj = math.floor(cx), math.floor(cy)
        if 0 <= ci < nx and 0 <= cj < ny:
            spans = np.array([[cj, ci, ci + 1]], dtype=np.int64)
    return spans


def spans_to_cells(spans: np.ndarray, n_columns: int) -> np.ndarray:
    """Expand ``(row, start, stop)`` runs into flat cell indices of a raster with ``n_columns`` columns."""
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    lengths = spans[:, 2] - spans[:, 1]
    base = spans[:, 0] * n_columns + spans[:, 1] - (np.cumsum(lengths) - lengths)
    return np.repeat(base, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def rasterize_polygon(polygon_xy: np.ndarray, cells: CoverageCells) -> np.ndarray:
    """Return the sorted flat indices of the cells whose centre lies inside the polygon.

    See :func:`rasterize_polygon_spans`; this expands its runs into ``int64`` indices
    into ``cells.shape``.
    """
    return spans_to_cells(rasterize_polygon_spans(polygon_xy, cells), cells.shape[1])


def batch_bboxes(
    frames: Sequence[FrameInfo], grid: OutputGrid, batches: Sequence[Sequence[int]]
) -> list[tuple[float, float, float, float] | None]:
    """Return each batch's ``(ymin, ymax, xmin, xmax)`` in grid pixels (None when no frame projects).

    Used to draw batch footprints and to restrict a batch's work to the regions it touches.
    """
    polygons = frame_footprints_pixels(frames, grid)
    boxes: list[tuple[float, float, float, float] | None] = []
    for batch in batches:
        points = [polygons[i] for i in batch if polygons[i] is not None]
        if not points:
            boxes.append(None)
            continue
        stacked = np.concatenate(points)
        boxes.append(
            (
                float(stacked[:, 1].min()),
                float(stacked[:, 1].max()),
                float(stacked[:, 0].min()),
                float(stacked[:, 0].max()),
            )
        )
    return boxes
