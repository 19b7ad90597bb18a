"""The global background model solved on a worker, from the measurements its graph left there.

The pair summaries of a survey are tens of megabytes and their solve a sparse factorisation of
tens of thousands of unknowns (225,021 pairs and 47,043 unknowns per channel at 16,000 deep
frames: about 400 MiB of transient memory and 24 s of CPU). Run in the submitting process, that
was the client's largest block of memory and CPU. Here one task takes the frames' summaries, the
gains and every pair batch as its dependencies, solves, and returns only what the run keeps: a
few numbers per frame and the figures of ``report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tasks.background_solve import BackgroundSolution, planes_in_frame_pixels, solve_background_planes
from ..tasks.frame_gains import GainSolution
from ..tasks.overlap_planes import PairTable

__all__ = ["BackgroundModel", "solve_background_model"]


@dataclass(frozen=True)
class BackgroundModel:
    """The solved model as the client needs it.

    Attributes
    ----------
    planes : numpy.ndarray
        ``(N, C, 4)`` per frame and channel: offset at the frame centre, d/dx, d/dy in frame
        pixels (after the gain) and the gain.
    solution : BackgroundSolution
        The solve's figures (its ``coefficients`` are the grid-coordinate form of ``planes``).
    gains : GainSolution
        The frames' relative gains (all ones, from no pair, when gains are not solved).
    """

    planes: np.ndarray
    solution: BackgroundSolution
    gains: GainSolution


def solve_background_model(
    n_frames: int, n_channels: int, model: str, iterations: int, n_summaries: int, with_gains: bool, *results: Any
) -> BackgroundModel:
    """Solve every frame's background plane and gain from the background graph's measurements.

    Parameters
    ----------
    n_frames, n_channels : int
        Frames of the plan and channels of the mosaic.
    model : {"offset", "plane"}
        What each frame gets (see :func:`~zemosaic_dask.tasks.background_solve.solve_background_planes`).
    iterations : int
        Robust reweighting passes of the solve.
    n_summaries : int
        How many of ``results`` are batches of frame summaries
        (:func:`~zemosaic_dask.units.background_pairs.frame_summaries`), in frame order.
    with_gains : bool
        Whether the next result is the frames' :class:`GainSolution`.
    *results
        The frame summary batches, the gains (if ``with_gains``), then the pair batches
        (:class:`PairTable`).

    Returns
    -------
    BackgroundModel
    """
    measured = [row for batch in results[:n_summaries] for row in batch]
    k = n_summaries
    gains = results[k] if with_gains else None
    k += bool(with_gains)
    if gains is None:
        gains = GainSolution(np.ones((n_frames, n_channels)), 0, np.zeros(n_channels))
    pairs = PairTable.concatenate(results[k:])
    affines = [m[0] for m in measured]
    # A frame's own gradient scales with its gain (the robust plane fit is linear in the values).
    observed = np.stack([m[1] for m in measured]) * gains.gains[:, :, None]
    solution = solve_background_planes(
        n_frames,
        pairs,
        np.array([a.grid_centre for a in affines]),
        observed,
        model=model,
        iterations=iterations,
    )
    planes = np.concatenate([planes_in_frame_pixels(solution, affines), gains.gains[:, :, None]], axis=2)
    return BackgroundModel(planes, solution, gains)
