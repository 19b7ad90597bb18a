"""Measure one frame's large-scale sky on a worker: read, clean, debayer, block medians."""

from __future__ import annotations

from ..io.frames import read_frame_window
from ..plans.frames import FrameInfo
from ..tasks.sky_blocks import SkyBlocks, measure_sky_blocks
from .frame_window import FrameWindowOptions, frame_centre, prepare_window

__all__ = ["frame_centre", "measure_frame_sky"]


def measure_frame_sky(frame: FrameInfo, options: FrameWindowOptions, block: int) -> SkyBlocks:
    """Block medians of a whole frame, prepared as for stacking (hot pixels fixed, demosaiced).

    Parameters
    ----------
    frame : FrameInfo
        The frame.
    options : FrameWindowOptions
        Frame preparation options (the same as the stacking units use).
    block : int
        Block side in frame pixels.

    Returns
    -------
    SkyBlocks
    """
    height, width = frame.shape
    raw = read_frame_window(frame, 0, height, 0, width)
    image, _ = prepare_window(raw, frame, options)
    return measure_sky_blocks(image, block)
