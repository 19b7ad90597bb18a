"""One global background model: an offset and a plane per frame, solved jointly from all overlaps.

Each frame ``k`` carries an additive background ``Q_k(X, Y) = a_k + b_k (X - Xc_k) / L +
c_k (Y - Yc_k) / L`` in the global grid's pixel coordinates (``(Xc_k, Yc_k)`` is the frame
centre on the grid, ``L`` a fixed length that keeps the unknowns of similar size). Where
frames ``i`` and ``j`` overlap, their large-scale skies, measured on the same grid cells
(:mod:`.sky_blocks`), must agree once the models are removed::

    s_i(P) - Q_i(P) = s_j(P) - Q_j(P)   for every overlap point P

Since ``Q_i - Q_j`` is itself a plane, a pair's points say no more to the solve than a robust
plane fitted through their differences (:func:`summarise_pair`): with the fit's weights
``w`` and basis ``q = (1, x, y)`` about the pair's centroid, the point-level least squares
``sum_P w (d_P - q_P . beta)^2`` equals the fit's own residual plus
``(beta - beta_hat)^T M (beta - beta_hat)`` with ``M = sum_P w q q^T``. Each pair is thus
reduced, where it is measured, to ``beta_hat`` and a square root of ``M`` (3 numbers and 3
rows per channel, whatever the number of points), and the global solve has 3 rows per pair:
a sparse system in the ``3 N`` unknowns per channel whose size grows with the pairs, not with
the points. Stars, trails and hot cells are set aside by the pair's robust fit; a pair whose
plane disagrees with the others (a cloud in one frame) by reweighting the pairs.

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
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csc_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import LinearOperator, cg

from .sky_blocks import SkyCells

__all__ = [
    "BACKGROUND_MODELS",
    "BackgroundSolution",
    "FrameAffine",
    "PairSummary",
    "frame_gradients",
    "overlap_scale",
    "pair_points",
    "planes_in_frame_pixels",
    "solve_background_planes",
    "summarise_pair",
]

log = logging.getLogger(__name__)

BACKGROUND_MODELS = ("none", "offset", "plane")
#: Length (grid pixels) that scales the plane terms.
PLANE_LENGTH = 1000.0
#: Cauchy constant of the robust weights, in robust sigmas of the residuals.
ROBUST_C = 3.0
#: A pair's points are reweighted only when it has at least this many (a robust sigma needs them).
MIN_ROBUST_POINTS = 8
_RIDGE = 1e-12
_CG_TOLERANCE, _CG_MAX_ITER = 1e-10, 400
#: Frames per cluster of the solve's coarse correction, and the most clusters (a deep session's
#: clusters all overlap, so its coarse system is dense: its size must not grow with the frames).
_CLUSTER_FRAMES, _MAX_CLUSTERS = 16, 1024
#: Weight of a frame's own gradient as a prior on its plane, in typical slope information of a frame.
SLOPE_PRIOR = 1e-6
_EIGEN_FLOOR = 1e-10


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
class PairSummary:
    """What the overlap of frames ``i`` and ``j`` tells the solve: a robust plane of ``s_i - s_j``.

    Attributes
    ----------
    i, j : int
        Frame indices.
    centre : tuple of float
        Grid ``(X, Y)`` the plane is written about (the centroid of the overlap points).
    root : numpy.ndarray
        ``(C, T, T)`` ``R`` with ``R^T R = M = sum_P w q q^T`` (``T`` = 3 for a plane, 1 for
        an offset; ``q = (1, (X - Xc) / L, (Y - Yc) / L)``).
    target : numpy.ndarray
        ``(C, T)`` ``R beta_hat``: the fitted plane of the differences, seen through ``R``.
    weight : numpy.ndarray
        ``(C,)`` sum of the points' robust weights.
    residual : numpy.ndarray
        ``(C,)`` weighted sum of the squared point residuals about the fitted plane.
    spread : numpy.ndarray
        ``(C,)`` robust sigma (1.4826 MAD) of the point residuals about the fitted plane.
    points : int
        Overlap points measured.
    """

    i: int
    j: int
    centre: tuple[float, float]
    root: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    residual: np.ndarray
    spread: np.ndarray
    points: int


@dataclass(frozen=True)
class BackgroundSolution:
    """The solved models and how well the overlaps agree.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``(N, C, 3)``: ``a, b, c`` of every frame and channel in grid coordinates
        (``b, c`` per :data:`PLANE_LENGTH` grid pixels).
    rms_before, rms_after : numpy.ndarray
        ``(C,)`` typical rms of a pair's overlap differences before and after (the median
        over pairs of the robust point scatter about the pair's plane and the plane's own
        rms over the points, added in quadrature).
    points : int
        Overlap points used.
    groups : int
        Groups of frames connected by overlaps (each gauged on its own).
    pairs : int
        Overlapping pairs used.
    iterations : int
        Conjugate-gradient iterations of all the solves.
    direct : int
        Solves made by sparse factorisation (after an iteration that did not converge).
    """

    coefficients: np.ndarray
    rms_before: np.ndarray
    rms_after: np.ndarray
    points: int
    groups: int
    pairs: int = 0
    iterations: int = 0
    direct: int = 0


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


def _terms(model: str) -> int:
    if model not in ("offset", "plane"):
        raise ValueError(f"model must be 'offset' or 'plane', got {model!r} (set zemosaic.background.model)")
    return 3 if model == "plane" else 1


def _psd_root(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, P)`` of a stack of PSD matrices: ``R^T R = M`` and ``P`` its pseudo-inverse."""
    values, vectors = np.linalg.eigh(matrix)
    floor = _EIGEN_FLOOR * np.maximum(values[..., -1:], 0.0)
    kept = values > np.maximum(floor, 0.0)
    safe = np.where(kept, values, 1.0)
    root = np.swapaxes(vectors * np.where(kept, np.sqrt(safe), 0.0)[..., None, :], -1, -2)
    inverse = (vectors * np.where(kept, 1.0 / safe, 0.0)[..., None, :]) @ np.swapaxes(vectors, -1, -2)
    return root, inverse


