"""Graph of the background model's measurements: one ``sky-blocks-<i>`` task per frame."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import dask
from dask.delayed import Delayed

from ..plans.frames import FrameInfo
from ..plans.grid import OutputGrid
from ..units.frame_sky import measure_frame_sky
from ..units.frame_window import FrameWindowOptions

__all__ = ["build_sky_blocks_graph"]


def build_sky_blocks_graph(
    frames: Sequence[FrameInfo],
    options: FrameWindowOptions,
    grid: OutputGrid,
    cell: int,
    noise: tuple[float, ...] | None = None,
) -> list[Delayed]:
    """Return one delayed :func:`~zemosaic_dask.units.frame_sky.measure_frame_sky` per frame."""
    tasks = []
    header = grid.header_string()
    for index, frame in enumerate(frames):
        bound = functools.partial(measure_frame_sky, frame, options, header, grid.shape, int(cell), noise)
        tasks.append(dask.delayed(bound, pure=False, traverse=False)(dask_key_name=f"sky-blocks-{index}"))
    return tasks
