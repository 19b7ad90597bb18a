"""Two-pass coverage renormalisation, run by the same :class:`AssemblyPlan` as the assembly."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..config.policies import StageOptions
from ..graph.layers import build_two_pass_apply_graph, build_two_pass_scale_graph
from ..messages import msg
from ..plans.assembly import AssemblyPlan, select_two_pass_plan, two_pass_use_gpu
from ..plans.mosaic import MosaicPlan
from ..tasks.two_pass import gain_from_values
from ..units.combine_region import CombineJob
from ..units.two_pass_region import TwoPassJob
from .compute import compute
from .resources import derived_assembly_plan
from .routing import units_in_flight

__all__ = ["renormalise", "two_pass_jobs"]

log = logging.getLogger(__name__)


def two_pass_jobs(
    jobs: list[CombineJob], options: StageOptions, grid_shape: tuple[int, int], chosen: AssemblyPlan
) -> list[TwoPassJob]:
    """One two-pass job per combination region, with the plan's routing and row budget.

    On the GPU a region is renormalised in bands of ``gpu_rows_per_chunk`` rows, on the CPU
    of ``rows_per_chunk`` rows (rows of the whole grid's width fit the plan's byte budget,
    so a band of a narrower region does too).
    """
    t = options.two_pass
    use_gpu = two_pass_use_gpu(chosen, t.gpu)
    rows = chosen.gpu_rows_per_chunk if use_gpu else chosen.rows_per_chunk
    return [
        TwoPassJob(job, grid_shape, t.sigma_px, tuple(t.scale_clip), t.min_luminance_ratio, use_gpu, max(1, rows))
        for job in jobs
    ]


def renormalise(
    plan: MosaicPlan,
    options: StageOptions,
    jobs: list[CombineJob],
    combined: list[dict[str, Any]],
    assembly: AssemblyPlan | None,
    handle: Any,
    show_progress: bool,
) -> dict[str, Any]:
    """Measure each layer's gain from the pass-1 coverage, recombine, merge; returns the report section.

    A plan saved without an assembly section gets one derived now from the workers (logged
    and reported as ``"plan": "fallback"``).
    """
    chosen = select_two_pass_plan(assembly, lambda: derived_assembly_plan(plan, options.assembly_targets, handle))
    passes = two_pass_jobs(jobs, options, plan.grid.shape, chosen)
    use_gpu = bool(passes and passes[0].use_gpu)
    resources = {"GPU": 1} if use_gpu else None
    in_flight = units_in_flight(chosen)
    layer_max: dict[int, float] = {}
    for entry in combined:
        for layer_id, value in entry["layer_max"].items():
            layer_max[layer_id] = max(layer_max.get(layer_id, 0.0), value)
    values = compute(
        handle,
        build_two_pass_scale_graph(passes, layer_max),
        label="two-pass scale",
        show_progress=show_progress,
        max_in_flight=in_flight,
    )
    clip = tuple(options.two_pass.gain_clip)
    gains = {}
    for layer_id in sorted(layer_max):
        parts = [v[layer_id] for v in values if layer_id in v]
        gains[layer_id] = gain_from_values(np.concatenate(parts) if parts else np.empty(0), clip=clip)
    applied = compute(
        handle,
        build_two_pass_apply_graph(passes, gains, resources=resources),
        label="two-pass",
        show_progress=show_progress,
        max_in_flight=in_flight,
    )
    gpu_all = all(a["gpu_all"] for a in applied) if use_gpu else False
    log.info(msg("two_pass_backend", gpu_all=gpu_all))
    return {
        "gains": {str(k): v for k, v in gains.items()},
        "use_gpu": use_gpu,
        "gpu_all": gpu_all,
        "rows_per_band": passes[0].rows if passes else None,
        "bands": int(sum(a.get("bands", 0) for a in applied)),
        "fallbacks": [a for a in applied if a["fallback"]],
        "plan": "AssemblyPlan" if assembly is not None else "fallback",
    }