def _pair_basis(gx: np.ndarray, gy: np.ndarray, terms: int) -> tuple[tuple[float, float], np.ndarray]:
    centre = (float(gx.mean()), float(gy.mean()))
    basis = np.column_stack([np.ones(gx.size), (gx - centre[0]) / PLANE_LENGTH, (gy - centre[1]) / PLANE_LENGTH])
    return centre, basis[:, :terms]


def _robust_plane(
    basis: np.ndarray, difference: np.ndarray, iterations: int, scale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Iteratively reweighted plane fit of ``(C, n)`` differences: ``(root, fitted, residual, weights)``.

    Cauchy weights in units of ``scale`` (per channel) or, without one, of the residuals' own
    robust sigma (only with :data:`MIN_ROBUST_POINTS` points or more).
    """
    n = basis.shape[0]
    robust = n > basis.shape[1] and (scale is not None or n >= MIN_ROBUST_POINTS)
    passes = max(1, int(iterations)) if robust else 1
    weights = np.ones_like(difference)
    for index in range(passes):
        weighted = np.swapaxes(weights[:, :, None] * basis[None], 1, 2)  # (C, T, n)
        root, inverse = _psd_root(weighted @ basis)
        fitted = (inverse @ (weighted @ difference[:, :, None]))[:, :, 0]
        residual = difference - fitted @ basis.T
        if index + 1 < passes:
            if scale is None:
                weights = np.stack([_cauchy(r) for r in residual])
            else:
                limit = ROBUST_C * np.maximum(np.asarray(scale, dtype=np.float64), 1e-12)[:, None]
                weights = 1.0 / (1.0 + (residual / limit) ** 2)
    return root, fitted, residual, weights


def overlap_scale(
    cells: Sequence[SkyCells],
    overlaps: Sequence[tuple[int, int]],
    *,
    model: str = "plane",
    max_points: int = 400,
    sample: int = 256,
) -> np.ndarray | None:
    """Typical scatter ``(C,)`` of overlap differences about their pair's plane (robust, pooled).

    Measured on up to ``sample`` pairs spread over ``overlaps``: each pair's residuals about a
    least-squares plane (scaled for the fitted terms), pooled, and 1.4826 x their median
    absolute deviation. None when no pair has more points than terms.
    """
    terms = _terms(model)
    if not overlaps:
        return None
    picks = np.unique(np.linspace(0, len(overlaps) - 1, min(sample, len(overlaps))).round().astype(np.int64))
    pooled = []
    for index in picks:
        i, j = overlaps[int(index)]
        found = pair_points(cells[i], cells[j], max_points=max_points)
        if found is None or found[0].size <= terms:
            continue
        _, basis = _pair_basis(found[0], found[1], terms)
        _, _, residual, _ = _robust_plane(basis, np.asarray(found[2], dtype=np.float64), 1, None)
        pooled.append(residual * np.sqrt(basis.shape[0] / (basis.shape[0] - terms)))
    if not pooled:
        return None
    residuals = np.concatenate(pooled, axis=1)
    return np.array([_robust_sigma(r) for r in residuals])


def summarise_pair(
    i: int,
    j: int,
    cells_i: SkyCells,
    cells_j: SkyCells,
    *,
    model: str = "plane",
    max_points: int = 400,
    iterations: int = 5,
    scale: np.ndarray | None = None,
) -> PairSummary | None:
    """Reduce the overlap of two frames to a robust plane of their sky differences.

    Parameters
    ----------
    i, j : int
        Frame indices (recorded in the summary).
    cells_i, cells_j : SkyCells
        The frames' cell skies on the same grid.
    model : {"offset", "plane"}
        Fit a constant or a plane through the differences (the difference of two frames'
        models is of the same kind).
    max_points : int
        Overlap cells used at most, spread evenly (:func:`pair_points`).
    iterations : int
        Fits, each reweighting the points by a Cauchy function of the previous residuals.
    scale : numpy.ndarray, optional
        ``(C,)`` the residual scale of the Cauchy weights (:func:`overlap_scale`), the same
        for every pair, so that a pair of a few points rejects a star or trail as a large
        one does. Without it, each pair's own robust sigma, and only for pairs of
        :data:`MIN_ROBUST_POINTS` points or more.

    Returns
    -------
    PairSummary or None
        None when the frames share no usable cell.
    """
    terms = _terms(model)
    found = pair_points(cells_i, cells_j, max_points=max_points)
    if found is None:
        return None
    gx, gy, difference = found
    centre, basis = _pair_basis(gx, gy, terms)
    root, fitted, residual, weights = _robust_plane(basis, np.asarray(difference, dtype=np.float64), iterations, scale)
    return PairSummary(
        i,
        j,
        centre,
        root,
        np.einsum("cij,cj->ci", root, fitted),
        weights.sum(axis=1),
        np.einsum("cn,cn->c", weights, residual**2),
        np.array([_robust_sigma(r) for r in residual]),
        int(gx.size),
    )


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


def _transfer(pairs: Sequence[PairSummary], centres: np.ndarray, side: int, terms: int) -> np.ndarray:
    """``(P, T, T)`` maps of one side's frame coefficients to its plane about each pair centre."""
    frames = np.array([p.i if side == 0 else p.j for p in pairs], dtype=np.int64)
    pair_centres = np.array([p.centre for p in pairs], dtype=np.float64)
    out = np.broadcast_to(np.eye(terms), (len(pairs), terms, terms)).copy()
    if terms == 3:
        out[:, 0, 1:] = (pair_centres - centres[frames]) / PLANE_LENGTH
    return out


def _design(pairs: Sequence[PairSummary], centres: np.ndarray, n_frames: int, terms: int, channel: int) -> csr_matrix:
    """Rows ``R (A_i theta_i - A_j theta_j)`` of every pair, ``terms`` per pair; columns ``terms`` per frame."""
    if not pairs:
        return csr_matrix((0, n_frames * terms))
    roots = np.stack([p.root[channel] for p in pairs])  # (P, T, T)
    rows = np.arange(len(pairs))[:, None, None] * terms + np.arange(terms)[None, :, None]
    rows = np.broadcast_to(rows, (len(pairs), terms, terms))
    blocks, columns = [], []
    for side, sign in ((0, 1.0), (1, -1.0)):
        frames = np.array([p.i if side == 0 else p.j for p in pairs], dtype=np.int64)
        blocks.append(sign * roots @ _transfer(pairs, centres, side, terms))
        columns.append(np.broadcast_to(frames[:, None, None] * terms + np.arange(terms)[None, None, :], rows.shape))
    return coo_matrix(
        (
            np.concatenate([b.ravel() for b in blocks]),
            (np.concatenate([rows.ravel()] * 2), np.concatenate([c.ravel() for c in columns])),
        ),
        shape=(len(pairs) * terms, n_frames * terms),
    ).tocsr()


def _clusters(centres: np.ndarray, size: int) -> np.ndarray:
    """Labels of compact groups of at most ``size`` frames: centres split at the median, longest side first."""
    labels = np.zeros(len(centres), dtype=np.int64)
    pending, count = [np.arange(len(centres))], 0
    while pending:
        members = pending.pop()
        if members.size <= size:
            labels[members] = count
            count += 1
            continue
        points = centres[members]
        axis = int(np.argmax(np.ptp(points, axis=0)))
        order = members[np.argsort(points[:, axis], kind="stable")]
        pending += [order[: order.size // 2], order[order.size // 2 :]]
    return labels


def _coarse_space(centres: np.ndarray, terms: int) -> csr_matrix:
    """``P``: per cluster of frames, its common offset (and common plane), as columns over the frames' unknowns."""
    labels = _clusters(centres, max(_CLUSTER_FRAMES, -(-len(centres) // _MAX_CLUSTERS)))
    n, k = len(centres), np.arange(len(centres))
    rows, cols, vals = [k * terms], [labels * terms], [np.ones(n)]
    if terms == 3:
        counts = np.bincount(labels)
        mean = np.stack([np.bincount(labels, centres[:, a]) / counts for a in (0, 1)], axis=1)
        relative = (centres - mean[labels]) / PLANE_LENGTH
        for t in (1, 2):  # a common plane moves each member's slope and its offset (about its own centre)
            rows += [k * terms + t, k * terms]
            cols += [labels * terms + t] * 2
            vals += [np.ones(n), relative[:, t - 1]]
    shape = (n * terms, (int(labels.max()) + 1) * terms)
    return coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape).tocsr()


def _solve_normal(
    normal: csr_matrix, rhs: np.ndarray, start: np.ndarray, terms: int, coarse: csr_matrix, counts: dict[str, int]
) -> np.ndarray:
    """Conjugate gradients on the normal equations, with a two-level preconditioner.

    The overlap graph of a deep session is an expander (every frame tied to its strongest
    overlaps anywhere in the field), on which a direct factorisation fills in densely; that of
    a wide survey is a lattice, on which an iteration that sees only each frame's own block
    needs more steps the wider the survey. So the preconditioner adds to each frame's own block
    a coarse correction: the system restricted to a common offset and plane per cluster of
    :data:`_CLUSTER_FRAMES` neighbouring frames (at most :data:`_MAX_CLUSTERS` clusters,
    ``coarse``), solved directly. The iteration
    starts from ``start`` (the prior's values, then the previous reweighting's solution), so a
    direction only the prior fixes keeps the prior's value.
    """
    from scipy.sparse.linalg import splu, spsolve

    if np.linalg.norm(rhs - normal @ start) <= _CG_TOLERANCE * np.linalg.norm(rhs):
        return start  # the previous reweighting's solution still holds
    if counts["direct"]:
        return _solve_direct(normal, rhs, spsolve, counts)
    n = normal.shape[0]
    coo = normal.tocoo()
    same = coo.row // terms == coo.col // terms
    blocks = np.zeros((n // terms, terms, terms))
    np.add.at(blocks, (coo.row[same] // terms, coo.row[same] % terms, coo.col[same] % terms), coo.data[same])
    scale = np.maximum(np.abs(np.diagonal(blocks, axis1=1, axis2=2)).max(axis=1), 1e-300)
    inverse = np.linalg.inv(blocks + _RIDGE * scale[:, None, None] * np.eye(terms))
    restricted = (coarse.T @ normal @ coarse).tocsc()
    ridge = 1e-10 * max(float(np.abs(restricted.diagonal()).max()), 1e-300)
    factor = splu((restricted + ridge * _eye(restricted.shape[0])).tocsc())

    def apply(v: np.ndarray) -> np.ndarray:
        local = np.einsum("kij,kj->ki", inverse, v.reshape(-1, terms)).ravel()
        return local + coarse @ factor.solve(coarse.T @ v)

    preconditioner = LinearOperator((n, n), matvec=apply, dtype=np.float64)
    steps = [0]

    def count(_: np.ndarray) -> None:
        steps[0] += 1

    solution, info = cg(
        normal, rhs, x0=start, rtol=_CG_TOLERANCE, atol=0.0, maxiter=_CG_MAX_ITER, M=preconditioner, callback=count
    )
    counts["iterations"] += steps[0]
    if info > 0:
        # Overlaps of one or two cells leave many directions that only the weak priors fix: the
        # iteration crawls there. A direct factorisation solves such a system exactly, and on the
        # sparse graphs where this happens it is cheap; it serves the rest of the solve.
        log.warning(
            "[Background] conjugate gradients stopped after %d iterations short of their tolerance: "
            "solving by sparse factorisation instead",
            info,
        )
        return _solve_direct(normal, rhs, spsolve, counts)
    return np.asarray(solution)


def _solve_direct(
    normal: csr_matrix, rhs: np.ndarray, spsolve: Any, counts: dict[str, int] | None = None
) -> np.ndarray:
    """The normal equations by sparse LU, with a ridge of 1e-9 of the largest diagonal term."""
    if counts is not None:
        counts["direct"] += 1
    ridge = 1e-9 * max(float(np.abs(normal.diagonal()).max()), 1e-300)
    return np.asarray(spsolve((normal + ridge * _eye(normal.shape[0])).tocsc(), rhs))


def _eye(n: int) -> csc_matrix:
    index = np.arange(n)
    return coo_matrix((np.ones(n), (index, index)), shape=(n, n)).tocsc()


def _pair_shift(rows: np.ndarray, weight: np.ndarray, terms: int) -> np.ndarray:
    """Mean square over each pair's points of a plane given through the pair's root (``R beta``)."""
    return (rows**2).reshape(-1, terms).sum(axis=1) / np.maximum(weight, 1e-300)


def _slope_prior(design: csr_matrix, observed: np.ndarray, terms: int) -> tuple[csr_matrix, np.ndarray]:
    """A weak pull of every frame's plane towards its own observed gradient (diagonal and right-hand side).

    Overlaps that are a single row of cells see a frame's value along them but not its slope
    across them: a row of frames joined only by such strips leaves each frame's slope free.
    The pull (:data:`SLOPE_PRIOR` of a typical frame's slope information from the overlaps)
    fixes those slopes at the frame's own gradient and moves well-measured ones by a
    fraction :data:`SLOPE_PRIOR` at most. Offsets get only a vanishing ridge: the null space
    left there is one offset per group, which the gauge fixes.
    """
    n = design.shape[1]
    information = np.asarray(design.multiply(design).sum(axis=0)).ravel().reshape(-1, terms)
    strength = np.zeros((n // terms, terms))
    rhs = np.zeros((n // terms, terms))
    offsets = information[:, 0]
    strength[:, 0] = _RIDGE * max(float(np.max(offsets)) if offsets.size else 0.0, 1e-300)
    if terms == 3:
        slopes = information[:, 1:]
        typical = float(np.median(slopes[slopes > 0])) if np.any(slopes > 0) else 1.0
        strength[:, 1:] = SLOPE_PRIOR * typical
        rhs[:, 1:] = strength[:, 1:] * observed
    index = np.arange(n)
    return coo_matrix((strength.ravel(), (index, index)), shape=(n, n)).tocsc(), rhs.ravel()


def _apply_gauge(
    x: np.ndarray, labels: np.ndarray, groups: int, terms: int, centres: np.ndarray, observed: np.ndarray
) -> np.ndarray:
    """Move each group along the null space (a common offset and plane) onto the gauge.

    Per group: offsets sum to 0 and (planes) gradients sum to the frames' observed ones.
    """
    x = x.reshape(-1, terms).copy()
    for group in range(groups):
        members = labels == group
        shift = np.zeros(x[members].shape[0])
        if terms == 3:
            slope = (observed[members].sum(axis=0) - x[members, 1:].sum(axis=0)) / members.sum()
            x[members, 1:] += slope
            shift = centres[members] @ slope / PLANE_LENGTH
        x[members, 0] += shift - np.mean(x[members, 0] + shift)
    return x


def solve_background_planes(
    n_frames: int,
    pairs: Sequence[PairSummary],
    centres: np.ndarray,
    observed: np.ndarray,
    *,
    model: str = "plane",
    iterations: int = 5,
) -> BackgroundSolution:
    """Solve every frame's offset and plane from the pair summaries, one channel at a time.

    Parameters
    ----------
    n_frames : int
        Number of frames.
    pairs : sequence of PairSummary
        The overlapping pairs, each reduced by :func:`summarise_pair` with the same ``model``.
    centres : numpy.ndarray
        ``(N, 2)`` grid ``(X, Y)`` of every frame centre.
    observed : numpy.ndarray
        ``(N, C, 2)`` each frame's own sky gradient (:func:`frame_gradients`), for the gauge.
    model : {"offset", "plane"}
        An offset per frame, or an offset and a plane.
    iterations : int
        Solves (>= 1), each after reweighting the pairs by a Cauchy function of how far
        their fitted plane lies from the solution (the shift it makes on the pair's points,
        in units of the typical point scatter of a pair).

    Returns
    -------
    BackgroundSolution
    """
    terms = _terms(model)
    channels = observed.shape[1]
    centres = np.asarray(centres, dtype=np.float64)
    pairs = [p for p in pairs if p.points and p.root.shape[-1] == terms]
    graph = coo_matrix((np.ones(len(pairs)), ([p.i for p in pairs], [p.j for p in pairs])), shape=(n_frames, n_frames))
    groups, labels = connected_components(graph, directed=False)
    coefficients = np.zeros((n_frames, channels, 3))
    before, after = np.zeros(channels), np.zeros(channels)
    coarse = _coarse_space(centres, terms)
    counts = {"iterations": 0, "direct": 0}
    for c in range(channels):
        x = np.zeros(n_frames * terms)
        if pairs:
            design = _design(pairs, centres, n_frames, terms, c)
            target = np.concatenate([p.target[c] for p in pairs])
            weight = np.array([p.weight[c] for p in pairs])
            noise = np.array([p.spread[c] for p in pairs]) ** 2  # each pair's own point scatter
            prior, prior_rhs = _slope_prior(design, observed[:, c, :], terms)
            pair_weights = np.ones(len(pairs))
            x = prior_rhs / np.maximum(prior.diagonal(), 1e-300)  # the prior's own values: own slopes, no offset
            for _ in range(max(1, int(iterations))):
                row_weights = np.repeat(pair_weights, terms)
                normal = (design.T @ design.multiply(row_weights[:, None]).tocsr()).tocsr() + prior
                x = _solve_normal(normal, design.T @ (row_weights * target) + prior_rhs, x, terms, coarse, counts)
                shift = _pair_shift(design @ x - target, weight, terms)
                # As a point-level fit would: the scale is the typical rms of a pair's points about the solution.
                scale = float(np.median(np.sqrt(noise + shift)))
                if scale > 0:
                    pair_weights = 1.0 / (1.0 + shift / (ROBUST_C * scale) ** 2)
            before[c] = np.median(np.sqrt(noise + _pair_shift(-target, weight, terms)))
            after[c] = np.median(np.sqrt(noise + _pair_shift(design @ x - target, weight, terms)))
        coefficients[:, c, :terms] = _apply_gauge(x, labels, groups, terms, centres, observed[:, c, :])
    points = int(sum(p.points for p in pairs))
    log.info(
        "[Background] %s model of %d frame(s) from %d pair(s), %d overlap point(s) in %d group(s); "
        "overlap rms %s -> %s ADU",
        model,
        n_frames,
        len(pairs),
        points,
        groups,
        np.round(before, 2).tolist(),
        np.round(after, 2).tolist(),
    )
    return BackgroundSolution(
        coefficients, before, after, points, int(groups), len(pairs), counts["iterations"], counts["direct"]
    )


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
