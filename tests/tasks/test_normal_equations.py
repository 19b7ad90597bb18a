"""The coarse system of the background solve: dense when it is dense, sparse LU otherwise, same answer."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csc_matrix, diags
from scipy.sparse.linalg import SuperLU

from zemosaic_dask.tasks.normal_equations import _coarse_solver


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
