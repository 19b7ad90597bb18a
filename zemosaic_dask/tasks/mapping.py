"""Output-to-input pixel mappings with a bounded approximation error.

Computing the exact mapping of every output pixel through astropy (pixel -> world ->
pixel) dominates a reprojection's cost. Here the exact mapping is evaluated on a coarse
grid of nodes, checked at the cell centres, and refined until the bilinear interpolation
of the nodes stays below ``max_error_px`` everywhere it was checked; the dense mapping is
then interpolated in the caller's array namespace (numpy or cupy).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS

__all__ = ["CoarsePixelMap", "coarse_pixel_map", "exact_pixel_map", "interpolate_pixel_map"]


@dataclass(frozen=True)
class CoarsePixelMap:
    """Input-pixel coordinates of an output region sampled on a coarse node grid.

    Attributes
    ----------
    x, y : numpy.ndarray
        ``(ny, nx)`` input-frame pixel coordinates (0-based) at the nodes.
    step : int
        Node spacing in output pixels; node ``(i, j)`` is output pixel
        ``(y0 + i*step, x0 + j*step)`` relative to the region origin.
    shape : tuple of int
        ``(height, width)`` of the region.
    max_error : float
        Largest interpolation error measured at the check points, in input pixels.
    """

    x: np.ndarray
    y: np.ndarray
    step: int
    shape: tuple[int, int]
    max_error: float

    def bounds(self) -> tuple[float, float, float, float]:
        """Return ``(ymin, ymax, xmin, xmax)`` of the mapped input coordinates."""
        return float(self.y.min()), float(self.y.max()), float(self.x.min()), float(self.x.max())


def exact_pixel_map(out_wcs: WCS, in_wcs: WCS, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map output pixel coordinates to input pixel coordinates exactly (astropy).

    Parameters
    ----------
    out_wcs, in_wcs : astropy.wcs.WCS
        Celestial WCS of the output grid and of the input frame (SIP honoured).
    ys, xs : numpy.ndarray
        Output pixel coordinates (0-based), any matching shapes.

    Returns
    -------
    x_in, y_in : numpy.ndarray
        Input pixel coordinates (NaN where the transformation fails).
    """
    ra, dec = out_wcs.all_pix2world(xs, ys, 0)
    return _input_pixels(in_wcs, ra, dec)


