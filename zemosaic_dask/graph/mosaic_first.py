"""Graph of Mosaic-First: one ``stack-region-<y>-<x>`` task per output region (deep ones fed by row parts)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import dask
from dask.delayed import Delayed

from ..io.store import MosaicStore
from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid, frame_bboxes
from ..plans.region_parts import RegionParts, part_regions
from ..plans.regions import assign_frames_to_regions
from ..tasks.stacking import StackOptions
from ..units.frame_window import FrameWindowOptions
from ..units.mosaic_region import RegionJob, run_region_part, write_region_parts
from .calls import job_task
from .regions import build_region_graph

__all__ = ["FrameCoefficientTable", "build_mosaic_first_graph", "part_jobs", "region_jobs"]


@dataclass(frozen=True)
class FrameCoefficientTable:
    """Per-frame coefficients indexed by frame id: normalisation gains and offsets, frame weights,
    background models (``(C, 4)`` per frame: offset, slopes, gain; see :mod:`~zemosaic_dask.execute.background`) and
    the frames' noise, sky level once the model is removed and shot level (``(C,)`` per
    frame, for noise-model rejection)."""

    gains: tuple[tuple[float, ...], ...] | None = None
    offsets: tuple[tuple[float, ...], ...] | None = None
    weights: tuple[tuple[float, ...], ...] | None = None
    planes: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    noise: tuple[tuple[float, ...], ...] | None = None
    sky: tuple[tuple[float, ...], ...] | None = None
    shot: tuple[tuple[float, ...], ...] | None = None

    def for_frames(self, ids: Sequence[int]) -> dict[str, tuple | None]:
        """The rows of the given frames, as :class:`RegionJob` fields."""

        def rows(table: tuple | None) -> tuple | None:
            return None if table is None else tuple(table[i] for i in ids)

        names = ("gains", "offsets", "weights", "planes", "noise", "sky", "shot")
        return {name: rows(getattr(self, name)) for name in names}


def region_jobs(
    grid: OutputGrid,
    frames: Sequence[FrameInfo],
    store: MosaicStore,
    stack: StackOptions,
    window: FrameWindowOptions,
    *,
    frame_ids: Sequence[int] | None = None,
    max_bytes: int | None = None,
    coefficients: FrameCoefficientTable | None = None,
) -> list[RegionJob]:
    """One :class:`RegionJob` per region reached by a frame (spatial index, not all pairs).

    ``coefficients`` holds whole-frame normalisation gains, offsets and weights indexed by
    frame id (the same for every region, so regions normalise alike: no seams).
    """
    ids = list(frame_ids) if frame_ids is not None else list(range(len(frames)))
    jobs = []
    for (iy, ix), members in assign_frames_to_regions(grid, frames).items():
        picked = [ids[i] for i in members]
        extra = {"max_bytes": int(max_bytes)} if max_bytes else {}
        if coefficients is not None:
            extra.update(coefficients.for_frames(picked))
        jobs.append(
            RegionJob(
                region=grid.region(iy, ix),
                frames=tuple(frames[i] for i in members),
                frame_ids=tuple(picked),
                grid=grid,
                store=store,
                stack=stack,
                window=window,
                **extra,
            )
        )
    return jobs


def part_jobs(job: RegionJob, parts: int, margin_px: float = 2.0) -> list[RegionJob]:
    """The jobs of a region's row parts (:func:`~zemosaic_dask.plans.region_parts.part_regions`).

    Each part keeps the frames whose footprint box reaches its rows (with the margin
    :func:`~zemosaic_dask.plans.regions.assign_frames_to_regions` gives regions) and their
    coefficients, in the region's order.
    """
    boxes = frame_bboxes(job.grid, job.frames)
    out = []
    for band in part_regions(job.region, parts):
        reach = (boxes[:, 0] - margin_px <= band.y1 - 1) & (boxes[:, 1] + margin_px >= band.y0)
        members = [i for i in range(len(job.frames)) if reach[i]]
        out.append(_subset(dataclasses.replace(job, region=band), members))
    return out


def _subset(job: RegionJob, members: Sequence[int]) -> RegionJob:
    """``job`` restricted to the entries ``members`` of its frame list (coefficient rows included)."""

    def rows(table: tuple | None) -> tuple | None:
        return None if table is None else tuple(table[i] for i in members)

    names = ("frames", "frame_ids", "gains", "offsets", "weights", "planes", "noise", "sky", "shot")
    return dataclasses.replace(job, **{name: rows(getattr(job, name)) for name in names})


def build_mosaic_first_graph(
    jobs: Sequence[RegionJob],
    prefix: str = "stack-region",
    resources: dict[str, int] | None = None,
    parts: RegionParts | None = None,
) -> list[Delayed]:
    """Return one delayed region build per job, keyed ``<prefix>-<iy>-<ix>``.

    With ``resources`` (``{"GPU": 1}`` when the assembly plan uses GPUs) the tasks are
    annotated so that only workers advertising them run them. A region the plan's ``parts``
    split is stacked by one task per row part (``stack-part-<iy>-<ix>-<k>``) and written by
    its ``<prefix>-<iy>-<ix>`` task.
    """
    counts = {(iy, ix): n for iy, ix, n in (parts or RegionParts()).split}
    whole = [job for job in jobs if (job.region.iy, job.region.ix) not in counts]
    tasks = build_region_graph(whole, prefix, resources)
    use_gpu = bool(resources)
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for job in (job for job in jobs if (job.region.iy, job.region.ix) in counts):
            name = job.region.name
            pieces = [
                job_task(run_region_part, dataclasses.replace(piece, use_gpu=use_gpu, key=key), key=key)
                for k, piece in enumerate(part_jobs(job, counts[(job.region.iy, job.region.ix)]))
                for key in [f"stack-part-{name}-{k}"]
            ]
            key = f"{prefix}-{name}"
            tasks.append(job_task(write_region_parts, dataclasses.replace(job, key=key), *pieces, key=key))
    return tasks
