"""Mosaic-First: every region of the grid stacked directly from the frames that reach it."""

from __future__ import annotations

from typing import Any

from ..config.policies import StageOptions
from ..graph.mosaic_first import build_mosaic_first_graph, region_jobs
from ..io.store import MosaicStore
from ..plans.mosaic import MosaicPlan
from ..plans.region_parts import RegionParts
from .coefficients import frame_coefficients
from .compute import Timings, compute
from .routing import ExecutionResult, assembly_plan_of, gpu_fallbacks, gpu_resources, unit_chunk_bytes, units_in_flight

__all__ = ["execute_mosaic_first"]


def execute_mosaic_first(
    plan: MosaicPlan,
    options: StageOptions,
    store: MosaicStore,
    handle: Any,
    *,
    timings: Timings,
    show_progress: bool,
    planes: Any,
) -> ExecutionResult:
    """Stack every region of the grid from the frames that reach it."""
    assembly = assembly_plan_of(plan)
    jobs = region_jobs(
        plan.grid,
        plan.frames,
        store,
        options.stack,
        options.window,
        max_bytes=unit_chunk_bytes(assembly),
        coefficients=frame_coefficients(plan, options.stack, planes),
    )
    parts = RegionParts.from_dict(plan.sections.get("region_parts"))
    graph = build_mosaic_first_graph(jobs, resources=gpu_resources(assembly), parts=parts)
    with timings.stage("mosaic"):
        summaries = compute(
            handle, graph, label="mosaic", show_progress=show_progress, max_in_flight=units_in_flight(assembly)
        )
    return ExecutionResult(
        mode="mosaic-first",
        fallback=plan.fallback,
        regions=len(jobs),
        report={
            "hot_pixels_fixed": int(sum(s.hot_pixels for s in summaries)),
            "max_map_error_px": max((s.max_map_error for s in summaries), default=0.0),
            "region_backends": sorted({s.backend for s in summaries}),
            "gpu_fallbacks": gpu_fallbacks(summaries),
            "assembly_plan": plan.sections.get("assembly_plan"),
            "region_parts": [{"region": f"{iy}-{ix}", "parts": n} for iy, ix, n in parts.split],
        },
    )
