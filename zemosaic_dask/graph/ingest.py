"""Graph of the ingest stage: one ``inspect-frame-<i>`` task per candidate file."""

from __future__ import annotations

from collections.abc import Sequence

import dask
from dask.delayed import Delayed

from ..io.frames import IngestOptions, inspect_frame
from .keys import task_key

__all__ = ["build_ingest_graph"]


def build_ingest_graph(paths: Sequence[str], options: IngestOptions) -> list[Delayed]:
    """Return one delayed :func:`~zemosaic_dask.io.inspect_frame` per path, read on workers."""
    inspect = dask.delayed(inspect_frame, pure=True)
    return [
        inspect(path, options, dask_key_name=task_key(f"inspect-frame-{index}")) for index, path in enumerate(paths)
    ]
