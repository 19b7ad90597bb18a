"""Graph of Mosaic-First: one ``stack-region-<y>-<x>`` task per output region."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dask.delayed import Delayed

from ..io.store import MosaicStore
from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid
from ..plans.regions import assign_frames_to_regions
from ..tasks.stacking import StackOptions
from ..units.frame_window import FrameWindowOptions
from ..units.mosaic_region import RegionJob
from .regions import build_region_graph

__all__ = ["FrameCoefficientTable", "build_mosaic_first_graph", "region_jobs"]


@dataclass(frozen=True)
class FrameCoefficientTable:
    """Per-frame coefficients indexed by frame id: normalisation gains and offsets, frame weights,
    background models (``(C, 4)`` per frame: offset, slopes, gain; see :mod:`~zemosaic_dask.execute.background`) and
    the frames' noise and sky level once the model is removed (``(C,)`` per frame, for
    noise-model rejection)."""

    gains: tuple[tuple[float, ...], ...] | None = None
    offsets: tuple[tuple[float, ...], ...] | None = None
    weights: tuple[tuple[float, ...], ...] | None = None
    planes: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    noise: tuple[tuple[float, ...], ...] | None = None
    sky: tuple[tuple[float, ...], ...] | None = None

    def for_frames(self, ids: Sequence[int]) -> dict[str, tuple | None]:
        """The rows of the given frames, as :class:`RegionJob` fields."""

        def rows(table: tuple | None) -> tuple | None:
            return None if table is None else tuple(table[i] for i in ids)

        names = ("gains", "offsets", "weights", "planes", "noise", "sky")
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


def build_mosaic_first_graph(
    jobs: Sequence[RegionJob], prefix: str = "stack-region", resources: dict[str, int] | None = None
) -> list[Delayed]:
    """Return one delayed region build per job, keyed ``<prefix>-<iy>-<ix>``.

    With ``resources`` (``{"GPU": 1}`` when the assembly plan uses GPUs) the tasks are
    annotated so that only workers advertising them run them.
    """
    return build_region_graph(jobs, prefix, resources)
