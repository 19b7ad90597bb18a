"""Graph of region builds: one task per (layer or mosaic) region, GPU-annotated when planned.

Small region builds (an SDS batch mosaic's regions hold a few frames each) may instead be
run as bundles, several builds one after the other in one task: the scheduler and the
workers then handle a task per bundle, not per build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
from collections.abc import Sequence

import dask
from dask.delayed import Delayed

from ..units.mosaic_region import RegionJob, run_mosaic_region, run_region_bundle
from .calls import job_task

__all__ = ["BUNDLES_PER_SLOT", "build_bundled_region_graph", "build_region_graph", "bundle_indices"]

#: Bundles per unit the assembly plan runs at once: enough for the last ones to balance.
BUNDLES_PER_SLOT = 8


def build_region_graph(
    jobs: Sequence[RegionJob], prefix: str, resources: dict[str, int] | None = None
) -> list[Delayed]:
    """One delayed region build per job, keyed ``<prefix>-<iy>-<ix>``, optionally resource-annotated."""
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for job in jobs:
            key = f"{prefix}-{job.region.iy}-{job.region.ix}"
            job = dataclasses.replace(job, use_gpu=bool(resources), key=key)
            tasks.append(job_task(run_mosaic_region, job, key=key))
    return tasks


def bundle_indices(weights: Sequence[float], bundles: int) -> list[list[int]]:
    """Deal items into at most ``bundles`` groups of nearly equal total weight (heaviest first to the lightest group).

    Deterministic: ties go to the lowest group; each group lists its items in input order;
    empty groups are dropped.
    """
    count = max(1, min(int(bundles), len(weights)))
    heap = [(0.0, k) for k in range(count)]
    groups: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(weights)), key=lambda i: (-float(weights[i]), i)):
        load, k = heapq.heappop(heap)
        groups[k].append(index)
        heapq.heappush(heap, (load + float(weights[index]), k))
    return [sorted(group) for group in groups if group]


def build_bundled_region_graph(
    jobs: Sequence[tuple[str, RegionJob]],
    prefix: str,
    resources: dict[str, int] | None = None,
    bundles: int = 1,
) -> list[Delayed]:
    """Run the region builds ``(key prefix, job)`` in at most ``bundles`` tasks ``<prefix>-<k>``.

    Each build keeps its own key (``<key prefix>-<iy>-<ix>``) for its log lines and a GPU
    fallback; builds are dealt by their frame count times their region's area, so the
    bundles cost about the same. Each task returns the list of its builds' summaries.
    """
    named = [
        dataclasses.replace(job, use_gpu=bool(resources), key=f"{name}-{job.region.iy}-{job.region.ix}")
        for name, job in jobs
    ]
    weights = [len(job.frames) * job.region.shape[0] * job.region.shape[1] for job in named]
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for k, members in enumerate(bundle_indices(weights, bundles)):
            bundle = tuple(named[i] for i in members)
            tasks.append(job_task(run_region_bundle, bundle, key=f"{prefix}-{k}"))
    return tasks
