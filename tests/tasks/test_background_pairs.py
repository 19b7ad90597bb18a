"""The worker units of the background model: gains, shared scale and pair summaries from cell skies."""

from __future__ import annotations

import numpy as np

from zemosaic_dask.tasks.background_solve import FrameAffine, solve_background_planes
from zemosaic_dask.tasks.sky_blocks import SkyCells
from zemosaic_dask.units.background_pairs import (
    frame_summaries,
    gain_equations,
    pair_scale,
    pair_summaries,
    solve_gains,
)

CELL, COLUMNS = 16, 60


def _frame(x0: int, offset: float, gain: float, rng: np.random.Generator) -> tuple[SkyCells, FrameAffine]:
    """A frame over cell columns x0..x0+29, rows 0..19: sky 200 + offset, a star in one cell of three, times gain."""
    rows, columns = np.mgrid[0:20, x0 : x0 + 30]
    ids = (rows * COLUMNS + columns).ravel()
    stars = np.where(ids % 3 == 0, 50_000.0 * (1 + (ids % 7)), 0.0)  # the same stars in every frame
    values = (200.0 + offset + rng.normal(0.0, 0.3, ids.size)) * gain
    cells = SkyCells(ids, values[None, :], (stars * gain)[None, :], CELL, COLUMNS)
    centre = ((x0 + 15) * CELL - 0.5, 10 * CELL - 0.5)
    return cells, FrameAffine((0.0, 0.0), centre, ((1.0, 0.0), (0.0, 1.0)))


def test_gains_scale_the_cells_before_the_pairs_are_summarised():
    rng = np.random.default_rng(0)
    truth_gain = np.array([1.0, 0.8, 1.25])
    offsets = np.array([0.0, 30.0, -20.0])
    measured = [_frame(x0, o, g, rng) for x0, o, g in zip((0, 10, 20), offsets, truth_gain, strict=True)]
    frames, pairs = [0, 1, 2], [(0, 1), (0, 2), (1, 2)]
    equations = gain_equations(pairs, frames, (1.0,), *measured)
    assert len(equations) == 3
    gains = solve_gains(3, 1, equations)
    # Gains bring every frame to the geometric mean of the frames' throughputs.
    expected = np.exp(np.mean(np.log(truth_gain))) / truth_gain
    np.testing.assert_allclose(gains.gains[:, 0], expected, rtol=1e-3)
    scale = pair_scale(pairs, frames, "plane", 400, gains, *measured)
    assert scale is not None and 0.1 < scale[0] < 2.0
    summaries = pair_summaries(pairs, frames, "plane", 400, 5, gains, scale, *measured)
    assert list(zip(summaries.i.tolist(), summaries.j.tolist(), strict=True)) == pairs
    summary = frame_summaries(*measured)
    observed = np.stack([s[1] for s in summary]) * gains.gains[:, :, None]
    centres = np.array([s[0].grid_centre for s in summary])
    solution = solve_background_planes(3, summaries, centres, observed)
    # After the gains, frame k sits at (200 + offset_k) * mean gain: the offsets come back in that unit.
    mean_gain = np.exp(np.mean(np.log(truth_gain)))
    expected_offsets = (offsets - offsets.mean()) * mean_gain
    np.testing.assert_allclose(solution.coefficients[:, 0, 0], expected_offsets, atol=0.5)
