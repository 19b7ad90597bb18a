"""One global background model: an offset and a plane per frame, solved jointly from all overlaps.

Each frame ``k`` carries an additive background ``Q_k(X, Y) = a_k + b_k (X - Xc_k) / L +
c_k (Y - Yc_k) / L`` in the global grid's pixel coordinates (``(Xc_k, Yc_k)`` is the frame
centre on the grid, ``L`` a fixed length that keeps the unknowns of similar size). Where
frames ``i`` and ``j`` overlap, their large-scale skies, measured on the same grid cells
(:mod:`.sky_blocks`), must agree once the models are removed::

    s_i(P) - Q_i(P) = s_j(P) - Q_j(P)   for every overlap point P

which is a sparse linear system in the ``3 N`` unknowns per channel, solved by robust
(iteratively reweighted) least squares.

Differences between frames cannot see what every frame shares: one offset and one plane
over the whole field (the null space). The gauge fixes it so that

- the models add no net offset (``sum_k a_k = 0``): the mosaic keeps the frames' mean sky
  level, nothing is subtracted from the linear product;
- the models' mean gradient equals the frames' mean observed gradient: a gradient that
  every frame shows (light pollution fixed to the detector, a moonlit sky) is removed, so
  the sky is flat across the mosaic, while emission that varies across the field in
  different directions in different frames (a galaxy halo larger than a frame) is common to
  overlapping frames and kept.

A group of frames that overlaps no other group is gauged on its own. Pure numpy/scipy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import bmat, coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from .sky_blocks import SkyCells

__all__ = [
    "BACKGROUND_MODELS",
    "BackgroundSolution",
    "FrameAffine",
    "PairPoints",
    "frame_gradients",
    "pair_points",
    "planes_in_frame_pixels",
    "solve_background_planes",
]

log = logging.getLogger(__name__)

BACKGROUND_MODELS = ("none", "offset", "plane")
#: Length (grid pixels) that scales the plane terms.
PLANE_LENGTH = 1000.0
#: Cauchy constant of the robust weights, in robust sigmas of the residuals.
ROBUST_C = 3.0
_RIDGE = 1e-9


@dataclass(frozen=True)
class FrameAffine:
    """Affine approximation of a frame's pixel -> grid pixel mapping about its centre.

    ``(X, Y) = (Xc, Yc) + matrix @ (x - xc, y - yc)``, exact to a small fraction of a pixel
    over a Seestar frame for TAN projections.
    """

    centre: tuple[float, float]
    grid_centre: tuple[float, float]
    matrix: tuple[tuple[float, float], tuple[float, float]]

    def to_grid(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid pixel coordinates of frame pixel positions."""
        m = np.asarray(self.matrix, dtype=np.float64)
        dx, dy = np.asarray(x) - self.centre[0], np.asarray(y) - self.centre[1]
        return self.grid_centre[0] + m[0, 0] * dx + m[0, 1] * dy, self.grid_centre[1] + m[1, 0] * dx + m[1, 1] * dy

    def to_frame(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame pixel coordinates of grid pixel positions."""
        inv = np.linalg.inv(np.asarray(self.matrix, dtype=np.float64))
        dx, dy = np.asarray(gx) - self.grid_centre[0], np.asarray(gy) - self.grid_centre[1]
        return self.centre[0] + inv[0, 0] * dx + inv[0, 1] * dy, self.centre[1] + inv[1, 0] * dx + inv[1, 1] * dy


@dataclass(frozen=True)
class PairPoints:
    """Overlap points of frames ``i`` and ``j``: grid positions and sky differences ``s_i - s_j``."""

    i: int
    j: int
    x: np.ndarray
    y: np.ndarray
    difference: np.ndarray  # (C, N)

    @property
    def size(self) -> int:
        """Number of points."""
        return int(self.x.size)


@dataclass(frozen=True)
class BackgroundSolution:
    """The solved models and how well the overlaps agree.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``(N, C, 3)``: ``a, b, c`` of every frame and channel in grid coordinates
        (``b, c`` per :data:`PLANE_LENGTH` grid pixels).
    rms_before, rms_after : numpy.ndarray
        ``(C,)`` robust rms (1.4826 MAD) of the overlap differences before and after.
    points : int
        Overlap points used.
    groups : int
        Groups of frames connected by overlaps (each gauged on its own).
    """

    coefficients: np.ndarray
    rms_before: np.ndarray
    rms_after: np.ndarray
    points: int
    groups: int


def pair_points(
    cells_i: SkyCells, cells_j: SkyCells, *, max_points: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Sky differences ``s_i - s_j`` of two frames on the grid cells both fill.

    Returns ``(X, Y, differences)`` with grid-pixel cell centres and ``(C, N)``
    differences, at most ``max_points`` cells spread evenly over the overlap, or None when
    they share no cell.
    """
    common, index_i, index_j = np.intersect1d(cells_i.ids, cells_j.ids, assume_unique=True, return_indices=True)
    usable = np.all(np.isfinite(cells_i.values[:, index_i]), axis=0) & np.all(
        np.isfinite(cells_j.values[:, index_j]), axis=0
    )
    pick = np.flatnonzero(usable)
    if pick.size == 0:
        return None
    if pick.size > max_points:
        pick = pick[np.linspace(0, pick.size - 1, max_points).round().astype(np.int64)]
    gx, gy = cells_i.centres(common[pick])
    return gx, gy, cells_i.values[:, index_i[pick]] - cells_j.values[:, index_j[pick]]


def frame_gradients(cells: Sequence[SkyCells], affines: Sequence[FrameAffine]) -> np.ndarray:
    """Each frame's own sky plane in grid coordinates: ``(N, C, 2)`` ``b, c`` per :data:`PLANE_LENGTH`.

    A robust (one reweighting pass) least-squares plane through the cell values; zeros
    for a frame with fewer than 3 usable cells.
    """
    out = []
    for sky, affine in zip(cells, affines, strict=True):
        gx, gy = sky.centres()
        u = (gx - affine.grid_centre[0]) / PLANE_LENGTH
        v = (gy - affine.grid_centre[1]) / PLANE_LENGTH
        rows = []
        for values in np.asarray(sky.values, dtype=np.float64):
            ok = np.isfinite(values)
            if ok.sum() < 3:
                rows.append((0.0, 0.0))
                continue
            design = np.column_stack([np.ones(ok.sum()), u[ok], v[ok]])
            weights = np.ones(ok.sum())
            for _ in range(2):
                coef, *_ = np.linalg.lstsq(design * weights[:, None], values[ok] * weights, rcond=None)
                residual = values[ok] - design @ coef
                weights = np.sqrt(_cauchy(residual))
            rows.append((float(coef[1]), float(coef[2])))
        out.append(rows if rows else [(0.0, 0.0)])
    return np.asarray(out, dtype=np.float64)


def _robust_sigma(residual: np.ndarray) -> float:
    if residual.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def _cauchy(residual: np.ndarray) -> np.ndarray:
    sigma = _robust_sigma(residual)
    if sigma <= 0:
        return np.ones_like(residual)
    return 1.0 / (1.0 + (residual / (ROBUST_C * sigma)) ** 2)


def _design(pairs: Sequence[PairPoints], centres: np.ndarray, n_frames: int, terms: int) -> csr_matrix:
    """Rows ``Q_i(P) - Q_j(P)`` of every overlap point, columns ``terms`` per frame."""
    rows, cols, vals = [], [], []
    start = 0
    for pair in pairs:
        n = pair.size
        index = np.arange(start, start + n)
        for frame, sign in ((pair.i, 1.0), (pair.j, -1.0)):
            basis = [np.ones(n)]
            if terms == 3:
                basis += [(pair.x - centres[frame, 0]) / PLANE_LENGTH, (pair.y - centres[frame, 1]) / PLANE_LENGTH]
            for t, column in enumerate(basis):
                rows.append(index)
                cols.append(np.full(n, frame * terms + t))
                vals.append(sign * column)
        start += n
    if not rows:
        return csr_matrix((0, n_frames * terms))
    return coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(start, n_frames * terms)
    ).tocsr()


