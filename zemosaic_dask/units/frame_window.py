"""Bring one frame onto one output region: map, read the window, clean, debayer, sample."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from astropy.wcs import WCS

from ..io.frames import read_frame_window
from ..plans.frames import FrameInfo
from ..plans.grid import OutputRegion
from ..tasks.debayer import correct_hot_pixels, debayer_bilinear
from ..tasks.mapping import CoarsePixelMap, coarse_pixel_map, interpolate_pixel_map
from ..tasks.resample import sample
from ..tasks.sky_blocks import subtract_background_plane

__all__ = [
    "FrameContribution",
    "FrameWindowOptions",
    "PreparedWindow",
    "frame_centre",
    "prepare_frame_window",
    "resample_frame_to_region",
    "thread_wcs",
    "wcs_cache_for",
]

# Extra raw pixels read around the mapped window so that debayering and hot-pixel
# detection see the same neighbourhood as on the full frame.
WINDOW_MARGIN = 4


@dataclass(frozen=True)
class FrameWindowOptions:
    """How a frame is prepared and resampled (from the ``ingest`` and ``mapping`` config)."""

    max_error_px: float = 0.01
    hot_pixel_correction: bool = True
    hot_pixel_sigma: float = 8.0
    n_channels: int = 3
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class FrameContribution:
    """A frame resampled onto a region: values (C,h,w), footprint (h,w), hot pixels fixed."""

    values: Any
    footprint: Any
    hot_pixels: int
    map_step: int
    map_error: float


@dataclass(frozen=True)
class PreparedWindow:
    """A frame window ready to sample onto a region.

    Attributes
    ----------
    image : array
        ``(C, h, w)`` float32 window, hot pixels fixed and demosaiced.
    coarse : CoarsePixelMap
        The region's output-to-frame pixel mapping on its coarse node grid.
    origin : tuple of int
        ``(y0, x0)`` of the window in the frame.
    valid_box : tuple of float
        ``(ymin, ymax, xmin, xmax)`` of the frame's pixel area (out to its outer pixel
        edges, -0.5 to ``H - 0.5``) in window coordinates.
    hot_pixels : int
        Hot pixels fixed in the window.
    """

    image: Any
    coarse: CoarsePixelMap
    origin: tuple[int, int]
    valid_box: tuple[float, float, float, float]
    hot_pixels: int


_local = threading.local()
_WCS_CACHE_SIZE = 256


def thread_wcs(header: str) -> WCS:
    """The WCS of a header string, parsed once per thread (WCS objects are not shared across threads).

    Region tasks run on worker threads concurrently; the planners' process-wide cache
    (:func:`~zemosaic_dask.plans.frames.frame_wcs`) hands one object to every caller.

    Parameters
    ----------
    header : str
        A celestial WCS as a FITS header string (``FrameInfo.wcs_header``).
    """
    cache = getattr(_local, "wcs", None)
    if cache is None:
        cache = _local.wcs = OrderedDict()
    wcs = cache.get(header)
    if wcs is None:
        wcs = cache[header] = WCS(header, relax=True)
        if len(cache) > getattr(_local, "capacity", _WCS_CACHE_SIZE):
            cache.popitem(last=False)
    else:
        cache.move_to_end(header)
    return wcs


@contextmanager
def wcs_cache_for(frames: int) -> Iterator[None]:
    """Keep the WCS of up to ``frames`` frames in this thread's cache while the block runs.

    A deep region is stacked band after band, each band visiting every frame in the same
    order: with more frames than the cache holds, a least-recently-used cache would evict
    each WCS just before its next use and parse every one again in every band (4,000
    frames: 70 of the task's 104 s). On leaving, the cache shrinks back to its usual size
    (about 4.5 KiB a WCS).

    Parameters
    ----------
    frames : int
        Number of frames the block visits repeatedly.
    """
    previous = getattr(_local, "capacity", _WCS_CACHE_SIZE)
    _local.capacity = max(previous, int(frames))
    try:
        yield
    finally:
        _local.capacity = previous
        cache = getattr(_local, "wcs", None)
        while cache is not None and len(cache) > previous:
            cache.popitem(last=False)


def _window(bounds: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    ymin, ymax, xmin, xmax = bounds
    height, width = shape
    # The frame covers its pixel area out to the outer pixel edges, -0.5 .. size - 0.5.
    if ymax < -0.5 or xmax < -0.5 or ymin > height - 0.5 or xmin > width - 0.5:
        return None
    y0 = max(0, (math.floor(ymin) - WINDOW_MARGIN) // 2 * 2)
    x0 = max(0, (math.floor(xmin) - WINDOW_MARGIN) // 2 * 2)
    y1 = min(height, math.ceil(ymax) + WINDOW_MARGIN + 1)
    x1 = min(width, math.ceil(xmax) + WINDOW_MARGIN + 1)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    return y0, y1, x0, x1


def prepare_window(raw: Any, frame: FrameInfo, options: FrameWindowOptions) -> tuple[Any, int]:
    """Hot-pixel correction and demosaicing of a raw window; returns ``(C, h, w)`` float32."""
    xp = _namespace_of(raw)
    fixed = 0
    sigma = float(np.median(frame.noise)) if frame.noise else 0.0
    if frame.layout in ("bayer", "mono"):
        if options.hot_pixel_correction and sigma > 0:
            raw, fixed = correct_hot_pixels(raw, sigma, options.hot_pixel_sigma)
        image = debayer_bilinear(raw, frame.bayer_pattern) if frame.layout == "bayer" else raw[None]
    else:
        image = raw
        if options.hot_pixel_correction and frame.noise:
            planes = []
            for channel in range(image.shape[0]):
                plane, count = correct_hot_pixels(image[channel], frame.noise[channel], options.hot_pixel_sigma)
                planes.append(plane)
                fixed += count
            image = xp.stack(planes)
    if image.shape[0] != options.n_channels:
        image = xp.repeat(image[:1], options.n_channels, axis=0)
    return image.astype(xp.float32, copy=False), fixed


def frame_centre(frame: FrameInfo) -> tuple[float, float]:
    """``(xc, yc)``: the frame pixel its background plane is written about (its geometric centre)."""
    height, width = frame.shape
    return (width - 1) / 2.0, (height - 1) / 2.0


def _namespace_of(array: Any) -> ModuleType:
    from ..tasks.namespace import array_namespace

    return array_namespace(array)


def prepare_frame_window(
    frame: FrameInfo,
    out_wcs: WCS,
    region: OutputRegion,
    options: FrameWindowOptions,
    xp: ModuleType = np,
    *,
    plane: Any = None,
) -> PreparedWindow | None:
    """Map a region into a frame and read and prepare the frame window it needs (no sampling).

    Parameters are those of :func:`resample_frame_to_region`, and ``plane``: the frame's
    background model (``(C, 4)`` offset, slopes about the frame centre and gain, in frame
    pixels), removed from the window once it is demosaiced.

    Returns
    -------
    PreparedWindow or None
        None when the frame does not reach the region.
    """
    in_wcs = thread_wcs(frame.wcs_header)
    coarse = coarse_pixel_map(out_wcs, in_wcs, (region.y0, region.x0), region.shape, max_error_px=options.max_error_px)
    finite = np.isfinite(coarse.x) & np.isfinite(coarse.y)
    if not finite.any():
        return None
    bounds = (
        float(coarse.y[finite].min()),
        float(coarse.y[finite].max()),
        float(coarse.x[finite].min()),
        float(coarse.x[finite].max()),
    )
    window = _window(bounds, frame.shape)
    if window is None:
        return None
    y0, y1, x0, x1 = window
    raw = xp.asarray(read_frame_window(frame, y0, y1, x0, x1))
    image, fixed = prepare_window(raw, frame, options)
    if plane is not None:
        image = subtract_background_plane(image, (y0, x0), frame_centre(frame), plane)
    height, width = frame.shape
    # The frame's whole pixel area (to its outer pixel edges), so frames that abut leave no crack.
    valid_box = (-0.5 - y0, height - 0.5 - y0, -0.5 - x0, width - 0.5 - x0)
    return PreparedWindow(image, coarse, (y0, x0), valid_box, fixed)


def resample_frame_to_region(
    frame: FrameInfo,
    out_wcs: WCS,
    region: OutputRegion,
    options: FrameWindowOptions,
    xp: ModuleType = np,
) -> FrameContribution | None:
    """Resample one frame onto one output region, reading only the pixels it needs.

    Parameters
    ----------
    frame : FrameInfo
        The input frame.
    out_wcs : astropy.wcs.WCS
        WCS of the output grid (a private copy: WCS objects are not shared across threads).
    region : OutputRegion
        The region to fill.
    options : FrameWindowOptions
        Mapping accuracy, interpolation and cleaning options.
    xp : module
        Array namespace to compute in (numpy, or cupy on a GPU worker).

    Returns
    -------
    FrameContribution or None
        None when the frame does not reach the region.
    """
    prepared = prepare_frame_window(frame, out_wcs, region, options, xp)
    if prepared is None:
        return None
    map_x, map_y = interpolate_pixel_map(prepared.coarse, xp)
    y0, x0 = prepared.origin
    values, footprint = sample(prepared.image, map_x - x0, map_y - y0, prepared.valid_box, options.interpolation)
    if not bool(footprint.any()):
        return None
    return FrameContribution(values, footprint, prepared.hot_pixels, prepared.coarse.step, prepared.coarse.max_error)
