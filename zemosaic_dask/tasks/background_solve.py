"""One global background model: an offset and a plane per frame, solved jointly from all overlaps.

Each frame ``k`` carries an additive background ``Q_k(X, Y) = a_k + b_k (X - Xc_k) / L +
c_k (Y - Yc_k) / L`` in the global grid's pixel coordinates (``(Xc_k, Yc_k)`` is the frame
centre on the grid, ``L`` a fixed length that keeps the unknowns of similar size). Where
frames ``i`` and ``j`` overlap, their large-scale skies, measured on the same grid cells
(:mod:`.sky_blocks`), must agree once the models are removed::

    s_i(P) - Q_i(P) = s_j(P) - Q_j(P)   for every overlap point P

Each overlapping pair comes reduced to a robust plane of its differences
(:func:`~.overlap_planes.summarise_pair`), exactly what its points say to a least-squares
solve, so the global solve has 3 rows per pair and channel: a sparse system in the ``3 N``
unknowns per channel whose size grows with the pairs, not with the points, solved by
:func:`~.normal_equations.solve_normal_equations`. A pair whose plane disagrees with the
others (a cloud in one frame) is set aside by reweighting the pairs.

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
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from .normal_equations import coarse_space, solve_normal_equations
from .overlap_planes import PLANE_LENGTH, PairSummary, PairTable, model_terms
from .robust_weights import cauchy_weights
from .sky_blocks import SkyCells

__all__ = [
    "BACKGROUND_MODELS",
    "PLANE_LENGTH",
    "BackgroundSolution",
    "FrameAffine",
    "frame_gradients",
    "log_solution",
    "planes_in_frame_pixels",
    "solve_background_planes",
]

log = logging.getLogger(__name__)

BACKGROUND_MODELS = ("none", "offset", "plane")
_RIDGE = 1e-12
#: Weight of a frame's own gradient as a prior on its plane, in typical slope information of a frame.
SLOPE_PRIOR = 1e-6


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
                weights = np.sqrt(cauchy_weights(residual))
            rows.append((float(coef[1]), float(coef[2])))
        out.append(rows if rows else [(0.0, 0.0)])
    return np.asarray(out, dtype=np.float64)


def _transfer(pairs: PairTable, centres: np.ndarray, side: int, terms: int) -> np.ndarray:
    """``(P, T, T)`` maps of one side's frame coefficients to its plane about each pair centre."""
    frames = pairs.i if side == 0 else pairs.j
    out = np.broadcast_to(np.eye(terms), (len(pairs), terms, terms)).copy()
    if terms == 3:
        out[:, 0, 1:] = (pairs.centre - centres[frames]) / PLANE_LENGTH
    return out


def _design(pairs: PairTable, centres: np.ndarray, n_frames: int, terms: int, channel: int) -> csr_matrix:
    """Rows ``R (A_i theta_i - A_j theta_j)`` of every pair, ``terms`` per pair; columns ``terms`` per frame."""
    if not len(pairs):
        return csr_matrix((0, n_frames * terms))
    roots = pairs.root[:, channel]  # (P, T, T)
    rows = np.arange(len(pairs))[:, None, None] * terms + np.arange(terms)[None, :, None]
    rows = np.broadcast_to(rows, (len(pairs), terms, terms))
    blocks, columns = [], []
    for side, sign in ((0, 1.0), (1, -1.0)):
        frames = pairs.i if side == 0 else pairs.j
        blocks.append(sign * roots @ _transfer(pairs, centres, side, terms))
        columns.append(np.broadcast_to(frames[:, None, None] * terms + np.arange(terms)[None, None, :], rows.shape))
    return coo_matrix(
        (
            np.concatenate([b.ravel() for b in blocks]),
            (np.concatenate([rows.ravel()] * 2), np.concatenate([c.ravel() for c in columns])),
        ),
        shape=(len(pairs) * terms, n_frames * terms),
    ).tocsr()


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
    pairs: PairTable | Sequence[PairSummary],
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
    pairs : PairTable or sequence of PairSummary
        The overlapping pairs, each reduced by :func:`summarise_pair` with the same ``model``
        (as the pair tasks return them, or as a list).
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
    terms = model_terms(model)
    channels = observed.shape[1]
    centres = np.asarray(centres, dtype=np.float64)
    if not isinstance(pairs, PairTable):
        pairs = PairTable.from_summaries(list(pairs))
    if not np.all(pairs.points > 0):
        pairs = pairs.select(pairs.points > 0)
    if len(pairs) and pairs.terms != terms:
        raise ValueError(f"pair summaries were not fitted with the {model!r} model (summarise_pair(model=...))")
    graph = coo_matrix((np.ones(len(pairs)), (pairs.i, pairs.j)), shape=(n_frames, n_frames))
    groups, labels = connected_components(graph, directed=False)
    coefficients = np.zeros((n_frames, channels, 3))
    before, after = np.zeros(channels), np.zeros(channels)
    coarse = coarse_space(centres, terms, PLANE_LENGTH, labels)
    counts = {"iterations": 0, "direct": 0}
    for c in range(channels):
        x = np.zeros(n_frames * terms)
        if len(pairs):
            design = _design(pairs, centres, n_frames, terms, c)
            target = pairs.target[:, c].ravel()
            weight = pairs.weight[:, c]
            noise = pairs.spread[:, c] ** 2  # each pair's own point scatter
            prior, prior_rhs = _slope_prior(design, observed[:, c, :], terms)
            pair_weights = np.ones(len(pairs))
            x = prior_rhs / np.maximum(prior.diagonal(), 1e-300)  # the prior's own values: own slopes, no offset
            for _ in range(max(1, int(iterations))):
                row_weights = np.repeat(pair_weights, terms)
                normal = (design.T @ design.multiply(row_weights[:, None]).tocsr()).tocsr() + prior
                x = solve_normal_equations(
                    normal, design.T @ (row_weights * target) + prior_rhs, x, terms, coarse, counts
                )
                shift = _pair_shift(design @ x - target, weight, terms)
                # As a point-level fit would: the scale is the typical rms of a pair's points about the solution.
                scale = float(np.median(np.sqrt(noise + shift)))
                if scale > 0:
                    pair_weights = cauchy_weights(np.sqrt(shift), scale)
            before[c] = np.median(np.sqrt(noise + _pair_shift(-target, weight, terms)))
            after[c] = np.median(np.sqrt(noise + _pair_shift(design @ x - target, weight, terms)))
        coefficients[:, c, :terms] = _apply_gauge(x, labels, groups, terms, centres, observed[:, c, :])
    points = int(pairs.points.sum())
    return BackgroundSolution(
        coefficients, before, after, points, int(groups), len(pairs), counts["iterations"], counts["direct"]
    )


def log_solution(solution: BackgroundSolution, model: str, n_frames: int) -> None:
    """Log what a solve found: its size, groups and the overlaps' rms before and after.

    The solve may run on a worker, whose log the run's log does not show: the process that
    receives the solution logs it.
    """
    log.info(
        "[Background] %s model of %d frame(s) from %d pair(s), %d overlap point(s) in %d group(s); "
        "overlap rms %s -> %s ADU",
        model,
        n_frames,
        solution.pairs,
        solution.points,
        solution.groups,
        np.round(solution.rms_before, 2).tolist(),
        np.round(solution.rms_after, 2).tolist(),
    )
    if solution.direct:
        log.warning(
            "[Background] conjugate gradients did not converge (%d iterations in all): %d solve(s) made by "
            "sparse factorisation instead",
            solution.iterations,
            solution.direct,
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
