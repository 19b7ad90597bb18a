"""Tasks whose job description is shipped as it is, never traversed by dask.

A region job holds dozens of frame descriptions (dataclasses). ``dask.delayed`` walks
every argument looking for dask collections, which costs the client several
milliseconds per region task; a job never contains one, so it is bound to the function
beforehand and the walk is skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dask
from dask.delayed import Delayed

from .keys import task_key

__all__ = ["job_task"]


def job_task(func: Callable[..., Any], job: Any, *dependencies: Any, key: str) -> Delayed:
    """Return the task ``func(job, *dependencies)`` named ``key``.

    Parameters
    ----------
    func : callable
        The unit of work.
    job : object
        Its description, which must not contain dask collections (it is not traversed).
    *dependencies
        Further arguments; delayed values among them become dependencies of the task.
    key : str
        The task's name, as shown on the dashboard; its key is the name with the run's
        token (:func:`~zemosaic_dask.graph.keys.task_key`).
    """
    bound = functools.partial(func, job)
    return dask.delayed(bound, pure=False, traverse=False)(*dependencies, dask_key_name=task_key(key))
