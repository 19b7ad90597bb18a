"""What one region task is given (:class:`RegionJob`) and what it reports (:class:`RegionSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.store import MosaicStore
from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid, OutputRegion
from ..tasks.stacking import StackOptions
from .frame_window import FrameWindowOptions

__all__ = ["RegionJob", "RegionRows", "RegionSummary"]


@dataclass(frozen=True)
class RegionJob:
    """Everything one region task needs; small enough to ship to a worker.

    Attributes
    ----------
    region : OutputRegion
        The chunk-aligned rectangle to build.
    frames : tuple of FrameInfo
        Frames overlapping the region (duplicates allowed, see ``frame_ids``).
    frame_ids : tuple of int
        Distinct-frame id of each entry; duplicates share an id and count once in coverage.
    grid : OutputGrid
        The global output grid.
    store : MosaicStore
        Where to write.
    stack : StackOptions
        Normalisation, weighting and rejection.
    window : FrameWindowOptions
        Mapping accuracy and frame cleaning.
    gains, offsets, weights : tuple of tuple of float, optional
        Per-frame, per-channel normalisation coefficients and frame weights.
    planes : tuple, optional
        Per-frame background model, ``(C, 4)`` offset, slopes (frame pixels) and gain, applied
        as each frame window is prepared.
    noise, sky, shot : tuple of tuple of float, optional
        Per-frame, per-channel expected noise sigma, sky level (ADU, background model
        removed) and shot level (the raw sky the noise was measured on) for noise-model
        rejection.
    """

    region: OutputRegion
    frames: tuple[FrameInfo, ...]
    frame_ids: tuple[int, ...]
    grid: OutputGrid
    store: MosaicStore
    stack: StackOptions = field(default_factory=StackOptions)
    window: FrameWindowOptions = field(default_factory=FrameWindowOptions)
    gains: tuple[tuple[float, ...], ...] | None = None
    offsets: tuple[tuple[float, ...], ...] | None = None
    weights: tuple[tuple[float, ...], ...] | None = None
    planes: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    noise: tuple[tuple[float, ...], ...] | None = None
    sky: tuple[tuple[float, ...], ...] | None = None
    shot: tuple[tuple[float, ...], ...] | None = None
    use_gpu: bool = False
    key: str = ""
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class RegionSummary:
    """What a region task did, for the report."""

    region: str
    frames: int
    contributing: int
    hot_pixels: int
    seconds: float
    reused: bool
    backend: str = "cpu"
    max_map_error: float = 0.0
    gpu_fallback: str | None = None
    bands: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class RegionRows:
    """Rows ``[y0, y1)`` of a region computed and not yet written, and what computing them found.

    A region is written from one :class:`RegionRows` (the whole region) or from the row
    parts of a deep region computed by separate tasks.
    """

    y0: int
    y1: int
    image: np.ndarray
    coverage: np.ndarray
    contributing: int
    hot_pixels: int
    seconds: float
    backend: str = "cpu"
    max_map_error: float = 0.0
    bands: int = 1
    gpu_fallback: str | None = None
