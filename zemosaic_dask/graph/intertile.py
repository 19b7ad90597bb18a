"""Graph of the inter-layer calibration: one ``intertile-pair-<i>-<j>`` task per overlapping pair."""

from __future__ import annotations

from collections.abc import Sequence

from dask.delayed import Delayed

from ..units.intertile_pair import PairJob, fit_layer_pair
from .calls import job_task

__all__ = ["build_intertile_graph"]


def build_intertile_graph(jobs: Sequence[PairJob]) -> dict[str, Delayed]:
    """Return the pair fits keyed by their task name."""
    keys = [f"intertile-pair-{job.i}-{job.j}" for job in jobs]
    return {key: job_task(fit_layer_pair, job, key=key) for job, key in zip(jobs, keys, strict=True)}
