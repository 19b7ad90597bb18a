"""Build one region of a mosaic from the frames that overlap it, and write its chunks."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..plans.grid import OutputRegion
from ..tasks.namespace import to_numpy
from ..tasks.stacking import peak_memory_bytes, stack_samples
from .frame_window import wcs_cache_for
from .gpu import run_with_gpu_fallback
from .mean_region import build_mean_region, can_stream_mean, mean_region_rows, sample_region_frames
from .region_job import RegionJob, RegionRows, RegionSummary
from .region_write import build_whole_region, reused_region, write_region_rows

__all__ = [
    "RegionJob",
    "RegionSummary",
    "build_mosaic_region",
    "run_mosaic_region",
    "run_region_bundle",
    "run_region_part",
    "stacked_region_rows",
    "write_region_parts",
]

log = logging.getLogger(__name__)


def _select(values: tuple[tuple[float, ...], ...] | None, keep: list[int], xp: Any) -> Any:
    if values is None:
        return None
    return xp.asarray(np.asarray([values[i] for i in keep], dtype=np.float32))


def band_rows(job: RegionJob) -> int:
    """Rows of the region stacked at once so that the stack's memory stays within ``job.max_bytes``.

    The bound counts the samples, the frames' prepared windows (about the samples' size)
    and the stacking engine's own working memory (:func:`peak_memory_bytes`).
    """
    height, width = job.region.shape
    count, channels = max(1, len(job.frames)), job.window.n_channels
    per_row = peak_memory_bytes((count, channels, 1, width), job.stack) + 2 * count * channels * width * 4
    return int(max(8, min(height, job.max_bytes // max(per_row, 1))))


def _stack_band(job: RegionJob, band: OutputRegion, xp: Any) -> tuple[np.ndarray, np.ndarray, int, int, float]:
    """Sample the frames on one band of rows (fused kernel, one preallocated buffer) and stack them."""

    sampled = sample_region_frames(dataclasses.replace(job, region=band), xp)
    height, width = band.shape
    if not sampled.keep:
        empty = np.full((job.window.n_channels, height, width), np.nan, dtype=np.float32)
        return empty, np.zeros((height, width), dtype=np.float32), 0, 0, 0.0
    keep = sampled.keep
    result = stack_samples(
        sampled.samples,
        sampled.footprints,
        job.stack,
        frame_ids=xp.asarray(np.asarray([job.frame_ids[i] for i in keep], dtype=np.int64)),
        gains=_select(job.gains, keep, xp),
        offsets=_select(job.offsets, keep, xp),
        frame_weights=_select(job.weights, keep, xp),
        noise=_select(job.noise, keep, np),
        background=_select(job.sky, keep, np),
        shot_level=_select(job.shot, keep, np),
    )
    image = to_numpy(result.image).astype(np.float32)
    coverage = to_numpy(result.coverage).astype(np.float32)
    return image, coverage, len(keep), sampled.hot_pixels, sampled.max_map_error


def stacked_region_rows(job: RegionJob, xp: Any = np) -> RegionRows:
    """Resample and stack the frames over ``job.region`` (a region or rows of one), not written.

    Deep stacks are processed in bands of rows (:func:`band_rows`), so a task's memory is
    bounded by the assembly plan's chunk bytes, not by the number of frames.

    Parameters
    ----------
    job : RegionJob
        The rectangle and its frames.
    xp : module
        Array namespace to compute in.

    Returns
    -------
    RegionRows
    """
    start = time.perf_counter()
    region = job.region
    height, width = region.shape
    image = np.full((job.window.n_channels, height, width), np.nan, dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    rows = band_rows(job)
    contributing, hot, max_error = 0, 0, 0.0
    with wcs_cache_for(len(job.frames) if rows < height else 0):  # every band visits every frame
        for y0 in range(region.y0, region.y1, rows):
            band = dataclasses.replace(region, y0=y0, y1=min(region.y1, y0 + rows))
            part, cover, used, fixed, error = _stack_band(job, band, xp)
            image[:, y0 - region.y0 : band.y1 - region.y0] = part
            coverage[y0 - region.y0 : band.y1 - region.y0] = cover
            contributing, hot, max_error = max(contributing, used), hot + fixed, max(max_error, error)
    return RegionRows(
        region.y0,
        region.y1,
        image,
        coverage,
        contributing,
        hot,
        time.perf_counter() - start,
        backend="cpu" if xp is np else xp.__name__,
        max_map_error=max_error,
        bands=-(-height // rows),
    )


def build_mosaic_region(job: RegionJob, xp: Any = np) -> RegionSummary:
    """Resample, stack and write one output region (skipped when already complete).

    Parameters
    ----------
    job : RegionJob
        The region and its frames.
    xp : module
        Array namespace to compute in.

    Returns
    -------
    RegionSummary
    """
    return build_whole_region(job, lambda: stacked_region_rows(job, xp))


def _rows_builder(job: RegionJob) -> Callable[[RegionJob, Any], RegionRows]:
    return mean_region_rows if can_stream_mean(job) else stacked_region_rows


def run_mosaic_region(job: RegionJob) -> RegionSummary:
    """Build a region on the GPU when the plan says so, falling back to the CPU on a GPU error.

    A plain weighted mean (no rejection) streams frame by frame through the fused kernel
    (:func:`~zemosaic_dask.units.mean_region.build_mean_region`, the same result as the
    stacking engine); every other stack goes through :func:`build_mosaic_region`.
    """

    build = build_mean_region if can_stream_mean(job) else build_mosaic_region
    summary, fallback = run_with_gpu_fallback(
        job.key or f"region-{job.region.name}", lambda xp: build(job, xp), use_gpu=job.use_gpu
    )
    if fallback is None:
        return summary
    return dataclasses.replace(summary, region=job.key or summary.region, gpu_fallback=fallback)


def run_region_bundle(jobs: tuple[RegionJob, ...]) -> list[RegionSummary]:
    """Build several regions one after the other in one task (:func:`run_mosaic_region` each)."""
    return [run_mosaic_region(job) for job in jobs]


def run_region_part(job: RegionJob) -> RegionRows | None:
    """Compute rows of a deep region (``job.region`` holds them) for :func:`write_region_parts`.

    Returns None when the region is already complete (a resumed run); on the GPU when the
    plan says so, falling back to the CPU on a GPU error (recorded in the result).
    """
    if job.store.region_done(job.region):
        return None
    build = _rows_builder(job)
    rows, fallback = run_with_gpu_fallback(
        job.key or f"part-{job.region.name}", lambda xp: build(job, xp), use_gpu=job.use_gpu
    )
    return rows if fallback is None else dataclasses.replace(rows, gpu_fallback=fallback)


def write_region_parts(job: RegionJob, *parts: RegionRows | None) -> RegionSummary:
    """Write a region from the row parts :func:`run_region_part` computed (skipped when already complete)."""
    if job.store.region_done(job.region):
        return reused_region(job)
    if any(part is None for part in parts):
        raise RuntimeError(f"region {job.region.name}: a part found it complete, but it is not")
    summary = write_region_rows(job, [part for part in parts if part is not None])
    return summary if summary.gpu_fallback is None else dataclasses.replace(summary, region=job.key or summary.region)
