"""Graph of region builds: one task per (layer or mosaic) region, GPU-annotated when planned."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import dask
from dask.delayed import Delayed

from ..units.mosaic_region import RegionJob, run_mosaic_region
from .calls import job_task

__all__ = ["build_region_graph"]


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
