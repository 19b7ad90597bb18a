"""Deep regions of a Mosaic-First run split into row parts, so few regions still keep every thread busy.

A field of one pointing is a handful of regions however many frames it holds; each region
is one stacking task, so with more threads than regions the rest idle. When the regions
holding data are fewer than :data:`UNITS_PER_THREAD` per thread, the deepest are split into
bands of rows, each stacked by its own task, and one task per region writes the parts.
Every pixel's stack depends only on the samples that land on it; the samples themselves
agree with one task's to the coarse pixel map's interpolation (a frame's map has its
nodes on the band it maps), below 1e-6 of the value. The split is part of ``plan.json``
(section ``region_parts``): what the plan says is what runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .frames import FrameInfo
from .grid import OutputGrid, OutputRegion, frame_bboxes
from .regions import assign_frames_to_regions

__all__ = ["MIN_PART_ROWS", "UNITS_PER_THREAD", "RegionParts", "part_regions", "plan_region_parts"]

#: A part holds at least this many rows of its region.
MIN_PART_ROWS = 32
#: Stacking tasks aimed at per thread, so that uneven tasks still balance.
UNITS_PER_THREAD = 2


@dataclass(frozen=True)
class RegionParts:
    """How many row parts each split region is stacked in.

    Attributes
    ----------
    split : tuple of (iy, ix, parts)
        The regions split, with their number of parts (at least 2); every other region is one task.
    units : int
        Stacking tasks of the run: parts of split regions plus the other regions holding data.
    reason : str
        Why the regions were, or were not, split.
    """

    split: tuple[tuple[int, int, int], ...] = ()
    units: int = 0
    reason: str = ""

    def parts_of(self, iy: int, ix: int) -> int:
        """Number of row parts of region ``(iy, ix)`` (1: not split)."""
        return next((n for y, x, n in self.split if (y, x) == (iy, ix)), 1)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {"split": [list(s) for s in self.split], "units": self.units, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RegionParts:
        """Build from :meth:`to_dict` output; None (a plan without the section) splits nothing."""
        if not data:
            return cls()
        split = tuple((int(iy), int(ix), int(n)) for iy, ix, n in data.get("split", ()))
        return cls(split, int(data.get("units", 0)), str(data.get("reason", "")))


def part_regions(region: OutputRegion, parts: int) -> list[OutputRegion]:
    """Cut ``region`` into ``parts`` bands of whole rows, as even as possible, top to bottom.

    Each band keeps the region's indices ``(iy, ix)``: it is rows of that region, not a region
    of the grid.
    """
    height = region.y1 - region.y0
    parts = max(1, min(int(parts), height))
    cuts = [region.y0 + (height * k) // parts for k in range(parts + 1)]
    return [OutputRegion(region.iy, region.ix, cuts[k], cuts[k + 1], region.x0, region.x1) for k in range(parts)]


def _samples_per_region(grid: OutputGrid, frames: Sequence[FrameInfo]) -> dict[tuple[int, int], float]:
    """Output pixels every region receives from its frames (footprint boxes clipped to the region)."""
    boxes = frame_bboxes(grid, frames)
    work: dict[tuple[int, int], float] = {}
    for (iy, ix), members in assign_frames_to_regions(grid, frames, boxes=boxes).items():
        region = grid.region(iy, ix)
        box = boxes[members]
        rows = np.clip(np.minimum(box[:, 1] + 1, region.y1) - np.maximum(box[:, 0], region.y0), 0, None)
        cols = np.clip(np.minimum(box[:, 3] + 1, region.x1) - np.maximum(box[:, 2], region.x0), 0, None)
        work[(iy, ix)] = float(np.nansum(rows * cols))
    return work


def plan_region_parts(
    grid: OutputGrid, frames: Sequence[FrameInfo], threads: int, min_part_samples: int, ruled_out: str = ""
) -> RegionParts:
    """Decide which regions a Mosaic-First run stacks in row parts.

    Parameters
    ----------
    grid : OutputGrid
        The output grid and its regions.
    frames : sequence of FrameInfo
        The frames of the run.
    threads : int
        Stacking tasks that can run at once (worker threads, or GPUs when the units go to GPUs).
    min_part_samples : int
        Least work of a part, in frame samples landing on the grid (a part's fixed cost, mapping
        each of its frames, must stay small beside it); 0 never splits.
    ruled_out : str
        Why no region may be split, when one of the run's settings forbids it ("": none does).

    Returns
    -------
    RegionParts
        Regions are split only while the regions holding data are fewer than
        :data:`UNITS_PER_THREAD` x ``threads``; a region gets parts in proportion to its share
        of the work, each at least ``min_part_samples`` and :data:`MIN_PART_ROWS` rows.
    """
    work = _samples_per_region(grid, frames)
    regions, aim = len(work), UNITS_PER_THREAD * max(1, int(threads))
    if ruled_out:
        return RegionParts((), regions, f"{ruled_out}: every region is one task")
    if min_part_samples <= 0:
        return RegionParts((), regions, "min-part-msamples is 0: every region is one task")
    if regions >= aim:
        return RegionParts((), regions, f"{regions} region(s) hold data, at least {aim} for {threads} thread(s)")
    per_part = max(float(min_part_samples), sum(work.values()) / aim)
    split = []
    for (iy, ix), samples in work.items():
        height = grid.region(iy, ix).shape[0]
        parts = min(math.ceil(samples / per_part - 1e-9), height // MIN_PART_ROWS)
        if parts > 1:
            split.append((iy, ix, parts))
    units = regions + sum(n - 1 for _, _, n in split)
    reason = (
        f"{regions} region(s) hold data for {threads} thread(s): {len(split)} split into row parts of "
        f"at least {per_part / 1e6:.1f} M samples and {MIN_PART_ROWS} rows, {units} stacking task(s)"
    )
    return RegionParts(tuple(split), units, reason)
