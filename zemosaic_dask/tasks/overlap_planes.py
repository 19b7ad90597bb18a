"""What two overlapping frames tell the background model: a robust plane of their sky differences.

Frames ``i`` and ``j`` measured on the same grid cells (:mod:`.sky_blocks`) differ, where they
overlap, by the difference of their background models, ``Q_i - Q_j``, which is itself a plane.
So a pair's points say no more to the global solve (:mod:`.background_solve`) than a plane
fitted through their differences: with the fit's weights ``w`` and basis ``q = (1, x, y)``
about the pair's centroid, the point-level least squares ``sum_P w (d_P - q_P . beta)^2``
equals the fit's own residual plus ``(beta - beta_hat)^T M (beta - beta_hat)`` with
``M = sum_P w q q^T``. :func:`summarise_pair` reduces a pair, where its cells are (a worker),
to ``beta_hat`` and a square root of ``M``: 3 numbers and 3 rows per channel, whatever the
number of points. Stars, trails and hot cells are set aside by the fit's Cauchy weights, in
units of a residual scale all pairs share (:func:`overlap_scale`), so that a pair of a few
cells rejects them as a large one does. Pure numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .robust_weights import cauchy_weights, robust_sigma
from .sky_blocks import SkyCells

__all__ = [
    "MIN_ROBUST_POINTS",
    "PLANE_LENGTH",
    "PairSummary",
    "PairTable",
    "model_terms",
    "overlap_scale",
    "pair_points",
    "sample_pairs",
    "summarise_pair",
]

#: Length (grid pixels) that scales the plane terms.
PLANE_LENGTH = 1000.0
#: Without a shared scale, a pair's points are reweighted only when it has at least this many.
MIN_ROBUST_POINTS = 8
_EIGEN_FLOOR = 1e-10


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
class PairTable:
    """Many :class:`PairSummary` as columns: what a pair task returns and the solve reads.

    A pair summary as an object with its own small arrays costs its holder about 2 KB; the
    client gathers one per overlapping pair (tens of thousands at a few thousand frames), so
    the summaries travel and are kept as one row each of these arrays (about 0.4 KB for three
    channels). The attributes are those of :class:`PairSummary` with a leading pair axis:
    ``i``, ``j`` and ``points`` ``(P,)`` int64, ``centre`` ``(P, 2)``, ``root`` ``(P, C, T, T)``,
    ``target`` ``(P, C, T)``, ``weight``, ``residual`` and ``spread`` ``(P, C)``, all float64.
    """

    i: np.ndarray
    j: np.ndarray
    centre: np.ndarray
    root: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    residual: np.ndarray
    spread: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @property
    def terms(self) -> int:
        """Plane terms per channel (3 for a plane, 1 for an offset; 0 for an empty table)."""
        return int(self.root.shape[-1])

    @classmethod
    def from_summaries(cls, summaries: Sequence[PairSummary]) -> PairTable:
        """Stack summaries (all fitted with the same model and channels) into a table."""
        if not summaries:
            return cls.empty()
        return cls(
            np.array([s.i for s in summaries], dtype=np.int64),
            np.array([s.j for s in summaries], dtype=np.int64),
            np.array([s.centre for s in summaries], dtype=np.float64).reshape(-1, 2),
            np.stack([np.asarray(s.root, dtype=np.float64) for s in summaries]),
            np.stack([np.asarray(s.target, dtype=np.float64) for s in summaries]),
            np.stack([np.asarray(s.weight, dtype=np.float64) for s in summaries]),
            np.stack([np.asarray(s.residual, dtype=np.float64) for s in summaries]),
            np.stack([np.asarray(s.spread, dtype=np.float64) for s in summaries]),
            np.array([s.points for s in summaries], dtype=np.int64),
        )

    @classmethod
    def empty(cls) -> PairTable:
        """A table of no pair."""
        none = np.zeros(0, dtype=np.int64)
        per_channel = np.zeros((0, 0))
        return cls(
            none, none, np.zeros((0, 2)), np.zeros((0, 0, 0, 0)), np.zeros((0, 0, 0)),
            per_channel, per_channel, per_channel, none,
        )  # fmt: skip

    @classmethod
    def concatenate(cls, tables: Sequence[PairTable]) -> PairTable:
        """One table of the rows of ``tables`` in order (empty tables are skipped)."""
        rows = [t for t in tables if len(t)]
        if not rows:
            return cls.empty()
        if len(rows) == 1:
            return rows[0]
        return cls(*(np.concatenate([getattr(t, f.name) for t in rows]) for f in dataclasses.fields(cls)))

    def select(self, keep: np.ndarray) -> PairTable:
        """The rows where the boolean ``keep`` is true."""
        return PairTable(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))

    def summary(self, row: int) -> PairSummary:
        """Row ``row`` as a :class:`PairSummary`."""
        return PairSummary(
            int(self.i[row]),
            int(self.j[row]),
            (float(self.centre[row, 0]), float(self.centre[row, 1])),
            self.root[row],
            self.target[row],
            self.weight[row],
            self.residual[row],
            self.spread[row],
            int(self.points[row]),
        )


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


def model_terms(model: str) -> int:
    """Unknowns per frame and channel of a background ``model``: 3 for ``plane``, 1 for ``offset``."""
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
                weights = np.stack([cauchy_weights(r) for r in residual])
            else:
                weights = cauchy_weights(residual, np.asarray(scale, dtype=np.float64)[:, None])
    return root, fitted, residual, weights


def sample_pairs(overlaps: Sequence[tuple[int, int]], sample: int) -> list[tuple[int, int]]:
    """At most ``sample`` of ``overlaps``, spread evenly over the list (all of them when fewer)."""
    if not overlaps:
        return []
    picks = np.unique(np.linspace(0, len(overlaps) - 1, min(sample, len(overlaps))).round().astype(np.int64))
    return [tuple(overlaps[int(k)]) for k in picks]


def overlap_scale(
    cells: Mapping[int, SkyCells] | Sequence[SkyCells],
    overlaps: Sequence[tuple[int, int]],
    *,
    model: str = "plane",
    max_points: int = 400,
    sample: int = 256,
) -> np.ndarray | None:
    """Typical scatter ``(C,)`` of overlap differences about their pair's plane (robust, pooled).

    ``cells`` is indexed by the frame indices of ``overlaps``. Measured on up to ``sample``
    pairs spread over ``overlaps`` (:func:`sample_pairs`): each pair's residuals about a
    least-squares plane (scaled for the fitted terms), pooled, and 1.4826 x their median
    absolute deviation. None when no pair has more points than terms.
    """
    terms = model_terms(model)
    pooled = []
    for i, j in sample_pairs(overlaps, sample):
        found = pair_points(cells[i], cells[j], max_points=max_points)
        if found is None or found[0].size <= terms:
            continue
        _, basis = _pair_basis(found[0], found[1], terms)
        _, _, residual, _ = _robust_plane(basis, np.asarray(found[2], dtype=np.float64), 1, None)
        pooled.append(residual * np.sqrt(basis.shape[0] / (basis.shape[0] - terms)))
    if not pooled:
        return None
    residuals = np.concatenate(pooled, axis=1)
    return np.array([robust_sigma(r) for r in residuals])


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
    terms = model_terms(model)
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
        np.array([robust_sigma(r) for r in residual]),
        int(gx.size),
    )
