"""Planning layer: frozen, JSON-serialisable values and pure planning functions.

Nothing here imports dask, distributed or cupy, nor reads a file.
"""

from .frames import FrameInfo, FrameRejection, frame_wcs, is_seestar
from .grid import OutputGrid, OutputRegion, mean_direction, plan_output_grid

__all__ = [
    "FrameInfo",
    "FrameRejection",
    "OutputGrid",
    "OutputRegion",
    "frame_wcs",
    "is_seestar",
    "mean_direction",
    "plan_output_grid",
]
