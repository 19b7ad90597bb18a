"""Running the global background model: block skies on the workers, the joint solve on the client.

Every frame of the plan gets an offset and a plane per channel
(:mod:`~zemosaic_dask.tasks.background_solve`), solved once from all overlaps before any
stacking; the region units remove them as they prepare each frame window, so every mode
(mosaic-first, classic tiles, SDS batches) stacks frames that already agree, and the
rejection compares samples whose sky drift and gradients are gone.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
from astropy.wcs import WCS

from .graph.background import build_sky_blocks_graph
from .plans.frames import FrameInfo
from .plans.mosaic import MosaicPlan
from .plans.overlaps import find_overlapping_pairs
from .tasks.background_solve import (
    FrameAffine,
    PairPoints,
    frame_gradients,
    pair_points,
    planes_in_frame_pixels,
    solve_background_planes,
)
from .units.frame_sky import frame_centre

__all__ = ["FramePlanes", "frame_affine", "solve_frame_backgrounds"]

log = logging.getLogger(__name__)

#: ``(N, C, 3)`` per-frame, per-channel background: offset at the frame centre, d/dx, d/dy.
FramePlanes = tuple[tuple[tuple[float, float, float], ...], ...]


def frame_affine(frame: FrameInfo, grid_wcs: WCS) -> FrameAffine:
    """Affine fit of a frame's pixel -> grid pixel mapping from five points about its centre."""
    height, width = frame.shape
    xc, yc = frame_centre(frame)
    dx = np.array([0.0, width / 4.0, 0.0, -width / 4.0, 0.0])
    dy = np.array([0.0, 0.0, height / 4.0, 0.0, -height / 4.0])
    ra, dec = frame.wcs.all_pix2world(xc + dx, yc + dy, 0)
    gx, gy = grid_wcs.all_world2pix(ra, dec, 0)
    design = np.column_stack([dx, dy, np.ones(5)])
    (mx0, mx1, x0), *_ = np.linalg.lstsq(design, gx, rcond=None)
    (my0, my1, y0), *_ = np.linalg.lstsq(design, gy, rcond=None)
    return FrameAffine((xc, yc), (float(x0), float(y0)), ((float(mx0), float(mx1)), (float(my0), float(my1))))


def _pairs(plan: MosaicPlan, blocks: list[Any], affines: list[FrameAffine], block: int, limit: int) -> list[PairPoints]:
    boxes = []
    for frame in plan.frames:
        bbox = plan.grid.frame_bbox(frame)
        boxes.append((0, 0, 0, 0) if bbox is None else tuple(int(round(v)) for v in bbox))
    boxes = [(b[0], b[1] + 1, b[2], b[3] + 1) if b[1] > b[0] else b for b in boxes]
    out = []
    for i, j in find_overlapping_pairs(boxes, min_overlap_px=block):
        found = pair_points(blocks[i], affines[i], blocks[j], affines[j], max_points=limit)
        if found is not None:
            out.append(PairPoints(i, j, *found))
    return out


def write_background_diagnostics(path: Path, frames: tuple[FrameInfo, ...], planes: np.ndarray) -> Path:
    """One CSV row per frame and channel: the offset at the frame centre and the plane's slopes."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "path", "channel", "offset", "slope_x", "slope_y"])
        for k, frame in enumerate(frames):
            for c in range(planes.shape[1]):
                writer.writerow([k, frame.path, c, *(f"{v:.6g}" for v in planes[k, c])])
    return path


def solve_frame_backgrounds(
    plan: MosaicPlan, config: Any, handle: Any, out: Path, *, show_progress: bool
) -> tuple[FramePlanes | None, dict[str, Any]]:
    """Measure every frame's block sky on the workers and solve the global background model.

    Returns the planes by frame index (None when the model is ``none`` or there is a
    single frame) and the ``background`` section of ``report.json``.
    """
    from .api import compute
    from .runtime import window_options

    settings = config.background
    if settings.model == "none" or len(plan.frames) < 2:
        return None, {"model": "none"}
    window = window_options(config, plan.n_channels)
    graph = build_sky_blocks_graph(plan.frames, window, settings.block_px)
    blocks = compute(handle, graph, label="background", show_progress=show_progress)
    grid_wcs = plan.grid.wcs
    affines = [frame_affine(frame, grid_wcs) for frame in plan.frames]
    pairs = _pairs(plan, blocks, affines, settings.block_px, settings.max_points_per_pair)
    observed = frame_gradients(blocks, affines)
    solution = solve_background_planes(
        len(plan.frames),
        pairs,
        np.array([a.grid_centre for a in affines]),
        observed,
        model=settings.model,
        iterations=settings.iterations,
    )
    planes = planes_in_frame_pixels(solution, affines)
    csv_path = write_background_diagnostics(out / "background_frames.csv", plan.frames, planes)
    report = {
        "model": settings.model,
        "frames": len(plan.frames),
        "pairs": len(pairs),
        "points": solution.points,
        "groups": solution.groups,
        "overlap_rms_before": [round(float(v), 4) for v in solution.rms_before],
        "overlap_rms_after": [round(float(v), 4) for v in solution.rms_after],
        "offset_range": [round(float(planes[:, :, 0].min()), 3), round(float(planes[:, :, 0].max()), 3)],
        "diagnostics": str(csv_path),
    }
    as_tuples = tuple(tuple(tuple(float(v) for v in row) for row in frame) for frame in planes)
    return as_tuples, report
