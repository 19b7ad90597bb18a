"""Write a region from its computed rows: one :class:`RegionRows` or the row parts of a deep region."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from .region_job import RegionJob, RegionRows, RegionSummary

__all__ = ["build_whole_region", "held_pixels", "region_pixels", "reused_region", "stored_pixels", "write_region_rows"]


def stored_pixels(image: np.ndarray, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stack's image and coverage as a store holds them: float32, NaN where there is no coverage."""
    image = np.where(coverage[None] > 0, image, np.float32(np.nan)).astype(np.float32, copy=False)
    return image, coverage.astype(np.float32, copy=False)


def held_pixels(image: np.ndarray, coverage: np.ndarray, image_out: np.ndarray, coverage_out: np.ndarray) -> None:
    """Write :func:`stored_pixels` of a stack into float32 ``image_out`` and ``coverage_out``, in one pass."""
    from ..tasks.kernels_layers import covered_stack_cpu

    image = np.ascontiguousarray(image, dtype=np.float32)
    covered_stack_cpu(image, np.ascontiguousarray(coverage, dtype=np.float32), image_out, coverage_out)


def region_pixels(image: np.ndarray, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stack's image, coverage and alpha as a store holds them.

    Pixels without coverage are NaN (:func:`stored_pixels`); ``alpha`` is 255 where a pixel
    has coverage and every channel is finite; image and coverage are float32.
    """
    image, coverage = stored_pixels(image, coverage)
    alpha = np.where((coverage > 0) & np.all(np.isfinite(image), axis=0), 255, 0).astype(np.uint8)
    return image, coverage, alpha


def write_region_rows(job: RegionJob, parts: Sequence[RegionRows]) -> RegionSummary:
    """Assemble the rows of ``job.region`` from ``parts``, write its chunks and summarise the work.

    Pixels without coverage are NaN; ``alpha`` is 255 where a pixel has coverage and every
    channel is finite.

    Parameters
    ----------
    job : RegionJob
        The region and its store.
    parts : sequence of RegionRows
        Computed rows that tile the region's rows exactly, in any order.

    Returns
    -------
    RegionSummary
        Frames that contributed: the most in any part; time, bands and hot pixels: summed
        over the parts.

    Raises
    ------
    ValueError
        When the parts do not tile the region's rows.
    """
    region = job.region
    ordered = sorted(parts, key=lambda part: part.y0)
    edges = [region.y0] + [edge for part in ordered for edge in (part.y0, part.y1)] + [region.y1]
    if not ordered or any(a != b for a, b in zip(edges[::2], edges[1::2], strict=True)):
        spans = [(part.y0, part.y1) for part in ordered]
        raise ValueError(f"region {region.name}: parts {spans} do not tile rows {region.y0}-{region.y1}")
    if len(ordered) == 1:
        image, coverage = ordered[0].image, ordered[0].coverage
    else:
        image = np.concatenate([part.image for part in ordered], axis=1)
        coverage = np.concatenate([part.coverage for part in ordered], axis=0)
    job.store.write_region(region, *region_pixels(image, coverage))
    fallbacks = [part.gpu_fallback for part in ordered if part.gpu_fallback]
    return RegionSummary(
        region.name,
        len(job.frames),
        max(part.contributing for part in ordered),
        sum(part.hot_pixels for part in ordered),
        sum(part.seconds for part in ordered),
        reused=False,
        backend="+".join(sorted({part.backend for part in ordered})),
        max_map_error=max(part.max_map_error for part in ordered),
        gpu_fallback=fallbacks[0] if fallbacks else None,
        bands=sum(part.bands for part in ordered),
    )


def reused_region(job: RegionJob) -> RegionSummary:
    """The summary of a region found complete (a resumed run): nothing computed, nothing written."""
    return RegionSummary(job.region.name, len(job.frames), 0, 0, 0.0, reused=True)


def build_whole_region(job: RegionJob, compute: Callable[[], RegionRows]) -> RegionSummary:
    """Compute a whole region with ``compute()`` and write it, unless it is already complete.

    The summary's time covers the computation and the write.
    """
    start = time.perf_counter()
    if job.store.region_done(job.region):
        return reused_region(job)
    summary = write_region_rows(job, [compute()])
    return dataclasses.replace(summary, seconds=time.perf_counter() - start)
