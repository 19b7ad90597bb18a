"""Graph of Mosaic-First: one ``stack-region-<y>-<x>`` task per output region."""

from __future__ import annotations

from collections.abc import Sequence

from dask.delayed import Delayed

from ..io.store import MosaicStore
from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid
from ..plans.regions import assign_frames_to_regions
from ..tasks.stacking import StackOptions
from ..units.frame_window import FrameWindowOptions
from ..units.mosaic_region import RegionJob
from .regions import build_region_graph

__all__ = ["build_mosaic_first_graph", "region_jobs"]


def region_jobs(
    grid: OutputGrid,
    frames: Sequence[FrameInfo],
    store: MosaicStore,
    stack: StackOptions,
    window: FrameWindowOptions,
    *,
    frame_ids: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> list[RegionJob]:
    """One :class:`RegionJob` per region reached by a frame (spatial index, not all pairs)."""
    ids = list(frame_ids) if frame_ids is not None else list(range(len(frames)))
    jobs = []
    for (iy, ix), members in assign_frames_to_regions(grid, frames).items():
        jobs.append(
            RegionJob(
                region=grid.region(iy, ix),
                frames=tuple(frames[i] for i in members),
                frame_ids=tuple(ids[i] for i in members),
                grid=grid,
                store=store,
                stack=stack,
                window=window,
                **({"max_bytes": int(max_bytes)} if max_bytes else {}),
            )
        )
    return jobs


def build_mosaic_first_graph(
    jobs: Sequence[RegionJob], prefix: str = "stack-region", resources: dict[str, int] | None = None
) -> list[Delayed]:
    """Return one delayed region build per job, keyed ``<prefix>-<iy>-<ix>``.

    With ``resources`` (``{"GPU": 1}`` when the assembly plan uses GPUs) the tasks are
    annotated so that only workers advertising them run them.
    """
    return build_region_graph(jobs, prefix, resources)
