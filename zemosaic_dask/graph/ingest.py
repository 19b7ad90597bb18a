"""Graph of the ingest stage: one ``inspect-frame-<i>`` task per candidate file."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from dask.delayed import Delayed

from ..io.frames import IngestOptions, inspect_frame
from .calls import job_task

__all__ = ["build_ingest_graph"]


def build_ingest_graph(paths: Sequence[str], options: IngestOptions) -> list[Delayed]:
    """Return one delayed :func:`~zemosaic_dask.io.inspect_frame` per path, read on workers.

    The path and options are bound to the function, so nothing is walked or hashed per
    frame (4 s of client CPU for 16,000 frames when they were the task's arguments).
    """
    return [
        job_task(functools.partial(inspect_frame, path), options, key=f"inspect-frame-{index}")
        for index, path in enumerate(paths)
    ]
