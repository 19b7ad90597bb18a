"""Graph of the inter-layer calibration: one ``intertile-pair-<i>-<j>`` task per overlapping pair."""

from __future__ import annotations

from collections.abc import Sequence

import dask
from dask.delayed import Delayed

from ..units.intertile_pair import PairJob, fit_layer_pair

__all__ = ["build_intertile_graph"]


def build_intertile_graph(jobs: Sequence[PairJob]) -> dict[str, Delayed]:
    """Return the pair fits keyed by their task name."""
    fit = dask.delayed(fit_layer_pair, pure=True)
    return {
        f"intertile-pair-{job.i}-{job.j}": fit(job, dask_key_name=f"intertile-pair-{job.i}-{job.j}") for job in jobs
    }
