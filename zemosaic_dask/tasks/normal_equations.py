"""Solving the background model's sparse normal equations: conjugate gradients, two-level preconditioned.

The normal matrix has a ``terms x terms`` block per frame and one per overlapping pair of
frames. :func:`solve_normal_equations` iterates with a preconditioner made of each frame's own
block and a coarse correction (:func:`coarse_space`: a common offset and plane per cluster of
neighbouring frames, solved directly); when the iteration does not converge it factorises the
system instead. Pure numpy/scipy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, lu_factor, lu_solve
from scipy.sparse import coo_matrix, csc_matrix, csr_matrix, identity
from scipy.sparse.linalg import LinearOperator, SuperLU, cg, splu

__all__ = ["coarse_space", "solve_normal_equations", "symmetric_lu"]

log = logging.getLogger(__name__)

_CG_TOLERANCE, _CG_MAX_ITER = 1e-10, 1000
#: Frames per cluster of the coarse correction, and the most clusters (a deep session's clusters
#: all overlap, so its coarse system is dense: its size must not grow with the frames).
_CLUSTER_FRAMES, _MAX_CLUSTERS = 16, 1024
_BLOCK_RIDGE = 1e-12
#: Share of non-zeros above which the coarse system is factorised as a dense matrix.
_DENSE_COARSE = 0.05


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


def _clusters_within(centres: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Cluster labels that never mix two connected groups of frames (:func:`_clusters` within each group).

    The frames of a group that shares no overlap with the rest move together at no cost: their
    common offset (and plane) is fixed only by the prior and the gauge. A cluster holding frames
    of two groups cannot represent that motion, the iteration then has to find it alone, and it
    crawls (15,681 deep frames of 96 x 54 pixels fall into 10 groups: with clusters drawn over
    the centres alone the iteration needed 2,566 steps to reach 1e-10, split by group 531).
    Clusters hold at most ``max(_CLUSTER_FRAMES, N / _MAX_CLUSTERS)`` frames wherever they are
    drawn; splitting by group adds the clusters that groups' edges cut (1,024 became 1,123 there).
    """
    size = max(_CLUSTER_FRAMES, -(-len(centres) // _MAX_CLUSTERS))
    if groups is None or not len(centres):
        return _clusters(centres, size)
    order = np.argsort(groups, kind="stable")
    labels = np.zeros(len(centres), dtype=np.int64)
    count = 0
    for members in np.split(order, np.flatnonzero(np.diff(groups[order])) + 1):
        inner = _clusters(centres[members], size)
        labels[members] = inner + count
        count += int(inner.max()) + 1
    return labels


def coarse_space(centres: np.ndarray, terms: int, length: float, groups: np.ndarray | None = None) -> csr_matrix:
    """``P``: per cluster of frames, its common offset (and common plane), as columns over the frames' unknowns.

    Parameters
    ----------
    centres : numpy.ndarray
        The frames' ``(N, 2)`` centres.
    terms : int
        Unknowns per frame: 1 (offset) or 3 (offset and plane).
    length : float
        The unit of the plane terms: a common plane moves each member's slope and its offset
        about its own centre.
    groups : numpy.ndarray, optional
        ``(N,)`` label of each frame's connected group of overlaps: no cluster spans two groups.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(N * terms, clusters * terms)``.
    """
    labels = _clusters_within(centres, groups)
    n, k = len(centres), np.arange(len(centres))
    rows, cols, vals = [k * terms], [labels * terms], [np.ones(n)]
    if terms == 3:
        counts = np.bincount(labels)
        mean = np.stack([np.bincount(labels, centres[:, a]) / counts for a in (0, 1)], axis=1)
        relative = (centres - mean[labels]) / length
        for t in (1, 2):
            rows += [k * terms + t, k * terms]
            cols += [labels * terms + t] * 2
            vals += [np.ones(n), relative[:, t - 1]]
    shape = (n * terms, (int(labels.max()) + 1) * terms)
    return coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape).tocsr()


def solve_normal_equations(
    normal: csr_matrix, rhs: np.ndarray, start: np.ndarray, terms: int, coarse: csr_matrix, counts: dict[str, int]
) -> np.ndarray:
    """Conjugate gradients on the normal equations, with a two-level preconditioner.

    The overlap graph of a deep session is an expander (every frame tied to its strongest
    overlaps anywhere in the field), on which a direct factorisation fills in densely; that of
    a wide survey is a lattice, on which an iteration that sees only each frame's own block
    needs more steps the wider the survey. So the preconditioner adds to each frame's own block
    a coarse correction: the system restricted to a common offset and plane per cluster of
    :data:`_CLUSTER_FRAMES` neighbouring frames (at most :data:`_MAX_CLUSTERS` clusters,
    ``coarse``, :func:`coarse_space`), solved directly. The iteration starts from ``start``
    (the prior's values, then the previous reweighting's solution), so a direction only the
    prior fixes keeps the prior's value. ``counts`` (``iterations``, ``direct``) is updated:
    once an iteration has not converged, the remaining solves are direct.
    """
    if np.linalg.norm(rhs - normal @ start) <= _CG_TOLERANCE * np.linalg.norm(rhs):
        return start  # the previous reweighting's solution still holds
    if counts["direct"]:
        return _solve_direct(normal, rhs, counts)
    n = normal.shape[0]
    coo = normal.tocoo()
    same = coo.row // terms == coo.col // terms
    blocks = np.zeros((n // terms, terms, terms))
    np.add.at(blocks, (coo.row[same] // terms, coo.row[same] % terms, coo.col[same] % terms), coo.data[same])
    scale = np.maximum(np.abs(np.diagonal(blocks, axis1=1, axis2=2)).max(axis=1), 1e-300)
    inverse = np.linalg.inv(blocks + _BLOCK_RIDGE * scale[:, None, None] * np.eye(terms))
    coarse_solve = _coarse_solver((coarse.T @ normal @ coarse).tocsc())

    def apply(v: np.ndarray) -> np.ndarray:
        local = np.einsum("kij,kj->ki", inverse, v.reshape(-1, terms)).ravel()
        return local + coarse @ coarse_solve(coarse.T @ v)

    preconditioner = LinearOperator((n, n), matvec=apply, dtype=np.float64)
    steps = [0]

    def count(_: np.ndarray) -> None:
        steps[0] += 1

    solution, info = cg(
        normal, rhs, x0=start, rtol=_CG_TOLERANCE, atol=0.0, maxiter=_CG_MAX_ITER, M=preconditioner, callback=count
    )
    counts["iterations"] += steps[0]
    if info > 0:
        reached = float(np.linalg.norm(rhs - normal @ solution) / max(np.linalg.norm(rhs), 1e-300))
        # Overlaps of one or two cells leave many directions that only the weak priors fix: the
        # iteration crawls there. A direct factorisation solves such a system exactly, and on the
        # sparse graphs where this happens it is cheap; it serves the rest of the solve.
        log.info(
            "[Background] conjugate gradients stopped after %d iterations at a relative residual of %.2g, "
            "short of their tolerance: solving by sparse factorisation instead",
            info,
            reached,
        )
        return _solve_direct(normal, rhs, counts)
    return np.asarray(solution)


def _coarse_solver(restricted: csc_matrix) -> Callable[[np.ndarray], np.ndarray]:
    """A solver of the coarse system (with a ridge of 1e-10 of its largest diagonal term).

    When most clusters overlap (a field few clusters across) the coarse system is dense, and a
    sparse LU of a dense matrix is slow: 4.1 s for a dense 3,072-unknown matrix on this
    project's 2-core reference machine, against 1.1 s for a dense Cholesky factor, once per
    channel and reweighting. A sparse system keeps the sparse LU (the 1,024 clusters of 15,681
    deep frames filled 3.9 % of theirs).
    """
    size = restricted.shape[0]
    ridge = 1e-10 * max(float(np.abs(restricted.diagonal()).max()), 1e-300) if size else 0.0
    if size and restricted.nnz > _DENSE_COARSE * size * size:
        dense = restricted.toarray()
        dense[np.diag_indices(size)] += ridge
        try:
            factor = cho_factor(dense, lower=True, check_finite=False)
            return lambda v: cho_solve(factor, v, check_finite=False)
        except np.linalg.LinAlgError:  # not positive definite to working precision: pivoted LU
            pivoted = lu_factor(dense, overwrite_a=True, check_finite=False)
            return lambda v: lu_solve(pivoted, v, check_finite=False)
    return symmetric_lu(restricted + ridge * identity(size, format="csc")).solve


def symmetric_lu(matrix: Any) -> SuperLU:
    """Sparse LU of a symmetric matrix, ordered for symmetry (minimum degree on ``A^T + A``).

    SuperLU's default column ordering ignores the symmetry of the normal equations: on the
    47,043 unknowns of 15,681 deep frames it filled ``L + U`` with 27.5 M non-zeros (2.2 s, 274
    MiB), where the symmetric ordering with diagonal pivots gives 4.6 M (0.5 s, 81 MiB) and the
    same solution (1e-7 ADU).

    Parameters
    ----------
    matrix : sparse matrix
        Square, symmetric, and positive definite or nearly so (diagonal pivots are preferred).

    Returns
    -------
    scipy.sparse.linalg.SuperLU
        The factor; its ``solve`` solves ``matrix @ x = b``.
    """
    return splu(csc_matrix(matrix), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})


def _solve_direct(normal: csr_matrix, rhs: np.ndarray, counts: dict[str, int]) -> np.ndarray:
    """The normal equations by sparse LU, with a ridge of 1e-13 of the largest diagonal term.

    The priors already make the system definite; the ridge only guards the factorisation, and
    it biases the answer in proportion: on 15,681 deep frames (diagonal terms spread over five
    decades) a ridge of 1e-9 left a relative residual of 1.4e-6, 1e-13 one of 1.4e-10, the
    iteration's own tolerance.
    """
    counts["direct"] += 1
    ridge = 1e-13 * max(float(np.abs(normal.diagonal()).max()), 1e-300)
    return np.asarray(symmetric_lu(normal + ridge * identity(normal.shape[0], format="csc")).solve(rhs))
