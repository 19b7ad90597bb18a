"""What the product writers share: atomic file names, and how their band jobs are run.

A product writer builds one job per band of chunk rows and hands the jobs to a
:data:`BandRunner`. :func:`run_in_turn` runs them here, one after the other; the
execution layer provides the runner that makes them tasks on the cluster's workers
(:func:`zemosaic_dask.execute.product_tasks.band_runner`). :func:`atomic_path` gives a
product a temporary name that is renamed into place only when it is complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

__all__ = ["BandRunner", "atomic_path", "run_in_turn"]


class BandRunner(Protocol):
    """Runs ``function(job)`` for every job (each with a ``y0`` attribute), passing each result to ``collect``.

    ``label`` names the stage (task keys, logs, progress). ``parallel`` says whether the jobs
    run on workers (reported in ``report.json``).
    """

    parallel: bool

    def __call__(
        self, function: Callable[[Any], Any], jobs: Sequence[Any], collect: Callable[[Any], None], label: str
    ) -> None: ...


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path``, renamed to ``path`` on success, removed on error."""
    tmp = path.with_name(f".{path.name}.partial")
    if tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _InTurn:
    parallel = False

    def __call__(
        self, function: Callable[[Any], Any], jobs: Sequence[Any], collect: Callable[[Any], None], label: str
    ) -> None:
        for job in jobs:
            collect(function(job))


run_in_turn: BandRunner = _InTurn()
"""The runner without a cluster: every band job here, in order."""
