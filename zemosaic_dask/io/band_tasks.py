"""What the product writers share: atomic file names, and running one task per band of rows.

:func:`run_band_tasks` runs a function on every band job, as tasks on the client's
workers or here in turn when there is no client, and hands each result to a callback;
:func:`atomic_path` gives a product a temporary name that is renamed into place only when
it is complete.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "run_band_tasks"]

log = logging.getLogger(__name__)


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


def run_band_tasks(
    function: Callable[[Any], Any],
    jobs: Sequence[Any],
    client: Any,
    collect: Callable[[Any], None],
    *,
    label: str,
    show_progress: bool = False,
) -> None:
    """Run ``function(job)`` for every job (with a ``y0`` attribute) and pass each result to ``collect``.

    With a client, one task per job runs on the workers (keys ``{label}-band-{y0}-...``); the
    first failed task's exception is raised once every task has finished. Without a client
    the jobs run here, in turn.
    """
    if client is None:
        for job in jobs:
            collect(function(job))
        return
    from ..progress import results_or_first_error, stage_progress, watch_futures

    token = uuid.uuid4().hex[:8]
    futures = {job.y0: client.submit(function, job, key=f"{label}-band-{job.y0}-{token}", pure=False) for job in jobs}
    log.info("%s: %d band task(s)", label, len(futures))
    outcomes = watch_futures(futures, stage_progress(len(futures), label, show_progress))
    for result in results_or_first_error(outcomes, futures):
        collect(result)
