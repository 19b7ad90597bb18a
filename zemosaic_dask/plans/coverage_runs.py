"""Coverage counted on runs of cells instead of cell by cell.

A footprint on the coarse coverage raster (:class:`~zemosaic_dask.plans.footprints.CoverageCells`)
is a few runs of consecutive cells: one or two per raster row for a frame, against ~10^5 cells
for a full-size frame on a 512-cell raster. Counting how many cells a set of frames covers
(the SDS closing policy, the coverage mask prediction) therefore works on runs of flat cell
indices ``[start, stop)``: a union of runs is a sort and a running maximum, its size the sum of
the run lengths, and the cost of adding a frame to a batch grows with the runs of the frame
and of the batch's union (bounded by the raster's rows), not with the cells they hold.

The counts are exact: the union of the runs holds exactly the cells the runs hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RunUnion", "as_runs", "cells_to_runs", "runs_length", "spans_to_runs", "union_runs", "union_size"]

_NO_RUNS = np.zeros((0, 2), dtype=np.int64)


def spans_to_runs(spans: np.ndarray, n_columns: int) -> np.ndarray:
    """Turn ``(row, start, stop)`` cell runs of a raster into runs of flat cell indices.

    Parameters
    ----------
    spans : numpy.ndarray
        ``(K, 3)`` rows as made by :func:`~zemosaic_dask.plans.footprints.rasterize_polygon_spans`.
    n_columns : int
        Columns of the raster.

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` ``int64`` rows ``(start, stop)``: flat indices ``start <= i < stop``.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 3)
    base = spans[:, 0] * int(n_columns)
    return np.column_stack([base + spans[:, 1], base + spans[:, 2]])


def cells_to_runs(cells: np.ndarray) -> np.ndarray:
    """Runs ``(start, stop)`` of consecutive values among flat cell indices (duplicates allowed).

    Parameters
    ----------
    cells : numpy.ndarray
        1-D integer cell indices, in any order.

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` ``int64`` disjoint runs, sorted, covering exactly the distinct indices.
    """
    values = np.unique(np.asarray(cells, dtype=np.int64).ravel())
    if values.size == 0:
        return _NO_RUNS
    breaks = np.flatnonzero(np.diff(values) != 1)
    first = np.concatenate([[0], breaks + 1])
    last = np.concatenate([breaks, [values.size - 1]])
    return np.column_stack([values[first], values[last] + 1])


def as_runs(footprint: np.ndarray) -> np.ndarray:
    """A footprint as runs: ``(K, 2)`` runs are returned as they are, 1-D cell indices converted.

    Parameters
    ----------
    footprint : numpy.ndarray
        Either flat cell indices (1-D) or ``(K, 2)`` runs ``(start, stop)`` of flat indices.

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` ``int64`` runs.
    """
    array = np.asarray(footprint)
    if array.ndim == 2 and array.shape[1] == 2:
        return array.astype(np.int64, copy=False)
    return cells_to_runs(array)


def union_runs(runs: np.ndarray) -> np.ndarray:
    """The union of runs as disjoint, sorted runs (touching runs are joined).

    Parameters
    ----------
    runs : numpy.ndarray
        ``(K, 2)`` runs ``(start, stop)``, in any order, possibly overlapping or empty.

    Returns
    -------
    numpy.ndarray
        ``(M, 2)`` ``int64`` runs holding exactly the cells of the input runs.
    """
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    runs = runs[runs[:, 1] > runs[:, 0]]
    if runs.shape[0] == 0:
        return _NO_RUNS
    order = np.argsort(runs[:, 0], kind="stable")
    starts, stops = runs[order, 0], runs[order, 1]
    reach = np.maximum.accumulate(stops)
    opens = np.empty(starts.size, dtype=bool)
    opens[0] = True
    opens[1:] = starts[1:] > reach[:-1]
    first = np.flatnonzero(opens)
    last = np.append(first[1:] - 1, starts.size - 1)
    return np.column_stack([starts[first], reach[last]])


def runs_length(runs: np.ndarray) -> int:
    """Number of cells in disjoint runs (the union's size when given :func:`union_runs` output)."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    return int((runs[:, 1] - runs[:, 0]).sum())


def union_size(footprints: Sequence[np.ndarray]) -> int:
    """Number of distinct cells in the runs of all ``footprints`` together."""
    if not footprints:
        return 0
    return runs_length(union_runs(np.concatenate([np.asarray(f).reshape(-1, 2) for f in footprints])))


class RunUnion:
    """A growing union of runs and its size: the covered cells of a batch being built.

    :meth:`add` costs a sort of the union's runs and the new ones, so it does not depend on
    how many cells they hold; :meth:`clear` empties it.
    """

    def __init__(self) -> None:
        self._runs = _NO_RUNS
        self._count = 0

    @property
    def count(self) -> int:
        """Number of distinct cells covered."""
        return self._count

    @property
    def runs(self) -> np.ndarray:
        """The union as disjoint sorted ``(start, stop)`` runs."""
        return self._runs

    def add(self, runs: np.ndarray) -> int:
        """Add the cells of ``runs``; return the new count."""
        self._runs = union_runs(np.concatenate([self._runs, np.asarray(runs, dtype=np.int64).reshape(-1, 2)]))
        self._count = runs_length(self._runs)
        return self._count

    def clear(self) -> None:
        """Forget every cell."""
        self._runs, self._count = _NO_RUNS, 0
