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
    "rasterize_polygons_spans",
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


#: Crossing candidates (edge x row pairs) handled at once by :func:`rasterize_polygons_spans`.
RASTER_CHUNK_CANDIDATES = 1 << 19


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
    return rasterize_polygons_spans([polygon_xy], cells)[0]


def rasterize_polygons_spans(polygons: Sequence[np.ndarray], cells: CoverageCells) -> list[np.ndarray]:
    """:func:`rasterize_polygon_spans` of many polygons at once.

    Every edge is intersected only with the raster rows it crosses (a frame's edges cross
    about twice its height in rows), for all polygons together in chunks of
    :data:`RASTER_CHUNK_CANDIDATES` edge-row pairs; the crossings are sorted by polygon, row
    and column and paired. The cost is thus about the rows the polygons span, whatever their
    area in cells.

    Parameters
    ----------
    polygons : sequence of numpy.ndarray
        ``(N, 2)`` vertices in 0-based grid pixels, each polygon with its own ``N``.
    cells : CoverageCells
        The raster.

    Returns
    -------
    list of numpy.ndarray
        One ``(K, 3)`` ``int64`` array of ``(row, start, stop)`` per polygon, as
        :func:`rasterize_polygon_spans` describes.
    """
    if not polygons:
        return []
    # In cell units a cell (j, i) spans [i, i + 1) x [j, j + 1); its centre is (i + 0.5, j + 0.5).
    scaled = [(np.asarray(p, dtype=float).reshape(-1, 2) + 0.5) / cells.cell_size for p in polygons]
    sizes = np.array([len(p) for p in scaled], dtype=np.int64)
    if sizes.sum() == 0:
        return [_centre_cell(p, cells) for p in scaled]
    ny = cells.shape[0]
    vertices = np.concatenate(scaled)
    owner = np.repeat(np.arange(len(scaled)), sizes)
    following = np.arange(len(vertices)) + 1
    ends = np.cumsum(sizes)
    following[ends[sizes > 0] - 1] = (ends - sizes)[sizes > 0]  # the last vertex closes on the first
    xa, ya = vertices[:, 0], vertices[:, 1]
    xb, yb = xa[following], ya[following]
    # Rows r whose centre r + 0.5 lies in [min(ya, yb), max(ya, yb)) are the edge's crossings; the
    # candidates add a row each side, and the crossing test below is the exact one.
    low, high = np.minimum(ya, yb), np.maximum(ya, yb)
    first_row = np.clip(np.floor(low) - 1, 0, ny).astype(np.int64)
    stop_row = np.clip(np.ceil(high) + 1, 0, ny).astype(np.int64)
    counts = np.where(ya != yb, stop_row - first_row, 0)
    per_polygon = np.bincount(owner, weights=counts, minlength=len(scaled))
    pieces: list[np.ndarray] = []
    start = 0
    bounds = np.concatenate([[0], ends])
    while start < len(scaled):
        # Whole polygons per chunk, at least one.
        total = np.cumsum(per_polygon[start:])
        stop = start + max(1, int(np.searchsorted(total, RASTER_CHUNK_CANDIDATES, side="right")))
        edges = np.arange(bounds[start], bounds[stop])
        pieces.append(_crossing_spans(edges, owner, first_row, counts, xa, ya, xb, yb, cells))
        start = stop
    spans = np.concatenate(pieces)
    split = np.searchsorted(spans[:, 0], np.arange(1, len(scaled)))
    out = []
    for index, block in enumerate(np.split(spans[:, 1:], split)):
        out.append(block if block.size else _centre_cell(scaled[index], cells))
    return out


def _crossing_spans(
    edges: np.ndarray,
    owner: np.ndarray,
    first_row: np.ndarray,
    counts: np.ndarray,
    xa: np.ndarray,
    ya: np.ndarray,
    xb: np.ndarray,
    yb: np.ndarray,
    cells: CoverageCells,
) -> np.ndarray:
    """``(polygon, row, start, stop)`` runs from the crossings of ``edges`` with their candidate rows."""
    nx = cells.shape[1]
    n = counts[edges]
    edge = np.repeat(edges, n)
    offsets = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    rows = np.repeat(first_row[edges], n) + offsets
    py = rows + 0.5
    e_ya, e_yb = ya[edge], yb[edge]
    crosses = (e_ya > py) != (e_yb > py)
    edge, rows, py = edge[crosses], rows[crosses], py[crosses]
    e_ya, e_yb = e_ya[crosses], e_yb[crosses]
    e_xa = xa[edge]
    along = (py - e_ya) / (e_yb - e_ya)  # in [0, 1]: the edge crosses the row
    x_cross = e_xa + along * (xb[edge] - e_xa)
    if x_cross.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    # Sort by (polygon, row) on one integer key, then by x within each group of crossings.
    key = owner[edge] * cells.shape[0] + rows
    order = np.argsort(key, kind="stable")
    key, x_cross = key[order], x_cross[order]
    group_start = np.ones(key.size, dtype=bool)
    group_start[1:] = key[1:] != key[:-1]
    heads = np.flatnonzero(group_start)
    lengths = np.diff(np.append(heads, key.size))
    pair_heads = heads[lengths == 2]  # the common case: a convex outline crosses a row twice
    low, high = x_cross[pair_heads], x_cross[pair_heads + 1]
    x_cross[pair_heads], x_cross[pair_heads + 1] = np.minimum(low, high), np.maximum(low, high)
    crowded = np.flatnonzero(np.repeat(lengths > 2, lengths))
    if crowded.size:
        x_cross[crowded] = x_cross[crowded[np.lexsort((x_cross[crowded], key[crowded]))]]
    # Crossings of one (polygon, row): a centre is inside between the 2k-th and (2k+1)-th, i + 0.5 in [c0, c1).
    rank = np.arange(key.size) - np.repeat(heads, lengths)
    paired = (rank % 2 == 0) & (rank + 1 < np.repeat(lengths - lengths % 2, lengths))
    left = np.flatnonzero(paired)
    starts = np.clip(np.ceil(x_cross[left] - 0.5), 0, nx)
    stops = np.clip(np.ceil(x_cross[left + 1] - 0.5), 0, nx)
    keep = stops > starts
    polygon, row = np.divmod(key[left][keep], cells.shape[0])
    return np.column_stack([polygon, row, starts[keep].astype(np.int64), stops[keep].astype(np.int64)])


def _centre_cell(poly: np.ndarray, cells: CoverageCells) -> np.ndarray:
    """The cell under the vertex mean of a polygon (in cell units) that holds no cell centre, if on the raster."""
    ny, nx = cells.shape
    if len(poly):
        cx, cy = poly.mean(axis=0)
        ci, cj = math.floor(cx), math.floor(cy)
        if 0 <= ci < nx and 0 <= cj < ny:
            return np.array([[cj, ci, ci + 1]], dtype=np.int64)
    return np.zeros((0, 3), dtype=np.int64)


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
