"""Executing a :class:`MosaicPlan`: one function per mode, all sharing the region units.

The api owns the client; this module turns plan sections into graphs (through
``graph/``) and computes them through :func:`zemosaic_dask.api.compute`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ZeMosaicConfig
from .errors import ResumeError
from .graph.mosaic_first import build_mosaic_first_graph, region_jobs
from .io.store import MosaicStore
from .plans.mosaic import MosaicPlan
from .tasks.stacking import StackOptions
from .units.frame_window import FrameWindowOptions

__all__ = ["ExecutionResult", "cluster_resources", "execute_plan", "plan_sections", "stack_options", "window_options"]

log = logging.getLogger(__name__)


@dataclass
class ExecutionResult:
    """What executing a plan did."""

    mode: str
    fallback: str | None
    regions: int
    report: dict[str, Any] = field(default_factory=dict)


def stack_options(config: ZeMosaicConfig) -> StackOptions:
    """Stacking options from the ``zemosaic.stack`` section."""
    s = config.stack
    return StackOptions(
        normalisation=s.normalisation,
        weighting=s.weighting,
        rejection=s.rejection,
        kappa_low=s.kappa_low,
        kappa_high=s.kappa_high,
        max_iterations=s.max_iterations,
        combine=s.combine,
        noise_scale=s.noise_scale,
        min_samples_for_rejection=2 if s.rejection == "noise_clip" else 3,
    )


def window_options(config: ZeMosaicConfig, n_channels: int) -> FrameWindowOptions:
    """Frame preparation options from the ``ingest`` and ``mapping`` sections."""
    return FrameWindowOptions(
        max_error_px=config.mapping.max_error_px,
        hot_pixel_correction=config.ingest.hot_pixel_correction,
        hot_pixel_sigma=config.ingest.hot_pixel_sigma,
        n_channels=n_channels,
        interpolation=config.mapping.interpolation,
    )


def frame_coefficients(plan: MosaicPlan, config: ZeMosaicConfig, planes: Any = None) -> Any:
    """Per-frame coefficients of every frame, or None when none applies.

    Whole-frame normalisation and weighting coefficients (the reference frame of
    ``linear_fit`` / ``sky_mean`` is the first frame of the plan), the background model's
    ``planes`` (:func:`~zemosaic_dask.background_runtime.solve_frame_backgrounds`) and the
    frames' noise when the rejection clips against it.
    """
    from .graph.mosaic_first import FrameCoefficientTable
    from .tasks.normalisation import FrameStatistics, normalisation_coefficients
    from .tasks.weighting import frame_weights

    s = config.stack
    noise = sky = None
    if s.rejection == "noise_clip":
        noise, sky = frame_noise_and_sky(plan, planes)
    if s.normalisation == "none" and s.weighting == "none":
        if planes is None and noise is None:
            return None
        return FrameCoefficientTable(planes=planes, noise=noise, sky=sky)
    stats = [FrameStatistics(p25=f.p25, p90=f.p90, sky=f.background, sigma=f.noise) for f in plan.frames]
    channels = plan.n_channels

    def table(array: Any) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in np.resize(row, channels)) for row in np.asarray(array))

    gains = offsets = weights = None
    if s.normalisation != "none":
        gain_array, offset_array = normalisation_coefficients(stats, s.normalisation, reference_index=0)
        gains, offsets = table(gain_array), table(offset_array)
    if s.weighting != "none":
        weights = table(frame_weights(stats, s.weighting))
    return FrameCoefficientTable(gains, offsets, weights, planes=planes, noise=noise, sky=sky)


def frame_noise_and_sky(plan: MosaicPlan, planes: Any = None) -> tuple[tuple, tuple]:
    """Each frame's expected pixel noise and its sky level once its background model is removed.

    The noise is the frame's measured background noise (ingest) times its gain; the sky is
    its measured background through the gain, minus the model's offset at the frame
    centre, per channel.
    """
    channels = plan.n_channels
    noise, sky = [], []
    for index, frame in enumerate(plan.frames):
        level = np.resize(np.asarray(frame.background or (0.0,), dtype=np.float64), channels)
        sigma = np.resize(np.asarray(frame.noise or (0.0,), dtype=np.float64), channels)
        if planes is not None:
            model = np.asarray(planes[index], dtype=np.float64)
            gain = np.resize(model[:, 3], channels) if model.shape[1] > 3 else 1.0
            level = gain * level - np.resize(model[:, 0], channels)
            sigma = sigma * gain
        noise.append(tuple(float(v) for v in sigma))
        sky.append(tuple(float(v) for v in level))
    return tuple(noise), tuple(sky)


def cluster_resources(handle: Any) -> list[dict[str, Any]]:
    """Describe the workers of the handle's cluster (empty for the synchronous scheduler)."""
    if handle.client is None:
        return []
    from .clusters import worker_resources

    return worker_resources(handle.client)


