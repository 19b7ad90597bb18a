"""Mode-specific planning: the sections of a :class:`MosaicPlan` (one helper per policy).

``zemosaic-dask plan`` and ``zemosaic-dask run`` both call :func:`plan_mode_sections`, so a
run executes exactly the plan the ``plan`` command shows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PlanError
from .altaz import AltazPolicy, plan_altaz_cleanup
from .assembly import AssemblyTargets, ClusterResources, WorkerResources, plan_assembly
from .batches import BatchPolicy, plan_classic_batches
from .groups import GroupingPolicy
from .layers import LayerPlan, layer_units, layers_from_batches, layers_from_sds
from .mosaic import MosaicPlan
from .region_parts import plan_region_parts
from .sds import SdsPolicy, plan_sds_batches
from .sds_execution import SdsExecutionPolicy, plan_sds_execution

__all__ = ["PlanningPolicies", "batches_view", "plan_mode_sections", "resources_from_workers"]

log = logging.getLogger(__name__)


def resources_from_workers(
    workers: Sequence[Mapping[str, Any]], *, fallback_threads: int, fallback_memory: int
) -> ClusterResources:
    """Cluster resources from worker descriptions (or this machine when there are none)."""
    entries = [
        WorkerResources(
            name=str(w.get("name", w.get("address", index))),
            nthreads=int(w.get("nthreads", 1)),
            memory_limit_bytes=int(w.get("memory_limit") or 0),
            gpus=int((w.get("resources") or {}).get("GPU", 0)),
            gpu_memory_bytes=int(w.get("gpu_memory") or 0),
        )
        for index, w in enumerate(workers)
    ]
    if not entries:
        entries = [WorkerResources("local", max(1, fallback_threads), fallback_memory)]
    return ClusterResources(tuple(entries))


@dataclass(frozen=True)
class PlanningPolicies:
    """What planning takes from the configuration (built by :mod:`zemosaic_dask.config.policies`)."""

    grouping: GroupingPolicy
    batching: BatchPolicy
    sds: SdsPolicy
    assembly: AssemblyTargets
    altaz: AltazPolicy = AltazPolicy()
    sds_execution: SdsExecutionPolicy = SdsExecutionPolicy()


def batches_view(plan: MosaicPlan) -> list[dict[str, Any]]:
    """The batches of a plan as ``zemosaic-dask plan --json`` shows them."""
    layers = plan.layers
    out = []
    for layer in layers:
        distinct = layer.distinct
        out.append(
            {
                "id": layer.id,
                "kind": layer.kind,
                "frames": [plan.frames[i].path for i in layer.frames],
                "distinct_frames": len(distinct),
                "original_count": len(distinct),
                "final_count": len(layer.frames),
                "coverage_fraction": layer.coverage_fraction,
                "salvage": layer.salvage,
            }
        )
    return out


def _classic(plan: MosaicPlan, policies: PlanningPolicies) -> tuple[dict[str, Any], int]:
    """The classic sections, and the units of their layer stage."""
    groups, batches = plan_classic_batches(plan.frames, policies.grouping, policies.batching)
    layers = layers_from_batches(plan.frames, plan.grid, groups, batches, tile_chunk=plan.grid.chunk)
    sections = {"groups": groups.to_dict(), "batch_plan": batches.to_dict(), "layers": [x.to_dict() for x in layers]}
    return sections, layer_units(layers, plan.grid)


def _sds(
    plan: MosaicPlan, policies: PlanningPolicies, preplan: Sequence[Sequence[str]] | None
) -> tuple[dict[str, Any], int]:
    """The SDS sections, and the units of their batch stage."""
    sds = plan_sds_batches(plan.frames, plan.grid, policies.sds, preplan=preplan)
    layers = layers_from_sds(plan.frames, plan.grid, sds)
    return {"sds": sds.to_dict(), "layers": [x.to_dict() for x in layers]}, layer_units(layers, plan.grid)


def _stacking_slots(resources: ClusterResources, targets: AssemblyTargets) -> tuple[int, int, str]:
    """Tasks that can stack at once, the least work of a row part, and why parts are ruled out ("" if not).

    Stacking units annotated with a GPU run one per GPU (the scheduler holds them to it); on
    CPUs, one per thread. With ``cpu-load`` below 1 the assembly plan bounds the regions in
    flight, not their parts, so regions are not split.
    """
    gpus = sum(w.gpus for w in resources.workers if w.gpus > 0)
    if gpus and targets.gpu_requested and not targets.force_cpu:
        return gpus, targets.min_part_samples, ""
    if targets.cpu_load < 1.0:
        return resources.total_threads, 0, f"cpu-load {targets.cpu_load} bounds the regions in flight"
    return resources.total_threads, targets.min_part_samples, ""


def plan_mode_sections(
    plan: MosaicPlan,
    policies: PlanningPolicies,
    resources: ClusterResources,
    *,
    preplan: Sequence[Sequence[str]] | None = None,
    sds_error_message: Any = None,
) -> MosaicPlan:
    """Add the assembly plan, the mode's groups, batches and layers, and the alt-az cleanup decision to ``plan``.

    An SDS plan that cannot be built (a :class:`PlanError`) turns the plan into a
    Mosaic-First plan whose ``fallback`` names the reason; the run never fails for it.
    """
    mode, fallback = plan.mode, plan.fallback
    sections: dict[str, Any] = {}
    units = None  # mosaic-first: its regions and row parts (below)
    if mode == "sds":
        try:
            found, units = _sds(plan, policies, preplan)
            sections.update(found)
        except PlanError as err:
            reason = getattr(err, "reason", str(err))
            if sds_error_message is not None:
                log.warning(sds_error_message(reason))
            mode, fallback = "mosaic-first", f"sds_error_no_valid_batches: {reason}"
    elif mode == "classic":
        found, units = _classic(plan, policies)
        sections.update(found)
    if mode == "mosaic-first":
        parts = plan_region_parts(plan.grid, plan.frames, *_stacking_slots(resources, policies.assembly))
        sections["region_parts"] = parts.to_dict()
        units = parts.units
    assembly = plan_assembly(resources, plan.grid, policies.assembly, units=units)
    sections["assembly_plan"] = assembly.to_dict()
    if mode == "sds":
        layers = [LayerPlan.from_dict(d) for d in sections["layers"]]
        sections["sds_execution"] = plan_sds_execution(
            plan.grid,
            plan.frames,
            layers,
            plan.n_channels,
            policies.sds_execution,
            max_chunk_bytes=assembly.max_chunk_bytes,
            units_in_flight=assembly.units_in_flight,
        ).to_dict()
    sections["altaz"] = plan_altaz_cleanup(plan.frames, policies.altaz).to_dict()
    return dataclasses.replace(plan, mode=mode, fallback=fallback, sections=sections)
