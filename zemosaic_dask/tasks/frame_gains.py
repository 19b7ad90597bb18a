"""Relative gains of the frames (transparency, thin cloud, exposure) from the starlight of their overlaps.

Two frames that overlap see the same stars in the same grid cells. The light above the
sky in a cell (:attr:`~.sky_blocks.SkyCells.fluxes`) is the same in both up to each frame's
gain, so ``log g_i - log g_j = log F_j - log F_i`` for every cell rich in starlight. The
median over a pair's cells (robust to a satellite trail or a cosmic in one frame) gives
one equation per pair; the frames' log-gains are solved by weighted least squares with
their mean fixed to 0 in each group of connected frames, so the mosaic keeps the frames'
mean photometric scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import bmat, coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from .sky_blocks import SkyCells

__all__ = ["GainSolution", "pair_gain", "solve_frame_gains"]

log = logging.getLogger(__name__)

#: A cell takes part when its starlight exceeds this many times its noise in both frames.
MIN_CELL_SNR = 20.0
#: A pair gives an equation when this many cells take part.
MIN_CELLS = 5
#: Solved gains are kept within this range (a frame outside it is badly clouded or wrong).
GAIN_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class GainSolution:
    """Per-frame, per-channel gains and how many pairs constrained them."""

    gains: np.ndarray  # (N, C)
    pairs: int
    scatter: np.ndarray  # (C,) robust rms of the pair equations' residuals (log units)


def pair_gain(cells_i: SkyCells, cells_j: SkyCells, noise: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """``log(F_j / F_i)`` per channel over the cells rich in starlight in both frames, and its variance.

    Returns None when fewer than :data:`MIN_CELLS` cells qualify in some channel.
    """
    common, index_i, index_j = np.intersect1d(cells_i.ids, cells_j.ids, assume_unique=True, return_indices=True)
    if common.size < MIN_CELLS:
        return None
    cell_noise = np.asarray(noise, dtype=np.float64)[:, None] * cells_i.cell
    flux_i, flux_j = cells_i.fluxes[:, index_i], cells_j.fluxes[:, index_j]
    values, variances = [], []
    for c in range(flux_i.shape[0]):
        rich = (flux_i[c] > MIN_CELL_SNR * cell_noise[c]) & (flux_j[c] > MIN_CELL_SNR * cell_noise[c])
        if rich.sum() < MIN_CELLS:
            return None
        ratios = np.log(flux_j[c, rich] / flux_i[c, rich])
        median = float(np.median(ratios))
        spread = 1.4826 * float(np.median(np.abs(ratios - median)))
        values.append(median)
        variances.append(max(spread, 1e-3) ** 2 * np.pi / 2 / rich.sum())
    return np.asarray(values), np.asarray(variances)


def solve_frame_gains(
    n_frames: int, channels: int, equations: Sequence[tuple[int, int, np.ndarray, np.ndarray]]
) -> GainSolution:
    """Solve the frames' gains from pair equations ``(i, j, log(F_j/F_i), variance)``.

    Frames without an equation keep gain 1.
    """
    if not equations:
        return GainSolution(np.ones((n_frames, channels)), 0, np.zeros(channels))
    i = np.array([e[0] for e in equations])
    j = np.array([e[1] for e in equations])
    rows = np.arange(len(equations))
    design = coo_matrix(
        (
            np.concatenate([np.ones(rows.size), -np.ones(rows.size)]),
            (np.concatenate([rows, rows]), np.concatenate([i, j])),
        ),
        shape=(rows.size, n_frames),
    ).tocsr()
    groups, labels = connected_components(
        coo_matrix((np.ones(rows.size), (i, j)), shape=(n_frames, n_frames)), directed=False
    )
    gauge = coo_matrix((np.ones(n_frames), (labels, np.arange(n_frames))), shape=(groups, n_frames)).tocsr()
    gains = np.ones((n_frames, channels))
    scatter = np.zeros(channels)
    for c in range(channels):
        target = np.array([e[2][c] for e in equations])
        weight = 1.0 / np.array([e[3][c] for e in equations])
        normal = design.T @ design.multiply(weight[:, None]).tocsr()
        kkt = bmat([[normal, gauge.T], [gauge, None]], format="csc")
        solution = spsolve(kkt, np.concatenate([design.T @ (weight * target), np.zeros(groups)]))
        log_gain = np.asarray(solution[:n_frames])
        gains[:, c] = np.clip(np.exp(log_gain), *GAIN_RANGE)
        residual = design @ log_gain - target
        scatter[c] = 1.4826 * float(np.median(np.abs(residual)))
    log.info(
        "[Background] gains of %d frame(s) from %d pair(s): %s .. %s",
        n_frames,
        len(equations),
        np.round(gains.min(axis=0), 4).tolist(),
        np.round(gains.max(axis=0), 4).tolist(),
    )
    return GainSolution(gains, len(equations), scatter)
