"""The global output grid: one north-up TAN projection covering every frame.

The footprint is computed in the projection plane of a tangent point at the mean frame
direction, so it stays correct near the celestial poles and across RA = 0/360 (no
``cos(Dec)`` arithmetic on RA differences anywhere).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS

from ..errors import PlanError
from .frames import FrameInfo

__all__ = [
    "OutputGrid",
    "OutputRegion",
    "frame_bboxes",
    "frame_pixel_boxes",
    "mean_direction",
    "plan_output_grid",
]


@dataclass(frozen=True)
class OutputRegion:
    """A chunk-aligned rectangle of the output grid, ``[y0:y1, x0:x1]``."""

    iy: int
    ix: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the region in pixels."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def name(self) -> str:
        """Readable id used in task keys (``<iy>-<ix>``)."""
        return f"{self.iy}-{self.ix}"

    def to_dict(self) -> dict[str, int]:
        """Return a JSON-serialisable dictionary."""
        return {"iy": self.iy, "ix": self.ix, "y0": self.y0, "y1": self.y1, "x0": self.x0, "x1": self.x1}


@dataclass(frozen=True)
class OutputGrid:
    """A north-up TAN grid: tangent point, pixel scale, reference pixel and shape.

    Attributes
    ----------
    crval : tuple of float
        Tangent point (RA, Dec) in degrees.
    pixel_scale : float
        Pixel scale in arcseconds per pixel.
    crpix : tuple of float
        FITS (1-based) reference pixel ``(x, y)``.
    shape : tuple of int
        ``(height, width)`` in pixels.
    chunk : int
        Side of a square storage chunk in pixels; regions align to it.
    """

    crval: tuple[float, float]
    pixel_scale: float
    crpix: tuple[float, float]
    shape: tuple[int, int]
    chunk: int = 512

    @property
    def wcs(self) -> WCS:
        """Return a new celestial WCS object for this grid."""
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = list(self.crval)
        wcs.wcs.crpix = list(self.crpix)
        scale = self.pixel_scale / 3600.0
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        wcs.wcs.radesys = "ICRS"
        wcs.pixel_shape = (self.shape[1], self.shape[0])
        return wcs

    def header_string(self) -> str:
        """Return the WCS as a FITS header string."""
        return self.wcs.to_header_string(relax=True)

    @property
    def n_regions(self) -> tuple[int, int]:
        """Number of regions along ``(y, x)``."""
        return (math.ceil(self.shape[0] / self.chunk), math.ceil(self.shape[1] / self.chunk))

    def regions(self) -> Iterator[OutputRegion]:
        """Yield every chunk-aligned region, row by row."""
        ny, nx = self.n_regions
        for iy in range(ny):
            for ix in range(nx):
                yield self.region(iy, ix)

    def region(self, iy: int, ix: int) -> OutputRegion:
        """Return the region at index ``(iy, ix)``."""
        y0, x0 = iy * self.chunk, ix * self.chunk
        return OutputRegion(iy, ix, y0, min(y0 + self.chunk, self.shape[0]), x0, min(x0 + self.chunk, self.shape[1]))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "crval": list(self.crval),
            "pixel_scale": self.pixel_scale,
            "crpix": list(self.crpix),
            "shape": list(self.shape),
            "chunk": self.chunk,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputGrid:
        """Build a grid from :meth:`to_dict` output."""
        return cls(
            crval=(float(data["crval"][0]), float(data["crval"][1])),
            pixel_scale=float(data["pixel_scale"]),
            crpix=(float(data["crpix"][0]), float(data["crpix"][1])),
            shape=(int(data["shape"][0]), int(data["shape"][1])),
            chunk=int(data.get("chunk", 512)),
        )

    def projection(self) -> WCS:
        """The grid's WCS, built once per grid value and shared: read it, never modify it."""
        return _shared_wcs(self.crval, self.pixel_scale, self.crpix, self.shape)

    def frame_bbox(self, frame: FrameInfo) -> tuple[float, float, float, float] | None:
        """Return the frame's ``(ymin, ymax, xmin, xmax)`` in grid pixels, or None if off-grid."""
        world = frame.footprint_world()
        x, y = self.projection().all_world2pix(world[:, 0], world[:, 1], 0)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return None
        return float(y.min()), float(y.max()), float(x.min()), float(x.max())


@functools.lru_cache(maxsize=64)
def _shared_wcs(
    crval: tuple[float, float], pixel_scale: float, crpix: tuple[float, float], shape: tuple[int, int]
) -> WCS:
    return OutputGrid(crval=crval, pixel_scale=pixel_scale, crpix=crpix, shape=shape).wcs


