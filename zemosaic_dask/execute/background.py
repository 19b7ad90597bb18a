"""Running the global background model: cell skies, pair summaries and the solve on the workers.

Every frame of the plan gets an offset and a plane per channel
(:mod:`~zemosaic_dask.tasks.background_solve`), solved once from all overlaps before any
stacking; the region units remove them as they prepare each frame window, so every mode
(mosaic-first, classic tiles, SDS batches) stacks frames that already agree, and the
rejection compares samples whose sky drift and gradients are gone. The frames' cell skies never
reach the client (:mod:`~zemosaic_dask.graph.background`), nor do the pair summaries: one task
solves the model on a worker, and the client gathers a few numbers per frame.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..config.policies import StageOptions
from ..graph.background import build_background_graph
from ..plans.frames import FrameInfo
from ..plans.grid import frame_pixel_boxes
from ..plans.mosaic import MosaicPlan
from ..plans.pair_graph import select_overlapping_pairs
from ..tasks.background_solve import log_solution
from ..units.background_model import BackgroundModel
from .compute import compute

__all__ = ["FramePlanes", "solve_frame_backgrounds", "write_background_diagnostics"]

log = logging.getLogger(__name__)

#: ``(N, C, 4)`` per frame and channel: offset at the frame centre, d/dx, d/dy (after the gain) and
#: the gain; a frame's pixels become ``gain * v - (offset + dx * (x - xc) + dy * (y - yc))``.
FramePlanes = tuple[tuple[tuple[float, float, float, float], ...], ...]


def _overlapping(plan: MosaicPlan, cell: int, neighbours: int | None) -> list[tuple[int, int]]:
    return select_overlapping_pairs(frame_pixel_boxes(plan.grid, plan.frames), k=neighbours, min_overlap_px=cell)


def write_background_diagnostics(path: Path, frames: tuple[FrameInfo, ...], planes: np.ndarray) -> Path:
    """One CSV row per frame and channel: the offset at the frame centre, the plane's slopes and the gain."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "path", "channel", "offset", "slope_x", "slope_y", "gain"])
        for k, frame in enumerate(frames):
            for c in range(planes.shape[1]):
                writer.writerow([k, frame.path, c, *(f"{v:.6g}" for v in planes[k, c])])
    return path


def solve_frame_backgrounds(
    plan: MosaicPlan, options: StageOptions, handle: Any, out: Path, *, show_progress: bool
) -> tuple[FramePlanes | None, dict[str, Any]]:
    """Measure every frame's block sky on the workers and solve the global background model.

    Returns the planes by frame index (None when the model is ``none`` or there is a
    single frame) and the ``background`` section of ``report.json``.
    """
    settings = options.background
    if settings.model == "none" or len(plan.frames) < 2:
        return None, {"model": "none"}
    window = options.window
    noise = [np.resize(np.asarray(f.noise or (0.0,), dtype=np.float64), plan.n_channels) for f in plan.frames]
    typical = tuple(float(v) for v in np.median(noise, axis=0)) if noise else None
    overlaps = _overlapping(plan, settings.block_px, options.calibration.pair_neighbours)
    graph = build_background_graph(
        plan.frames,
        window,
        plan.grid,
        overlaps,
        cell=settings.block_px,
        noise=typical,
        model=settings.model,
        max_points=settings.max_points_per_pair,
        iterations=settings.iterations,
        gains=settings.gains,
        channels=plan.n_channels,
    )
    found: BackgroundModel = compute(handle, graph.tasks(), label="background", show_progress=show_progress)[-1]
    solution, gains, planes = found.solution, found.gains, found.planes
    log_solution(solution, settings.model, len(plan.frames))
    csv_path = write_background_diagnostics(out / "background_frames.csv", plan.frames, planes)
    report = {
        "model": settings.model,
        "frames": len(plan.frames),
        "pairs": solution.pairs,
        "points": solution.points,
        "groups": solution.groups,
        "solver": {"cg_iterations": solution.iterations, "direct_solves": solution.direct},
        "overlap_rms_before": [round(float(v), 4) for v in solution.rms_before],
        "overlap_rms_after": [round(float(v), 4) for v in solution.rms_after],
        "offset_range": [round(float(planes[:, :, 0].min()), 3), round(float(planes[:, :, 0].max()), 3)],
        "gain_pairs": gains.pairs,
        "gain_range": [round(float(gains.gains.min()), 5), round(float(gains.gains.max()), 5)],
        "gain_pair_scatter": [round(float(v), 5) for v in gains.scatter],
        "diagnostics": str(csv_path),
    }
    as_tuples = tuple(tuple(tuple(float(v) for v in row) for row in frame) for frame in planes)
    return as_tuples, report