def _gauge(labels: np.ndarray, groups: int, terms: int, observed: np.ndarray) -> tuple[csr_matrix, np.ndarray]:
    """Constraint rows: per group, sum of offsets 0 and (planes) sum of gradients = sum of observed."""
    n_frames = labels.size
    rows, cols, vals, rhs = [], [], [], []
    for group in range(groups):
        members = np.flatnonzero(labels == group)
        for t in range(terms):
            row = group * terms + t
            rows.append(np.full(members.size, row))
            cols.append(members * terms + t)
            vals.append(np.ones(members.size))
            rhs.append(0.0 if t == 0 else float(np.sum(observed[members, t - 1])))
    matrix = coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(groups * terms, n_frames * terms)
    ).tocsr()
    return matrix, np.asarray(rhs)


def solve_background_planes(
    n_frames: int,
    pairs: Sequence[PairPoints],
    centres: np.ndarray,
    observed: np.ndarray,
    *,
    model: str = "plane",
    iterations: int = 5,
) -> BackgroundSolution:
    """Solve every frame's offset and plane from the overlap differences, one channel at a time.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    pairs : sequence of PairPoints
        Overlap points of the overlapping pairs.
    centres : numpy.ndarray
        ``(N, 2)`` grid ``(X, Y)`` of every frame centre.
    observed : numpy.ndarray
        ``(N, C, 2)`` each frame's own sky gradient (:func:`frame_gradients`), for the gauge.
    model : {"offset", "plane"}
        An offset per frame, or an offset and a plane.
    iterations : int
        Robust reweighting passes (>= 1).

    Returns
    -------
    BackgroundSolution
    """
    if model not in ("offset", "plane"):
        raise ValueError(f"model must be 'offset' or 'plane', got {model!r} (set zemosaic.background.model)")
    terms = 3 if model == "plane" else 1
    channels = observed.shape[1]
    centres = np.asarray(centres, dtype=np.float64)
    pairs = [p for p in pairs if p.size]
    graph = coo_matrix((np.ones(len(pairs)), ([p.i for p in pairs], [p.j for p in pairs])), shape=(n_frames, n_frames))
    groups, labels = connected_components(graph, directed=False)
    design = _design(pairs, centres, n_frames, terms)
    differences = np.concatenate([p.difference for p in pairs], axis=1) if pairs else np.zeros((channels, 0))
    coefficients = np.zeros((n_frames, channels, 3))
    before, after = np.zeros(channels), np.zeros(channels)
    ridge = _RIDGE * max(1.0, design.shape[0]) * _identity(n_frames * terms)
    for c in range(channels):
        gauge, rhs = _gauge(labels, groups, terms, observed[:, c, :])
        d = differences[c]
        weights = np.ones(d.size)
        x = np.zeros(n_frames * terms)
        for _ in range(max(1, int(iterations))):
            weighted = design.multiply(weights[:, None]).tocsr() if d.size else design
            normal = (design.T @ weighted) + ridge
            kkt = bmat([[normal, gauge.T], [gauge, None]], format="csc")
            solution = spsolve(kkt, np.concatenate([design.T @ (weights * d), rhs]))
            x = np.asarray(solution[: n_frames * terms])
            weights = _cauchy(d - design @ x) if d.size else weights
        coefficients[:, c, :terms] = x.reshape(n_frames, terms)
        before[c] = _robust_sigma(d)
        after[c] = _robust_sigma(d - design @ x) if d.size else 0.0
    log.info(
        "[Background] %s model of %d frame(s) from %d overlap point(s) in %d group(s); overlap rms %s -> %s ADU",
        model,
        n_frames,
        differences.shape[1],
        groups,
        np.round(before, 2).tolist(),
        np.round(after, 2).tolist(),
    )
    return BackgroundSolution(coefficients, before, after, int(differences.shape[1]), int(groups))


def _identity(n: int) -> csr_matrix:
    index = np.arange(n)
    return coo_matrix((np.ones(n), (index, index)), shape=(n, n)).tocsr()


def planes_in_frame_pixels(solution: BackgroundSolution, affines: Sequence[FrameAffine]) -> np.ndarray:
    """The models in each frame's own pixels: ``(N, C, 3)`` offset at the frame centre, d/dx, d/dy.

    The background of frame ``k`` at its pixel ``(x, y)`` is
    ``offset + gx * (x - xc) + gy * (y - yc)`` with ``(xc, yc)`` = ``affines[k].centre``.
    """
    out = np.zeros_like(solution.coefficients)
    for k, affine in enumerate(affines):
        m = np.asarray(affine.matrix, dtype=np.float64)
        a, b, c = (solution.coefficients[k, :, t] for t in range(3))
        out[k, :, 0] = a
        out[k, :, 1] = (b * m[0, 0] + c * m[1, 0]) / PLANE_LENGTH
        out[k, :, 2] = (b * m[0, 1] + c * m[1, 1]) / PLANE_LENGTH
    return out
