"""The cluster as planning sees it: worker resources, the plan's mode sections, the assembly plan."""

from __future__ import annotations

import json
import os
from typing import Any

from ..clusters import worker_resources
from ..messages import msg
from ..plans.assembly import AssemblyPlan, ClusterResources, plan_assembly
from ..plans.layers import LayerPlan, layer_units
from ..plans.mosaic import MosaicPlan
from ..plans.sections import PlanningPolicies, plan_mode_sections, resources_from_workers

__all__ = ["cluster_of", "cluster_resources", "derived_assembly_plan", "plan_sections"]


def cluster_resources(handle: Any) -> list[dict[str, Any]]:
    """Describe the workers of the handle's cluster (empty for the synchronous scheduler)."""
    if handle.client is None:
        return []
    return worker_resources(handle.client)


def cluster_of(resources: Any) -> ClusterResources:
    """:class:`ClusterResources` of the workers, or of this machine when there are none (synchronous)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return resources_from_workers(resources or [], fallback_threads=os.cpu_count() or 1, fallback_memory=memory)


def plan_sections(
    plan: MosaicPlan, policies: PlanningPolicies, resources: Any, *, preplan: str | None = None
) -> MosaicPlan:
    """Add the mode-specific sections to a plan (groups, batches, layers, assembly plan).

    ``preplan`` is the path of a JSON file of SDS batches (lists of frame paths) to use as given.
    """
    batches = None
    if preplan:
        with open(preplan, encoding="utf-8") as handle:
            batches = json.load(handle)
    return plan_mode_sections(
        plan,
        policies,
        cluster_of(resources),
        preplan=batches,
        sds_error_message=lambda reason: msg("sds_error_no_valid_batches", reason=reason),
    )


def derived_assembly_plan(plan: MosaicPlan, targets: Any, handle: Any) -> AssemblyPlan:
    """An :class:`AssemblyPlan` derived from the cluster's workers now, for a plan saved without one."""
    layers = [LayerPlan.from_dict(x) for x in plan.sections.get("layers", ())]
    units = layer_units(layers, plan.grid) if layers else None
    return plan_assembly(cluster_of(cluster_resources(handle)), plan.grid, targets, units=units)
