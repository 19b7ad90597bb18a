"""Which frames reach which output region: a grid-bucket spatial index.

Each frame's footprint box on the output grid is turned into the range of region
indices it touches, so the cost is the number of (frame, touched region) pairs, never
frames x regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .frames import FrameInfo
from .grid import OutputGrid, frame_bboxes

__all__ = ["assign_frames_to_regions"]


def assign_frames_to_regions(
    grid: OutputGrid, frames: Sequence[FrameInfo], margin_px: float = 2.0, *, boxes: np.ndarray | None = None
) -> dict[tuple[int, int], list[int]]:
    """Map each region index ``(iy, ix)`` to the sorted indices of the frames reaching it.

    Parameters
    ----------
    grid : OutputGrid
        The output grid and its region size.
    frames : sequence of FrameInfo
        The frames, indexed by position.
    margin_px : float
        Safety margin around each footprint box, in output pixels.
    boxes : numpy.ndarray, optional
        The frames' :func:`~.grid.frame_bboxes` when the caller has them already.

    Returns
    -------
    dict
        Only regions reached by at least one frame appear.
    """
    ny, nx = grid.n_regions
    chunk = grid.chunk
    table: dict[tuple[int, int], list[int]] = {}
    boxes = frame_bboxes(grid, frames) if boxes is None else boxes
    for index, box in enumerate(boxes.tolist()):
        if not math.isfinite(box[0]):
            continue
        ymin, ymax, xmin, xmax = box
        iy0 = max(0, math.floor((ymin - margin_px) / chunk))
        iy1 = min(ny - 1, math.floor((ymax + margin_px) / chunk))
        ix0 = max(0, math.floor((xmin - margin_px) / chunk))
        ix1 = min(nx - 1, math.floor((xmax + margin_px) / chunk))
        for iy in range(iy0, iy1 + 1):
            for ix in range(ix0, ix1 + 1):
                table.setdefault((iy, ix), []).append(index)
    return {key: table[key] for key in sorted(table)}
