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
