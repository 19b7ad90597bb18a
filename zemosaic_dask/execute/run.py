"""Executing a :class:`MosaicPlan`: the background model, the plan's mode, then the alt-az edge cleanup.

Execution takes the plan alone: its options come from the plan's recorded settings
(:func:`~zemosaic_dask.config.policies.stage_options_of_plan`), its worker counts and byte
budgets from the plan's :class:`~zemosaic_dask.plans.assembly.AssemblyPlan`. The api owns
the client; this package turns plan sections into graphs (through ``graph/``) and computes
them through :func:`~zemosaic_dask.execute.compute.compute`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config.policies import stage_options_of_plan
from ..errors import ResumeError
from ..io.store import MosaicStore
from ..messages import msg
from ..plans.mosaic import MosaicPlan
from .altaz import clean_altaz_edges
from .background import solve_frame_backgrounds
from .compute import Timings
from .layered import execute_layers
from .mosaic_first import execute_mosaic_first
from .routing import ExecutionResult

__all__ = ["execute_plan"]

log = logging.getLogger(__name__)


def execute_plan(
    plan: MosaicPlan, store: MosaicStore, handle: Any, *, timings: Timings, show_progress: bool
) -> ExecutionResult:
    """Execute the plan's mode, writing the final mosaic into ``store``.

    The global background model (:mod:`~zemosaic_dask.execute.background`) is solved first
    and removed from every frame in every mode. An SDS execution that fails for any reason
    is logged, recorded as the fallback and replaced by Mosaic-First over all frames: SDS
    never crashes a run. A store made by another run (:class:`ResumeError`) and I/O errors
    are raised instead: no mode change can fix them. The alt-az edge cleanup
    (:mod:`~zemosaic_dask.execute.altaz`) then runs on the final store in every mode, when
    the plan's ``altaz`` section says so.
    """
    options = stage_options_of_plan(plan)
    with timings.stage("background"):
        planes, background = solve_frame_backgrounds(
            plan, options, handle, Path(store.url).parent, show_progress=show_progress
        )
    context = {"timings": timings, "show_progress": show_progress, "planes": planes}
    if plan.mode == "mosaic-first":
        result = execute_mosaic_first(plan, options, store, handle, **context)
    elif plan.mode == "classic":
        result = execute_layers(plan, options, store, handle, **context)
    else:
        try:
            result = execute_layers(plan, options, store, handle, **context)
        except (ResumeError, OSError):
            raise  # a store from another run or a full disk is the user's to resolve, never a mode change
        except Exception as err:  # noqa: BLE001 - SDS must never crash a run; the reason is logged and reported
            reason = f"{type(err).__name__}: {err}"
            log.warning(msg("fallback", mode="mosaic-first", reason=f"SDS failed ({reason})"))
            result = execute_mosaic_first(plan, options, store, handle, **context)
            result.fallback = f"sds execution failed: {reason}"
    result.report["background"] = background
    with timings.stage("altaz-cleanup"):
        result.report["altaz"] = clean_altaz_edges(plan, options, store, handle, show_progress=show_progress)
    return result
