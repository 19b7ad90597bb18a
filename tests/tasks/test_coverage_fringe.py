"""The SDS coverage mask trims the field's low-coverage fringe and never punches a hole inside it."""

from __future__ import annotations

import numpy as np

from zemosaic_dask.tasks.coverage_fringe import low_coverage_fringe


def _field() -> tuple[np.ndarray, np.ndarray]:
    covered = np.zeros((40, 40), dtype=bool)
    covered[3:, 3:] = True  # the field runs on past the window's right and bottom edges
    low = np.zeros_like(covered)
    low[3:6, 3:30] = True  # a fringe along the field's top edge
    low[18:23, 18:23] = True  # a spot inside the field that one batch alone reaches
    low[30:34, 36:40] = True  # a low patch cut by the window's right edge
    return low, covered


def test_the_fringe_and_the_window_edge_are_masked_an_inner_spot_is_kept():
    low, covered = _field()
    masked = low_coverage_fringe(low, covered)
    assert masked[3:6, 3:30].all()
    assert not masked[18:23, 18:23].any()
    assert masked[30:34, 36:40].all()
    assert not (masked & ~low).any()
    assert masked.sum() == low.sum() - 25


def test_an_inner_spot_joined_to_the_fringe_is_the_fringe():
    low, covered = _field()
    low[6:18, 20] = True  # a thread of low pixels from the fringe to the spot
    masked = low_coverage_fringe(low, covered)
    assert masked[18:23, 18:23].all() and masked.sum() == low.sum()


def test_nothing_low_masks_nothing():
    _, covered = _field()
    assert not low_coverage_fringe(np.zeros_like(covered), covered).any()


def test_the_halo_of_a_gap_inside_the_field_is_kept():
    """Where no frame covers a spot inside the field, its low-coverage surround is not the field's fringe."""
    low, covered = _field()
    covered[10:13, 30:33] = False  # a gap no frame covers (a rejected frame's place)
    low[8:15, 28:35] = True
    low[10:13, 30:33] = False
    masked = low_coverage_fringe(low, covered)
    assert not masked[8:15, 28:35].any()
    assert masked[3:6, 3:28].all()  # the fringe along the top edge still goes
