"""The background solve's coarse space (clusters within connected groups) and coarse system (dense or sparse LU)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csc_matrix, diags
from scipy.sparse.linalg import SuperLU

from zemosaic_dask.tasks.normal_equations import _CLUSTER_FRAMES, _coarse_solver, coarse_space


def _ridged(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` with the solver's ridge of 1e-10 of its largest diagonal term."""
    return matrix + 1e-10 * np.abs(np.diag(matrix)).max() * np.eye(matrix.shape[0])


def test_dense_coarse_system_is_factorised_densely_with_the_same_solution():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(90, 90))
    spd = a @ a.T + 90 * np.eye(90)
    solve = _coarse_solver(csc_matrix(spd))
    assert not isinstance(getattr(solve, "__self__", None), SuperLU)  # the dense path
    rhs = rng.normal(size=90)
    np.testing.assert_allclose(solve(rhs), np.linalg.solve(_ridged(spd), rhs), rtol=1e-10, atol=1e-12)


def test_indefinite_dense_system_falls_back_to_pivoted_lu():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 40))
    symmetric = a + a.T  # indefinite: Cholesky fails
    solve = _coarse_solver(csc_matrix(symmetric))
    rhs = rng.normal(size=40)
    np.testing.assert_allclose(solve(rhs), np.linalg.solve(_ridged(symmetric), rhs), rtol=1e-8, atol=1e-10)


def test_sparse_coarse_system_keeps_the_sparse_lu():
    n = 400
    laplacian = diags([-np.ones(n - 1), 2.5 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csc")
    solve = _coarse_solver(laplacian)
    assert isinstance(getattr(solve, "__self__", None), SuperLU)
    rhs = np.random.default_rng(2).normal(size=n)
    expected = np.linalg.solve(_ridged(laplacian.toarray()), rhs)
    np.testing.assert_allclose(solve(rhs), expected, rtol=1e-10, atol=1e-12)


def test_symmetric_lu_fills_less_than_the_default_ordering_and_solves_the_same():
    """A normal matrix of frames on a 2-D lattice with long-range ties (a deep session's overlaps)."""
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import splu

    from zemosaic_dask.tasks.normal_equations import symmetric_lu

    rng = np.random.default_rng(4)
    side = 30
    n = side * side
    index = np.arange(n).reshape(side, side)
    pairs = [(index[:, :-1].ravel(), index[:, 1:].ravel()), (index[:-1].ravel(), index[1:].ravel())]
    pairs.append((rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)))  # ties anywhere in the field
    i = np.concatenate([a for a, _ in pairs])
    j = np.concatenate([b for _, b in pairs])
    keep = i != j
    i, j = i[keep], j[keep]
    w = rng.uniform(0.5, 2.0, i.size)
    # Graph Laplacian of the ties plus a weak ridge: symmetric positive definite.
    off = coo_matrix((-w, (i, j)), shape=(n, n))
    laplacian = off + off.T
    laplacian = laplacian - diags(np.asarray(laplacian.sum(axis=1)).ravel()) + 1e-3 * identity(n)
    matrix = csc_matrix(laplacian)
    factor = symmetric_lu(matrix)
    default = splu(matrix)
    assert factor.L.nnz + factor.U.nnz < 0.7 * (default.L.nnz + default.U.nnz)
    rhs = rng.normal(size=n)
    np.testing.assert_allclose(factor.solve(rhs), np.linalg.solve(matrix.toarray(), rhs), rtol=1e-8, atol=1e-8)


def test_coarse_space_holds_every_connected_groups_common_offset_and_plane():
    """Interleaved groups (no overlap between them) each move as a whole inside the coarse space.

    A group without overlaps to the rest is free to take any common offset and plane; the
    preconditioner must represent that motion or the iteration crawls. With clusters drawn
    over the centres alone, each cluster mixes the groups and the motion is not in the span.
    """
    rng = np.random.default_rng(3)
    n, terms, length = 600, 3, 1000.0
    centres = rng.uniform(0, 4000, size=(n, 2))
    groups = rng.integers(0, 5, size=n)  # five groups spread over the whole field
    coarse = coarse_space(centres, terms, length, groups).toarray()
    for g in range(5):
        members = groups == g
        slope = np.array([0.3, -0.2])
        motion = np.zeros((n, terms))
        motion[members, 0] = 1.0 + centres[members] @ slope / length  # a common offset and plane
        motion[members, 1:] = slope
        coefficients, *_ = np.linalg.lstsq(coarse, motion.ravel(), rcond=None)
        assert np.abs(coarse @ coefficients - motion.ravel()).max() < 1e-8
    # Each cluster belongs to one group and stays within the cluster size.
    cluster = np.argmax(coarse[::terms, ::terms], axis=1)
    for c in np.unique(cluster):
        assert np.unique(groups[cluster == c]).size == 1
        assert np.count_nonzero(cluster == c) <= _CLUSTER_FRAMES
    # Without the groups, the clusters mix them and a group's motion leaves the span.
    mixed = coarse_space(centres, terms, length).toarray()
    motion = np.zeros((n, terms))
    motion[groups == 0, 0] = 1.0
    coefficients, *_ = np.linalg.lstsq(mixed, motion.ravel(), rcond=None)
    assert np.abs(mixed @ coefficients - motion.ravel()).max() > 0.1
