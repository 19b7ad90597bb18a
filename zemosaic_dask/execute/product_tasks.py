"""Product band jobs as tasks on the cluster's workers.

:func:`band_runner` gives the product writers of :mod:`zemosaic_dask.io.products` a
:class:`~zemosaic_dask.io.band_tasks.BandRunner` that submits one task per band of chunk
rows to the client's workers and hands the results back as they finish; without a client
the bands run in the calling process, in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..graph.keys import task_key
from ..io.band_tasks import BandRunner, run_in_turn
from ..progress import results_or_first_error, stage_progress, watch_futures

__all__ = ["band_runner"]

log = logging.getLogger(__name__)


class _OnWorkers:
    parallel = True

    def __init__(self, client: Any, show_progress: bool) -> None:
        self.client = client
        self.show_progress = show_progress

    def __call__(
        self, function: Callable[[Any], Any], jobs: Sequence[Any], collect: Callable[[Any], None], label: str
    ) -> None:
        submit = self.client.submit
        futures = {job.y0: submit(function, job, key=task_key(f"{label}-band-{job.y0}"), pure=False) for job in jobs}
        log.info("%s: %d band task(s)", label, len(futures))
        outcomes = watch_futures(futures, stage_progress(len(futures), label, self.show_progress))
        for result in results_or_first_error(outcomes, futures):
            collect(result)


def band_runner(client: Any = None, *, show_progress: bool = False) -> BandRunner:
    """The runner of product band jobs for ``client``.

    Parameters
    ----------
    client : distributed.Client, optional
        One task per band on its workers (keys ``{label}-band-{y0}-...``); the first failed
        task's exception is raised once every task has finished. None: the bands run here.
    show_progress : bool
        Draw a progress bar on stderr (with a client).

    Returns
    -------
    BandRunner
        The runner to pass to :func:`zemosaic_dask.io.products.write_mosaic_products`.
    """
    return run_in_turn if client is None else _OnWorkers(client, show_progress)
