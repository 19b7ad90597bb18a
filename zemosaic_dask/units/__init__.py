"""Units of work executed by graph nodes on workers.

A unit reads what it needs (``io``), computes with pure array functions (``tasks``) and
writes whole chunks (``io``). Units never build or compute a Dask graph.
"""

from .frame_window import FrameWindowOptions, resample_frame_to_region
from .mosaic_region import RegionJob, RegionSummary, build_mosaic_region

__all__ = [
    "FrameWindowOptions",
    "RegionJob",
    "RegionSummary",
    "build_mosaic_region",
    "resample_frame_to_region",
]
