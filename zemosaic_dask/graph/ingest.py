"""Graph of the ingest stage: ``inspect-frames-<b>`` tasks, each inspecting a run of candidate files."""

from __future__ import annotations

from collections.abc import Sequence

from dask.delayed import Delayed

from ..io.frames import FrameInfo, FrameRejection, IngestOptions, inspect_frame
from .calls import job_task

__all__ = ["MAX_FILES_PER_TASK", "build_ingest_graph", "files_per_task", "inspect_frames"]

#: Files one ingest task inspects at most.
MAX_FILES_PER_TASK = 32


def files_per_task(n_files: int) -> int:
    """Files per ingest task: one for up to 511 files, then more, up to :data:`MAX_FILES_PER_TASK`.

    Every task costs the client and the scheduler a few milliseconds whatever it does (4.8 ms
    per frame of client CPU at 16,000 one-file tasks); at least 256 tasks are kept so that the
    workers share the files evenly.
    """
    return max(1, min(MAX_FILES_PER_TASK, int(n_files) // 256))


def inspect_frames(paths: Sequence[str], options: IngestOptions) -> list[FrameInfo | FrameRejection]:
    """:func:`~zemosaic_dask.io.frames.inspect_frame` of each path, in order (never raises for a bad file)."""
    return [inspect_frame(path, options) for path in paths]


def build_ingest_graph(paths: Sequence[str], options: IngestOptions) -> list[Delayed]:
    """One delayed :func:`inspect_frames` per run of :func:`files_per_task` paths, read on workers.

    Each task returns a list of :class:`FrameInfo` or :class:`FrameRejection`, in the order of
    ``paths``. The paths and options are bound to the function, so nothing is walked or
    hashed per task.
    """
    step = files_per_task(len(paths))
    return [
        job_task(inspect_frames, tuple(paths[start : start + step]), options, key=f"inspect-frames-{start // step}")
        for start in range(0, len(paths), step)
    ]