def _cluster_of(resources: Any) -> Any:
    """:class:`ClusterResources` of the workers, or of this machine when there are none (synchronous)."""
    import os

    from .plans.sections import resources_from_workers

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return resources_from_workers(resources or [], fallback_threads=os.cpu_count() or 1, fallback_memory=memory)


def plan_sections(plan: MosaicPlan, config: ZeMosaicConfig, resources: Any) -> MosaicPlan:
    """Add the mode-specific sections to a plan (groups, batches, layers, assembly plan)."""
    from .messages import msg
    from .plans.sections import plan_mode_sections

    cluster = _cluster_of(resources)
    preplan = None
    if config.sds.preplan:
        import json

        preplan = json.loads(open(config.sds.preplan, encoding="utf-8").read())
    return plan_mode_sections(
        plan,
        config,
        cluster,
        preplan=preplan,
        sds_error_message=lambda reason: msg("sds_error_no_valid_batches", reason=reason),
    )


def execute_plan(
    plan: MosaicPlan,
    config: ZeMosaicConfig,
    store: MosaicStore,
    handle: Any,
    *,
    timings: Any,
    show_progress: bool,
) -> ExecutionResult:
    """Execute the plan's mode, writing the final mosaic into ``store``.

    The global background model (:mod:`~zemosaic_dask.background_runtime`) is solved first
    and removed from every frame in every mode. An SDS execution that fails for any reason
    is logged, recorded as the fallback and replaced by Mosaic-First over all frames: SDS
    never crashes a run. A store made by another run (:class:`ResumeError`) and I/O errors
    are raised instead: no mode change can fix them.
    """
    from pathlib import Path

    from .background_runtime import solve_frame_backgrounds

    with timings.stage("background"):
        planes, background = solve_frame_backgrounds(
            plan, config, handle, Path(store.url).parent, show_progress=show_progress
        )
    options = {"timings": timings, "show_progress": show_progress, "planes": planes}
    if plan.mode == "mosaic-first":
        result = _execute_mosaic_first(plan, config, store, handle, **options)
    elif plan.mode == "classic":
        result = _execute_layers(plan, config, store, handle, **options)
    else:
        try:
            result = _execute_layers(plan, config, store, handle, **options)
        except (ResumeError, OSError):
            raise  # a store from another run or a full disk is the user's to resolve, never a mode change
        except Exception as err:  # noqa: BLE001 - SDS must never crash a run; the reason is logged and reported
            from .messages import msg

            reason = f"{type(err).__name__}: {err}"
            log.warning(msg("fallback", mode="mosaic-first", reason=f"SDS failed ({reason})"))
            result = _execute_mosaic_first(plan, config, store, handle, **options)
            result.fallback = f"sds execution failed: {reason}"
    result.report["background"] = background
    return result


def _execute_mosaic_first(plan, config, store, handle, *, timings, show_progress, planes) -> ExecutionResult:  # noqa: ANN001
    from .api import compute

    assembly = assembly_plan_of(plan)
    jobs = region_jobs(
        plan.grid,
        plan.frames,
        store,
        stack_options(config),
        window_options(config, plan.n_channels),
        max_bytes=unit_chunk_bytes(assembly),
        coefficients=frame_coefficients(plan, config, planes),
    )
    graph = build_mosaic_first_graph(jobs, resources=gpu_resources(plan))
    with timings.stage("mosaic"):
        summaries = compute(handle, graph, label="mosaic", show_progress=show_progress)
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
        },
    )


