"""The background model's overlap work, run on the workers next to the frames' cell skies.

The cell skies of every frame (:func:`~zemosaic_dask.units.frame_sky.measure_frame_sky`, about
100 KB per full-size frame) stay on the workers: these units reduce them to what the solve
(:func:`~zemosaic_dask.units.background_model.solve_background_model`, itself a task) needs, a few
numbers per frame (its affine map and own gradient) and per overlapping pair (a row of a
:class:`~zemosaic_dask.tasks.overlap_planes.PairTable`, about 0.4 KB). Each unit takes the
measurements it needs as trailing arguments, in the order of the frame indices it is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..tasks.background_solve import FrameAffine, frame_gradients
from ..tasks.frame_gains import GainSolution, pair_gain, solve_frame_gains
from ..tasks.overlap_planes import PairTable, overlap_scale, summarise_pair
from ..tasks.sky_blocks import SkyCells

__all__ = ["frame_summaries", "gain_equations", "pair_scale", "pair_summaries", "solve_gains"]

Measured = tuple[SkyCells, FrameAffine]


def _pairs(pairs: Sequence[tuple[int, int]] | np.ndarray) -> list[tuple[int, int]]:
    """``pairs`` (a ``(P, 2)`` array, as the graph gives them, or a sequence of pairs) as tuples of ints."""
    return [(int(i), int(j)) for i, j in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist()]


def _lookup(frames: Sequence[int], measured: Sequence[Measured], gains: GainSolution | None) -> dict[int, SkyCells]:
    cells = {}
    for index, (sky, _) in zip(np.asarray(frames).tolist(), measured, strict=True):
        if gains is not None:
            g = gains.gains[index]
            sky = dataclasses.replace(sky, values=sky.values * g[:, None], fluxes=sky.fluxes * g[:, None])
        cells[int(index)] = sky
    return cells


def frame_summaries(*measured: Measured) -> list[tuple[FrameAffine, np.ndarray]]:
    """Each frame's affine map and own sky gradient ``(C, 2)`` (:func:`frame_gradients`)."""
    gradients = frame_gradients([m[0] for m in measured], [m[1] for m in measured])
    return [(m[1], g) for m, g in zip(measured, gradients, strict=True)]


def gain_equations(
    pairs: Sequence[tuple[int, int]] | np.ndarray, frames: Sequence[int], noise: Sequence[float], *measured: Measured
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """The relative-gain equations of ``pairs`` (:func:`~zemosaic_dask.tasks.frame_gains.pair_gain`)."""
    cells = _lookup(frames, measured, None)
    out = []
    for i, j in _pairs(pairs):
        found = pair_gain(cells[i], cells[j], noise)
        if found is not None:
            out.append((i, j, *found))
    return out


def solve_gains(n_frames: int, channels: int, *batches: list[tuple[int, int, np.ndarray, np.ndarray]]) -> GainSolution:
    """The frames' relative gains from every batch of :func:`gain_equations`."""
    return solve_frame_gains(n_frames, channels, [e for batch in batches for e in batch])


def pair_scale(
    pairs: Sequence[tuple[int, int]] | np.ndarray,
    frames: Sequence[int],
    model: str,
    max_points: int,
    gains: GainSolution | None,
    *measured: Measured,
) -> np.ndarray | None:
    """The residual scale shared by every pair's robust fit, from the sampled ``pairs`` (:func:`overlap_scale`)."""
    cells = _lookup(frames, measured, gains)
    pairs = _pairs(pairs)
    return overlap_scale(cells, pairs, model=model, max_points=max_points, sample=len(pairs))


def pair_summaries(
    pairs: Sequence[tuple[int, int]] | np.ndarray,
    frames: Sequence[int],
    model: str,
    max_points: int,
    iterations: int,
    gains: GainSolution | None,
    scale: np.ndarray | None,
    *measured: Measured,
) -> PairTable:
    """Every pair of ``pairs`` reduced to a robust plane of its differences (:func:`summarise_pair`), as a table."""
    cells = _lookup(frames, measured, gains)
    out = []
    for i, j in _pairs(pairs):
        found = summarise_pair(
            i, j, cells[i], cells[j], model=model, max_points=max_points, iterations=iterations, scale=scale
        )
        if found is not None:
            out.append(found)
    return PairTable.from_summaries(out)
