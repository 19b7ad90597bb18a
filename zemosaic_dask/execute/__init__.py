"""Executing a :class:`~zemosaic_dask.plans.mosaic.MosaicPlan` on a Dask cluster.

One module per stage (:mod:`.background`, :mod:`.mosaic_first`, :mod:`.layered`,
:mod:`.calibration`, :mod:`.two_pass`, :mod:`.altaz`, :mod:`.product_tasks`), one
compute-with-progress helper (:mod:`.compute`). Execution takes the plan alone; it never
imports :mod:`zemosaic_dask.api`, which owns the client.
"""

from .compute import Timings, compute
from .resources import cluster_resources, plan_sections
from .routing import ExecutionResult
from .run import execute_plan

__all__ = ["ExecutionResult", "Timings", "cluster_resources", "compute", "execute_plan", "plan_sections"]
