"""The layer modes (classic and SDS): build the layers, calibrate them, combine them, renormalise."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..config.policies import StageOptions
from ..graph.layers import build_sds_region_graph
from ..graph.regions import BUNDLES_PER_SLOT
from ..io.store import MosaicStore, open_mosaic_store
from ..messages import msg
from ..plans.mosaic import MosaicPlan
from ..plans.sds_execution import SdsExecution
from ..plans.sds_mask import SdsMaskSummary
from ..units.sds_region import COUNT_STORE, SdsRegionJob
from .calibration import calibrate_layers
from .coefficients import frame_coefficients, frame_noise_and_sky
from .compute import Timings, compute
from .layer_stores import (
    build_layers,
    combine_jobs,
    combine_layers,
    combine_trees,
    layer_inputs,
    layer_region_jobs,
    layer_stores,
    mask_layers,
    named_layer_stores,
)
from .routing import ExecutionResult, assembly_plan_of, gpu_fallbacks, gpu_resources, unit_chunk_bytes, units_in_flight
from .two_pass import renormalise

__all__ = ["execute_layers", "execute_sds_regions"]

log = logging.getLogger(__name__)


def tree_summary(trees: list[list[list[Any]]], fan_in: int) -> dict[str, Any]:
    """The report's account of the combination trees: fan-in, regions combined in groups, group tasks, levels."""
    deep = [levels for levels in trees if len(levels) > 1]
    return {
        "fan_in": int(fan_in),
        "regions_in_groups": len(deep),
        "group_tasks": sum(len(jobs) for levels in deep for jobs in levels[:-1]),
        "levels": max((len(levels) for levels in trees), default=0),
    }


def _expected_noise(plan: MosaicPlan, combine: Any, planes: Any) -> dict[str, Any]:
    """The frames' typical noise, sky and shot level per channel, for a ``noise_clip`` across layers (else none)."""
    if combine.rejection != "noise_clip":
        return {}
    noise, sky, shot = (tuple(np.median(np.asarray(t), axis=0).tolist()) for t in frame_noise_and_sky(plan, planes))
    return {"noise": noise, "sky": sky, "shot": shot}


def _mask_fringe(
    jobs: list[Any],
    combined: list[dict[str, Any]],
    options: StageOptions,
    handle: Any,
    timings: Timings,
    counts: Any = None,
) -> dict[str, Any]:
    """The SDS coverage mask over the combined regions (layer counts from ``counts`` when given); its report.

    A region whose result says how few batches reach its pixels with data (``covered``, fused
    regions) and where none falls under the threshold has nothing to mask: it is counted
    without a task.
    """
    keep = options.sds_min_coverage_keep
    max_layers = max((c["max_layers"] for c in combined), default=0)
    min_layers = keep * max_layers
    kept, to_mask = [], []
    for job, result in zip(jobs, combined, strict=True):
        covered = result.get("covered")
        if covered is not None and covered[1] >= min_layers:
            kept.append(SdsMaskSummary(covered[0], 0))
        else:
            to_mask.append(job)
    with timings.stage("coverage-mask"):
        masked = compute(handle, mask_layers(to_mask, min_layers, counts), label="mask", show_progress=False)
    summaries = kept + list(masked)
    summary = sum(summaries[1:], summaries[0]) if summaries else None
    if summary and summary.fraction > 0.01:
        log.warning(msg("sds_mask_large", percent=100.0 * summary.fraction, keep=keep))
    return {
        "sds_masked_pixels": summary.masked_pixels if summary else 0,
        "sds_mask": summary.to_dict() if summary else None,
        "sds_mask_tasks": len(to_mask),
    }


