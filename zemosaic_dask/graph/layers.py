"""Graphs of the layer modes: tiles (classic) or batch mosaics (SDS), then their combination.

Task keys read well on the dashboard: ``stack-tile-<id>-<y>-<x>`` (a master tile's region on
its own grid), ``reproject-tile-<id>-<y>-<x>`` (a tile put onto the global grid),
``reproject-batches-<k>`` (a bundle of SDS batch mosaic regions, each logged as
``reproject-batch-<id>-<y>-<x>``), ``stack-region-<y>-<x>`` /
``sds-combine-<y>-<x>`` (the final combination), ``sds-combine-<y>-<x>-group-<level>-<k>``
(a group of a deep region's combination tree), ``sds-region-<y>-<x>`` (a fused SDS region: its
batches stacked and combined in one task) and ``mask-region-<y>-<x>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import dask
from dask.delayed import Delayed

from ..io.store import MosaicStore
from ..units.combine_region import (
    CombineJob,
    build_combined_region,
    build_group_region,
    build_tree_region,
    mask_low_coverage_region,
)
from ..units.sds_region import SdsRegionJob, run_sds_region
from ..units.tile_layer import TileLayerJob, build_tile_layer_region
from ..units.two_pass_region import TwoPassJob, apply_two_pass_region, layer_scale_values
from .calls import job_task
from .keys import task_key
from .regions import build_region_graph

__all__ = [
    "build_combine_graph",
    "build_mask_graph",
    "build_region_graph",
    "build_sds_region_graph",
    "build_tile_layer_graph",
    "build_two_pass_apply_graph",
    "build_two_pass_scale_graph",
]


def _after(value: Any, *_dependencies: Any) -> Any:
    """Return ``value`` once its dependencies are computed (orders stages inside one graph)."""
    return value


def build_tile_layer_graph(jobs: Sequence[TileLayerJob], tile_id: int, tile_tasks: Sequence[Delayed]) -> list[Delayed]:
    """Put a tile onto the global grid once all of the tile's regions are stacked."""
    ready = dask.delayed(_after, pure=True)(None, *tile_tasks, dask_key_name=task_key(f"tile-ready-{tile_id}"))
    return [
        job_task(_build_after, job, ready, key=f"reproject-tile-{tile_id}-{job.region.iy}-{job.region.ix}")
        for job in jobs
    ]


def _build_after(job: TileLayerJob, _ready: Any) -> Any:
    return build_tile_layer_region(job)


def build_combine_graph(trees: Sequence[Sequence[Sequence[CombineJob]]], prefix: str) -> list[Delayed]:
    """One delayed combination per region, keyed ``<prefix>-<iy>-<ix>``.

    Each region comes as the levels of its combination tree
    (:func:`~zemosaic_dask.execute.layer_stores.combine_trees`): a single level is one task;
    otherwise every group is a task fed by the groups of the level below that it
    combines, and the region's task is the root.
    """
    out = []
    for levels in trees:
        root = levels[-1][0]
        name = f"{prefix}-{root.region.iy}-{root.region.ix}"
        if len(levels) == 1:
            out.append(job_task(build_combined_region, root, key=name))
            continue
        below: list[Delayed] = []
        for level, jobs in enumerate(levels[:-1]):
            spans = _spans(levels, level)
            below = [
                job_task(build_group_region, job, *below[span], key=f"{name}-group-{level}-{k}")
                for k, (job, span) in enumerate(zip(jobs, spans, strict=True))
            ]
        out.append(job_task(build_tree_region, root, *below, key=name))
    return out


def _spans(levels: Sequence[Sequence[CombineJob]], level: int) -> list[slice]:
    """Which nodes of the level below each node of ``level`` combines (none for the layers' groups)."""
    if level == 0:
        return [slice(0, 0)] * len(levels[0])
    spans, start = [], 0
    for job in levels[level]:
        spans.append(slice(start, start + len(job.layers)))
        start += len(job.layers)
    return spans


def build_mask_graph(jobs: Sequence[CombineJob], min_layers: float, counts: MosaicStore | None = None) -> list[Delayed]:
    """Mask the pixels reached by too few layers, one task per region (layer counts read from ``counts`` if given)."""
    return [
        job_task(mask_low_coverage_region, job, min_layers, counts, key=f"mask-region-{job.region.iy}-{job.region.ix}")
        for job in jobs
    ]


def build_two_pass_scale_graph(jobs: Sequence[TwoPassJob], layer_max: dict[int, float]) -> list[Delayed]:
    """Per region, the scale-map values over each layer's well-covered pixels."""
    names = [f"two-pass-scale-{job.combine.region.iy}-{job.combine.region.ix}" for job in jobs]
    return [job_task(layer_scale_values, job, layer_max, key=name) for job, name in zip(jobs, names, strict=True)]


def build_two_pass_apply_graph(
    jobs: Sequence[TwoPassJob], gains: dict[int, float], *, resources: dict[str, int] | None = None
) -> list[Delayed]:
    """Per region, the second combination with the layers' gains, merged with pass 1.

    With ``resources`` (``{"GPU": 1}`` when the assembly plan routes the two-pass units to
    GPUs) only workers advertising them run these tasks.
    """
    names = [f"two-pass-region-{job.combine.region.iy}-{job.combine.region.ix}" for job in jobs]
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        return [job_task(apply_two_pass_region, job, gains, key=name) for job, name in zip(jobs, names, strict=True)]


def build_sds_region_graph(jobs: Sequence[SdsRegionJob], resources: dict[str, int] | None = None) -> list[Delayed]:
    """One fused SDS region per job, keyed ``sds-region-<y>-<x>``; GPU-annotated with ``resources``."""
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for job in jobs:
            key = f"sds-region-{job.combine.region.iy}-{job.combine.region.ix}"
            tasks.append(job_task(run_sds_region, dataclasses.replace(job, use_gpu=bool(resources), key=key), key=key))
    return tasks
