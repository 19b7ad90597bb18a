"""Executing a :class:`MosaicPlan`: one function per mode, all sharing the region units.

The api owns the client; this module turns plan sections into graphs (through
``graph/``) and computes them through :func:`zemosaic_dask.api.compute`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .config import ZeMosaicConfig
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
    )


def window_options(config: ZeMosaicConfig, n_channels: int) -> FrameWindowOptions:
    """Frame preparation options from the ``ingest`` and ``mapping`` sections."""
    return FrameWindowOptions(
        max_error_px=config.mapping.max_error_px,
        hot_pixel_correction=config.ingest.hot_pixel_correction,
        hot_pixel_sigma=config.ingest.hot_pixel_sigma,
        n_channels=n_channels,
    )


def cluster_resources(handle: Any) -> list[dict[str, Any]]:
    """Describe the workers of the handle's cluster (empty for the synchronous scheduler)."""
    if handle.client is None:
        return []
    from .clusters import worker_resources

    return worker_resources(handle.client)


def plan_sections(plan: MosaicPlan, config: ZeMosaicConfig, resources: Any) -> MosaicPlan:
    """Add the mode-specific sections to a plan."""
    return plan


def execute_plan(
    plan: MosaicPlan,
    config: ZeMosaicConfig,
    store: MosaicStore,
    handle: Any,
    *,
    timings: Any,
    show_progress: bool,
) -> ExecutionResult:
    """Execute the plan's mode, writing the final mosaic into ``store``."""
    return _execute_mosaic_first(plan, config, store, handle, timings=timings, show_progress=show_progress)


def _execute_mosaic_first(plan, config, store, handle, *, timings, show_progress) -> ExecutionResult:  # noqa: ANN001
    from .api import compute

    jobs = region_jobs(plan.grid, plan.frames, store, stack_options(config), window_options(config, plan.n_channels))
    with timings.stage("mosaic"):
        summaries = compute(handle, build_mosaic_first_graph(jobs), label="mosaic", show_progress=show_progress)
    return ExecutionResult(
        mode="mosaic-first",
        fallback=plan.fallback,
        regions=len(jobs),
        report={
            "hot_pixels_fixed": int(sum(s.hot_pixels for s in summaries)),
            "max_map_error_px": max((s.max_map_error for s in summaries), default=0.0),
            "region_backends": sorted({s.backend for s in summaries}),
        },
    )