def assembly_plan_of(plan: MosaicPlan) -> Any:
    """The plan's :class:`AssemblyPlan` (ZeMosaic's "Phase 5 plan"), or None for an older plan."""
    from .plans.assembly import AssemblyPlan

    data = plan.sections.get("assembly_plan")
    return AssemblyPlan.from_dict(data) if data else None


def unit_chunk_bytes(assembly: Any) -> int | None:
    """The byte budget of one stacking unit: the GPU budget when the plan routes units to GPUs.

    None (the tasks' own default) for a plan without an assembly section.
    """
    if assembly is None:
        return None
    if assembly.use_gpu and assembly.gpu_max_chunk_bytes > 0:
        return assembly.gpu_max_chunk_bytes
    return assembly.max_chunk_bytes


def gpu_resources(plan: MosaicPlan) -> dict[str, int] | None:
    """``{"GPU": 1}`` when the plan's assembly plan routes the stacking units to GPUs."""
    assembly = plan.sections.get("assembly_plan") or {}
    return {"GPU": 1} if assembly.get("use_gpu") else None


def gpu_fallbacks(summaries: list[Any]) -> list[dict[str, str]]:
    """The units that ran on the CPU after a GPU failure, with the reason."""
    return [{"unit": s.region, "reason": s.gpu_fallback} for s in summaries if getattr(s, "gpu_fallback", None)]


def _execute_layers(plan, config, store, handle, *, timings, show_progress, planes) -> ExecutionResult:  # noqa: ANN001
    from .api import compute
    from .layer_runtime import build_layers, combine_jobs, combine_layers, layer_inputs, layer_stores, mask_layers

    stack = stack_options(config)
    window = window_options(config, plan.n_channels)
    stores = layer_stores(plan, store)
    assembly = assembly_plan_of(plan)
    max_bytes = unit_chunk_bytes(assembly)
    label = "tiles" if plan.mode == "classic" else "batches"
    with timings.stage(label):
        summaries = compute(
            handle,
            build_layers(
                plan,
                stores,
                stack,
                window,
                resources=gpu_resources(plan),
                max_bytes=max_bytes,
                coefficients=frame_coefficients(plan, config, planes),
            ),
            label=label,
            show_progress=show_progress,
        )
    report: dict[str, Any] = {"layers": len(stores), "assembly_plan": plan.sections.get("assembly_plan")}
    corrections = None
    if config.calibration.intertile and len(stores) > 1:
        with timings.stage("calibration"):
            corrections, report["calibration"] = _calibrate(plan, config, stores, handle, show_progress)
    inputs = layer_inputs(stores, corrections)
    combine = StackOptions(rejection="none") if plan.mode == "classic" else _sds_combine_options(config)
    prefix = "stack-region" if plan.mode == "classic" else "sds-combine"
    noise = sky = None
    if combine.rejection == "noise_clip":
        noise, sky = (tuple(np.median(np.asarray(t), axis=0).tolist()) for t in frame_noise_and_sky(plan, planes))
    jobs = combine_jobs(plan, stores, inputs, store, combine, max_bytes=max_bytes, noise=noise, sky=sky)
    with timings.stage("assembly"):
        combined = compute(handle, combine_layers(jobs, prefix), label="assembly", show_progress=show_progress)
    if config.two_pass.enabled and len(stores) > 1 and jobs:
        with timings.stage("two-pass"):
            report["two_pass"] = _two_pass(plan, config, jobs, combined, assembly, handle, show_progress)
    if plan.mode == "sds" and jobs:
        keep = config.sds.min_coverage_keep
        max_layers = max((c["max_layers"] for c in combined), default=0)
        with timings.stage("coverage-mask"):
            masked = compute(handle, mask_layers(jobs, keep * max_layers), label="mask", show_progress=False)
        summary = sum(masked[1:], masked[0]) if masked else None
        report["sds_masked_pixels"] = summary.masked_pixels if summary else 0
        report["sds_mask"] = summary.to_dict() if summary else None
        if summary and summary.fraction > 0.01:
            from .messages import msg

            log.warning(msg("sds_mask_large", percent=100.0 * summary.fraction, keep=keep))
    report["hot_pixels_fixed"] = int(sum(getattr(s, "hot_pixels", 0) for s in summaries))
    report["gpu_fallbacks"] = gpu_fallbacks(summaries)
    return ExecutionResult(mode=plan.mode, fallback=plan.fallback, regions=len(jobs), report=report)


