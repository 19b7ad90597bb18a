"""A pair's overlap reduced to a robust plane of its differences: trails rejected, even with few cells."""

from __future__ import annotations

import numpy as np

from zemosaic_dask.tasks.overlap_planes import sample_pairs, summarise_pair
from zemosaic_dask.tasks.sky_blocks import SkyCells

CELL = 16


def test_a_shared_scale_lets_a_pair_of_few_points_reject_a_trail():
    n_columns = 50
    ids = np.array([0, 1, 2, 3, 4, 5, 50, 51, 52, 53, 54, 55], dtype=np.int64)  # 2 rows of 6 cells
    base = SkyCells(ids, np.full((1, ids.size), 100.0), np.zeros((1, ids.size)), CELL, n_columns)
    gx, gy = base.centres()
    other_values = 100.0 - (7.0 + 0.5 * gx / CELL)[None, :]  # the other frame: 7 ADU lower, and a slope
    other_values[0, 3] += 400.0  # a trail crosses one cell of it
    other = SkyCells(ids, other_values, np.zeros((1, ids.size)), CELL, n_columns)
    shared = summarise_pair(0, 1, base, other, scale=np.array([1.0]))
    own = summarise_pair(0, 1, base, other)  # 12 points: each pair's own robust sigma
    few = summarise_pair(0, 1, base, SkyCells(ids[:6], other_values[:, :6], np.zeros((1, 6)), CELL, n_columns))
    assert shared.points == 12 and few.points == 6

    def fitted(summary):
        return np.linalg.lstsq(summary.root[0], summary.target[0], rcond=None)[0]

    # The plane of s_i - s_j at the pair's centre: 7 + 0.5 * X_centre / CELL.
    expected = 7.0 + 0.5 * shared.centre[0] / CELL
    assert abs(fitted(shared)[0] - expected) < 0.5
    assert abs(fitted(own)[0] - expected) < 0.5
    # 6 points in a row, no scale given: too few for a robust sigma, the trail pulls the plain fit.
    assert abs(fitted(few)[0] - (7.0 + 0.5 * few.centre[0] / CELL)) > 20.0
    assert shared.weight[0] < 11.1  # the trail's cell counts for almost nothing


def test_sample_pairs_spreads_over_the_list_and_keeps_short_lists_whole():
    pairs = [(k, k + 1) for k in range(1000)]
    picked = sample_pairs(pairs, 10)
    assert len(picked) == 10 and picked[0] == (0, 1) and picked[-1] == (999, 1000)
    assert np.all(np.diff([i for i, _ in picked]) > 100)
    assert sample_pairs(pairs[:5], 10) == pairs[:5] and sample_pairs([], 10) == []
