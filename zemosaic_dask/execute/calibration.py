"""Running the inter-layer photometric calibration: pair tasks, progress, global solve, diagnostics."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import dask

from ..config.sections import CalibrationConfig
from ..graph.intertile import build_intertile_graph
from ..io.diagnostics import write_pair_diagnostics
from ..plans.overlaps import overlap_box
from ..plans.pair_graph import select_overlapping_pairs
from ..progress import MonotoneProgress, TerminalBar, watch_futures
from ..tasks.gain_solve import solve_tile_corrections
from ..tasks.intertile import PairFit
from ..units.intertile_pair import PairJob

__all__ = ["calibrate_layers"]

log = logging.getLogger(__name__)


def pair_jobs(stores: list[Any], c: CalibrationConfig) -> list[PairJob]:
    """One job per selected pair of overlapping layers (each layer's largest overlaps, all layers linked)."""
    boxes = [entry.layer.box for entry in stores]
    jobs = []
    for i, j in select_overlapping_pairs(boxes, k=c.pair_neighbours, min_overlap_px=8):
        box = overlap_box(boxes[i], boxes[j])
        if box is None:
            continue
        jobs.append(
            PairJob(
                i,
                j,
                stores[i].on_grid,
                stores[j].on_grid,
                tuple(box),
                tuple(c.sky_percentiles),
                c.clip_sigma,
                c.max_iterations,
                c.min_overlap_samples,
            )
        )
    return jobs


def _fit_pairs(
    jobs: list[PairJob], handle: Any, settings: CalibrationConfig, show_progress: bool
) -> tuple[list[PairFit], dict]:
    graph = build_intertile_graph(jobs)
    progress = MonotoneProgress(
        len(graph),
        label="Intertile",
        heartbeat_s=settings.heartbeat_s,
        on_update=TerminalBar(sys.stderr, "intertile") if show_progress else None,
    )
    if handle.client is None:
        results = dict(zip(graph, dask.compute(*graph.values(), scheduler="synchronous"), strict=True))
        for key in results:
            progress.done(key)
    else:
        futures = handle.client.compute(list(graph.values()), optimize_graph=False)
        results = watch_futures(dict(zip(graph, futures, strict=True)), progress)
    fits = [r for r in results.values() if isinstance(r, PairFit)]
    status = {
        "pairs": len(graph),
        "done": progress.n_done,
        "failed": progress.n_failed,
        "failures": {str(k): v for k, v in progress.failures.items()},
        "heartbeats": progress.heartbeats,
    }
    return fits, status


def calibrate_layers(
    stores: list[Any], settings: CalibrationConfig, handle: Any, out: Path, *, show_progress: bool
) -> tuple[dict[int, tuple[tuple[float, ...], tuple[float, ...]]], dict[str, Any]]:
    """Fit every overlapping pair, solve one gain and offset per layer and channel.

    Returns the corrections by layer id and the report section (gains, offsets, anchor,
    pair counts, clamps, the diagnostics CSV path).
    """
    jobs = pair_jobs(stores, settings)
    fits, status = _fit_pairs(jobs, handle, settings, show_progress)
    corrections = solve_tile_corrections(
        len(stores), fits, anchor=settings.anchor, max_iterations=settings.max_iterations
    )
    csv = write_pair_diagnostics(out / "intertile_pairs.csv", fits, corrections)
    skipped = sum(1 for f in fits if f.skipped)
    log.info(
        "[Intertile] %d pair(s): %d fitted, %d skipped, %d failed; anchor layer %s",
        status["pairs"],
        len(fits) - skipped,
        skipped,
        status["failed"],
        corrections.anchor,
    )
    by_id = {
        entry.layer.id: (tuple(corrections.gains[index]), tuple(corrections.offsets[index]))
        for index, entry in enumerate(stores)
    }
    report = {
        **status,
        "skipped": skipped,
        "anchor": corrections.anchor,
        "gains": {str(k): list(v[0]) for k, v in by_id.items()},
        "offsets": {str(k): list(v[1]) for k, v in by_id.items()},
        "clamped": list(corrections.clamped),
        "unconnected": list(corrections.unconnected),
        "diagnostics": str(csv),
    }
    return by_id, report