def execute_sds_regions(
    plan: MosaicPlan,
    options: StageOptions,
    store: MosaicStore,
    handle: Any,
    *,
    timings: Timings,
    show_progress: bool,
    planes: Any,
) -> ExecutionResult:
    """SDS fused: one task per region stacks its batches and combines them (:mod:`~zemosaic_dask.units.sds_region`).

    The batches and their combination are those of the stored execution (no calibration,
    no two-pass: the plan stores the batches when they are asked for); the coverage mask
    reads the batch counts the region tasks wrote.
    """
    assembly = assembly_plan_of(plan)
    max_bytes = unit_chunk_bytes(assembly)
    resources = gpu_resources(assembly)
    stores = named_layer_stores(plan, store)
    combine = options.layer_combine
    extra = _expected_noise(plan, combine, planes)
    jobs = combine_jobs(plan, stores, layer_inputs(stores, None), store, combine, max_bytes=max_bytes, **extra)
    coefficients = frame_coefficients(plan, options.stack, planes)
    batches: dict[tuple[int, int, int], Any] = {}
    for layer in plan.layers:
        sizes = {"max_bytes": max_bytes, "coefficients": coefficients}
        for job in layer_region_jobs(plan, layer, plan.grid, store, options.stack, options.window, **sizes):
            batches[layer.id, job.region.iy, job.region.ix] = job
    counts, _ = open_mosaic_store(store.url, plan.grid, 1, fingerprint=plan.fingerprint(), prefix=COUNT_STORE)
    fused = [
        SdsRegionJob(job, tuple(batches.get((x.id, job.region.iy, job.region.ix)) for x in job.layers), counts)
        for job in jobs
    ]
    with timings.stage("sds-regions"):
        combined = compute(
            handle,
            build_sds_region_graph(fused, resources),
            label="sds-regions",
            show_progress=show_progress,
            max_in_flight=units_in_flight(assembly),
        )
    summaries = [c["summary"] for c in combined]
    report: dict[str, Any] = {
        "layers": len(stores),
        "assembly_plan": plan.sections.get("assembly_plan"),
        "sds_execution": plan.sections.get("sds_execution"),
        "layer_combine": dataclasses.asdict(combine),
        "combine_tree": tree_summary([[[job]] for job in jobs], options.layer_fan_in),
    }
    if jobs:
        report.update(_mask_fringe(jobs, combined, options, handle, timings, counts))
    report["hot_pixels_fixed"] = int(sum(c["hot_pixels"] for c in combined))
    report["gpu_fallbacks"] = gpu_fallbacks(summaries)
    report["region_backends"] = sorted({s.backend for s in summaries if not s.reused})
    return ExecutionResult(mode=plan.mode, fallback=plan.fallback, regions=len(jobs), report=report)


def execute_layers(
    plan: MosaicPlan,
    options: StageOptions,
    store: MosaicStore,
    handle: Any,
    *,
    timings: Timings,
    show_progress: bool,
    planes: Any,
) -> ExecutionResult:
    """Classic master tiles or SDS batch mosaics, calibrated and combined into ``store``.

    SDS batches run fused region by region when the plan's ``sds_execution`` says so
    (:func:`execute_sds_regions`); otherwise every batch mosaic is stored, then combined.
    """
    if plan.mode == "sds" and SdsExecution.from_dict(plan.sections.get("sds_execution")).fused:
        context = {"timings": timings, "show_progress": show_progress, "planes": planes}
        return execute_sds_regions(plan, options, store, handle, **context)
    stores = layer_stores(plan, store)
    assembly = assembly_plan_of(plan)
    max_bytes = unit_chunk_bytes(assembly)
    in_flight = units_in_flight(assembly)
    label = "tiles" if plan.mode == "classic" else "batches"
    with timings.stage(label):
        summaries = compute(
            handle,
            build_layers(
                plan,
                stores,
                options.stack,
                options.window,
                resources=gpu_resources(assembly),
                max_bytes=max_bytes,
                coefficients=frame_coefficients(plan, options.stack, planes),
                bundles=BUNDLES_PER_SLOT * (in_flight or 1),
            ),
            label=label,
            show_progress=show_progress,
            max_in_flight=in_flight,
        )
    summaries = [s for item in summaries for s in (item if isinstance(item, list) else [item])]  # bundles: lists
    report: dict[str, Any] = {"layers": len(stores), "assembly_plan": plan.sections.get("assembly_plan")}
    if plan.mode == "sds":
        report["sds_execution"] = plan.sections.get("sds_execution")
    corrections = None
    if options.calibration.intertile and len(stores) > 1:
        with timings.stage("calibration"):
            out = Path(stores[0].on_grid.url).parent
            corrections, report["calibration"] = calibrate_layers(
                stores, options.calibration, handle, out, show_progress=show_progress
            )
    inputs = layer_inputs(stores, corrections)
    combine = options.layer_combine
    report["layer_combine"] = dataclasses.asdict(combine)
    prefix = "stack-region" if plan.mode == "classic" else "sds-combine"
    noise = _expected_noise(plan, combine, planes)
    jobs = combine_jobs(plan, stores, inputs, store, combine, max_bytes=max_bytes, **noise)
    with timings.stage("assembly"):
        fan_in = options.layer_fan_in
        trees = combine_trees(jobs, fan_in, grid=plan.grid, n_channels=plan.n_channels, fingerprint=plan.fingerprint())
        report["combine_tree"] = tree_summary(trees, fan_in)
        graph = combine_layers(trees, prefix)
        combined = compute(handle, graph, label="assembly", show_progress=show_progress, max_in_flight=in_flight)
    if options.two_pass.enabled and len(stores) > 1 and jobs:
        with timings.stage("two-pass"):
            report["two_pass"] = renormalise(plan, options, jobs, combined, assembly, handle, show_progress)
    if plan.mode == "sds" and jobs:
        report.update(_mask_fringe(jobs, combined, options, handle, timings))
    report["hot_pixels_fixed"] = int(sum(getattr(s, "hot_pixels", 0) for s in summaries))
    report["gpu_fallbacks"] = gpu_fallbacks(summaries)
    return ExecutionResult(mode=plan.mode, fallback=plan.fallback, regions=len(jobs), report=report)
