"""Computing a stage's tasks: on the run's client (or synchronously), with progress and stage timings."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask

from ..progress import MonotoneProgress, exception_of, results_or_first_error, stage_progress, watch_futures
from .worker_memory import WorkerPeaks

__all__ = ["Timings", "compute"]

log = logging.getLogger(__name__)


@dataclass
class Timings:
    """Wall time of each stage of a run, and the CPU time this process spent in it, in seconds.

    ``stages`` is ``report.json``'s ``timings``; ``client_cpu`` its ``client.cpu_s``: the CPU
    seconds of the submitting process (all its threads, so the scheduler's too when the
    cluster is local), the work that does not spread over the workers. Once
    :meth:`watch_workers` is called, ``worker_peak_mib`` holds each later stage's largest
    worker peak resident memory (:mod:`~zemosaic_dask.execute.worker_memory`).
    """

    stages: dict[str, float] = field(default_factory=dict)
    client_cpu: dict[str, float] = field(default_factory=dict)
    workers: WorkerPeaks | None = None
    worker_peak_mib: dict[str, float] = field(default_factory=dict)

    def watch_workers(self, client: Any) -> None:
        """Also record the largest worker peak of each stage that starts from now on (``worker_peak_mib``)."""
        if client is not None:
            self.workers = WorkerPeaks(client)
            self.workers.take()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as stage ``name``."""
        workers = self.workers
        if workers is not None:
            workers.take()  # what came before the stage is not the stage's
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - start, 3)
            self.client_cpu[name] = round(time.process_time() - cpu, 3)
            if workers is not None:
                with contextlib.suppress(Exception):  # a lost worker must not hide the stage's own outcome
                    self.worker_peak_mib[name] = max(workers.take().values(), default=0.0)


def compute(
    handle: Any, tasks: Sequence[Any], *, label: str, show_progress: bool, max_in_flight: int | None = None
) -> list[Any]:
    """Compute delayed tasks on the handle's client (or synchronously), with a progress bar.

    Parameters
    ----------
    handle : ClusterHandle
        The run's cluster; ``handle.client`` None computes in this process.
    tasks : sequence of Delayed
        Independent tasks (each may have its own dependencies).
    label : str
        The stage's name, for the log and the bar.
    show_progress : bool
        Draw a progress bar on the terminal.
    max_in_flight : int, optional
        At most this many of ``tasks`` are submitted at once (the assembly plan's worker
        counts); the next one is submitted when one finishes. None, or a bound the cluster's
        threads cannot exceed anyway, submits them all at once.

    Returns
    -------
    list
        The results, in the order of ``tasks``.

    Notes
    -----
    The bar counts finished tasks and shows an ETA; the first failed task's exception is
    raised once every other task has finished, so nothing already computed is lost.
    """
    if not tasks:
        return []
    if handle.client is None:
        return list(dask.compute(*tasks, scheduler="synchronous"))
    log.info("%s: %d task(s)", label, len(tasks))
    progress = stage_progress(len(tasks), label, show_progress)
    if max_in_flight is not None and max_in_flight < min(len(tasks), _total_threads(handle.client)):
        log.info("%s: at most %d task(s) at a time (assembly plan)", label, max_in_flight)
        outcomes = _windowed(handle.client, list(tasks), max(1, int(max_in_flight)), progress)
    else:
        futures = handle.client.compute(list(tasks), optimize_graph=False)
        outcomes = watch_futures(dict(enumerate(futures)), progress)
    return results_or_first_error(outcomes, range(len(tasks)))


def _total_threads(client: Any) -> int:
    """Worker threads of the cluster now: a bound at or above it already holds without a window."""
    return int(sum(client.nthreads().values()))


def _windowed(client: Any, tasks: list[Any], window: int, progress: MonotoneProgress) -> dict[int, Any]:
    """Submit ``tasks`` so that at most ``window`` of them are in flight; gather as they finish.

    Every future is held until the stage ends, so a task shared by several of ``tasks`` (a
    master tile under its reprojections) is computed once.
    """
    from distributed import as_completed

    outcomes: dict[int, Any] = {}
    index_of: dict[str, int] = {}
    held: list[Any] = []
    queue = iter(enumerate(tasks))
    progress.expect(range(len(tasks)))
    pending = as_completed(loop=client.loop, with_results=True, raise_errors=False)  # not the default client's

    def submit() -> None:
        for index, task in queue:
            future = client.compute(task, optimize_graph=False)
            index_of[future.key] = index
            held.append(future)
            pending.add(future)
            return

    for _ in range(window):
        submit()
    for future, outcome in pending:
        index = index_of[future.key]
        if future.status in ("error", "cancelled") or isinstance(outcome, BaseException):
            error = exception_of(outcome)
            outcomes[index] = error
            progress.failed(index, f"{type(error).__name__}: {error}")
        else:
            outcomes[index] = outcome
            progress.done(index)
        submit()
    return outcomes
