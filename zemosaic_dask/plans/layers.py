"""Layers: the master tiles (classic) or batch mosaics (SDS) that the final mosaic combines.

A layer is built from some frames, lives on the global grid in the store
(``layers/<id>``) and covers a region-aligned box of it. Classic tiles are first stacked
on their own grid (tangent point at the frame nearest the group centroid), then resampled
onto the global grid; SDS batch mosaics are stacked on the global grid directly. Both
modes then share calibration and assembly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batches import BatchPlan
from .frames import FrameInfo
from .grid import OutputGrid, frame_bboxes, plan_output_grid
from .groups import GroupPlan, frame_centres
from .sds import SdsPlan

__all__ = ["LayerPlan", "layer_units", "layers_from_batches", "layers_from_sds", "region_box"]


@dataclass(frozen=True)
class LayerPlan:
    """One layer of the final mosaic.

    Attributes
    ----------
    id : int
        Layer id (task keys ``stack-tile-<id>-...``; an SDS batch region's build is named ``reproject-batch-<id>-...``).
    kind : str
        ``"tile"`` (classic master tile) or ``"batch"`` (SDS batch mosaic).
    frames : tuple of int
        Indices of the frames handed to the stacker, duplicates included.
    salvage : bool
        Quality gate and crop are off for this layer.
    box : tuple of int
        ``(y0, y1, x0, x1)`` region-aligned box of the global grid the layer reaches.
    grid : OutputGrid or None
        The tile's own grid (classic); None for a layer stacked on the global grid.
    coverage_fraction : float or None
        SDS batch coverage fraction.
    """

    id: int
    kind: str
    frames: tuple[int, ...]
    salvage: bool
    box: tuple[int, int, int, int]
    grid: OutputGrid | None = None
    coverage_fraction: float | None = None

    @property
    def distinct(self) -> tuple[int, ...]:
        """Distinct frame indices, in first-appearance order."""
        return tuple(dict.fromkeys(self.frames))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "id": self.id,
            "kind": self.kind,
            "frames": list(self.frames),
            "salvage": self.salvage,
            "box": list(self.box),
            "grid": None if self.grid is None else self.grid.to_dict(),
            "coverage_fraction": self.coverage_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        """Build a layer from :meth:`to_dict` output."""
        return cls(
            id=int(data["id"]),
            kind=str(data["kind"]),
            frames=tuple(int(i) for i in data["frames"]),
            salvage=bool(data["salvage"]),
            box=tuple(int(v) for v in data["box"]),  # type: ignore[arg-type]
            grid=None if data.get("grid") is None else OutputGrid.from_dict(data["grid"]),
            coverage_fraction=data.get("coverage_fraction"),
        )


def layer_units(layers: Sequence[LayerPlan], grid: OutputGrid) -> int:
    """The units the layer stage computes: every layer's regions (a layer is stacked region by region).

    A deep session on a small field has one region and hundreds of batches: its batch stage
    still runs one unit per batch, and the assembly plan must not plan fewer workers.
    """
    chunk = grid.chunk
    return sum(math.ceil((x.box[1] - x.box[0]) / chunk) * math.ceil((x.box[3] - x.box[2]) / chunk) for x in layers)


def region_box(grid: OutputGrid, frames: Sequence[FrameInfo]) -> tuple[int, int, int, int]:
    """Region-aligned box of the global grid covering the frames' footprints."""
    return _aligned_box(grid, frame_bboxes(grid, frames))


def _aligned_box(grid: OutputGrid, boxes: np.ndarray) -> tuple[int, int, int, int]:
    """Region-aligned box covering ``(ymin, ymax, xmin, xmax)`` rows (NaN rows: frames off the grid)."""
    arr = boxes[np.isfinite(boxes[:, 0])]
    if not len(arr):
        return (0, 0, 0, 0)
    chunk = grid.chunk
    y0 = max(0, math.floor(arr[:, 0].min() / chunk) * chunk)
    x0 = max(0, math.floor(arr[:, 2].min() / chunk) * chunk)
    y1 = min(grid.shape[0], (math.floor(arr[:, 1].max() / chunk) + 1) * chunk)
    x1 = min(grid.shape[1], (math.floor(arr[:, 3].max() / chunk) + 1) * chunk)
    return (int(y0), int(y1), int(x0), int(x1))


def _reference_frame(frames: Sequence[FrameInfo], members: Sequence[int]) -> int:
    """The member nearest the group's centroid on the sphere."""
    radec = np.radians(frame_centres([frames[i] for i in members]))
    xyz = np.column_stack(
        [np.cos(radec[:, 1]) * np.cos(radec[:, 0]), np.cos(radec[:, 1]) * np.sin(radec[:, 0]), np.sin(radec[:, 1])]
    )
    centroid = xyz.mean(axis=0)
    return members[int(np.argmax(xyz @ centroid))]


def layers_from_batches(
    frames: Sequence[FrameInfo], grid: OutputGrid, groups: GroupPlan, batches: BatchPlan, *, tile_chunk: int = 512
) -> list[LayerPlan]:
    """One layer per classic tile batch, each with its own tile grid."""
    layers = []
    boxes = frame_bboxes(grid, frames)
    for batch in batches.batches:
        members = list(batch.frames)
        reference = frames[_reference_frame(frames, members)]
        tile_grid = plan_output_grid(
            [frames[i] for i in members],
            pixel_scale=grid.pixel_scale,
            chunk=tile_chunk,
            crval=reference.center_world(),
        )
        layers.append(
            LayerPlan(
                id=batch.tile_id,
                kind="tile",
                frames=batch.stack_frames,
                salvage=batch.salvage,
                box=_aligned_box(grid, boxes[members]),
                grid=tile_grid,
            )
        )
    return layers


def layers_from_sds(frames: Sequence[FrameInfo], grid: OutputGrid, sds: SdsPlan) -> list[LayerPlan]:
    """One layer per SDS batch, stacked directly on the global grid."""
    boxes = frame_bboxes(grid, frames)
    return [
        LayerPlan(
            id=index,
            kind="batch",
            frames=batch.frames,
            salvage=False,
            box=_aligned_box(grid, boxes[list(batch.frames)]),
            coverage_fraction=batch.coverage_fraction,
        )
        for index, batch in enumerate(sds.batches)
    ]