def _input_pixels(in_wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input frame's pixel coordinates of sky positions (the second half of :func:`exact_pixel_map`)."""
    with np.errstate(invalid="ignore"):
        x_in, y_in = in_wcs.all_world2pix(ra, dec, 0, quiet=True)
    return np.asarray(x_in, dtype=np.float64), np.asarray(y_in, dtype=np.float64)


def _node_axis(length: int, step: int) -> np.ndarray:
    nodes = np.arange(0, length, step, dtype=np.float64)
    if nodes[-1] != length - 1:
        nodes = np.append(nodes, length - 1)
    return nodes


def _bilinear_weights(node_y: np.ndarray, node_x: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(iy, ix, iy1, ix1, ty, tx)``: the cells and fractions of points ``(qy, qx)`` among the nodes."""
    # An axis of one node (a region one pixel high or wide) interpolates along the other only.
    iy = np.clip(np.searchsorted(node_y, qy, side="right") - 1, 0, max(len(node_y) - 2, 0))
    ix = np.clip(np.searchsorted(node_x, qx, side="right") - 1, 0, max(len(node_x) - 2, 0))
    iy1, ix1 = np.minimum(iy + 1, len(node_y) - 1), np.minimum(ix + 1, len(node_x) - 1)
    ty = (qy - node_y[iy]) / np.maximum(node_y[iy1] - node_y[iy], 1.0)
    tx = (qx - node_x[ix]) / np.maximum(node_x[ix1] - node_x[ix], 1.0)
    return iy, ix, iy1, ix1, ty, tx


def _bilinear_at(values: np.ndarray, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    """Bilinear interpolation of node ``values`` at the points of :func:`_bilinear_weights`."""
    iy, ix, iy1, ix1, ty, tx = weights
    top = values[iy, ix] * (1 - tx) + values[iy, ix1] * tx
    bottom = values[iy1, ix] * (1 - tx) + values[iy1, ix1] * tx
    return top * (1 - ty) + bottom * ty


@dataclass(frozen=True)
class _OutputPoints:
    """What :func:`coarse_pixel_map` computes on the output side for one region and node step.

    It depends only on the output grid, the region and the step, so the frames of one region
    (every frame stacked on it calls the map with the same output WCS) share it.
    """

    nodes: tuple[int, int]
    ra: np.ndarray
    dec: np.ndarray
    check: tuple[np.ndarray, ...] | None


_points = threading.local()
#: Regions and steps whose points a thread keeps for its output WCS (a few KB each at the usual steps).
_POINTS_KEPT = 64


def _output_points(out_wcs: WCS, origin: tuple[int, int], shape: tuple[int, int], step: int) -> _OutputPoints:
    """The nodes (then the check points) of a region at ``step`` on the sky, kept for the output WCS last used.

    A thread keeps the points of its last output WCS object (the callers make one per region
    or band of rows and share it among the frames), for every region and step asked of it;
    an output WCS object is therefore not to be changed in place once used.
    """
    cached = getattr(_points, "cache", None)
    if cached is None or cached[0]() is not out_wcs:
        cached = _points.cache = (weakref.ref(out_wcs), {})
    key = (tuple(origin), tuple(shape), int(step))
    found = cached[1].get(key)
    if found is not None:
        return found
    y0, x0 = origin
    height, width = shape
    node_y, node_x = _node_axis(height, step), _node_axis(width, step)
    gy, gx = np.meshgrid(node_y + y0, node_x + x0, indexing="ij")
    if step == 1:
        ys, xs, check = gy.ravel(), gx.ravel(), None
    else:
        mid_y = np.concatenate([(node_y[:-1] + node_y[1:]) / 2, node_y])
        mid_x = np.concatenate([(node_x[:-1] + node_x[1:]) / 2, node_x])
        qy, qx = np.meshgrid(mid_y, mid_x, indexing="ij")
        keep = ~(np.isin(qy, node_y) & np.isin(qx, node_x))
        qy, qx = qy[keep], qx[keep]
        # Nodes and check points in one transformation (astropy's per-call cost dominates).
        ys, xs = np.concatenate([gy.ravel(), qy + y0]), np.concatenate([gx.ravel(), qx + x0])
        check = _bilinear_weights(node_y, node_x, qy, qx)
    ra, dec = out_wcs.all_pix2world(xs, ys, 0)
    if len(cached[1]) >= _POINTS_KEPT:  # an output WCS used for many regions keeps a bounded set
        cached[1].clear()
    found = cached[1][key] = _OutputPoints(gy.shape, ra, dec, check)
    return found


def coarse_pixel_map(
    out_wcs: WCS,
    in_wcs: WCS,
    origin: tuple[int, int],
    shape: tuple[int, int],
    *,
    max_error_px: float = 0.01,
    initial_step: int = 64,
) -> CoarsePixelMap:
    """Sample the exact mapping of an output region on the coarsest adequate node grid.

    The interpolation error is measured against the exact mapping at every cell centre
    and at the middle of every cell edge; the step halves until the largest error is
    below ``max_error_px`` (or the step reaches one pixel, which is exact).

    Parameters
    ----------
    out_wcs, in_wcs : astropy.wcs.WCS
        Output grid and input frame WCS.
    origin : tuple of int
        ``(y0, x0)`` of the region on the output grid.
    shape : tuple of int
        ``(height, width)`` of the region.
    max_error_px : float
        Largest accepted interpolation error in input pixels.
    initial_step : int
        First node spacing tried, in output pixels.
    """
    step = max(1, int(initial_step))
    while True:
        points = _output_points(out_wcs, origin, shape, step)
        all_x, all_y = _input_pixels(in_wcs, points.ra, points.dec)
        size = points.nodes[0] * points.nodes[1]
        map_x, map_y = all_x[:size].reshape(points.nodes), all_y[:size].reshape(points.nodes)
        if points.check is None:  # step 1: every pixel is a node
            return CoarsePixelMap(map_x, map_y, step, tuple(shape), 0.0)
        if not (np.all(np.isfinite(map_x)) and np.all(np.isfinite(map_y))):
            return CoarsePixelMap(map_x, map_y, step, tuple(shape), float("nan"))
        true_x, true_y = all_x[size:], all_y[size:]
        err_x = np.abs(_bilinear_at(map_x, points.check) - true_x)
        err_y = np.abs(_bilinear_at(map_y, points.check) - true_y)
        error = float(np.max(np.hypot(err_x, err_y))) if true_x.size else 0.0
        if error <= max_error_px:
            return CoarsePixelMap(map_x, map_y, step, tuple(shape), error)
        step = max(1, step // 2)


def interpolate_pixel_map(coarse: CoarsePixelMap, xp: Any, dtype: Any = None) -> tuple[Any, Any]:
    """Expand a coarse map to every pixel of its region, in namespace ``xp``.

    Returns
    -------
    x_in, y_in : array
        ``(height, width)`` input pixel coordinates (float64 unless ``dtype`` is given).
    """
    height, width = coarse.shape
    dtype = dtype or xp.float64
    node_y = _node_axis(height, coarse.step)
    node_x = _node_axis(width, coarse.step)
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    iy = np.clip(np.searchsorted(node_y, rows, side="right") - 1, 0, max(len(node_y) - 2, 0))
    ix = np.clip(np.searchsorted(node_x, cols, side="right") - 1, 0, max(len(node_x) - 2, 0))
    if len(node_y) == 1 or len(node_x) == 1:
        iy = np.zeros_like(iy) if len(node_y) == 1 else iy
        ix = np.zeros_like(ix) if len(node_x) == 1 else ix
    ty = (rows - node_y[iy]) / np.maximum(node_y[np.minimum(iy + 1, len(node_y) - 1)] - node_y[iy], 1.0)
    tx = (cols - node_x[ix]) / np.maximum(node_x[np.minimum(ix + 1, len(node_x) - 1)] - node_x[ix], 1.0)
    iy1 = np.minimum(iy + 1, len(node_y) - 1)
    ix1 = np.minimum(ix + 1, len(node_x) - 1)
    out = []
    for values in (coarse.x, coarse.y):
        v = xp.asarray(values, dtype=xp.float64)
        ty_d = xp.asarray(ty)[:, None]
        tx_d = xp.asarray(tx)[None, :]
        iy_d, iy1_d = xp.asarray(iy), xp.asarray(iy1)
        ix_d, ix1_d = xp.asarray(ix), xp.asarray(ix1)
        top = v[iy_d][:, ix_d] * (1 - tx_d) + v[iy_d][:, ix1_d] * tx_d
        bottom = v[iy1_d][:, ix_d] * (1 - tx_d) + v[iy1_d][:, ix1_d] * tx_d
        out.append((top * (1 - ty_d) + bottom * ty_d).astype(dtype))
    return out[0], out[1]
