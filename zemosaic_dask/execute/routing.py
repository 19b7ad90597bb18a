"""How a plan's units run: the :class:`AssemblyPlan`'s byte budgets, GPU routing and worker counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..plans.assembly import AssemblyPlan
from ..plans.mosaic import MosaicPlan

__all__ = [
    "ExecutionResult",
    "assembly_plan_of",
    "gpu_fallbacks",
    "gpu_resources",
    "unit_chunk_bytes",
    "units_in_flight",
]


@dataclass
class ExecutionResult:
    """What executing a plan did."""

    mode: str
    fallback: str | None
    regions: int
    report: dict[str, Any] = field(default_factory=dict)


def assembly_plan_of(plan: MosaicPlan) -> AssemblyPlan | None:
    """The plan's :class:`AssemblyPlan` (ZeMosaic's "Phase 5 plan"), or None for an older plan."""
    return plan.assembly


def unit_chunk_bytes(assembly: AssemblyPlan | None) -> int | None:
    """The byte budget of one stacking unit: the GPU budget when the plan routes units to GPUs.

    None (the tasks' own default) for a plan without an assembly section.
    """
    if assembly is None:
        return None
    if assembly.use_gpu and assembly.gpu_max_chunk_bytes > 0:
        return assembly.gpu_max_chunk_bytes
    return assembly.max_chunk_bytes


def units_in_flight(assembly: AssemblyPlan | None) -> int | None:
    """How many units may run at once: the plan's GPU workers when it routes units to GPUs, else its CPU workers."""
    return None if assembly is None else assembly.units_in_flight


def gpu_resources(assembly: AssemblyPlan | None) -> dict[str, int] | None:
    """``{"GPU": 1}`` when the plan's assembly plan routes the stacking units to GPUs."""
    return {"GPU": 1} if assembly is not None and assembly.use_gpu else None


def gpu_fallbacks(summaries: list[Any]) -> list[dict[str, str]]:
    """The units that ran on the CPU after a GPU failure, with the reason."""
    return [{"unit": s.region, "reason": s.gpu_fallback} for s in summaries if getattr(s, "gpu_fallback", None)]