def frame_bboxes(grid: OutputGrid, frames: Sequence[FrameInfo]) -> np.ndarray:
    """Every frame's ``(ymin, ymax, xmin, xmax)`` in grid pixels, from one projection of all borders.

    Parameters
    ----------
    grid : OutputGrid
        The grid to project onto.
    frames : sequence of FrameInfo
        The frames.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float boxes, equal to :meth:`OutputGrid.frame_bbox` frame by frame; a row
        of NaN where that returns None (a border point that does not project finitely).
    """
    boxes = np.full((len(frames), 4), np.nan)
    borders = [f.footprint_world() for f in frames]
    sizes = np.array([len(b) for b in borders], dtype=np.int64)
    if not len(frames) or not sizes.sum():
        return boxes
    world = np.concatenate(borders)
    x, y = grid.projection().all_world2pix(world[:, 0], world[:, 1], 0)
    owner = np.repeat(np.arange(len(frames)), sizes)
    finite = np.isfinite(x) & np.isfinite(y)
    bad = np.zeros(len(frames), dtype=bool)
    bad[owner[~finite]] = True
    starts = (np.cumsum(sizes) - sizes)[sizes > 0]
    filled = np.flatnonzero(sizes > 0)
    boxes[filled] = np.column_stack(
        [
            np.minimum.reduceat(y, starts),
            np.maximum.reduceat(y, starts),
            np.minimum.reduceat(x, starts),
            np.maximum.reduceat(x, starts),
        ]
    )
    boxes[bad | (sizes == 0)] = np.nan
    return boxes


def mean_direction(ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[float, float]:
    """Return the mean direction of points on the sphere (RA wrap and pole safe)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    vec = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=0)
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise PlanError("frame centres cancel out on the sphere", reason="degenerate frame centres")
    vec /= norm
    ra_c = math.degrees(math.atan2(vec[1], vec[0])) % 360.0
    dec_c = math.degrees(math.asin(max(-1.0, min(1.0, vec[2]))))
    return ra_c, dec_c


def plan_output_grid(
    frames: Sequence[FrameInfo],
    *,
    pixel_scale: float | None = None,
    padding_px: int = 8,
    chunk: int = 512,
    max_pixels: int = 2_000_000_000,
    crval: tuple[float, float] | None = None,
) -> OutputGrid:
    """Plan the global north-up TAN grid that covers every frame.

    Parameters
    ----------
    frames : sequence of FrameInfo
        The usable frames.
    pixel_scale : float, optional
        Output scale in arcsec/px; the median of the frames' scales when omitted.
    padding_px : int
        Empty border added on every side.
    chunk : int
        Storage chunk side; regions are aligned to it.
    max_pixels : int
        Refuse grids larger than this (a sign of a wrong WCS among the inputs).
    crval : tuple of float, optional
        Tangent point (RA, Dec); the mean frame direction when omitted.

    Returns
    -------
    OutputGrid
    """
    if not frames:
        raise PlanError("no usable frames to build an output grid from", reason="no usable frames")
    if crval is None:
        centres = np.array([f.center_world() for f in frames])
        crval = mean_direction(centres[:, 0], centres[:, 1])
    scale = float(pixel_scale) if pixel_scale else float(np.median([f.pixel_scale for f in frames]))
    if not scale > 0:
        raise PlanError(f"output pixel scale must be > 0, got {scale}", reason="invalid pixel scale")
    probe = OutputGrid(crval=crval, pixel_scale=scale, crpix=(1.0, 1.0), shape=(1, 1), chunk=chunk)
    arr = frame_bboxes(probe, frames)
    arr = arr[np.isfinite(arr[:, 0])]
    if not len(arr):
        raise PlanError("no frame projects onto the output plane", reason="no frame on the grid")
    ymin, ymax = arr[:, 0].min() - padding_px, arr[:, 1].max() + padding_px
    xmin, xmax = arr[:, 2].min() - padding_px, arr[:, 3].max() + padding_px
    y_start, x_start = math.floor(ymin), math.floor(xmin)
    height = math.ceil(ymax) - y_start + 1
    width = math.ceil(xmax) - x_start + 1
    if height * width > max_pixels:
        raise PlanError(
            f"output grid of {width}x{height} pixels exceeds the limit of {max_pixels} pixels; "
            "check the inputs' WCS or raise zemosaic.grid.max-pixels",
            reason="output grid too large",
        )
    crpix = (1.0 - x_start, 1.0 - y_start)
    return OutputGrid(crval=crval, pixel_scale=scale, crpix=crpix, shape=(height, width), chunk=chunk)


def frame_pixel_boxes(grid: OutputGrid, frames: Sequence[FrameInfo]) -> list[tuple[int, int, int, int]]:
    """Every frame's half-open integer box ``(y0, y1, x0, x1)`` on the grid, ``(0, 0, 0, 0)`` when off-grid.

    The boxes of :func:`frame_bboxes` (one projection for all frames), truncated to whole
    pixels and made half-open: what the overlap searches of the background model take.
    """
    boxes: list[tuple[int, int, int, int]] = []
    for ymin, ymax, xmin, xmax in frame_bboxes(grid, frames).tolist():
        if not math.isfinite(ymin):
            boxes.append((0, 0, 0, 0))
        else:
            boxes.append((int(ymin), int(ymax) + 1, int(xmin), int(xmax) + 1))
    return boxes
