"""Graphs of the alt-az edge cleanup: one task per region of the final store.

Keys: ``altaz-histogram-<y>-<x>`` (the region's coverage histogram, for the field's
typical coverage) and ``altaz-clean-<y>-<x>`` (the region's mask applied to the store).
"""

from __future__ import annotations

from collections.abc import Sequence

from dask.delayed import Delayed

from ..units.altaz_region import AltazJob, clean_altaz_region, region_coverage_histogram
from .calls import job_task

__all__ = ["build_altaz_clean_graph", "build_altaz_histogram_graph"]


def build_altaz_histogram_graph(jobs: Sequence[AltazJob]) -> list[Delayed]:
    """Per region, the histogram of its covered pixels' coverage."""
    return [
        job_task(region_coverage_histogram, job, key=f"altaz-histogram-{job.region.iy}-{job.region.ix}") for job in jobs
    ]


def build_altaz_clean_graph(jobs: Sequence[AltazJob], threshold: float) -> list[Delayed]:
    """Per region, mask the edge pixels below ``threshold`` coverage (after opening, margin and decay)."""
    return [
        job_task(clean_altaz_region, job, threshold, key=f"altaz-clean-{job.region.iy}-{job.region.ix}") for job in jobs
    ]