def _sds_combine_options(config: ZeMosaicConfig) -> StackOptions:
    """Across batch mosaics: coverage-weighted, with the configured rejection across batches.

    A batch spreads its few frames over the whole field, so a pixel of one batch mosaic is
    often a stack of one or two frames, too few to reject a satellite trail there; the
    rejection across batches removes it (it stays N-aware: no rejection under 3 batches).
    """
    return dataclasses.replace(stack_options(config), normalisation="none", weighting="none")


def _calibrate(plan, config, stores, handle, show_progress):  # noqa: ANN001, ANN202
    from pathlib import Path

    from .calibration_runtime import calibrate_layers

    out = Path(stores[0].on_grid.url).parent
    return calibrate_layers(stores, config, handle, out, show_progress=show_progress)


def _two_pass(plan, config, jobs, combined, assembly, handle, show_progress) -> dict[str, Any]:  # noqa: ANN001
    """Two-pass coverage renormalisation with the same AssemblyPlan object as the assembly."""
    from .api import compute
    from .graph.layers import build_two_pass_apply_graph, build_two_pass_scale_graph
    from .plans.assembly import select_two_pass_plan, two_pass_use_gpu
    from .tasks.two_pass import gain_from_values
    from .units.two_pass_region import TwoPassJob

    # An older plan.json without an assembly section gets one derived now from the workers.
    chosen = select_two_pass_plan(assembly, assembly or derived_assembly_plan(plan, config, handle))
    use_gpu = two_pass_use_gpu(chosen, config.two_pass.gpu)
    t = config.two_pass
    passes = [
        TwoPassJob(job, plan.grid.shape, t.sigma_px, tuple(t.scale_clip), t.min_luminance_ratio, use_gpu)
        for job in jobs
    ]
    layer_max: dict[int, float] = {}
    for entry in combined:
        for layer_id, value in entry["layer_max"].items():
            layer_max[layer_id] = max(layer_max.get(layer_id, 0.0), value)
    values = compute(
        handle, build_two_pass_scale_graph(passes, layer_max), label="two-pass scale", show_progress=show_progress
    )
    import numpy as np

    gains = {}
    for layer_id in sorted(layer_max):
        parts = [v[layer_id] for v in values if layer_id in v]
        gains[layer_id] = gain_from_values(np.concatenate(parts) if parts else np.empty(0), clip=tuple(t.gain_clip))
    applied = compute(handle, build_two_pass_apply_graph(passes, gains), label="two-pass", show_progress=show_progress)
    from .messages import msg

    gpu_all = all(a["gpu_all"] for a in applied) if use_gpu else False
    log.info(msg("two_pass_backend", gpu_all=gpu_all))
    return {
        "gains": {str(k): v for k, v in gains.items()},
        "use_gpu": use_gpu,
        "gpu_all": gpu_all,
        "fallbacks": [a for a in applied if a["fallback"]],
        "plan": "AssemblyPlan" if assembly is not None else "fallback",
    }


def derived_assembly_plan(plan: MosaicPlan, config: ZeMosaicConfig, handle: Any) -> Any:
    """An :class:`AssemblyPlan` derived from the cluster's workers now, for a plan saved without one."""
    from .plans.assembly import plan_assembly
    from .plans.sections import assembly_targets

    cluster = _cluster_of(cluster_resources(handle))
    n_inputs = len(plan.sections.get("layers", ())) or len(plan.frames)
    return plan_assembly(cluster, plan.grid, n_inputs, assembly_targets(config, plan.n_channels))
